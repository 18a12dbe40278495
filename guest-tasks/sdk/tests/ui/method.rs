use asyncer_guest::task;

struct Counter;

impl Counter {
    #[task]
    fn count(&self) -> u64 {
        1
    }
}

fn main() {}
