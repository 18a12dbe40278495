//! The seed's demonstration, in Rust.
//!
//! A monitor loop on the host event loop prints the machine's CPU load about
//! every second. Eight heavy tasks go through the executor with
//! `max_processes = 4` (`[MP]`); a watcher on the completion-event channel
//! detects that all of them finished and runs the same eight tasks of the same
//! module one after another inside this process, on the event loop
//! (`[No MP]`, [`Executor::run_in_process`]), which blocks the monitor for as
//! long as they run. Both halves run the identical wasm code, so the ratio
//! measures processes against no processes, nothing else.
//!
//! The default `n` (800,000,000) makes one task take about half a second on a
//! 2-core machine, long enough for the comparison to mean something;
//! `--n 10000000` reproduces the seed's numbers
//! (333333283333335000000 per task).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use asyncer::{Executor, Module};
use clap::Parser;
use heavy::{HeavyInput, HeavyOutput};
use sysinfo::System;

#[derive(Parser)]
#[command(about = "asyncer's seed demonstration: heavy tasks with and without worker processes")]
struct Args {
    /// Each task sums i*i for i < n.
    #[arg(long, default_value_t = 800_000_000)]
    n: u64,
    /// How many tasks to run each way.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// Most worker processes alive at once.
    #[arg(long, default_value_t = 4)]
    max_processes: usize,
    /// Path of the heavy guest module (built by the workspace by default).
    #[arg(long, default_value = asyncer_tests::HEAVY)]
    module: String,
    /// Runs the `[MP]` half on a cluster's worker hosts through this NATS
    /// server (`make cluster` starts one and two hosts).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
}

/// `sum(i*i for i < n)` by the closed formula, to check every result.
fn expected(n: u64) -> u128 {
    let n = u128::from(n);
    if n == 0 {
        0
    } else {
        (n - 1) * n * (2 * n - 1) / 6
    }
}

/// The local date and time with microseconds, as the seed's `datetime.now()`
/// prints it: `2026-11-30 14:05:23.123456`.
fn local_now() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

/// Prints `LOOP:i, PROCESS_LOAD%:x, dt:datetime` about every second and
/// records the longest gap between two of its ticks.
async fn monitor(longest_gap: Rc<Cell<Duration>>) {
    let mut system = System::new();
    system.refresh_cpu_usage();
    let mut last = Instant::now();
    for i in 0.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let gap = last.elapsed();
        last = Instant::now();
        longest_gap.set(longest_gap.get().max(gap));
        system.refresh_cpu_usage();
        println!(
            "LOOP:{i}, PROCESS_LOAD%:{:.1}, dt:{}",
            system.global_cpu_usage(),
            local_now()
        );
    }
}

fn check(output: &HeavyOutput, uid: &str, n: u64) -> anyhow::Result<()> {
    ensure!(output.uid == uid, "task {uid} answered as {}", output.uid);
    ensure!(
        output.result == expected(n),
        "task {uid}: {} is wrong, expected {}",
        output.result,
        expected(n)
    );
    Ok(())
}

async fn run_mp(exec: &Executor, module: &Module, args: &Args) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let handles = (0..args.tasks)
        .map(|i| {
            let input = HeavyInput {
                uid: format!("mp-{i}"),
                n: args.n,
            };
            // Typed binding from the guest crate: name and types checked.
            exec.submit_task(module, heavy::HEAVY, &input)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, handle) in handles.into_iter().enumerate() {
        let output = handle.await.with_context(|| format!("task mp-{i}"))?;
        check(&output, &format!("mp-{i}"), args.n)?;
        println!("[MP] {}: result={}", output.uid, output.result);
    }
    let took = start.elapsed();
    println!("[MP] Finished in {:.3} seconds", took.as_secs_f64());
    Ok(took)
}

async fn run_no_mp(exec: &Executor, module: &Module, args: &Args) -> anyhow::Result<Duration> {
    println!("[No MP] Blocked due to cpu load");
    let start = Instant::now();
    for i in 0..args.tasks {
        let uid = format!("no-mp-{i}");
        // The same module and task, run inside this process and awaited
        // directly on the event loop: its CPU work blocks the loop, as in the
        // seed.
        let input = HeavyInput {
            uid: uid.clone(),
            n: args.n,
        };
        let output: HeavyOutput = exec
            .run_in_process(module, "heavy", &input)
            .await
            .with_context(|| format!("task {uid}"))?;
        check(&output, &uid, args.n)?;
        println!("[No MP] {}: result={}", output.uid, output.result);
    }
    let took = start.elapsed();
    println!("[No MP] Finished in {:.3} seconds", took.as_secs_f64());
    Ok(took)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let mut builder = Executor::builder().max_processes(args.max_processes);
    if let Some(url) = &args.nats {
        let connection =
            asyncer_cluster::Connection::connect(asyncer_cluster::ClusterOptions::new(url))
                .await
                .with_context(|| format!("connecting to {url}"))?;
        builder = builder.backend(asyncer_cluster::ClusterBackend::new(connection));
    }
    let exec = builder.build().context("starting the executor")?;

    let longest_gap = Rc::new(Cell::new(Duration::ZERO));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            tokio::task::spawn_local(monitor(longest_gap.clone()));

            // Completion is detected from the public event channel.
            let mut events = exec.events();
            let tasks = args.tasks;
            let detector = tokio::task::spawn_local(async move {
                let mut seen = 0;
                while seen < tasks {
                    let event = events.recv().await.expect("the executor outlives this");
                    seen += 1;
                    if !event.is_ok() {
                        eprintln!("[MP] event: {} failed: {:?}", event.uid, event.message);
                    }
                    if let Some(host) = &event.host {
                        println!("[MP] {} ran on host {host} (attempt {})", event.uid, event.attempt);
                    }
                }
                println!("Detected MP completion, starting run_no_mp");
            });

            let module = exec
                .load(&args.module)
                .await
                .with_context(|| format!("loading {}", args.module))?;
            let mp = run_mp(&exec, &module, &args).await?;
            let mp_gap = longest_gap.replace(Duration::ZERO);
            detector.await?;
            // Let the monitor tick once before the loop is blocked.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let no_mp = run_no_mp(&exec, &module, &args).await?;
            // One more tick shows how long the loop was blocked.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let no_mp_gap = longest_gap.get();
            println!(
                "Speedup: {:.2}x with {} worker processes; longest monitor gap {:.2}s with MP, {:.2}s without",
                no_mp.as_secs_f64() / mp.as_secs_f64(),
                args.max_processes,
                mp_gap.as_secs_f64(),
                no_mp_gap.as_secs_f64()
            );
            anyhow::Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn dt_is_a_local_date_and_time_with_microseconds() {
        let dt = super::local_now();
        let shape: String = dt
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99 99:99:99.999999", "{dt}");
    }
}
