//! Completion events, and the update stream that adds the guests' progress
//! and log records to them.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use asyncer_protocol::{LogLevel, Progress};
use tokio::sync::mpsc;

use crate::dispatch::RunReport;
use crate::owner::TaskMeta;
use crate::ErrorKind;

/// One task's completion, sent for every task, success or not.
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// let mut events = exec.events();
/// let _ = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
/// let event = events.recv().await.expect("one event per task");
/// println!(
///     "{} {} pid {:?}, {:?} from start to reaping, peak memory {} bytes",
///     event.uid, event.outcome(), event.pid, event.wall_time, event.peak_memory_bytes
/// );
/// # Ok(())
/// # }
/// ```
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
    /// Bytes of the guest's log records dropped past the log limit.
    pub log_dropped: u64,
    /// The worker host that ran it, in cluster mode (`None` locally).
    pub host: Option<String>,
    /// Which delivery it was: 1, or more when a cluster retried it after a
    /// host died (0 if it never ran).
    pub attempt: u32,
    /// The tenant it ran for (`""`: the default tenant).
    pub tenant: String,
    /// Its priority.
    pub priority: i32,
}

impl TaskEvent {
    /// Whether the task succeeded.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let mut events = exec.events();
    /// let _ = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
    /// let event = events.recv().await.expect("an event");
    /// if !event.is_ok() {
    ///     eprintln!("{} failed: {}", event.uid, event.message.unwrap_or_default());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// The event of a task: who it is, how it ended (`error`: its kind and
    /// message), and the complete record of its run.
    pub(crate) fn new(
        meta: TaskMeta,
        error: Option<(ErrorKind, String)>,
        bytes_out: usize,
        report: RunReport,
        finished_at: SystemTime,
    ) -> Self {
        let TaskMeta {
            uid,
            task,
            module_hash,
            queued_at,
            bytes_in,
            tenant,
            priority,
        } = meta;
        let RunReport {
            started_at,
            pid,
            exit_status,
            fuel_consumed,
            peak_memory_bytes,
            worker_rss_bytes,
            stdout,
            stderr,
            stdout_dropped,
            stderr_dropped,
            log_dropped,
            host,
            attempt,
        } = report;
        let (error, message) =
            error.map_or((None, None), |(kind, message)| (Some(kind), Some(message)));
        TaskEvent {
            uid,
            task,
            module_hash,
            error,
            message,
            pid,
            exit_status,
            queued_at,
            started_at,
            finished_at,
            wall_time: started_at
                .and_then(|started| finished_at.duration_since(started).ok())
                .unwrap_or_default(),
            fuel_consumed,
            peak_memory_bytes,
            worker_rss_bytes,
            bytes_in,
            bytes_out,
            stdout,
            stderr,
            stdout_dropped,
            stderr_dropped,
            log_dropped,
            host,
            attempt,
            tenant,
            priority,
        }
    }

    /// How long the task waited in the queue: until it started, or until it
    /// ended without starting (cancelled, expired, shut down).
    pub fn queue_wait(&self) -> Duration {
        self.started_at
            .unwrap_or(self.finished_at)
            .duration_since(self.queued_at)
            .unwrap_or_default()
    }

    /// `"ok"` or the error kind's name.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let mut events = exec.events();
    /// let _ = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
    /// let event = events.recv().await.expect("an event");
    /// println!("{} {}", event.uid, event.outcome()); // "ok", "timeout", …
    /// # Ok(())
    /// # }
    /// ```
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
/// buffering. It is also a [`Stream`](futures_core::Stream), for
/// `tokio_stream::StreamExt` or `futures::StreamExt`.
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// let mut events = exec.events();
/// let handle = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
/// drop(handle); // detached: its event still comes
/// let event = events.recv().await.expect("the executor is alive");
/// assert!(event.is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<TaskEvent>,
}

impl EventStream {
    /// Waits for the next event; `None` once the executor is gone and every
    /// buffered event was read.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let mut events = exec.events();
    /// let handles: Vec<_> = (0..4u64)
    ///     .map(|i| exec.submit::<_, u64>(&module, "add", &(i, i)))
    ///     .collect::<Result<_, _>>()?;
    /// for _ in 0..handles.len() {
    ///     let event = events.recv().await.expect("the executor is alive");
    ///     println!("{} finished: {}", event.uid, event.outcome());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: an event is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<TaskEvent> {
        self.rx.recv().await
    }

    /// Returns a buffered event, if any, without waiting.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let mut events = exec.events();
    /// while let Some(event) = events.try_recv() {
    ///     println!("{}", event.uid);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_recv(&mut self) -> Option<TaskEvent> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for EventStream {
    type Item = TaskEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// A running task's progress, as its guest reported it with
/// `asyncer_guest::progress`.
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// use asyncer::TaskUpdate;
/// let mut updates = exec.updates();
/// let _ = exec.submit::<_, u64>(&module, "count", &1_000u64)?;
/// while let Some(update) = updates.recv().await {
///     match update {
///         TaskUpdate::Progress(event) => {
///             let percent = 100.0 * event.progress.fraction().unwrap_or(0.0);
///             println!("{} {percent:.0}% {}", event.uid, event.progress.message);
///         }
///         TaskUpdate::Finished(_) => break,
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    /// The task's uid.
    pub uid: String,
    /// The task name.
    pub task: String,
    /// How far it has come.
    pub progress: Progress,
    /// When the host received it.
    pub at: SystemTime,
}

