//! Finding the worker program and running one task in a fresh worker process.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use asyncer_protocol::{decode_frame, encode_frame, Reply, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;

use crate::Error;

/// The worker program's file name.
pub const WORKER_PROGRAM: &str = "asyncer-worker";
/// Environment variable naming the worker program, checked second.
pub const WORKER_ENV: &str = "ASYNCER_WORKER";

/// How much of a worker's own stderr is kept for crash reports.
const STDERR_TAIL_BYTES: usize = 4096;
/// How long the host waits past the task's timeout before killing the worker
/// (the worker's own deadline should have answered first).
const KILL_GRACE: Duration = Duration::from_millis(500);

/// Finds the worker program: `explicit`, then `$ASYNCER_WORKER`, then next to
/// the current executable (and in its parent directory, for test and example
/// binaries under `target/*/deps` and `target/*/examples`), then `$PATH`.
pub(crate) fn locate_worker(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let mut searched = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = explicit {
        candidates.push(path.to_owned());
    } else if let Some(path) = std::env::var_os(WORKER_ENV).filter(|p| !p.is_empty()) {
        candidates.push(path.into());
    } else {
        let exe_name = format!("{WORKER_PROGRAM}{}", std::env::consts::EXE_SUFFIX);
        if let Ok(exe) = std::env::current_exe() {
            let mut dir = exe.parent();
            for _ in 0..2 {
                if let Some(d) = dir {
                    candidates.push(d.join(&exe_name));
                    dir = d.parent();
                }
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&paths).map(|d| d.join(&exe_name)));
        }
    }
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
        searched.push(candidate.display().to_string());
    }
    Err(Error::SpawnFailed {
        message: format!(
            "cannot find the `{WORKER_PROGRAM}` program (searched: {}); build it with \
             `cargo build -p asyncer-worker` next to your binary, install it with \
             `cargo install asyncer-worker`, or name it with ${WORKER_ENV} or \
             `Executor::builder().worker_program(path)`",
            searched.join(", ")
        ),
    })
}

/// What became of one worker process.
pub(crate) struct WorkerRun {
    pub(crate) pid: Option<u32>,
    pub(crate) exit_status: Option<String>,
    pub(crate) started_at: std::time::SystemTime,
    pub(crate) reply: Result<Reply, Error>,
}

/// Starts a worker, sends `request`, and waits for its reply and its exit.
/// The child is always reaped before this returns.
pub(crate) async fn run_in_worker(
    program: &Path,
    work_dir: &Path,
    request: &Request,
    host_timeout: Option<Duration>,
    mut stop: watch::Receiver<Option<Error>>,
) -> WorkerRun {
    let started_at = std::time::SystemTime::now();
    let mut run = WorkerRun {
        pid: None,
        exit_status: None,
        started_at,
        reply: Err(Error::Cancelled),
    };
    let frame = match encode_frame(request) {
        Ok(frame) => frame,
        Err(e) => {
            run.reply = Err(Error::Decode {
                message: format!("cannot encode the request: {e}"),
            });
            return run;
        }
    };
    let mut child = match Command::new(program)
        .arg("--parent-pid")
        .arg(OsString::from(std::process::id().to_string()))
        .env_clear()
        .current_dir(work_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            run.reply = Err(Error::SpawnFailed {
                message: format!("cannot start {}: {e}", program.display()),
            });
            return run;
        }
    };
    let pid = child.id().unwrap_or(0);
    run.pid = Some(pid);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let max_reply = request.limits.max_output_bytes + 2 * request.limits.max_log_bytes + (1 << 16);

    let exchange = async {
        // The worker reads its whole request before writing anything, and a
        // write error only means it died early: its exit status tells why.
        let write = async {
            let _ = stdin.write_all(&frame).await;
            drop(stdin);
        };
        let (_, out, err) = tokio::join!(
            write,
            read_bounded(stdout, max_reply),
            read_tail(stderr, STDERR_TAIL_BYTES)
        );
        (out, err)
    };
    let timed = async {
        match host_timeout {
            Some(timeout) => tokio::time::timeout(timeout + KILL_GRACE, exchange)
                .await
                .map_err(|_| Error::Timeout { timeout }),
            None => Ok(exchange.await),
        }
    };
    let stopped = async {
        let reason = stop.wait_for(Option::is_some).await.map(|r| r.clone());
        match reason {
            Ok(reason) => reason.unwrap_or(Error::Cancelled),
            // The job went away: nobody can stop it any more.
            Err(_) => std::future::pending().await,
        }
    };
    let exchanged = tokio::select! {
        exchanged = timed => exchanged,
        reason = stopped => Err(reason),
    };
    let (out, err_tail) = match exchanged {
        Ok(result) => result,
        Err(error) => {
            let _ = child.start_kill();
            let status = child.wait().await;
            run.exit_status = status.ok().map(describe);
            run.reply = Err(error);
            return run;
        }
    };
    let status = match out {
        // A reply larger than allowed: stop the worker rather than read on.
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await
        }
        Ok(_) => child.wait().await,
    };
    run.exit_status = status.as_ref().ok().map(|s| describe(*s));
    let crashed = |why: &str| Error::WorkerCrashed {
        pid,
        status: match &status {
            Ok(s) => format!("{}; {why}", describe(*s)),
            Err(e) => format!("wait failed: {e}; {why}"),
        },
        stderr_tail: String::from_utf8_lossy(&err_tail).into_owned(),
    };
    run.reply = match out {
        Err(too_much) => Err(Error::OutputTooLarge {
            message: format!("worker reply exceeds {too_much} bytes"),
        }),
        Ok(bytes) if bytes.is_empty() => Err(crashed("no reply")),
        Ok(bytes) => match decode_frame::<Reply>(&bytes) {
            Ok(reply) if status.as_ref().is_ok_and(ExitStatus::success) => Ok(reply),
            Ok(_) => Err(crashed("replied, then failed")),
            Err(e) => Err(crashed(&format!("unreadable reply: {e}"))),
        },
    };
    run
}

/// Reads everything, failing with the limit once more than `max` bytes come.
async fn read_bounded(reader: impl AsyncRead + Unpin, max: u64) -> Result<Vec<u8>, u64> {
    let mut buf = Vec::new();
    let read = reader.take(max + 1).read_to_end(&mut buf).await;
    if buf.len() as u64 > max {
        return Err(max);
    }
    let _ = read;
    Ok(buf)
}

/// Reads to the end, keeping only the last `keep` bytes.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

/// `"exit code 3"` or `"signal 9 (SIGKILL)"`.
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                _ => "",
            };
            return format!("signal {signal}{name}");
        }
    }
    status.to_string()
}
