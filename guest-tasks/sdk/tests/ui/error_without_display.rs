use asyncer_guest::task;

#[derive(Debug)]
struct Opaque;

#[task]
fn fails(n: u64) -> Result<u64, Opaque> {
    if n > 0 { Ok(n) } else { Err(Opaque) }
}

fn main() {}