/// One log record of a running task, made by the guest with
/// `asyncer_guest::info!` and its siblings. It also goes to `tracing` (target
/// `asyncer::guest`, with the task's uid).
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// use asyncer::{LogLevel, TaskUpdate};
/// let mut updates = exec.updates();
/// let _ = exec.submit::<_, u64>(&module, "count", &1_000u64)?;
/// while let Some(update) = updates.recv().await {
///     match update {
///         TaskUpdate::Log(log) if log.level >= LogLevel::Warn => {
///             eprintln!("{} [{}] {}", log.uid, log.level, log.message);
///         }
///         TaskUpdate::Finished(_) => break,
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// The task's uid.
    pub uid: String,
    /// The task name.
    pub task: String,
    /// The record's level.
    pub level: LogLevel,
    /// The formatted message.
    pub message: String,
    /// When the host received it.
    pub at: SystemTime,
}

/// What an [`UpdateStream`] carries: a task's progress and log records while
/// it runs, then its completion. For one task they come in the order the
/// guest made them, and [`TaskUpdate::Finished`] is its last.
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// use asyncer::TaskUpdate;
/// let mut updates = exec.updates();
/// let _ = exec.submit::<_, u64>(&module, "count", &1_000u64)?;
/// while let Some(update) = updates.recv().await {
///     match update {
///         TaskUpdate::Progress(p) => println!("{}/{}", p.progress.done, p.progress.total),
///         TaskUpdate::Log(log) => println!("[{}] {}", log.level, log.message),
///         TaskUpdate::Finished(done) => {
///             println!("{}", done.outcome());
///             break;
///         }
///         _ => {} // the enum is non-exhaustive
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskUpdate {
    /// The guest reported progress.
    Progress(ProgressEvent),
    /// The guest logged a record.
    Log(LogEvent),
    /// The task is over: the same event as on an [`EventStream`] (boxed: it
    /// is much larger than the others).
    Finished(Box<TaskEvent>),
}

impl TaskUpdate {
    /// The uid of the task it is about.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let mut updates = exec.updates();
    /// let handle = exec.submit::<_, u64>(&module, "count", &10u64)?;
    /// while let Some(update) = updates.recv().await {
    ///     if update.uid() == handle.uid() {
    ///         println!("{update:?}");
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn uid(&self) -> &str {
        match self {
            TaskUpdate::Progress(event) => &event.uid,
            TaskUpdate::Log(event) => &event.uid,
            TaskUpdate::Finished(event) => &event.uid,
        }
    }
}

/// A subscription to every task's progress, logs and completion, made by
/// [`Executor::updates`](crate::Executor::updates).
///
/// Unbounded like [`EventStream`] (and a [`Stream`](futures_core::Stream)
/// like it), so nothing is lost and a slow reader never stalls the executor;
/// what a guest can send is bounded by the worker (one progress message per
/// 10 ms at most, log records within the task's `max_log_bytes`).
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// let mut updates = exec.updates();
/// let handle = exec.submit::<_, u64>(&module, "count", &1_000u64)?;
/// let uid = handle.uid().to_owned();
/// while let Some(update) = updates.recv().await {
///     if update.uid() == uid && matches!(update, asyncer::TaskUpdate::Finished(_)) {
///         break;
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct UpdateStream {
    rx: mpsc::UnboundedReceiver<TaskUpdate>,
}

impl UpdateStream {
    /// Waits for the next update; `None` once the executor is gone and every
    /// buffered update was read.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// use asyncer::TaskUpdate;
    /// let mut updates = exec.updates();
    /// let _ = exec.submit::<_, u64>(&module, "count", &10u64)?;
    /// while let Some(update) = updates.recv().await {
    ///     if let TaskUpdate::Finished(event) = update {
    ///         println!("{}: {}", event.uid, event.outcome());
    ///         break;
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: an update is never lost by dropping this future.
    pub async fn recv(&mut self) -> Option<TaskUpdate> {
        self.rx.recv().await
    }

    /// Returns a buffered update, if any, without waiting.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let mut updates = exec.updates();
    /// while let Some(update) = updates.try_recv() {
    ///     println!("{}", update.uid());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_recv(&mut self) -> Option<TaskUpdate> {
        self.rx.try_recv().ok()
    }
}

impl futures_core::Stream for UpdateStream {
    type Item = TaskUpdate;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskUpdate>> {
        self.rx.poll_recv(cx)
    }
}

/// The subscribers of an executor.
#[derive(Default)]
pub(crate) struct Subscribers {
    senders: std::sync::Mutex<Vec<mpsc::UnboundedSender<TaskEvent>>>,
    updates: std::sync::Mutex<Vec<mpsc::UnboundedSender<TaskUpdate>>>,
}

impl Subscribers {
    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.senders.lock().expect("subscribers poisoned").push(tx);
        EventStream { rx }
    }

    pub(crate) fn subscribe_updates(&self) -> UpdateStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.updates.lock().expect("subscribers poisoned").push(tx);
        UpdateStream { rx }
    }

    /// Publishes a completion to both kinds of subscriber.
    pub(crate) fn publish(&self, event: &TaskEvent) {
        self.senders
            .lock()
            .expect("subscribers poisoned")
            .retain(|tx| tx.send(event.clone()).is_ok());
        self.publish_update(|| TaskUpdate::Finished(Box::new(event.clone())));
    }

    /// Publishes a progress or log update, made only if someone listens.
    pub(crate) fn publish_update(&self, update: impl Fn() -> TaskUpdate) {
        self.updates
            .lock()
            .expect("subscribers poisoned")
            .retain(|tx| tx.send(update()).is_ok());
    }
}
