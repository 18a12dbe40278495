use asyncer_guest::task;

#[task]
struct NotATask;

fn main() {}
