//! asyncer's benchmark: `make bench`.
//!
//! Every figure is the median of `--runs` runs, next to a baseline measured
//! in the same run (spawning `/bin/true`, the Python model asyncer grew from,
//! running in-process, native code, an idle event loop) and their ratio.
//! Nothing here is asserted: it reports.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "../local_cluster.rs"]
mod local_cluster;

use anyhow::{Context, Result};
use asyncer::{Executor, Launch, Limits, Module, SandboxLayer, SandboxSettings, WarmOptions};
use clap::Parser;

#[derive(Parser)]
#[command(about = "asyncer's benchmark")]
struct Args {
    /// Runs of each measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Sequential tasks per latency run.
    #[arg(long, default_value_t = 300)]
    latency_tasks: usize,
    /// Tasks per throughput run.
    #[arg(long, default_value_t = 2000)]
    throughput_tasks: usize,
    /// No-op tasks between the two host RSS readings (warm mode).
    #[arg(long, default_value_t = 100_000)]
    rss_tasks: usize,
    /// n of the heavy task (sum of i*i for i < n): the seed example's default.
    #[arg(long, default_value_t = 800_000_000)]
    heavy_n: u64,
    /// n of the compute comparison.
    #[arg(long, default_value_t = 300_000_000)]
    compute_n: u64,
    /// Only run the compute loop once, natively or in wasm (for profiling
    /// with `valgrind --tool=callgrind`), and print nothing else.
    #[arg(long, value_parser = ["native", "wasm"])]
    profile_compute: Option<String>,
    /// Size of the smaller payload echoed through a worker, in MiB (the
    /// larger is four times it).
    #[arg(long, default_value_t = 16)]
    payload_mib: usize,
    /// In the sandbox group, also what each layer alone costs.
    #[arg(long)]
    layers: bool,
    /// Only these groups of rows, comma-separated: noop, sandbox, heavy,
    /// compute, progress, payload, cluster, ticker, memory, cli, scheduler,
    /// warm
    /// (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

/// A guest that does nothing: the floor of a task's cost.
const NOOP_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  (data (i32.const 16) "\00")
  (func (export "task:noop") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1))))"#;

/// A guest that returns its input as its output, untouched: the cost of
/// moving a payload to a worker and back, with no guest work. `asyncer_alloc`
/// grows the memory to fit the input at offset 16; the envelope's `0x00`
/// goes just before it.
const ECHO_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param $len i32) (result i32)
    (drop (memory.grow (i32.add (i32.shr_u (local.get $len) (i32.const 16)) (i32.const 1))))
    i32.const 16)
  (func (export "task:echo") (param $ptr i32) (param $len i32) (result i64)
    (i32.store8 (i32.sub (local.get $ptr) (i32.const 1)) (i32.const 0))
    (i64.or
      (i64.shl (i64.extend_i32_u (i32.sub (local.get $ptr) (i32.const 1))) (i64.const 32))
      (i64.extend_i32_u (i32.add (local.get $len) (i32.const 1))))))"#;

