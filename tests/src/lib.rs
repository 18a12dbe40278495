//! Paths of the guest modules built for the tests, and the worker program
//! they run.
#![forbid(unsafe_code)]

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The path of the WASI command program `name` (`guest-tasks/commands/src/bin/NAME.rs`).
pub fn command(name: &str) -> String {
    format!("{COMMANDS}/{name}.wasm")
}
