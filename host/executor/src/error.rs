//! The typed error of every fallible asyncer operation.

use std::path::PathBuf;
use std::time::Duration;

pub use asyncer_protocol::ErrorKind;
use asyncer_protocol::Failure;

/// Everything that can go wrong loading a module or running a task.
///
/// Match on the variant, or on [`Error::kind`] for the stable name used by the
/// CLI's JSON output.
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// use asyncer::Error;
/// match exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?.await {
///     Ok(sum) => println!("{sum}"),
///     Err(Error::Timeout { timeout }) => println!("gave up after {timeout:?}"),
///     Err(Error::Guest { message }) => println!("the task said no: {message}"),
///     Err(e) if e.is_guest_failure() => println!("the task failed: {e}"),
///     Err(e) => println!("{}: {e}", e.kind()),
/// }
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The module file could not be read.
    #[error("module not found at {}: {message}", path.display())]
    ModuleNotFound {
        /// The path given to [`Executor::load`](crate::Executor::load).
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The bytes are not a valid wasm module, or the module breaks the guest ABI.
    #[error("invalid module: {message}")]
    InvalidModule {
        /// What is wrong with it.
        message: String,
    },
    /// The module exports no `task:NAME` for this name.
    #[error("module has no task `{task}` (it has: {})", available.join(", "))]
    NoSuchTask {
        /// The name asked for.
        task: String,
        /// The tasks the module does export.
        available: Vec<String>,
    },
    /// Input or output bytes did not decode (or encode) as the expected type.
    #[error("decode failed: {message}")]
    Decode {
        /// Detail from the decoder.
        message: String,
    },
    /// The guest returned `Err(message)`.
    #[error("guest returned an error: {message}")]
    Guest {
        /// The guest's error, as its `Display`.
        message: String,
    },
    /// The guest panicked.
    #[error("guest panicked: {message}")]
    GuestPanic {
        /// The panic message.
        message: String,
    },
    /// The guest trapped (out-of-bounds access, `unreachable`, stack overflow…).
    #[error("guest trapped: {message}")]
    Trap {
        /// wasmtime's trap code, e.g. `UnreachableCodeReached`.
        code: Option<String>,
        /// The trap's description.
        message: String,
        /// The wasm backtrace, when one was captured.
        backtrace: Option<String>,
    },
    /// The task did not finish within its timeout.
    #[error("task timed out after {timeout:?}")]
    Timeout {
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The task used up its fuel budget.
    #[error("task ran out of fuel: {message}")]
    OutOfFuel {
        /// Detail.
        message: String,
    },
    /// The guest tried to grow its linear memory past the limit.
    #[error("memory limit exceeded: {message}")]
    MemoryLimit {
        /// Detail.
        message: String,
    },
    /// The input or output is larger than its limit.
    #[error("too large: {message}")]
    OutputTooLarge {
        /// Detail.
        message: String,
    },
    /// The worker process ended without a valid reply.
    #[error("worker process {pid} crashed ({status}); stderr: {stderr_tail}")]
    WorkerCrashed {
        /// The worker's process id.
        pid: u32,
        /// How it ended: exit code or signal.
        status: String,
        /// The last bytes it wrote to stderr.
        stderr_tail: String,
    },
    /// The worker process could not be started (or found).
    #[error("cannot start worker: {message}")]
    SpawnFailed {
        /// Detail, naming what is missing.
        message: String,
    },
    /// The task was cancelled before it finished.
    #[error("task was cancelled")]
    Cancelled,
    /// The executor is shut down and accepts no more tasks.
    #[error("executor is shut down")]
    ShutDown,
}

impl Error {
    /// The stable kind of this error.
    ///
    /// ```
    /// use asyncer::{Error, ErrorKind};
    /// let err = Error::Guest { message: "bad input".into() };
    /// assert_eq!(err.kind(), ErrorKind::GuestError);
    /// assert_eq!(err.kind().as_str(), "guest_error");
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ModuleNotFound { .. } | Error::InvalidModule { .. } => ErrorKind::InvalidModule,
            Error::NoSuchTask { .. } => ErrorKind::NoSuchTask,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::Guest { .. } => ErrorKind::GuestError,
            Error::GuestPanic { .. } => ErrorKind::GuestPanic,
            Error::Trap { .. } => ErrorKind::Trap,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::OutOfFuel { .. } => ErrorKind::OutOfFuel,
            Error::MemoryLimit { .. } => ErrorKind::MemoryLimit,
            Error::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            Error::WorkerCrashed { .. } => ErrorKind::WorkerCrashed,
            Error::SpawnFailed { .. } => ErrorKind::SpawnFailed,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::ShutDown => ErrorKind::ShutDown,
        }
    }

    /// Whether the task ran out of time.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Error;
    /// use std::time::Duration;
    /// assert!(Error::Timeout { timeout: Duration::from_secs(1) }.is_timeout());
    /// assert!(!Error::Cancelled.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Whether the guest code itself failed (error, panic or trap), as opposed
    /// to the executor, the worker or a limit.
    ///
    /// # Examples
    /// ```
    /// use asyncer::Error;
    /// assert!(Error::GuestPanic { message: "oops".into() }.is_guest_failure());
    /// assert!(!Error::ShutDown.is_guest_failure());
    /// ```
    pub fn is_guest_failure(&self) -> bool {
        matches!(
            self,
            Error::Guest { .. } | Error::GuestPanic { .. } | Error::Trap { .. }
        )
    }

    /// Rebuilds the error a worker reported; `pid` and `stderr` fill in a
    /// crash report.
    pub(crate) fn from_failure(
        failure: Failure,
        timeout: Option<Duration>,
        pid: u32,
        stderr: &[u8],
    ) -> Self {
        let Failure {
            kind,
            message,
            trap_code,
            backtrace,
        } = failure;
        match kind {
            ErrorKind::InvalidModule => Error::InvalidModule { message },
            ErrorKind::NoSuchTask => Error::NoSuchTask {
                task: message,
                available: Vec::new(),
            },
            ErrorKind::Decode => Error::Decode { message },
            ErrorKind::GuestError => Error::Guest { message },
            ErrorKind::GuestPanic => Error::GuestPanic { message },
            ErrorKind::Timeout => Error::Timeout {
                timeout: timeout.unwrap_or_default(),
            },
            ErrorKind::OutOfFuel => Error::OutOfFuel { message },
            ErrorKind::MemoryLimit => Error::MemoryLimit { message },
            ErrorKind::OutputTooLarge => Error::OutputTooLarge { message },
            ErrorKind::Cancelled => Error::Cancelled,
            ErrorKind::ShutDown => Error::ShutDown,
            ErrorKind::SpawnFailed => Error::SpawnFailed { message },
            ErrorKind::WorkerCrashed => Error::WorkerCrashed {
                pid,
                status: message,
                stderr_tail: String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(4096)..])
                    .into_owned(),
            },
            // `Trap` is the honest reading of any kind this host does not know.
            _ => Error::Trap {
                code: trap_code,
                message,
                backtrace,
            },
        }
    }
}