struct Row {
    what: String,
    value: String,
    baseline: String,
    ratio: String,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (p50 ms, p99 ms) of `tasks` sequential no-op tasks.
async fn latency(exec: &Executor, module: &Module, tasks: usize) -> Result<(f64, f64)> {
    let mut lat = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let start = Instant::now();
        let () = exec.submit(module, "noop", &())?.await?;
        lat.push(ms(start.elapsed()));
    }
    lat.sort_by(f64::total_cmp);
    Ok((percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// Tasks per second with `tasks` no-op tasks submitted at once.
async fn throughput(exec: &Executor, module: &Module, tasks: usize) -> Result<f64> {
    let start = Instant::now();
    let handles = (0..tasks)
        .map(|_| exec.submit::<_, ()>(module, "noop", &()))
        .collect::<Result<Vec<_>, _>>()?;
    for handle in handles {
        handle.await?;
    }
    Ok(tasks as f64 / start.elapsed().as_secs_f64())
}

/// Runs a batch as large as the memory rows' measured ones, so that the
/// allocator's first growth to hold 5000 tasks in flight is not counted as
/// growth over the run.
async fn warm_up(exec: &Executor, module: &Module) -> Result<()> {
    throughput(exec, module, 5000).await.map(|_| ())
}

/// (p50 ms, processes/s with 2 at a time) of spawning `/bin/true`.
async fn spawn_floor(tasks: usize) -> Result<(f64, f64)> {
    let spawn = || async {
        tokio::process::Command::new("/bin/true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .await
    };
    let mut lat = Vec::new();
    for _ in 0..tasks {
        let start = Instant::now();
        spawn().await?;
        lat.push(ms(start.elapsed()));
    }
    lat.sort_by(f64::total_cmp);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let slots = slots.clone();
        set.spawn_local(async move {
            let _permit = slots.acquire_owned().await;
            let _ = spawn().await;
        });
    }
    while set.join_next().await.is_some() {}
    Ok((
        percentile(&lat, 0.5),
        tasks as f64 / start.elapsed().as_secs_f64(),
    ))
}

/// The Python model's (p50 ms, p99 ms, tasks/s), if python3 is here.
fn python_baseline(args: &Args) -> Option<(f64, f64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/python_baseline.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(args.latency_tasks.to_string())
        .arg((args.throughput_tasks / 2).to_string())
        .output()
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some((
        value["p50_ms"].as_f64()?,
        value["p99_ms"].as_f64()?,
        value["tasks_per_s"].as_f64()?,
    ))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn executor(max: usize, prestart: usize, warm: bool) -> Result<Executor> {
    launched(max, prestart, warm, Launch::Fork)
}

fn launched(max: usize, prestart: usize, warm: bool, launch: Launch) -> Result<Executor> {
    let mut builder = Executor::builder()
        .max_processes(max)
        .prestart(prestart)
        .launch(launch);
    if warm {
        builder = builder.warm(WarmOptions::default());
    }
    Ok(builder.build()?)
}

async fn noop_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let (floor_p50, floor_tput) = {
        let mut p50s = Vec::new();
        let mut tputs = Vec::new();
        for _ in 0..args.runs {
            let (p50, tput) = spawn_floor(args.latency_tasks).await?;
            p50s.push(p50);
            tputs.push(tput);
        }
        (median(p50s), median(tputs))
    };
    rows.push(Row {
        what: "floor: spawn /bin/true (p50 latency; /s with 2 at a time)".into(),
        value: format!("{floor_p50:.2} ms; {floor_tput:.0}/s"),
        baseline: "-".into(),
        ratio: "-".into(),
    });
    let python = python_baseline(args);
    if let Some((p50, p99, tput)) = python {
        rows.push(Row {
            what: "baseline: Python model (asyncio + a Process per task, 2 at a time)".into(),
            value: format!("p50 {p50:.2} ms, p99 {p99:.2} ms, {tput:.0} tasks/s"),
            baseline: "-".into(),
            ratio: "-".into(),
        });
    }
    for (label, prestart, warm, launch) in [
        (
            "fresh process per task, forked from a template",
            0,
            false,
            Launch::Fork,
        ),
        (
            "fresh process per task, forked, 2 forked ahead",
            2,
            false,
            Launch::Fork,
        ),
        ("fresh process per task, spawned", 0, false, Launch::Spawn),
        (
            "fresh process per task, 2 spawned ahead",
            2,
            false,
            Launch::Spawn,
        ),
        ("warm mode", 0, true, Launch::Fork),
    ] {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut tputs = Vec::new();
        for _ in 0..args.runs {
            let exec = launched(2, prestart, warm, launch)?;
            let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
            // One task first, so that start-up is not in the figures.
            exec.submit::<_, ()>(&module, "noop", &())?.await?;
            let (p50, p99) = latency(&exec, &module, args.latency_tasks).await?;
            let tasks = if warm {
                args.throughput_tasks * 10
            } else {
                args.throughput_tasks
            };
            tputs.push(throughput(&exec, &module, tasks).await?);
            p50s.push(p50);
            p99s.push(p99);
            exec.shutdown(Duration::from_secs(5)).await;
        }
        let (p50, p99, tput) = (median(p50s), median(p99s), median(tputs));
        let (baseline, ratio) = match python {
            Some((py_p50, _, py_tput)) => (
                format!("Python: {py_p50:.2} ms, {py_tput:.0}/s; /bin/true: {floor_p50:.2} ms"),
                format!(
                    "{:.1}x faster, {:.1}x the throughput; p50 {:.2}x the spawn floor",
                    py_p50 / p50,
                    tput / py_tput,
                    p50 / floor_p50
                ),
            ),
            None => (
                format!("/bin/true: {floor_p50:.2} ms"),
                format!("{:.2}x the spawn floor", p50 / floor_p50),
            ),
        };
        rows.push(Row {
            what: format!("no-op task, {label}, max_processes = 2"),
            value: format!("p50 {p50:.2} ms, p99 {p99:.2} ms, {tput:.0} tasks/s"),
            baseline,
            ratio,
        });
    }
    Ok(())
}

/// Warm mode against running the same no-op task in-process
/// (`run_in_process`: instantiate and call on the calling thread, no
/// worker), in the same run.
async fn warm_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let tasks = args.throughput_tasks * 10;
    let mut warm_rates = Vec::new();
    let mut warm_p50s = Vec::new();
    let mut local_rates = Vec::new();
    let mut local_p50s = Vec::new();
    for _ in 0..args.runs {
        let exec = executor(2, 0, true)?;
        let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
        exec.submit::<_, ()>(&module, "noop", &())?.await?;
        warm_p50s.push(latency(&exec, &module, args.latency_tasks).await?.0);
        warm_rates.push(throughput(&exec, &module, tasks).await?);
        let mut lat = Vec::new();
        let start = Instant::now();
        for _ in 0..tasks / 4 {
            let one = Instant::now();
            exec.run_in_process::<_, ()>(&module, "noop", &()).await?;
            lat.push(ms(one.elapsed()));
        }
        local_rates.push((tasks / 4) as f64 / start.elapsed().as_secs_f64());
        lat.sort_by(f64::total_cmp);
        local_p50s.push(percentile(&lat, 0.5));
        exec.shutdown(Duration::from_secs(5)).await;
    }
    let (warm_p50, warm_rate) = (median(warm_p50s), median(warm_rates));
    let (local_p50, local_rate) = (median(local_p50s), median(local_rates));
    rows.push(Row {
        what: "no-op task, warm mode, max_processes = 2 (tasks/s: all submitted at once)".into(),
        value: format!("p50 {:.0} µs, {warm_rate:.0} tasks/s", warm_p50 * 1000.0),
        baseline: format!(
            "in-process instantiate and call, one thread: p50 {:.0} µs, {local_rate:.0}/s",
            local_p50 * 1000.0
        ),
        ratio: format!(
            "{:.1}x the latency, {:.2}x the rate",
            warm_p50 / local_p50,
            warm_rate / local_rate
        ),
    });
    Ok(())
}

/// The worker's own sandbox on and off, the runs of each interleaved in
/// the same run: no-op p50 latency and throughput, fresh (started on
/// demand, and two spawned ahead) and warm; then what each layer alone
/// adds to a fresh process (`--layers`).
async fn sandbox_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let mut variants: Vec<(String, usize, bool, SandboxSettings)> = vec![
        (
            "fresh process per task".into(),
            0,
            false,
            SandboxSettings::default(),
        ),
        (
            "fresh process per task, 2 forked ahead".into(),
            2,
            false,
            SandboxSettings::default(),
        ),
        ("warm mode".into(), 0, true, SandboxSettings::default()),
    ];
    if args.layers {
        for layer in SandboxLayer::ALL {
            let alone = SandboxSettings::none().with(layer);
            variants.push((
                format!("fresh process per task, {layer} alone"),
                0,
                false,
                alone,
            ));
        }
    }
    for (label, prestart, warm, layers) in variants {
        let mut on = (Vec::new(), Vec::new());
        let mut off = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            for (settings, into) in [(layers, &mut on), (SandboxSettings::none(), &mut off)] {
                let mut builder = Executor::builder()
                    .max_processes(2)
                    .prestart(prestart)
                    .sandbox(settings);
                if warm {
                    builder = builder.warm(WarmOptions::default());
                }
                let exec = builder.build()?;
                let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
                exec.submit::<_, ()>(&module, "noop", &())?.await?;
                let (p50, _) = latency(&exec, &module, args.latency_tasks).await?;
                let tasks = if warm {
                    args.throughput_tasks * 10
                } else {
                    args.throughput_tasks
                };
                into.0.push(p50);
                into.1.push(throughput(&exec, &module, tasks).await?);
                exec.shutdown(Duration::from_secs(5)).await;
            }
        }
        let (on_p50, on_tput) = (median(on.0), median(on.1));
        let (off_p50, off_tput) = (median(off.0), median(off.1));
        let what = if layers == SandboxSettings::default() {
            format!("no-op task, {label}, every sandbox layer on (max_processes = 2)")
        } else {
            format!("no-op task, {label} (max_processes = 2)")
        };
        rows.push(Row {
            what,
            value: format!("p50 {on_p50:.2} ms, {on_tput:.0} tasks/s"),
            baseline: format!("layers off: p50 {off_p50:.2} ms, {off_tput:.0} tasks/s"),
            ratio: format!(
                "p50 {:+.1}%, throughput {:+.1}%",
                (on_p50 / off_p50 - 1.0) * 100.0,
                (on_tput / off_tput - 1.0) * 100.0
            ),
        });
    }
    Ok(())
}

