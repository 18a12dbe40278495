//! Completion events.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::ErrorKind;

/// One task's completion, sent for every task, success or not.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    /// The task's uid (caller-given or a fresh uuid v4).
    pub uid: String,
    /// The task name.
    pub task: String,
    /// Hex SHA-256 of the module.
    pub module_hash: String,
    /// `None` on success, else the error's kind.
    pub error: Option<ErrorKind>,
    /// The error's message, on failure.
    pub message: Option<String>,
    /// The worker's process id, if one was started.
    pub pid: Option<u32>,
    /// How the worker ended: `"exit code 0"`, `"signal 9"`…
    pub exit_status: Option<String>,
    /// When `submit` queued the task.
    pub queued_at: SystemTime,
    /// When it got a slot and its worker was started (`None` if it never ran).
    pub started_at: Option<SystemTime>,
    /// When its worker was reaped and the outcome known.
    pub finished_at: SystemTime,
    /// From the worker's start to its reaping (zero if it never ran).
    pub wall_time: Duration,
    /// Fuel consumed, when metered.
    pub fuel_consumed: Option<u64>,
    /// Largest linear memory size reached, in bytes.
    pub peak_memory_bytes: u64,
    /// The worker process's resident set size after the task, in bytes.
    pub worker_rss_bytes: u64,
    /// Input size in bytes.
    pub bytes_in: usize,
    /// Output size in bytes (0 on failure).
    pub bytes_out: usize,
    /// What the guest wrote to stdout (up to the log limit).
    pub stdout: Vec<u8>,
    /// What the guest wrote to stderr (up to the log limit).
    pub stderr: Vec<u8>,
    /// Bytes of stdout dropped past the log limit.
    pub stdout_dropped: u64,
    /// Bytes of stderr dropped past the log limit.
    pub stderr_dropped: u64,
}

impl TaskEvent {
    /// Whether the task succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// Sets when the task finished, and its wall time from its start.
    pub(crate) fn finished(&mut self, at: SystemTime) {
        self.finished_at = at;
        if let Some(started) = self.started_at {
            self.wall_time = at.duration_since(started).unwrap_or_default();
        }
    }

    /// `"ok"` or the error kind's name.
    pub fn outcome(&self) -> &'static str {
        self.error.map_or("ok", ErrorKind::as_str)
    }
}

/// A subscription to completion events, made by
/// [`Executor::events`](crate::Executor::events).
///
/// It receives every event of tasks finishing after it was made, in
/// completion order. The buffer is unbounded so that no event is ever lost and
/// a slow reader never stalls the executor; drop the stream to stop
/// buffering.
#[derive(Debug)]
pub struct EventStream {
    pub(crate) rx: mpsc::UnboundedReceiver<TaskEvent>,
}

impl EventStream {
    /// Waits for the next event; `None` once the executor is gone and every
    /// buffered event was read.
    ///
    /// # Cancel safety
    /// Cancel safe: an event is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<TaskEvent> {
        self.rx.recv().await
    }

    /// Returns a buffered event, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<TaskEvent> {
        self.rx.try_recv().ok()
    }
}

/// The subscribers of an executor.
#[derive(Default)]
pub(crate) struct Subscribers {
    senders: std::sync::Mutex<Vec<mpsc::UnboundedSender<TaskEvent>>>,
}

impl Subscribers {
    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.senders.lock().expect("subscribers poisoned").push(tx);
        EventStream { rx }
    }

    pub(crate) fn publish(&self, event: &TaskEvent) {
        self.senders
            .lock()
            .expect("subscribers poisoned")
            .retain(|tx| tx.send(event.clone()).is_ok());
    }
}
