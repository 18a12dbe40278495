//! The `asyncer` command; see the `asyncer-cli` library.

fn main() -> std::process::ExitCode {
    asyncer_cli::main()
}