async fn heavy_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let mut speedups = Vec::new();
    let mut mp_secs = Vec::new();
    let mut seq_secs = Vec::new();
    for _ in 0..args.runs {
        let exec = executor(4, 0, false)?;
        let module = exec.load(asyncer_tests::HEAVY).await?;
        let input = |i: usize| heavy::HeavyInput {
            uid: format!("t{i}"),
            n: args.heavy_n,
        };
        let start = Instant::now();
        let handles = (0..8)
            .map(|i| exec.submit::<_, heavy::HeavyOutput>(&module, "heavy", &input(i)))
            .collect::<Result<Vec<_>, _>>()?;
        for handle in handles {
            handle.await?;
        }
        let mp = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for i in 0..8 {
            let _: heavy::HeavyOutput = exec.run_in_process(&module, "heavy", &input(i)).await?;
        }
        let seq = start.elapsed().as_secs_f64();
        speedups.push(seq / mp);
        mp_secs.push(mp);
        seq_secs.push(seq);
    }
    rows.push(Row {
        what: format!(
            "heavy seed task x8 (n = {}), max_processes = 4",
            args.heavy_n
        ),
        value: format!("{:.3} s", median(mp_secs)),
        baseline: format!("sequential in-process: {:.3} s", median(seq_secs)),
        ratio: format!("{:.2}x speedup", median(speedups)),
    });
    Ok(())
}

