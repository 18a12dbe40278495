//! Prints every environment variable as `K=V`, sorted.
fn main() {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    for (key, value) in vars {
        println!("{key}={value}");
    }
}
