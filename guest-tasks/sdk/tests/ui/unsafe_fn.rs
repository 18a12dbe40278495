use asyncer_guest::task;

#[task]
unsafe fn risky(n: u64) -> u64 {
    n
}

fn main() {}