async fn compute_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let n = args.compute_n;
    let mut native = Vec::new();
    let mut plain = Vec::new();
    let mut fueled = Vec::new();
    let exec = executor(1, 0, false)?;
    let module = exec.load(asyncer_tests::HEAVY).await?;
    let fuel_exec = Executor::builder()
        .max_processes(1)
        .limits(Limits::default().with_fuel(u64::MAX / 2))
        .build()?;
    let fuel_module = fuel_exec.load(asyncer_tests::HEAVY).await?;
    // Short and noisy: more runs than the others.
    for _ in 0..args.runs.max(7) {
        let start = Instant::now();
        let expected = heavy::sum_of_squares(std::hint::black_box(n));
        native.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let got: u128 = exec.run_in_process(&module, "sum_squares", &n).await?;
        plain.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(got == expected, "wasm computed {got}, native {expected}");
        let start = Instant::now();
        let got: u128 = fuel_exec
            .run_in_process(&fuel_module, "sum_squares", &n)
            .await?;
        fueled.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(got == expected, "wasm with fuel computed {got}");
    }
    let native = median(native);
    for (label, secs) in [("no fuel", median(plain)), ("with fuel", median(fueled))] {
        rows.push(Row {
            what: format!("guest compute, sum of squares n = {n}, {label}"),
            value: format!("{:.1} ms", secs * 1000.0),
            baseline: format!("native: {:.1} ms", native * 1000.0),
            ratio: format!("{:.2}x native time", secs / native),
        });
    }
    Ok(())
}

/// An executor whose tasks run on `cluster`'s worker hosts.
async fn cluster_executor(cluster: &local_cluster::LocalCluster) -> Result<Executor> {
    tenant_executor(cluster, "default").await
}

/// An executor submitting to `cluster` as `tenant`.
async fn tenant_executor(cluster: &local_cluster::LocalCluster, tenant: &str) -> Result<Executor> {
    let connection = asyncer_cluster::Connection::connect(
        asyncer_cluster::ClusterOptions::new(&cluster.url).tenant(tenant),
    )
    .await?;
    Ok(Executor::builder()
        .backend(asyncer_cluster::ClusterBackend::new(connection))
        .max_processes(64)
        .build()?)
}

