//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use asyncer::{Executor, Module, TaskEvent, TaskUpdate, UpdateStream};

/// The worker program built with these tests.
pub const WORKER: &str = env!("CARGO_BIN_EXE_test-worker");

/// An executor with at most `max_processes` workers, using the test worker.
pub fn executor(max_processes: usize) -> Executor {
    Executor::builder()
        .max_processes(max_processes)
        .worker_program(WORKER)
        .build()
        .expect("executor starts")
}

pub async fn faults(exec: &Executor) -> Module {
    exec.load(asyncer_tests::FAULTS)
        .await
        .expect("faults module loads")
}

pub async fn heavy(exec: &Executor) -> Module {
    exec.load(asyncer_tests::HEAVY)
        .await
        .expect("heavy module loads")
}

/// Reads exactly `n` events.
pub async fn collect_events(events: &mut asyncer::EventStream, n: usize) -> Vec<TaskEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let event = tokio::time::timeout(std::time::Duration::from_secs(60), events.recv())
            .await
            .expect("events keep coming")
            .expect("stream stays open");
        out.push(event);
    }
    out
}

/// The largest number of [started, finished] intervals that overlap.
pub fn max_overlap(events: &[TaskEvent]) -> usize {
    let mut points: Vec<(SystemTime, i32)> = Vec::new();
    for event in events {
        let start = event.started_at.expect("task ran");
        points.push((start, 1));
        points.push((event.finished_at, -1));
    }
    // At equal times, count ends before starts: touching intervals do not overlap.
    points.sort();
    let (mut live, mut peak) = (0i32, 0i32);
    for (_, delta) in points {
        live += delta;
        peak = peak.max(live);
    }
    peak as usize
}

/// Live child processes of this test process (Linux: read from /proc).
pub fn children() -> Vec<u32> {
    children_of(std::process::id())
}

/// Live child processes of `me`, zombies included, other than template
/// workers (see [`templates`]): the processes that run tasks.
pub fn children_of(me: u32) -> Vec<u32> {
    every_child_of(me)
        .into_iter()
        .filter(|pid| !is_template(*pid))
        .collect()
}

/// This process's template workers (fresh workers are forked from them).
pub fn templates() -> Vec<u32> {
    every_child_of(std::process::id())
        .into_iter()
        .filter(|pid| is_template(*pid))
        .collect()
}

/// Whether `pid` is a template worker: started with `--template`, and not
/// one of the children forked from it (which share its command line, and
/// name themselves `asyncer-worker` first thing).
pub fn is_template(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let templated = cmdline.split(|b| *b == 0).any(|arg| arg == b"--template");
    templated && process_name(pid).as_deref() != Some("asyncer-worker")
}

/// Sends SIGKILL to `pid` (a process this test started).
pub fn kill(pid: u32) {
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("kill runs");
}

/// Waits, for two seconds at most, until `done`; whether it came.
pub async fn wait_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    done()
}

/// What `pid` holds open: `(fd, what it names)`, by descriptor.
pub fn open_fds(pid: u32) -> Vec<(u32, String)> {
    let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let fd = e.file_name().to_string_lossy().parse().unwrap();
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            (fd, target.display().to_string())
        })
        .collect();
    fds.sort();
    fds
}

/// A process's name (`comm`), if it still exists.
pub fn process_name(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    Some(stat.get(open + 1..close)?.to_string())
}

/// Live child processes of `me`, zombies and templates included.
pub fn every_child_of(me: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let _state = fields.next();
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            if std::env::var_os("DEBUG_CHILDREN").is_some() {
                eprintln!("child {pid}: {stat}");
            }
            out.push(pid);
        }
    }
    out
}

/// Waits up to a few seconds for this process to have no children left
/// (neither running nor zombie), and says which remain otherwise.
/// A template lives as long as its executor; see [`templates`].
pub async fn assert_no_children_left() {
    for _ in 0..100 {
        if children().is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("child processes left behind: {:?}", children());
}

/// Reads updates until every task in `uids` has finished; returns each
/// one's updates (the finishing one last), ignoring other tasks.
pub async fn updates_of_all(
    updates: &mut UpdateStream,
    uids: &[&str],
) -> HashMap<String, Vec<TaskUpdate>> {
    let mut out: HashMap<String, Vec<TaskUpdate>> = HashMap::new();
    let mut finished = 0;
    while finished < uids.len() {
        let update = tokio::time::timeout(Duration::from_secs(60), updates.recv())
            .await
            .expect("updates keep coming")
            .expect("stream stays open");
        if !uids.contains(&update.uid()) {
            continue;
        }
        finished += usize::from(matches!(update, TaskUpdate::Finished(_)));
        out.entry(update.uid().to_owned()).or_default().push(update);
    }
    out
}

/// [`updates_of_all`] for one task.
pub async fn updates_of(updates: &mut UpdateStream, uid: &str) -> Vec<TaskUpdate> {
    updates_of_all(updates, &[uid])
        .await
        .remove(uid)
        .expect("the task's updates")
}

pub fn progress_of(updates: &[TaskUpdate]) -> Vec<(u64, u64)> {
    updates
        .iter()
        .filter_map(|u| match u {
            TaskUpdate::Progress(p) => Some((p.progress.done, p.progress.total)),
            _ => None,
        })
        .collect()
}

pub fn finished(updates: &[TaskUpdate]) -> &TaskEvent {
    match updates.last() {
        Some(TaskUpdate::Finished(event)) => event,
        other => panic!("the last update is not the completion: {other:?}"),
    }
}

/// The hex SHA-256 of `bytes` (what `Module::hash` shows for module bytes).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The one JSON object a CLI run printed on stdout.
pub fn json_of(output: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let value: serde_json::Value = serde_json::from_str(lines.next().expect("one line of JSON"))
        .unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {text} {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(lines.next().is_none(), "exactly one JSON object: {text}");
    value
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The CLI built with these tests, set to use the test worker and a compile
/// cache of the tests' own (never the user's).
pub fn cli_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_test-cli"));
    command
        .env("ASYNCER_WORKER", WORKER)
        .env("ASYNCER_CACHE_DIR", CLI_CACHE_DIR);
    command
}

/// The compile cache of [`cli_command`].
pub const CLI_CACHE_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/cli-cache");

/// `asyncer run` of the heavy guest's `sum_squares(10)` (output `9d02`,
/// 285 as a postcard varint): the CLI tests' smallest real task.
pub const RUN_SUM_SQUARES_10: [&str; 5] = [
    "run",
    asyncer_tests::HEAVY,
    "sum_squares",
    "--input-hex",
    "0a",
];
