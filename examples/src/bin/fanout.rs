//! Fan-out: many tasks at once, watched with indicatif progress bars driven
//! by the executor's update stream (the guests' progress and log records,
//! then each task's completion).
//!
//! One bar counts the work of every task (each reports 20 steps with
//! `asyncer_guest::progress`), one bar per running task shows its own steps,
//! and the guests' `info!` records are printed above the bars. At the end it
//! prints a summary of the outcomes. `make fanout` runs it; without a
//! terminal the bars stay hidden and the log records and summary are
//! printed as plain lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use asyncer::{Executor, TaskOptions, TaskUpdate};
use clap::Parser;
use heavy::{HeavyInput, HeavyOutput, REPORTING_STEPS};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Fan out many reporting tasks and watch them with progress bars")]
struct Args {
    /// How many tasks to submit.
    #[arg(long, default_value_t = 24)]
    tasks: u64,
    /// Each task sums i*i for i < n (the default takes ~0.1 s per task).
    #[arg(long, default_value_t = 200_000_000)]
    n: u64,
    /// Most worker processes alive at once (default: the number of CPUs).
    #[arg(long)]
    max_processes: Option<usize>,
    /// Path of the heavy guest module (built by the workspace by default).
    #[arg(long, default_value = asyncer_tests::HEAVY)]
    module: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = Executor::builder();
    if let Some(n) = args.max_processes {
        builder = builder.max_processes(n);
    }
    let exec = builder.build().context("starting the executor")?;
    let module = exec
        .load(&args.module)
        .await
        .context("loading the heavy module")?;

    let bars = MultiProgress::new();
    let overall = bars.add(ProgressBar::new(args.tasks * REPORTING_STEPS));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} steps, {msg}")
            .context("bar template")?
            .progress_chars("=> "),
    );
    overall.set_prefix("all");
    let task_style = ProgressStyle::with_template("{prefix:>8} [{bar:40}] {msg}")
        .context("bar template")?
        .progress_chars("=> ");

    // Subscribe before submitting, so no update is missed.
    let mut updates = exec.updates();
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..args.tasks {
        let input = HeavyInput {
            uid: format!("job-{i}"),
            n: args.n,
        };
        let options = TaskOptions::new().uid(format!("job-{i}"));
        handles.push(exec.submit_with::<_, HeavyOutput>(
            &module,
            "heavy_reporting",
            &input,
            options,
        )?);
    }

    // Steps done per task, and the bar of each running task.
    let mut steps: HashMap<String, u64> = HashMap::new();
    let mut running: HashMap<String, ProgressBar> = HashMap::new();
    let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
    let mut finished = 0;
    while finished < args.tasks {
        let update = updates.recv().await.context("the executor went away")?;
        match update {
            TaskUpdate::Progress(event) => {
                let bar = running.entry(event.uid.clone()).or_insert_with(|| {
                    let bar = bars.insert_before(&overall, ProgressBar::new(REPORTING_STEPS));
                    bar.set_style(task_style.clone());
                    bar.set_prefix(event.uid.clone());
                    bar
                });
                bar.set_position(event.progress.done);
                bar.set_message(event.progress.message.clone());
                let before = steps.insert(event.uid, event.progress.done).unwrap_or(0);
                overall.inc(event.progress.done.saturating_sub(before));
            }
            TaskUpdate::Log(event) => {
                let line = format!("{} [{}] {}", event.uid, event.level, event.message);
                // Hidden bars (no terminal) print nothing, not even lines.
                if bars.is_hidden() {
                    println!("{line}");
                } else {
                    bars.println(line)?;
                }
            }
            TaskUpdate::Finished(event) => {
                finished += 1;
                if let Some(bar) = running.remove(&event.uid) {
                    bar.finish_and_clear();
                }
                // A task that failed early still counts as done.
                let before = steps
                    .insert(event.uid.clone(), REPORTING_STEPS)
                    .unwrap_or(0);
                overall.inc(REPORTING_STEPS.saturating_sub(before));
                *outcomes.entry(event.outcome()).or_default() += 1;
                overall.set_message(format!("{finished}/{} tasks finished", args.tasks));
            }
            _ => {}
        }
    }
    overall.finish();

    // sum(i*i for i < n) by the closed formula.
    let n = u128::from(args.n);
    let expected = if n == 0 {
        0
    } else {
        (n - 1) * n * (2 * n - 1) / 6
    };
    let mut ok = 0;
    for handle in handles {
        let out = handle.await?;
        ensure!(out.result == expected, "wrong result for {}", out.uid);
        ok += 1;
    }
    println!(
        "{} tasks in {:.2?} with up to {} workers; outcomes: {:?}",
        args.tasks,
        started.elapsed(),
        exec.max_processes(),
        outcomes
    );
    ensure!(ok == args.tasks, "some tasks failed");
    exec.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