/// No-op tasks per second through `cluster` when 4 tenants (a connection
/// each) submit `tasks` in all, spread over 4 priorities.
async fn spread_throughput(cluster: &local_cluster::LocalCluster, tasks: usize) -> Result<f64> {
    let mut submitters = Vec::new();
    for tenant in ["t0", "t1", "t2", "t3"] {
        let exec = tenant_executor(cluster, tenant).await?;
        let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
        // Warm-up: every queue exists before the clock starts.
        for priority in [-10, 0, 10, 100] {
            let options = asyncer::TaskOptions::new().priority(priority);
            exec.submit_with::<_, ()>(&module, "noop", &(), options)?
                .await?;
        }
        submitters.push((exec, module));
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..tasks {
        let (exec, module) = &submitters[i % 4];
        let options = asyncer::TaskOptions::new().priority([-10, 0, 10, 100][i / 4 % 4]);
        handles.push(exec.submit_with::<_, ()>(module, "noop", &(), options)?);
    }
    for handle in handles {
        handle.await?;
    }
    let rate = tasks as f64 / start.elapsed().as_secs_f64();
    for (exec, _) in submitters {
        exec.shutdown(Duration::from_secs(5)).await;
    }
    Ok(rate)
}

/// 8 heavy tasks at once; seconds until all are done.
async fn heavy_batch(exec: &Executor, n: u64) -> Result<f64> {
    let module = exec.load(asyncer_tests::HEAVY).await?;
    let start = Instant::now();
    let handles = (0..8)
        .map(|i| {
            let input = heavy::HeavyInput {
                uid: format!("t{i}"),
                n,
            };
            exec.submit::<_, heavy::HeavyOutput>(&module, "heavy", &input)
        })
        .collect::<Result<Vec<_>, _>>()?;
    for handle in handles {
        handle.await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// No-op and heavy tasks through a cluster on this machine (a nats-server
/// and one or two worker hosts with 2 workers each), against the local
/// fresh-process mode in the same run. On one machine the hosts share its
/// 2 cores: the rows show the cluster's own cost per task, not scale-out.
async fn cluster_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let tasks = (args.latency_tasks / 3).max(20);
    let batch = (args.throughput_tasks / 4).max(50);
    let local = executor(2, 0, false)?;
    let local_module = local.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
    let (local_p50, _) = latency(&local, &local_module, tasks).await?;
    let local_rate = throughput(&local, &local_module, batch).await?;
    let local_heavy = heavy_batch(&executor(4, 0, false)?, args.heavy_n).await?;
    for hosts in [1, 2] {
        let cluster = local_cluster::LocalCluster::start(hosts, 2)?;
        let exec = cluster_executor(&cluster).await?;
        let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
        // Warm-up: the module travels to the store and the hosts once.
        latency(&exec, &module, 5).await?;
        let (p50, p99) = latency(&exec, &module, tasks).await?;
        let rate = throughput(&exec, &module, batch).await?;
        rows.push(Row {
            what: format!(
                "no-op task through a cluster: {hosts} host(s) x 2 workers, fresh process"
            ),
            value: format!("p50 {p50:.2} ms, p99 {p99:.2} ms, {rate:.0} tasks/s"),
            baseline: format!("local fresh process: {local_p50:.2} ms, {local_rate:.0}/s"),
            ratio: format!(
                "{:.1}x the latency, {:.2}x the throughput",
                p50 / local_p50,
                rate / local_rate
            ),
        });
        if hosts == 2 {
            let spread = spread_throughput(&cluster, batch).await?;
            rows.push(Row {
                what: "no-op task through a cluster: 2 hosts x 2 workers, 4 tenants x 4 priorities (16 queues)".into(),
                value: format!("{spread:.0} tasks/s"),
                baseline: format!("one tenant, one priority (one queue): {rate:.0}/s"),
                ratio: format!("{:+.1}%", (spread / rate - 1.0) * 100.0),
            });
            let secs = heavy_batch(&exec, args.heavy_n).await?;
            rows.push(Row {
                what: format!(
                    "heavy seed task x8 (n = {}) through a cluster: 2 hosts x 2 workers",
                    args.heavy_n
                ),
                value: format!("{secs:.3} s"),
                baseline: format!("local, max_processes = 4: {local_heavy:.3} s"),
                ratio: format!("{:.2}x the time", secs / local_heavy),
            });
        }
        exec.shutdown(Duration::from_secs(5)).await;
        cluster.stop();
    }
    Ok(())
}

/// Payloads of `--payload-mib` MiB and four times that echoed through a
/// worker (raw bytes in, raw bytes out, no guest work), fresh process and
/// warm, against copying the bytes in memory once (a memcpy) in the same
/// run. MB/s counts the payload once: the end-to-end rate of a caller that
/// sends N bytes and gets N bytes back.
async fn payload_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    for size in [args.payload_mib << 20, (args.payload_mib * 4) << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut copy = Vec::new();
        for _ in 0..args.runs.max(7) {
            let start = Instant::now();
            let copied = std::hint::black_box(payload.clone());
            copy.push(start.elapsed().as_secs_f64());
            drop(copied);
        }
        let copy = median(copy);
        for warm in [false, true] {
            let mut builder = Executor::builder().max_processes(1).limits(
                Limits::default()
                    .with_max_input_bytes(2 * size as u64)
                    .with_max_output_bytes(2 * size as u64),
            );
            if warm {
                builder = builder.warm(WarmOptions::default());
            }
            let exec = builder.build()?;
            let module = exec.load_bytes(wat::parse_str(ECHO_WAT)?).await?;
            let mut echo = Vec::new();
            for run in 0..args.runs.max(7) + 1 {
                let input = payload.clone();
                let start = Instant::now();
                let output = exec
                    .submit_bytes_with(&module, "echo", input, Default::default())?
                    .await?;
                let took = start.elapsed().as_secs_f64();
                anyhow::ensure!(output == payload, "the echo changed the payload");
                // The first warm run starts the worker.
                if run > 0 || !warm {
                    echo.push(took);
                }
            }
            let echo = median(echo);
            let mb = size as f64 / 1e6;
            rows.push(Row {
                what: format!(
                    "{} MiB echo, {} (raw bytes in and out, no guest work)",
                    size >> 20,
                    if warm { "warm" } else { "fresh process" }
                ),
                value: format!("{:.1} ms, {:.0} MB/s", echo * 1000.0, mb / echo),
                baseline: format!("memcpy: {:.2} ms, {:.0} MB/s", copy * 1000.0, mb / copy),
                ratio: format!("{:.3}x memcpy's rate", copy / echo),
            });
            exec.shutdown(Duration::from_secs(5)).await;
        }
    }
    Ok(())
}

/// The cost of progress and logs: `heavy` against `heavy_reporting` (20
/// progress calls and 2 log records) on the same `n`, through real workers;
/// and a task making 1,000,000 progress calls (coalesced by the worker).
async fn progress_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let exec = executor(1, 0, false)?;
    let module = exec.load(asyncer_tests::HEAVY).await?;
    let faults = exec.load(asyncer_tests::FAULTS).await?;
    let n = args.compute_n;
    let input = heavy::HeavyInput {
        uid: "bench".into(),
        n,
    };
    let (mut plain, mut reporting, mut flood, mut delivered) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let calls = 1_000_000u64;
    for _ in 0..args.runs {
        let start = Instant::now();
        let out: heavy::HeavyOutput = exec.submit(&module, "heavy", &input)?.await?;
        plain.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let reported: heavy::HeavyOutput = exec.submit(&module, "heavy_reporting", &input)?.await?;
        reporting.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(out.result == reported.result, "the two tasks disagree");

        let mut updates = exec.updates();
        let start = Instant::now();
        let handle = exec.submit::<_, u64>(&faults, "progress_flood", &calls)?;
        let uid = handle.uid().to_owned();
        handle.await?;
        flood.push(start.elapsed().as_secs_f64());
        let mut count = 0;
        while let Some(update) = updates.recv().await {
            match update {
                asyncer::TaskUpdate::Progress(p) if p.uid == uid => count += 1,
                asyncer::TaskUpdate::Finished(e) if e.uid == uid => break,
                _ => {}
            }
        }
        delivered.push(count as f64);
    }
    let (plain, reporting) = (median(plain), median(reporting));
    rows.push(Row {
        what: format!("heavy task reporting 20 progress steps and 2 log records, n = {n}"),
        value: format!("{:.1} ms", reporting * 1000.0),
        baseline: format!("the same without reports: {:.1} ms", plain * 1000.0),
        ratio: format!("{:.3}x", reporting / plain),
    });
    let flood = median(flood);
    rows.push(Row {
        what: format!("{calls} progress calls in one task (fresh process)"),
        value: format!(
            "{:.1} ms, {:.0} updates delivered",
            flood * 1000.0,
            median(delivered)
        ),
        baseline: "-".into(),
        ratio: format!("{:.0} ns per call", flood * 1e9 / calls as f64),
    });
    Ok(())
}

