//! The asyncer worker program: one task per process. See the `asyncer-worker`
//! library for the protocol.

fn main() -> std::process::ExitCode {
    asyncer_worker::serve_stdio()
}
