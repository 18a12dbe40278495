use asyncer_guest::task;

#[task]
fn length(text: &str) -> usize {
    text.len()
}

fn main() {}
