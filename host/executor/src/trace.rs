//! What goes to `tracing`: every line carries the task's uid.

use asyncer_protocol::{LogLevel, LogRecord, Progress};

use crate::dispatch::RunReport;
use crate::Error;

/// A guest's progress, at debug level.
pub(crate) fn guest_progress(uid: &str, task: &str, progress: &Progress) {
    tracing::debug!(
        uid = %uid,
        task = %task,
        done = progress.done,
        total = progress.total,
        "task progress: {}",
        progress.message
    );
}

/// A guest's log record, at its own level, target `asyncer::guest`.
pub(crate) fn guest_record(uid: &str, task: &str, record: &LogRecord) {
    let message = &record.message;
    match record.level {
        LogLevel::Trace => {
            tracing::trace!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Debug => {
            tracing::debug!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Info => {
            tracing::info!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Warn => {
            tracing::warn!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Error => {
            tracing::error!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
    }
}

/// A task's outcome: failures at warn level with their kind.
pub(crate) fn outcome(uid: &str, task: &str, outcome: &Result<Vec<u8>, Error>) {
    match outcome {
        Err(error) => {
            tracing::warn!(uid = %uid, task = %task, kind = %error.kind(), "task failed: {error}")
        }
        Ok(output) => {
            tracing::debug!(uid = %uid, task = %task, bytes_out = output.len(), "task finished")
        }
    }
}

/// What the guest wrote to its stdout and stderr, at info level.
pub(crate) fn guest_output(uid: &str, task: &str, report: &RunReport) {
    for (name, bytes, dropped) in [
        ("stdout", &report.stdout, report.stdout_dropped),
        ("stderr", &report.stderr, report.stderr_dropped),
    ] {
        if !bytes.is_empty() {
            tracing::info!(uid = %uid, task = %task, dropped, "guest {name}: {}", String::from_utf8_lossy(bytes).trim_end());
        }
    }
}
