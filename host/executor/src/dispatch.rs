//! The dispatch seam: where a task runs.
//!
//! The executor owns every task (its queue entry, handle, progress and
//! completion event); a [`Backend`] only runs them. The runner hands a task
//! to the backend once it has a slot, as an [`Assignment`] plus a
//! [`RunContext`], and the backend answers with one [`Run`]. The embedded
//! default is the local worker pool (a process per task, spawned ahead, or
//! warm); a cluster backend plugs in behind the same trait, so the executor
//! never forks on where tasks run.
//!
//! # The contract
//!
//! A backend **receives**, for each task:
//! - an [`Assignment`]: the uid, the task name, the [`Module`] (its hash and
//!   bytes, so a remote backend can ship it), the postcard input bytes
//!   (moved, never copied by the executor), and the task's resolved
//!   [`Limits`] and [`Capabilities`];
//! - a [`RunContext`]: where to send the guest's progress and log records
//!   while it runs ([`RunContext::report`]), and the task's cancellation
//!   token ([`RunContext::cancelled`]).
//!
//! It **sends back**, exactly once, a [`Run`]:
//! - the outcome: the raw output bytes (the postcard `Output`, without the
//!   envelope byte) or a typed [`Error`];
//! - a [`RunReport`]: when the task started, the worker's pid and exit
//!   status, fuel, peak memory, worker RSS, the guest's captured stdout and
//!   stderr and how much of them and of its log records was dropped;
//! - optionally a [`Run::cleanup`] future: work left once the outcome is
//!   known (reaping a worker process). The owner delivers the outcome to the
//!   caller first, then awaits the cleanup while still holding the task's
//!   slot, and takes the exit status it returns into the event.
//!
//! Every [`RunContext::report`] call made before the run's future completes
//! reaches the subscribers before the task's completion event.
//!
//! **Cancellation**: when the task is cancelled (by its handle) or the
//! executor stops it (`shutdown` after its grace, or `abort`), the context's
//! token is cancelled. The backend must then stop the task promptly (kill
//! its worker, withdraw it from a remote queue), release what it holds, and
//! complete with the outcome `Err(Error::Cancelled)`; the owner reports it as
//! [`Error::Cancelled`] or [`Error::ShutDown`], whichever caused it. A
//! backend that had the real outcome before it saw the token may return that
//! instead: the first outcome known wins.
//!
//! **Shutdown**: once every task has finished, the executor calls
//! [`Backend::close`] once; the backend releases idle resources (idle worker
//! processes are told to exit and reaped) before the returned future
//! completes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use asyncer_protocol::GuestMessage;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::{Capabilities, Error, Limits, Module};

/// A boxed future, as the dyn-compatible [`Backend`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs tasks somewhere: the seam between the executor and where tasks run.
/// See the [module documentation](self) for the contract.
///
/// # Examples
/// A backend that answers every task with its input (a test double):
/// ```
/// use asyncer::dispatch::{Assignment, Backend, BoxFuture, Run, RunContext};
/// use std::time::SystemTime;
///
/// struct Echo;
///
/// impl Backend for Echo {
///     fn run(&self, task: Assignment, context: RunContext) -> BoxFuture<'static, Run> {
///         Box::pin(async move {
///             let started = SystemTime::now();
///             if context.is_cancelled() {
///                 return Run::new(Err(asyncer::Error::Cancelled), started);
///             }
///             Run::new(Ok(task.input), started)
///         })
///     }
///
///     fn close(&self) -> BoxFuture<'_, ()> {
///         Box::pin(async {})
///     }
/// }
/// # let _ = Echo;
/// ```
pub trait Backend: Send + Sync + 'static {
    /// Runs one task to its end; see the [module documentation](self).
    fn run(&self, task: Assignment, context: RunContext) -> BoxFuture<'static, Run>;

    /// Releases idle resources; called once, after every task finished.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// One task, as the executor hands it to a [`Backend`].
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The task's uid (caller-given or a fresh uuid v4).
    pub uid: String,
    /// The task name (the module exports `task:NAME`; checked at submit).
    pub task: String,
    /// The module, validated and precompiled at load.
    pub module: Module,
    /// The postcard-encoded input.
    pub input: Vec<u8>,
    /// The task's limits (task > module > executor already resolved).
    pub limits: Limits,
    /// The task's capabilities (resolved like the limits).
    pub capabilities: Capabilities,
    /// Set for a WASI command: run `_start` with these arguments (`argv`,
    /// program name first) and `input` as standard input; the output is
    /// then a postcard [`CommandOutput`](crate::CommandOutput).
    pub command: Option<asyncer_protocol::CommandLine>,
    /// The tenant the task runs for (`""`: the default tenant).
    pub tenant: String,
    /// Its priority: higher runs first (0 by default).
    pub priority: i32,
    /// When it must have started by, if ever.
    pub start_by: Option<std::time::SystemTime>,
    /// Whether and how it runs again after a failure (the executor does
    /// that; a backend runs each attempt as a task of its own).
    pub retry: Option<crate::RetryPolicy>,
}

