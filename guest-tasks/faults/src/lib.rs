//! Guest tasks that misbehave on purpose, for asyncer's tests.

use std::time::Duration;

use asyncer_guest::{sleep, task, Schema};
use serde::{Deserialize, Serialize};

/// A pair of numbers, for tasks with a structured input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Schema)]
pub struct Pair {
    /// Left operand.
    pub a: u64,
    /// Right operand.
    pub b: u64,
}

/// Adds the pair: a well-behaved task.
#[task]
pub fn add(pair: Pair) -> u64 {
    pair.a + pair.b
}

/// Returns its input unchanged.
#[task]
pub fn echo(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

/// Divides, returning the guest's own error for a zero divisor.
#[task]
pub fn divide(pair: Pair) -> Result<u64, String> {
    pair.a
        .checked_div(pair.b)
        .ok_or_else(|| format!("cannot divide {} by zero", pair.a))
}

/// Panics with a message built from its input.
#[task]
pub fn panic(message: String) -> u64 {
    panic!("guest says: {message}");
}

/// Executes `unreachable` (a trap without a panic message).
#[task]
pub fn trap() {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Sleeps `millis` ms through WASI, then returns them.
#[task]
pub async fn slow(millis: u64) -> u64 {
    sleep(Duration::from_millis(millis)).await;
    millis
}

/// Spins for ever, burning CPU.
#[task]
pub fn spin() {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Allocates and touches `mib` MiB, returning how many bytes it kept.
#[task]
pub fn hog(mib: u64) -> u64 {
    let bytes = vec![1u8; (mib as usize) << 20];
    std::hint::black_box(&bytes);
    bytes.len() as u64
}

/// Writes `text` to stdout and stderr, then returns its length.
#[task]
pub fn chatter(text: String) -> u64 {
    println!("out: {text}");
    eprintln!("err: {text}");
    text.len() as u64
}

/// Reads a file through WASI.
#[task]
pub fn read_file(path: String) -> Result<String, String> {
    std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
}

/// Writes a file through WASI.
#[task]
pub fn write_file(file: (String, String)) -> Result<(), String> {
    let (path, contents) = file;
    std::fs::write(&path, contents).map_err(|e| format!("{path}: {e}"))
}

/// Lists the guest's environment variables and arguments.
#[task]
pub fn environment() -> (Vec<(String, String)>, Vec<String>) {
    (std::env::vars().collect(), std::env::args().collect())
}

/// Writes `mib` MiB to stdout, then returns.
#[task]
pub fn flood(mib: u64) -> u64 {
    use std::io::Write;
    let chunk = vec![b'y'; 1 << 20];
    let mut out = std::io::stdout().lock();
    for _ in 0..mib {
        out.write_all(&chunk).expect("stdout accepts everything");
    }
    mib
}

/// Exits the guest with `code` through WASI `proc_exit`.
#[task]
pub fn exit(code: i32) {
    std::process::exit(code);
}

static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts its own calls in a global: always 1 when every task gets a fresh
/// instance.
#[task]
pub fn bump() -> u64 {
    CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
}

/// Reports progress `calls` times in a tight loop (the worker must coalesce
/// it), then returns `calls`.
#[task]
pub fn progress_flood(calls: u64) -> u64 {
    for i in 1..=calls {
        asyncer_guest::progress(i, calls, "flooding");
    }
    calls
}

/// Logs `records` records of 1 KiB each at the warn level (the worker must
/// cap them), then returns `records`.
#[task]
pub fn log_flood(records: u64) -> u64 {
    let line = "w".repeat(1024);
    for _ in 0..records {
        asyncer_guest::warn!("{line}");
    }
    records
}

/// Reports 1/2 and 2/2 at once (the second within the coalescing interval),
/// then computes for `millis` ms without reporting again.
#[task]
pub fn report_then_compute(millis: u64) -> u64 {
    asyncer_guest::progress(1, 2, "started");
    asyncer_guest::progress(2, 2, "computing");
    let start = std::time::Instant::now();
    let mut spins = 0u64;
    while start.elapsed() < Duration::from_millis(millis) {
        spins = std::hint::black_box(spins + 1);
    }
    spins
}
