use asyncer_guest::task;

#[task(name = "other")]
fn renamed(n: u64) -> u64 {
    n
}

fn main() {}
