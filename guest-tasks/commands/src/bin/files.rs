//! Works in the directory preopened as `/`: reads `/input.txt`, writes it
//! reversed to `/out/reversed.txt` (making `/out`), reads that back, removes
//! `/scratch` if it is there, and lists `/`, sorted. Exits 3 if a step
//! fails, naming it on standard error.
use std::fs;

fn main() {
    if let Err(e) = run() {
        eprintln!("{e}");
        std::process::exit(3);
    }
}

fn run() -> Result<(), String> {
    let input = fs::read_to_string("/input.txt").map_err(|e| format!("read /input.txt: {e}"))?;
    fs::create_dir_all("/out").map_err(|e| format!("mkdir /out: {e}"))?;
    let reversed: String = input.trim_end().chars().rev().collect();
    fs::write("/out/reversed.txt", &reversed).map_err(|e| format!("write: {e}"))?;
    let back = fs::read_to_string("/out/reversed.txt").map_err(|e| format!("read back: {e}"))?;
    println!("{back}");
    if fs::metadata("/scratch").is_ok() {
        fs::remove_dir_all("/scratch").map_err(|e| format!("rm /scratch: {e}"))?;
    }
    let mut names: Vec<String> = fs::read_dir("/")
        .map_err(|e| format!("list /: {e}"))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("list /: {e}"))?;
    names.sort();
    println!("{}", names.join(" "));
    Ok(())
}