/// Lateness (p50, p99, max ms) of a 10 ms ticker on this event loop while
/// `busy` runs.
async fn ticker_lateness<F: std::future::Future<Output = Result<()>>>(
    busy: F,
) -> Result<(f64, f64, f64)> {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ticker = tokio::task::spawn_local(async move {
        let mut late = Vec::new();
        let mut next = Instant::now() + Duration::from_millis(10);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = &mut stop_rx => break,
            }
            late.push(ms(Instant::now().saturating_duration_since(next)));
            next += Duration::from_millis(10);
        }
        late
    });
    busy.await?;
    let _ = stop_tx.send(());
    let mut late = ticker.await?;
    late.sort_by(f64::total_cmp);
    Ok((
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        *late.last().unwrap_or(&0.0),
    ))
}

async fn ticker_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let exec = executor(2, 0, false)?;
    let module = exec.load(asyncer_tests::HEAVY).await?;
    let idle = ticker_lateness(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(())
    })
    .await?;
    let busy = ticker_lateness(async {
        let handles = (0..8)
            .map(|i| {
                let input = heavy::HeavyInput {
                    uid: format!("t{i}"),
                    n: args.heavy_n / 2,
                };
                exec.submit::<_, heavy::HeavyOutput>(&module, "heavy", &input)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for handle in handles {
            handle.await?;
        }
        Ok(())
    })
    .await?;
    rows.push(Row {
        what: "10 ms ticker lateness on the host loop, 2 workers busy on 2 cores".into(),
        value: format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            busy.0, busy.1, busy.2
        ),
        baseline: format!("idle: p99 {:.2} ms", idle.1),
        ratio: format!("+{:.2} ms at p99", busy.1 - idle.1),
    });
    Ok(())
}

