//! The `asyncer` command, built inside this package so that tests can run it
//! with `CARGO_BIN_EXE_test-cli`.

fn main() -> std::process::ExitCode {
    asyncer_cli::main()
}
