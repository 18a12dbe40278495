//! Aborts: a trap, not an exit code.
fn main() {
    eprintln!("giving up");
    std::process::abort();
}
