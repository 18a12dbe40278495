//! The typed error of every fallible asyncer operation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use asyncer_protocol::ErrorKind;
use asyncer_protocol::Failure;

/// Everything that can go wrong loading a module or running a task.
///
/// Match on the variant, or on [`Error::kind`] for the stable name used by the
/// CLI's JSON output.
///
/// `Error` is `Clone`, because one failure can reach several places (the
/// task's handle and its completion event, every task stopped by a
/// shutdown). The variants that wrap a lower-level error
/// ([`Error::Cache`], [`Error::Engine`], [`Error::Link`]) keep it whole as
/// their [`source`](std::error::Error::source), shared in an `Arc`, rather
/// than flattened into a message: `Clone` and the cause chain both hold.
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
    /// The module's hash is not on the executor's allow-list
    /// ([`ExecutorBuilder::allow_modules`](crate::ExecutorBuilder::allow_modules)),
    /// or, in a cluster, on the worker host's.
    #[error("module {hash} is not on the allow-list of approved modules")]
    ModuleNotAllowed {
        /// The module's hash (hex SHA-256 of its bytes).
        hash: String,
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
    /// The output is larger than its limit.
    #[error("too large: {message}")]
    OutputTooLarge {
        /// Detail.
        message: String,
    },
    /// The input is larger than the task's input limit; refused at submit,
    /// before anything runs.
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    InputTooLarge {
        /// The input's size in bytes.
        size: u64,
        /// The task's [`Limits::max_input_bytes`](crate::Limits::max_input_bytes).
        limit: u64,
    },
    /// The compiled-artifact cache (or the executor's private directory)
    /// could not be read or written.
    #[error("artifact cache at {}: {source}", path.display())]
    Cache {
        /// The file or directory concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A wasm engine could not be made, or could not serialize compiled code.
    #[error("wasm engine failed: {source}")]
    Engine {
        /// wasmtime's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// WASI preview 1 or the `asyncer` host imports could not be linked.
    #[error("cannot link WASI and the asyncer imports: {source}")]
    Link {
        /// wasmtime's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The task was delivered to worker hosts `attempts` times and every one
    /// of them died or lost its lease before storing a result (cluster mode).
    #[error("task lost: no worker host finished it in {attempts} attempts")]
    WorkerLost {
        /// How many deliveries were made.
        attempts: u64,
    },
    /// An executor setting is impossible (`max_processes(0)`, a niceness
    /// outside 0..=19…); refused by
    /// [`ExecutorBuilder::build`](crate::ExecutorBuilder::build).
    #[error("invalid executor configuration: {message}")]
    InvalidConfig {
        /// Which setting, and why.
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
    /// The queue was at its bound ([`ExecutorBuilder::max_queued`], or the
    /// task's tenant's): the task was refused at submit, nothing queued.
    /// Wait with [`Executor::room`] and submit again.
    ///
    /// [`ExecutorBuilder::max_queued`]: crate::ExecutorBuilder::max_queued
    /// [`Executor::room`]: crate::Executor::room
    #[error("queue full: {} tasks are waiting{}", limit, tenant.as_ref().map(|t| format!(" for tenant `{t}`")).unwrap_or_default())]
    QueueFull {
        /// The tenant whose bound was reached, or `None` for the executor's.
        tenant: Option<String>,
        /// The bound.
        limit: usize,
    },
    /// The task could not start by its deadline
    /// ([`TaskOptions::start_within`](crate::TaskOptions::start_within)): it
    /// ended without running, after waiting `waited`.
    #[error("task expired: it could not start within {waited:?}")]
    Expired {
        /// How long it waited in the queue.
        waited: Duration,
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
            Error::ModuleNotAllowed { .. } => ErrorKind::ModuleNotAllowed,
            Error::QueueFull { .. } => ErrorKind::QueueFull,
            Error::Expired { .. } => ErrorKind::Expired,
            Error::NoSuchTask { .. } => ErrorKind::NoSuchTask,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::Guest { .. } => ErrorKind::GuestError,
            Error::GuestPanic { .. } => ErrorKind::GuestPanic,
            Error::Trap { .. } => ErrorKind::Trap,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::OutOfFuel { .. } => ErrorKind::OutOfFuel,
            Error::MemoryLimit { .. } => ErrorKind::MemoryLimit,
            Error::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            Error::InputTooLarge { .. } => ErrorKind::InputTooLarge,
            Error::Cache { .. } => ErrorKind::CacheFailed,
            Error::Engine { .. } => ErrorKind::EngineFailed,
            Error::Link { .. } => ErrorKind::LinkFailed,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::WorkerLost { .. } => ErrorKind::WorkerLost,
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

    /// A wasmtime error as the source of an [`Error::Engine`].
    pub(crate) fn engine(error: wasmtime::Error) -> Self {
        Error::Engine {
            source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(error)),
        }
    }

    /// A wasmtime error as the source of an [`Error::Link`].
    pub(crate) fn link(error: wasmtime::Error) -> Self {
        Error::Link {
            source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(error)),
        }
    }

    /// An I/O error on `path` as an [`Error::Cache`].
    pub(crate) fn cache(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Cache {
            path: path.into(),
            source: Arc::new(error),
        }
    }

    /// Rebuilds the error a worker reported, completed with what the host
    /// knows of the run.
    pub(crate) fn from_failure(failure: Failure, context: &FailureContext<'_>) -> Self {
        let Failure {
            kind,
            message,
            trap_code,
            backtrace,
        } = failure;
        let as_message_source = |message: String| -> Arc<dyn std::error::Error + Send + Sync> {
            Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(message))
        };
        match kind {
            ErrorKind::InvalidModule => Error::InvalidModule { message },
            ErrorKind::NoSuchTask => Error::NoSuchTask {
                task: message,
                available: context.tasks.to_vec(),
            },
            ErrorKind::Decode => Error::Decode { message },
            ErrorKind::ModuleNotAllowed => Error::ModuleNotAllowed {
                // The hash the message names (a host's refusal), else all of it.
                hash: message
                    .split(|c: char| !c.is_ascii_hexdigit())
                    .find(|word| word.len() == 64)
                    .map_or_else(|| message.clone(), str::to_owned),
            },
            ErrorKind::GuestError => Error::Guest { message },
            ErrorKind::GuestPanic => Error::GuestPanic { message },
            ErrorKind::Timeout => Error::Timeout {
                timeout: context.timeout.unwrap_or_default(),
            },
            ErrorKind::OutOfFuel => Error::OutOfFuel { message },
            ErrorKind::MemoryLimit => Error::MemoryLimit { message },
            ErrorKind::OutputTooLarge => Error::OutputTooLarge { message },
            ErrorKind::Cancelled => Error::Cancelled,
            ErrorKind::ShutDown => Error::ShutDown,
            ErrorKind::SpawnFailed => Error::SpawnFailed { message },
            ErrorKind::CacheFailed => Error::Cache {
                path: context.artifact.to_owned(),
                source: Arc::new(std::io::Error::other(message)),
            },
            ErrorKind::EngineFailed => Error::Engine {
                source: as_message_source(message),
            },
            ErrorKind::LinkFailed => Error::Link {
                source: as_message_source(message),
            },
            ErrorKind::WorkerCrashed => Error::WorkerCrashed {
                pid: context.pid,
                status: message,
                stderr_tail: String::from_utf8_lossy(
                    &context.stderr[context.stderr.len().saturating_sub(4096)..],
                )
                .into_owned(),
            },
            // `Trap` is the honest reading of any kind this host does not
            // expect from a worker.
            _ => Error::Trap {
                code: trap_code,
                message,
                backtrace,
            },
        }
    }
}

/// What the host knows of a run when it rebuilds a worker's failure.
pub(crate) struct FailureContext<'a> {
    /// The task's timeout, for [`Error::Timeout`].
    pub(crate) timeout: Option<Duration>,
    /// The worker's pid, for [`Error::WorkerCrashed`].
    pub(crate) pid: u32,
    /// The guest's captured stderr, for a crash report.
    pub(crate) stderr: &'a [u8],
    /// The module's tasks, for [`Error::NoSuchTask`].
    pub(crate) tasks: &'a [String],
    /// The artifact the worker loaded, for [`Error::Cache`].
    pub(crate) artifact: &'a std::path::Path,
}
