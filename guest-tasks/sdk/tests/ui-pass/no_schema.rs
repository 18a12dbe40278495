// Passes: `no_schema` records no description, so none is needed.
use asyncer_guest::task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Undescribed {
    n: u64,
}

#[task(no_schema)]
fn count(input: Undescribed) -> u64 {
    input.n
}

fn main() {
    assert_eq!(count(Undescribed { n: 2 }), 2);
}
