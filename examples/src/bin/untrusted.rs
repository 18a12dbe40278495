//! Running an untrusted module given on the command line, with limits, and
//! printing the outcome: what a service that accepts user code does.
//!
//! ```text
//! untrusted MODULE.wasm TASK [--input-hex HEX] [--timeout-ms 2000]
//!           [--fuel N] [--memory-mib 64] [--max-output-kib 64]
//! untrusted --demo      # the misbehaving tasks of the faults guest, one by one
//! ```
//!
//! The module is validated before anything runs (a bad one is an
//! `invalid_module` error), the task gets no files, no environment and no
//! network, and every way it can misbehave ends in a typed error within its
//! limits. `make untrusted` runs the demo.

use std::time::Duration;

use anyhow::Context;
use asyncer::{Executor, Limits, TaskOptions};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Run a task of an untrusted wasm module under limits and print the outcome")]
struct Args {
    /// The module (guest ABI v1).
    #[arg(required_unless_present = "demo")]
    module: Option<String>,
    /// The task to run.
    #[arg(required_unless_present = "demo")]
    task: Option<String>,
    /// The task's input, postcard bytes in hex (empty: the unit input).
    #[arg(long, default_value = "")]
    input_hex: String,
    /// Wall-clock limit in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Fuel budget (metering is off without it).
    #[arg(long)]
    fuel: Option<u64>,
    /// Largest linear memory, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    /// Largest output, in KiB.
    #[arg(long, default_value_t = 64)]
    max_output_kib: u64,
    /// Run the faults guest's misbehaving tasks instead.
    #[arg(long, conflicts_with_all = ["module", "task"])]
    demo: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(text.len().is_multiple_of(2), "odd number of hex digits");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("not hex"))
        .collect()
}

/// Runs one task and prints its outcome; returns whether it succeeded.
async fn run(
    exec: &Executor,
    path: &str,
    task: &str,
    input: Vec<u8>,
    limits: Limits,
) -> anyhow::Result<bool> {
    let module = match exec.load(path).await {
        Ok(module) => module,
        Err(error) => {
            println!("{task}: refused before running: {} ({error})", error.kind());
            return Ok(false);
        }
    };
    let mut events = exec.events();
    let handle =
        match exec.submit_bytes_with(&module, task, input, TaskOptions::new().limits(limits)) {
            Ok(handle) => handle,
            // An unknown task or an oversized input: nothing ran, no event.
            Err(error) => {
                println!("{task}: refused at submit: {} ({error})", error.kind());
                return Ok(false);
            }
        };
    let result = handle.await;
    // Every task that was queued ends with one event (runs are sequential).
    let event = events.recv().await.context("the executor went away")?;
    let usage = format!(
        " [wall {:.1?}, fuel {}, peak memory {} KiB, stdout {} B]",
        event.wall_time,
        event
            .fuel_consumed
            .map_or_else(|| "not metered".into(), |f| f.to_string()),
        event.peak_memory_bytes >> 10,
        event.stdout.len() as u64 + event.stdout_dropped,
    );
    match result {
        Ok(output) => {
            println!("{task}: ok, output {}{usage}", hex(&output));
            Ok(true)
        }
        Err(error) => {
            let message = error.to_string();
            let message = message.lines().next().unwrap_or_default();
            println!("{task}: {} ({message}){usage}", error.kind());
            Ok(false)
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exec = Executor::builder()
        .build()
        .context("starting the executor")?;
    let limits = Limits::default()
        .with_timeout(Duration::from_millis(args.timeout_ms))
        .with_max_memory_bytes(args.memory_mib << 20)
        .with_max_output_bytes(args.max_output_kib << 10);
    let limits = match args.fuel {
        Some(fuel) => limits.with_fuel(fuel),
        None => limits,
    };
    if !args.demo {
        let (Some(module), Some(task)) = (args.module, args.task) else {
            unreachable!("clap requires both without --demo");
        };
        let input = unhex(&args.input_hex).context("--input-hex")?;
        let ok = run(&exec, &module, &task, input, limits).await?;
        std::process::exit(if ok { 0 } else { 1 });
    }

    let module = asyncer_tests::FAULTS;
    fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
        postcard::to_allocvec(value).expect("plain values encode")
    }
    println!("limits: {:?}", limits);
    let cases: Vec<(&str, Vec<u8>, Limits)> = vec![
        ("add", encode(&faults::Pair { a: 2, b: 3 }), limits.clone()),
        ("spin", encode(&()), limits.clone()),
        ("hog", encode(&1024u64), limits.clone()),
        ("panic", encode(&"oops"), limits.clone()),
        ("trap", encode(&()), limits.clone()),
        ("spin", encode(&()), limits.clone().with_fuel(50_000_000)),
        ("slow", encode(&60_000u64), limits.clone()),
        ("flood", encode(&512u64), limits.clone()),
        ("exit", encode(&3i32), limits.clone()),
        ("read_file", encode(&"/etc/passwd"), limits.clone()),
        ("no_such_task", encode(&()), limits.clone()),
    ];
    for (task, input, limits) in cases {
        run(&exec, module, task, input, limits).await?;
    }
    run(
        &exec,
        "/dev/null",
        "anything",
        Vec::new(),
        Limits::default(),
    )
    .await?;
    exec.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
