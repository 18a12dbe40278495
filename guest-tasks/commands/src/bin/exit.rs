//! Writes to both streams, then exits with the code its first argument
//! gives (default 33).
fn main() {
    let code = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(33);
    println!("leaving");
    eprintln!("with code {code}");
    std::process::exit(code);
}
