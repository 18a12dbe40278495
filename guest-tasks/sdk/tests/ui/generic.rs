use asyncer_guest::task;

#[task]
fn identity<T: serde::Serialize>(value: T) -> T {
    value
}

fn main() {}