async fn memory_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let exec = executor(2, 0, true)?;
    let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
    let mut events = exec.events();
    warm_up(&exec, &module).await?;
    while events.try_recv().is_some() {}
    let before = rss_bytes();
    let mut done = 0;
    while done < args.rss_tasks {
        let batch = (args.rss_tasks - done).min(5000);
        throughput(&exec, &module, batch).await?;
        while events.try_recv().is_some() {}
        done += batch;
    }
    let after = rss_bytes();
    rows.push(Row {
        what: format!(
            "host RSS over {} no-op tasks (warm mode, events read)",
            args.rss_tasks
        ),
        value: format!(
            "{:.1} MB -> {:.1} MB",
            before as f64 / 1e6,
            after as f64 / 1e6
        ),
        baseline: "-".into(),
        ratio: format!("{:+.1} MB", (after as f64 - before as f64) / 1e6),
    });
    exec.shutdown(Duration::from_secs(5)).await;

    let exec = executor(1, 0, false)?;
    let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
    let heavy_module = exec.load(asyncer_tests::HEAVY).await?;
    let mut events = exec.events();
    exec.submit::<_, ()>(&module, "noop", &())?.await?;
    let _: u128 = exec.submit(&heavy_module, "sum_squares", &1000u64)?.await?;
    let noop_rss = events.recv().await.context("event")?.worker_rss_bytes;
    let heavy_rss = events.recv().await.context("event")?.worker_rss_bytes;
    let worker = which_worker()?;
    let worker_size = std::fs::metadata(&worker)?.len();
    let host_size = std::fs::metadata(std::env::current_exe()?)?.len();
    rows.push(Row {
        what: "worker RSS after a task (no-op WAT guest; Rust heavy guest)".into(),
        value: format!(
            "{:.1} MB; {:.1} MB",
            noop_rss as f64 / 1e6,
            heavy_rss as f64 / 1e6
        ),
        baseline: format!("host now: {:.1} MB", rss_bytes() as f64 / 1e6),
        ratio: "-".into(),
    });
    rows.push(Row {
        what: format!("worker binary size ({})", worker.display()),
        value: format!("{:.1} MB", worker_size as f64 / 1e6),
        baseline: format!(
            "this host binary (with cranelift): {:.1} MB",
            host_size as f64 / 1e6
        ),
        ratio: format!("{:.2}x", worker_size as f64 / host_size as f64),
    });
    Ok(())
}

