//! Copies standard input to standard output in upper case, and says on
//! standard error how many bytes it read.
use std::io::{Read, Write};

fn main() {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .expect("stdin reads");
    std::io::stdout()
        .write_all(&input.to_ascii_uppercase())
        .expect("stdout writes");
    eprintln!("read {} bytes", input.len());
}
