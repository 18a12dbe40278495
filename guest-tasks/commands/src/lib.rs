//! Plain WASI command programs, each a `src/bin` file with a `main`: what
//! existing WASI programs look like to asyncer (a `_start` export, no task
//! ABI). The tests build them for `wasm32-wasip1` and run them with
//! `Executor::submit_command` and `asyncer run --command`, and
//! `tests/wasi-suite` holds their expectations in wasi-testsuite's format.