/// The scheduler's cost: warm no-op throughput with every task in one
/// tenant at one level (the plain FIFO case) against tasks spread over 8
/// tenants (one of weight 3, one capped) and 4 priority levels, alternately
/// in the same run; then host memory under a flood of submits at the queue
/// bound.
async fn scheduler_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let tasks = args.throughput_tasks * 10;
    let (mut fifo, mut spread) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        for mixed in [false, true] {
            let mut builder = Executor::builder()
                .max_processes(2)
                .warm(WarmOptions::default())
                .tenant("t0", asyncer::TenantSettings::new().weight(3))
                .tenant("t1", asyncer::TenantSettings::new().max_running(1));
            if !mixed {
                builder = builder.priority_aging(None);
            }
            let exec = builder.build()?;
            let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
            throughput(&exec, &module, 1000).await?;
            let start = Instant::now();
            let handles = (0..tasks)
                .map(|i| {
                    let options = if mixed {
                        asyncer::TaskOptions::new()
                            .tenant(format!("t{}", i % 8))
                            .priority((i % 4) as i32 * 10)
                    } else {
                        asyncer::TaskOptions::new()
                    };
                    exec.submit_with::<_, ()>(&module, "noop", &(), options)
                })
                .collect::<Result<Vec<_>, _>>()?;
            for handle in handles {
                handle.await?;
            }
            let rate = tasks as f64 / start.elapsed().as_secs_f64();
            if mixed {
                spread.push(rate)
            } else {
                fifo.push(rate)
            }
            exec.shutdown(Duration::from_secs(5)).await;
        }
    }
    let (fifo, spread) = (median(fifo), median(spread));
    rows.push(Row {
        what: format!("no-op, warm, {tasks} tasks over 8 tenants and 4 priorities"),
        value: format!("{spread:.0} tasks/s"),
        baseline: format!("one tenant, one level (FIFO): {fifo:.0} tasks/s"),
        ratio: format!("{:+.1}%", (spread / fifo - 1.0) * 100.0),
    });

    // A flood at the bound: submit, and wait for room when refused.
    let bound = 1000;
    let flood = 100_000;
    let exec = Executor::builder()
        .max_processes(2)
        .warm(WarmOptions::default())
        .max_queued(bound)
        .build()?;
    let module = exec.load_bytes(wat::parse_str(NOOP_WAT)?).await?;
    let mut events = exec.events();
    warm_up(&exec, &module).await?;
    while events.try_recv().is_some() {}
    let before = rss_bytes();
    let (mut refused, mut peak) = (0u64, before);
    let start = Instant::now();
    for i in 0..flood {
        loop {
            match exec.submit::<_, ()>(&module, "noop", &()) {
                // Detached: the task runs, its event comes.
                Ok(handle) => {
                    drop(handle);
                    break;
                }
                Err(asyncer::Error::QueueFull { .. }) => {
                    refused += 1;
                    exec.room(None).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if i % 10_000 == 0 {
            while events.try_recv().is_some() {}
            peak = peak.max(rss_bytes());
        }
    }
    while exec.queued(None).0 > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while events.try_recv().is_some() {}
    let after = rss_bytes();
    rows.push(Row {
        what: format!(
            "host RSS under a flood of {flood} submits at a queue bound of {bound} (warm)"
        ),
        value: format!(
            "{:.1} MB -> peak {:.1} MB -> {:.1} MB; {refused} refusals waited out",
            before as f64 / 1e6,
            peak as f64 / 1e6,
            after as f64 / 1e6
        ),
        baseline: format!(
            "{:.0} submits/s",
            flood as f64 / start.elapsed().as_secs_f64()
        ),
        ratio: format!("{:+.1} MB", (after as f64 - before as f64) / 1e6),
    });
    exec.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// The worker measured: its path, size and whether a compiler is in it
/// (the lean one is what `cargo install asyncer-worker` gives users).
fn worker_summary() -> String {
    let Ok(worker) = which_worker() else {
        return "not found".into();
    };
    let size = std::fs::metadata(&worker).map_or(0, |m| m.len());
    let compiler = std::process::Command::new(&worker)
        .arg("--build-info")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8(out.stdout)
                .ok()?
                .lines()
                .find_map(|line| line.strip_prefix("compiler: ").map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{} ({:.1} MB, compiler: {compiler})",
        worker.display(),
        size as f64 / 1e6
    )
}

/// `asyncer run` of a small task, whole command, with the compile cache
/// empty (a compile) and filled by an earlier run (none), for each guest.
fn cli_rows(args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let cli = std::env::current_exe()?.with_file_name("asyncer");
    let worker = which_worker()?;
    let run = |module: &str, task: &str, input: &str, cache: &Path| -> Result<f64> {
        let start = Instant::now();
        let status = std::process::Command::new(&cli)
            .args(["run", module, task, "--input-hex", input, "--cache-dir"])
            .arg(cache)
            .env("ASYNCER_WORKER", &worker)
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", cli.display()))?;
        anyhow::ensure!(status.success(), "asyncer run {module} {task}: {status}");
        Ok(ms(start.elapsed()))
    };
    for (module, task, input) in [
        (asyncer_tests::HEAVY, "sum_squares", "0a"),
        (asyncer_tests::DIGEST, "sha256", "00"),
    ] {
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let dir = tempfile::tempdir()?;
            cold.push(run(module, task, input, &dir.path().join("cache"))?);
            warm.push(run(module, task, input, &dir.path().join("cache"))?);
        }
        let (cold, warm) = (median(cold), median(warm));
        let name = Path::new(module)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let size = std::fs::metadata(module)?.len();
        rows.push(Row {
            what: format!("`asyncer run` {name} ({} KiB), cache filled", size >> 10),
            value: format!("{warm:.1} ms"),
            baseline: format!("{cold:.1} ms (empty cache: compiles)"),
            ratio: format!("{:.2}x", warm / cold),
        });
    }
    Ok(())
}

fn which_worker() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name(asyncer::WORKER_PROGRAM))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(which) = &args.profile_compute {
        let n = std::hint::black_box(args.compute_n);
        let result = if which == "native" {
            heavy::sum_of_squares(n)
        } else {
            let exec = executor(1, 0, false)?;
            let module = exec.load(asyncer_tests::HEAVY).await?;
            exec.run_in_process(&module, "sum_squares", &n).await?
        };
        println!("{which}: {result}");
        return Ok(());
    }
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let mut rows = Vec::new();
            if args.wants("noop") {
                eprintln!("no-op latency and throughput...");
                noop_rows(&args, &mut rows).await?;
            }
            if args.wants("sandbox") {
                eprintln!("the worker's own sandbox, on and off...");
                sandbox_rows(&args, &mut rows).await?;
            }
            if args.wants("heavy") {
                eprintln!("heavy tasks...");
                heavy_rows(&args, &mut rows).await?;
            }
            if args.wants("compute") {
                eprintln!("guest compute...");
                compute_rows(&args, &mut rows).await?;
            }
            if args.wants("progress") {
                eprintln!("progress and logs...");
                progress_rows(&args, &mut rows).await?;
            }
            if args.wants("payload") {
                eprintln!("payload...");
                payload_rows(&args, &mut rows).await?;
            }
            if args.wants("cluster") {
                eprintln!("cluster...");
                cluster_rows(&args, &mut rows).await?;
            }
            if args.wants("ticker") {
                eprintln!("event-loop responsiveness...");
                ticker_rows(&args, &mut rows).await?;
            }
            if args.wants("memory") {
                eprintln!("memory...");
                memory_rows(&args, &mut rows).await?;
            }
            if args.wants("warm") {
                eprintln!("warm mode...");
                warm_rows(&args, &mut rows).await?;
            }
            if args.wants("scheduler") {
                eprintln!("the scheduler...");
                scheduler_rows(&args, &mut rows).await?;
            }
            if args.wants("cli") {
                eprintln!("the CLI's compile cache...");
                cli_rows(&args, &mut rows)?;
            }
            println!(
                "machine: {} cores, {}; medians of {} runs; worker: {}",
                std::thread::available_parallelism().map_or(0, usize::from),
                std::env::consts::ARCH,
                args.runs,
                worker_summary()
            );
            println!("| measure | value | baseline (same run) | ratio |");
            println!("|---|---|---|---|");
            for row in rows {
                println!(
                    "| {} | {} | {} | {} |",
                    row.what, row.value, row.baseline, row.ratio
                );
            }
            anyhow::Ok(())
        })
        .await
}