/// What a [`Backend`] gets besides the task: where the guest's reports go,
/// and the task's cancellation.
#[derive(Debug, Clone)]
pub struct RunContext {
    reports: mpsc::UnboundedSender<GuestMessage>,
    cancel: CancellationToken,
}

impl RunContext {
    pub(crate) fn new(
        reports: mpsc::UnboundedSender<GuestMessage>,
        cancel: CancellationToken,
    ) -> Self {
        RunContext { reports, cancel }
    }

    /// Hands a progress or log record of the running guest to the task's
    /// owner (its watchers, the update subscribers and `tracing`).
    pub fn report(&self, message: GuestMessage) {
        // The owner outlives the run; a send can only fail after it is gone.
        let _ = self.reports.send(message);
    }

    /// Completes when the task must stop (cancelled or shut down).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Whether the task must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// What a [`Backend`] sends back for one task.
#[non_exhaustive]
pub struct Run {
    /// The raw output bytes, or what went wrong.
    pub outcome: Result<Vec<u8>, Error>,
    /// How it ran.
    pub report: RunReport,
    /// Work left once the outcome is known (reaping the worker); its value
    /// is the worker's exit status. Awaited after the outcome is delivered.
    pub cleanup: Option<BoxFuture<'static, Option<String>>>,
}

impl Run {
    /// A run with this outcome, started at `started_at`, with nothing else
    /// known yet.
    pub fn new(outcome: Result<Vec<u8>, Error>, started_at: SystemTime) -> Self {
        Run {
            outcome,
            report: RunReport::new(started_at),
            cleanup: None,
        }
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("outcome", &self.outcome.as_ref().map(Vec::len))
            .field("report", &self.report)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

/// How a task ran: the figures its completion event carries.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// When it got its worker (`None`: it never started).
    pub started_at: Option<SystemTime>,
    /// The worker's process id, if one was started.
    pub pid: Option<u32>,
    /// How the worker ended, if known yet.
    pub exit_status: Option<String>,
    /// Fuel consumed, when metered.
    pub fuel_consumed: Option<u64>,
    /// Largest linear memory size reached, in bytes.
    pub peak_memory_bytes: u64,
    /// The worker's resident set size after the task, in bytes.
    pub worker_rss_bytes: u64,
    /// What the guest wrote to stdout (up to its limit).
    pub stdout: Vec<u8>,
    /// What the guest wrote to stderr (up to its limit).
    pub stderr: Vec<u8>,
    /// Bytes of stdout dropped past the limit.
    pub stdout_dropped: u64,
    /// Bytes of stderr dropped past the limit.
    pub stderr_dropped: u64,
    /// Bytes of log records dropped past the limit.
    pub log_dropped: u64,
    /// The machine that ran the task, when it ran elsewhere (a cluster's
    /// worker host).
    pub host: Option<String>,
    /// Which delivery of the task this was (1 locally; more than 1 when a
    /// cluster retried it after a host died).
    pub attempt: u32,
}

impl RunReport {
    /// A report of a run started at `started_at`, with nothing else known.
    pub fn new(started_at: SystemTime) -> Self {
        RunReport {
            started_at: Some(started_at),
            attempt: 1,
            ..RunReport::default()
        }
    }
}
