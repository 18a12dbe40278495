use asyncer_guest::task;
use serde::{Deserialize, Serialize};

// Serializable, but with no description of its encoding: `#[task]` needs
// one (or `#[task(no_schema)]`).
#[derive(Serialize, Deserialize)]
pub struct Undescribed {
    n: u64,
}

#[task]
fn count(input: Undescribed) -> u64 {
    input.n
}

fn main() {}
