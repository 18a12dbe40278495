//! Prints each argument after the program name on a line of its own.
fn main() {
    for arg in std::env::args().skip(1) {
        println!("{arg}");
    }
}
