//! The worker program the tests use: `asyncer-worker`'s main, built inside
//! this package so that tests can find it with `CARGO_BIN_EXE_test-worker`.

fn main() -> std::process::ExitCode {
    asyncer_worker::serve_stdio()
}
