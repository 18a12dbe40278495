//! The host ↔ worker wire format of asyncer, and the guest ABI constants.
//!
//! One source of truth for both sides: the executor writes a [`Request`] to a
//! worker's stdin and reads [`WorkerMessage`]s from its stdout: any number of
//! [`WorkerMessage::Guest`] (the guest's progress and log records, sent while
//! it runs), then one [`WorkerMessage::Reply`]. Each message is a frame: the 4-byte [`MAGIC`], the little-endian [`PROTOCOL_VERSION`]
//! (`u16`), the little-endian body length (`u32`), then the postcard body.
//!
//! ```
//! use asyncer_protocol::{read_frame, write_frame, Limits, EngineFlavor, Request};
//!
//! let request = Request {
//!     uid: "job-1".into(),
//!     artifact: "/tmp/module.cwasm".into(),
//!     flavor: EngineFlavor::default(),
//!     task: "heavy".into(),
//!     input: vec![1, 2, 3],
//!     limits: Limits::default(),
//!     capabilities: Default::default(),
//!     command: None,
//! };
//! let mut wire = Vec::new();
//! write_frame(&mut wire, &request).unwrap();
//! let back: Request = read_frame(&mut wire.as_slice(), 1 << 20).unwrap();
//! assert_eq!(back, request);
//! ```
#![forbid(unsafe_code)]

pub mod abi {
    #![doc = include_str!("../ABI.md")]
}

use std::io::{self, Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod sandbox;
pub mod schema;
pub use sandbox::{LayerState, SandboxLayer, SandboxSettings, SandboxStatus};

/// First bytes of every frame.
pub const MAGIC: [u8; 4] = *b"ASYN";
/// Version of the frame layout and of the message types below.
pub const PROTOCOL_VERSION: u16 = 5;
/// Bytes before a frame's body: magic, version, body length.
pub const FRAME_HEADER_LEN: usize = 10;

/// Guest ABI v1: the exported linear memory.
pub const ABI_MEMORY_EXPORT: &str = "memory";
/// Guest ABI v1: `asyncer_alloc(len: i32) -> i32`, returns room for the input.
pub const ABI_ALLOC_EXPORT: &str = "asyncer_alloc";
/// Guest ABI v1: each task `NAME` is exported as `task:NAME`,
/// `(input_ptr: i32, input_len: i32) -> i64`.
pub const ABI_TASK_PREFIX: &str = "task:";
/// Guest ABI v1, the alternative naming for toolchains that can only export
/// identifiers (AssemblyScript, among others): task `NAME` exported as
/// `asyncer_task_NAME`, same type. A module may use both forms, but not
/// both for one task.
pub const ABI_TASK_ALT_PREFIX: &str = "asyncer_task_";
/// Guest ABI v1: the WASI reactor initialiser, called once before any task.
pub const ABI_INITIALIZE_EXPORT: &str = "_initialize";
/// Guest ABI v1: the only import module a guest may use.
pub const ABI_WASI_MODULE: &str = "wasi_snapshot_preview1";
/// Guest ABI v1 (optional): the host's own import module. A guest may
/// import only [`ABI_PROGRESS_IMPORT`] and [`ABI_LOG_IMPORT`] from it.
pub const ABI_HOST_MODULE: &str = "asyncer";
/// Guest ABI v1 (optional): `asyncer::progress(done: i64, total: i64,
/// msg_ptr: i32, msg_len: i32)`, the task's progress; `done` and `total` are
/// `u64` values passed as `i64` bits, the message is UTF-8 in guest memory.
pub const ABI_PROGRESS_IMPORT: &str = "progress";
/// Guest ABI v1 (optional): `asyncer::log(level: i32, msg_ptr: i32,
/// msg_len: i32)`, one log record; `level` is a [`LogLevel`] number
/// (0 trace, 1 debug, 2 info, 3 warn, 4 error).
pub const ABI_LOG_IMPORT: &str = "log";
/// Envelope byte: the postcard `Output` follows.
pub const ENVELOPE_OK: u8 = 0x00;
/// Envelope byte: a postcard `String` follows, the guest's own error.
pub const ENVELOPE_ERR: u8 = 0x01;
/// Envelope byte (optional extension of ABI v1): a postcard `String`
/// follows, saying why the guest could not decode its input.
pub const ENVELOPE_INPUT_DECODE_ERR: u8 = 0x02;

/// A typed reference to a guest task: its name, and its input and output
/// types. `#[task] fn heavy(input: In) -> Out` defines
/// `const HEAVY: TaskRef<In, Out>` next to the function, so that a host that
/// also depends on the guest crate (natively) submits with
/// `Executor::submit_task(&module, heavy::HEAVY, &input)` and cannot
/// mismatch the name or the types.
///
/// ```
/// use asyncer_protocol::TaskRef;
/// const DOUBLE: TaskRef<u64, u64> = TaskRef::new("double");
/// assert_eq!(DOUBLE.name(), "double");
/// ```
pub struct TaskRef<In, Out> {
    name: &'static str,
    types: std::marker::PhantomData<fn(In) -> Out>,
}

impl<In, Out> TaskRef<In, Out> {
    /// A reference to the task exported as `task:NAME`.
    pub const fn new(name: &'static str) -> Self {
        TaskRef {
            name,
            types: std::marker::PhantomData,
        }
    }

    /// The task's name (without the `task:` prefix).
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<In, Out> Clone for TaskRef<In, Out> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<In, Out> Copy for TaskRef<In, Out> {}

impl<In, Out> std::fmt::Debug for TaskRef<In, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TaskRef({}: {} -> {})",
            self.name,
            std::any::type_name::<In>(),
            std::any::type_name::<Out>()
        )
    }
}

/// What a worker must run: one task of one precompiled module.
///
/// # Examples
/// ```
/// // See the crate root for a request written and read as a frame.
/// let request: asyncer_protocol::Request = asyncer_protocol::decode_frame(
///     &asyncer_protocol::encode_frame(&asyncer_protocol::Request {
///         uid: "u".into(),
///         artifact: "/cache/m.cwasm".into(),
///         flavor: Default::default(),
///         task: "t".into(),
///         input: vec![],
///         limits: Default::default(),
///         capabilities: Default::default(),
///         command: None,
///     }).unwrap(),
/// ).unwrap();
/// assert_eq!(request.task, "t");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The task's uid, for logs.
    pub uid: String,
    /// Path of the precompiled artifact (memory-mapped by the worker).
    pub artifact: String,
    /// The engine settings the artifact was compiled with.
    pub flavor: EngineFlavor,
    /// Task name, without the `task:` prefix.
    pub task: String,
    /// Limits enforced inside the worker.
    pub limits: Limits,
    /// What the guest may reach beyond its own memory (nothing by default).
    pub capabilities: Capabilities,
    /// Set for a WASI command (`_start`) instead of a task: its arguments.
    /// The input is then its standard input, and the output the postcard
    /// encoding of a [`CommandOutput`].
    pub command: Option<CommandLine>,
    /// The postcard-encoded input. Last, and a byte string on the wire, so
    /// that [`Request::frame_head`] lets a sender write it without copying.
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
}

/// Every field of a [`Request`] but its input, borrowed: encodes as the
/// request's body up to the input.
#[derive(Serialize)]
struct RequestHead<'a> {
    uid: &'a str,
    artifact: &'a str,
    flavor: EngineFlavor,
    task: &'a str,
    limits: &'a Limits,
    capabilities: &'a Capabilities,
    command: &'a Option<CommandLine>,
}

impl Request {
    /// The frame of this request up to its input: write it, then
    /// [`Request::input`], and the peer reads one whole request frame. The
    /// input (possibly many megabytes) is never copied into a buffer.
    ///
    /// # Examples
    /// ```
    /// use asyncer_protocol::{decode_frame, Request};
    /// let request = Request {
    ///     uid: "u".into(),
    ///     artifact: "/cache/m.cwasm".into(),
    ///     flavor: Default::default(),
    ///     task: "t".into(),
    ///     limits: Default::default(),
    ///     capabilities: Default::default(),
    ///     command: None,
    ///     input: vec![1, 2, 3],
    /// };
    /// let mut wire = request.frame_head().unwrap();
    /// wire.extend_from_slice(&request.input);
    /// assert_eq!(decode_frame::<Request>(&wire).unwrap(), request);
    /// ```
    ///
    /// # Errors
    /// As [`frame_head_with_tail`].
    pub fn frame_head(&self) -> Result<Vec<u8>, FrameError> {
        let head = RequestHead {
            uid: &self.uid,
            artifact: &self.artifact,
            flavor: self.flavor,
            task: &self.task,
            limits: &self.limits,
            capabilities: &self.capabilities,
            command: &self.command,
        };
        frame_head_with_tail(&head, &self.input)
    }
}

/// The name of the export a WASI command module starts at.
pub const ABI_START_EXPORT: &str = "_start";

/// How a WASI command is invoked: its argument vector (the program's own
/// name first, as `argv[0]`). Its environment travels in the
/// [`Capabilities`], its standard input as the request's input.
///
/// # Examples
/// ```
/// let line = asyncer_protocol::CommandLine { args: vec!["tool.wasm".into(), "-v".into()] };
/// assert_eq!(line.args[0], "tool.wasm");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandLine {
    /// `argv`, program name included.
    pub args: Vec<String>,
}

/// What a WASI command gave back: how it exited and what it wrote. A
/// non-zero exit code is an outcome, not an error; a trap, a timeout or a
/// limit is an error as for any task.
///
/// # Examples
/// ```
/// let out = asyncer_protocol::CommandOutput { exit_code: 0, stdout: b"hi\n".to_vec(), ..Default::default() };
/// assert!(out.success());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The exit code: 0 when `_start` returned, else what `proc_exit` (C's
    /// `exit`, Rust's `std::process::exit`) was given.
    pub exit_code: i32,
    /// Its standard output, up to the task's `max_log_bytes`.
    pub stdout: Vec<u8>,
    /// Its standard error, up to the same cap.
    pub stderr: Vec<u8>,
    /// Bytes of standard output dropped past the cap.
    pub stdout_dropped: u64,
    /// Bytes of standard error dropped past the cap.
    pub stderr_dropped: u64,
}

impl CommandOutput {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Its standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Its standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Opt-in capabilities of a guest: by default it has none.
///
/// # Examples
/// ```
/// use asyncer_protocol::{Capabilities, DirGrant};
/// let caps = Capabilities {
///     dirs: vec![DirGrant { host: "/srv".into(), guest: "/data".into(), writable: false }],
///     env: vec![("MODE".into(), "fast".into())],
/// };
/// assert_ne!(caps, Capabilities::default());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Host directories the guest may open, and where it sees them.
    pub dirs: Vec<DirGrant>,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
}

/// One host directory made visible to the guest.
///
/// # Examples
/// ```
/// let grant = asyncer_protocol::DirGrant { host: "/tmp/x".into(), guest: "/x".into(), writable: true };
/// assert!(grant.writable);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: String,
    /// The path the guest opens it by.
    pub guest: String,
    /// Whether the guest may create, change and delete files in it.
    pub writable: bool,
}

/// Engine settings that change the compiled code: host and worker must agree.
///
/// # Examples
/// ```
/// let flavor = asyncer_protocol::EngineFlavor { fuel: true, epoch: false };
/// assert_ne!(flavor, asyncer_protocol::EngineFlavor::default());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EngineFlavor {
    /// Fuel metering compiled in.
    pub fuel: bool,
    /// Epoch-interruption checks compiled in (needed for in-guest timeouts).
    pub epoch: bool,
}

/// What the executor asks of a template worker (`asyncer-worker
/// --template`, see the worker crate): fork one child for one task. Sent
/// as one frame ([`encode_frame`]) in one message on the template's
/// control socket, with the child's standard input, output and error
/// attached (`SCM_RIGHTS`); the template loads `artifact` (once) before it
/// forks, so that the child finds it loaded, and answers with the child's
/// process id as four little-endian bytes (negative: an errno).
///
/// # Examples
/// ```
/// use asyncer_protocol::{decode_frame, encode_frame, ForkRequest};
/// let request = ForkRequest {
///     artifact: "/cache/m.cwasm".into(),
///     flavor: Default::default(),
///     max_wasm_stack: None,
/// };
/// let back: ForkRequest = decode_frame(&encode_frame(&request).unwrap()).unwrap();
/// assert_eq!(back, request);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkRequest {
    /// The task's precompiled artifact.
    pub artifact: String,
    /// The flavor it was compiled with.
    pub flavor: EngineFlavor,
    /// The task's wasm stack limit ([`Limits::max_wasm_stack`]).
    pub max_wasm_stack: Option<u64>,
}

impl ForkRequest {
    /// The fork request for a child that will serve `request`.
    ///
    /// # Examples
    /// ```
    /// use asyncer_protocol::{ForkRequest, Request};
    /// let request = Request {
    ///     uid: "u".into(),
    ///     artifact: "/cache/m.cwasm".into(),
    ///     flavor: Default::default(),
    ///     task: "t".into(),
    ///     input: vec![],
    ///     limits: Default::default(),
    ///     capabilities: Default::default(),
    ///     command: None,
    /// };
    /// assert_eq!(ForkRequest::for_request(&request).artifact, "/cache/m.cwasm");
    /// ```
    pub fn for_request(request: &Request) -> ForkRequest {
        ForkRequest {
            artifact: request.artifact.clone(),
            flavor: request.flavor,
            max_wasm_stack: request.limits.max_wasm_stack,
        }
    }
}

/// Limits a worker enforces on one task.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let limits = asyncer_protocol::Limits { timeout: Some(Duration::from_secs(1)), ..Default::default() };
/// assert_eq!(limits.max_log_bytes, 64 << 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock budget of the guest, enforced by an epoch deadline.
    pub timeout: Option<Duration>,
    /// Fuel budget (only with [`EngineFlavor::fuel`]).
    pub fuel: Option<u64>,
    /// Largest linear memory, in bytes.
    pub max_memory_bytes: Option<u64>,
    /// Largest task output, in bytes.
    pub max_output_bytes: u64,
    /// How much of the guest's stdout and of its stderr is kept, each.
    pub max_log_bytes: u64,
    /// Largest wasm stack, in bytes (the engine default when `None`).
    pub max_wasm_stack: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: None,
            fuel: None,
            max_memory_bytes: None,
            max_output_bytes: 64 << 20,
            max_log_bytes: 64 << 10,
            max_wasm_stack: None,
        }
    }
}

/// One message from a worker: what a guest reports while it runs, or the
/// task's final reply (always the last message of a task).
///
/// # Examples
/// ```
/// use asyncer_protocol::{decode_frame, encode_frame, Failure, ErrorKind, Reply, WorkerMessage};
/// let last = WorkerMessage::Reply(Reply::failed(Failure::new(ErrorKind::Timeout, "too slow")));
/// assert_eq!(decode_frame::<WorkerMessage>(&encode_frame(&last).unwrap()).unwrap(), last);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// A progress or log record from the running guest.
    Guest(GuestMessage),
    /// The task is over.
    Reply(Reply),
}

/// What a running guest reports through the `asyncer` host import module.
///
/// # Examples
/// ```
/// use asyncer_protocol::{GuestMessage, LogLevel, LogRecord};
/// let message = GuestMessage::Log(LogRecord { level: LogLevel::Info, message: "hi".into() });
/// assert!(matches!(message, GuestMessage::Log(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestMessage {
    /// `asyncer::progress`.
    Progress(Progress),
    /// `asyncer::log`.
    Log(LogRecord),
}

/// How far a task has come, as it reported with `asyncer_guest::progress`.
///
/// ```
/// use asyncer_protocol::Progress;
/// let p = Progress { done: 3, total: 4, message: "parsing".into() };
/// assert_eq!(p.fraction(), Some(0.75));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units of work done.
    pub done: u64,
    /// Units of work in all (0 when unknown).
    pub total: u64,
    /// What the task is doing.
    pub message: String,
}

impl Progress {
    /// `done / total`, clamped to `0.0..=1.0`; `None` when `total` is 0.
    pub fn fraction(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.done as f64 / self.total as f64).clamp(0.0, 1.0))
    }
}

/// One log record of a guest, made with `asyncer_guest::info!` and friends.
///
/// # Examples
/// ```
/// let record = asyncer_protocol::LogRecord { level: asyncer_protocol::LogLevel::Error, message: "disk full".into() };
/// assert_eq!(record.level.as_str(), "error");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// The formatted message.
    pub message: String,
}

/// The level of a guest's log record, as `tracing`'s levels.
///
/// ```
/// use asyncer_protocol::LogLevel;
/// assert_eq!(LogLevel::from_abi(2), Some(LogLevel::Info));
/// assert_eq!(LogLevel::Warn.to_abi(), 3);
/// assert_eq!(LogLevel::from_abi(9), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogLevel {
    /// Very verbose detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Ordinary information.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// Every level, from the most verbose.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
    ];

    /// The level of the ABI number `level` (0 trace … 4 error).
    pub fn from_abi(level: i32) -> Option<LogLevel> {
        usize::try_from(level)
            .ok()
            .and_then(|i| LogLevel::ALL.get(i).copied())
    }

    /// The ABI number of this level.
    pub fn to_abi(self) -> i32 {
        self as i32
    }

    /// `"trace"` … `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker sends back: the outcome, usage figures and captured output.
///
/// # Examples
/// ```
/// use asyncer_protocol::{ErrorKind, Failure, Reply};
/// let reply = Reply::failed(Failure::new(ErrorKind::SpawnFailed, "no worker"));
/// assert!(reply.outcome.is_err());
/// assert_eq!(reply.usage.fuel_consumed, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Output bytes (postcard `Output`, without envelope byte) or a failure.
    #[serde(with = "bytes_outcome")]
    pub outcome: Result<Vec<u8>, Failure>,
    /// What the task used.
    pub usage: Usage,
    /// The guest's stdout (up to the limit).
    #[serde(with = "serde_bytes")]
    pub stdout: Vec<u8>,
    /// The guest's stderr (up to the limit).
    #[serde(with = "serde_bytes")]
    pub stderr: Vec<u8>,
    /// Bytes of stdout dropped past the limit.
    pub stdout_dropped: u64,
    /// Bytes of stderr dropped past the limit.
    pub stderr_dropped: u64,
    /// Bytes of guest log records dropped past the limit (the records sent
    /// share the `max_log_bytes` budget).
    pub log_dropped: u64,
    /// How the worker process's own sandbox stood while the task ran
    /// (`None` when the task did not run in a worker process).
    pub sandbox: Option<Box<SandboxStatus>>,
}

impl Reply {
    /// A reply for a task that failed before the guest ran.
    pub fn failed(failure: Failure) -> Self {
        Reply {
            outcome: Err(failure),
            usage: Usage::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_dropped: 0,
            stderr_dropped: 0,
            log_dropped: 0,
            sandbox: None,
        }
    }
}

/// A reply's outcome with its output as a byte string (copied whole, not
/// byte by byte as a sequence would be).
mod bytes_outcome {
    use super::Failure;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        outcome: &Result<Vec<u8>, Failure>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        outcome
            .as_ref()
            .map(|bytes| serde_bytes::Bytes::new(bytes))
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Result<Vec<u8>, Failure>, D::Error> {
        let outcome = Result::<serde_bytes::ByteBuf, Failure>::deserialize(deserializer)?;
        Ok(outcome.map(serde_bytes::ByteBuf::into_vec))
    }
}

/// A task failure as it crosses the wire.
///
/// # Examples
/// ```
/// use asyncer_protocol::{ErrorKind, Failure};
/// let failure = Failure::new(ErrorKind::GuestError, "bad input");
/// assert_eq!(failure.kind.as_str(), "guest_error");
/// assert!(failure.trap_code.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail (the guest's message for guest errors and panics).
    pub message: String,
    /// For traps: wasmtime's trap code, e.g. `UnreachableCodeReached`.
    pub trap_code: Option<String>,
    /// For traps: the wasm backtrace, when one was captured.
    pub backtrace: Option<String>,
}

impl Failure {
    /// A failure with only a kind and a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            trap_code: None,
            backtrace: None,
        }
    }
}

/// Resources a task used.
///
/// # Examples
/// ```
/// let usage = asyncer_protocol::Usage::default();
/// assert_eq!(usage.peak_memory_bytes, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Fuel consumed, when metered.
    pub fuel_consumed: Option<u64>,
    /// Largest linear memory size reached, in bytes.
    pub peak_memory_bytes: u64,
    /// Time spent inside the worker running the task (load included).
    pub run_time: Duration,
    /// The worker process's resident set size after the task, in bytes
    /// (the executor recycles warm workers that grow too much).
    pub worker_rss_bytes: u64,
}

/// The stable kinds of task failure; [`ErrorKind::as_str`] is the CLI's
/// JSON `kind`.
///
/// # Examples
/// ```
/// use asyncer_protocol::ErrorKind;
/// assert_eq!(ErrorKind::ALL.len(), 23);
/// assert_eq!(ErrorKind::MemoryLimit.to_string(), "memory_limit");
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The module is not valid wasm, not found, or breaks the guest ABI.
    InvalidModule,
    /// The module has no such task export.
    NoSuchTask,
    /// Input or output bytes could not be decoded.
    Decode,
    /// The guest returned `Err(message)`.
    GuestError,
    /// The guest panicked.
    GuestPanic,
    /// The guest trapped.
    Trap,
    /// The task ran out of time.
    Timeout,
    /// The task ran out of fuel.
    OutOfFuel,
    /// The guest tried to grow its memory past the limit.
    MemoryLimit,
    /// The output was larger than allowed.
    OutputTooLarge,
    /// The worker process died without a reply.
    WorkerCrashed,
    /// The worker process could not be started.
    SpawnFailed,
    /// The task was cancelled.
    Cancelled,
    /// The executor was shut down.
    ShutDown,
    /// The input was larger than the task's input limit.
    InputTooLarge,
    /// The compiled-artifact cache could not be read or written.
    CacheFailed,
    /// A wasm engine could not be made for the task's settings.
    EngineFailed,
    /// WASI or the `asyncer` host imports could not be linked.
    LinkFailed,
    /// An executor setting is impossible (refused by `build`).
    InvalidConfig,
    /// Every host that took the task died or lost its lease, up to the
    /// cluster's bound on deliveries.
    WorkerLost,
    /// The module's hash is not on the executor's (or the worker host's)
    /// allow-list.
    ModuleNotAllowed,
    /// The queue (the executor's, or the task's tenant's) was at its bound:
    /// the task was refused at submit.
    QueueFull,
    /// The task could not start by its deadline: it ended without running.
    Expired,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 23] = [
        ErrorKind::InvalidModule,
        ErrorKind::NoSuchTask,
        ErrorKind::Decode,
        ErrorKind::GuestError,
        ErrorKind::GuestPanic,
        ErrorKind::Trap,
        ErrorKind::Timeout,
        ErrorKind::OutOfFuel,
        ErrorKind::MemoryLimit,
        ErrorKind::OutputTooLarge,
        ErrorKind::WorkerCrashed,
        ErrorKind::SpawnFailed,
        ErrorKind::Cancelled,
        ErrorKind::ShutDown,
        ErrorKind::InputTooLarge,
        ErrorKind::CacheFailed,
        ErrorKind::EngineFailed,
        ErrorKind::LinkFailed,
        ErrorKind::InvalidConfig,
        ErrorKind::WorkerLost,
        ErrorKind::ModuleNotAllowed,
        ErrorKind::QueueFull,
        ErrorKind::Expired,
    ];

    /// The stable snake_case name, e.g. `"guest_panic"`.
    ///
    /// # Examples
    /// ```
    /// use asyncer_protocol::ErrorKind;
    /// assert_eq!(ErrorKind::OutOfFuel.as_str(), "out_of_fuel");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidModule => "invalid_module",
            ErrorKind::NoSuchTask => "no_such_task",
            ErrorKind::Decode => "decode",
            ErrorKind::GuestError => "guest_error",
            ErrorKind::GuestPanic => "guest_panic",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutOfFuel => "out_of_fuel",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::OutputTooLarge => "output_too_large",
            ErrorKind::WorkerCrashed => "worker_crashed",
            ErrorKind::SpawnFailed => "spawn_failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ShutDown => "shut_down",
            ErrorKind::InputTooLarge => "input_too_large",
            ErrorKind::CacheFailed => "cache_failed",
            ErrorKind::EngineFailed => "engine_failed",
            ErrorKind::LinkFailed => "link_failed",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::WorkerLost => "worker_lost",
            ErrorKind::ModuleNotAllowed => "module_not_allowed",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::Expired => "expired",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame could not be read or written.
///
/// # Examples
/// ```
/// use asyncer_protocol::{decode_frame, FrameError};
/// assert!(matches!(decode_frame::<u8>(b"XXXX\x02\x00\x01\x00\x00\x00\x07"), Err(FrameError::BadMagic)));
/// ```
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended early.
    #[error("frame i/o failed")]
    Io(#[from] io::Error),
    /// The frame does not start with [`MAGIC`].
    #[error("not an asyncer frame (bad magic)")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("protocol version {found} is not supported (expected {PROTOCOL_VERSION})")]
    Version {
        /// The version in the frame.
        found: u16,
    },
    /// The frame body is larger than the reader allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced body length.
        len: u64,
        /// The reader's limit.
        max: u64,
    },
    /// The body is not a valid postcard message of the expected type.
    #[error("frame body does not decode")]
    Decode(#[from] postcard::Error),
}

/// Writes `message` as one frame.
///
/// # Examples
/// ```
/// let mut wire = Vec::new();
/// asyncer_protocol::write_frame(&mut wire, &"hello").unwrap();
/// assert_eq!(&wire[..4], b"ASYN");
/// assert_eq!(wire.len(), asyncer_protocol::FRAME_HEADER_LEN + 6);
/// ```
///
/// # Errors
/// Fails when encoding fails, the body exceeds `u32::MAX` bytes or `w` fails.
pub fn write_frame<T: Serialize>(w: &mut impl Write, message: &T) -> Result<(), FrameError> {
    let body = postcard::to_allocvec(message)?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len() as u64,
        max: u32::MAX.into(),
    })?;
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    header[6..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&header)?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Encodes `message` as one frame into a new buffer.
///
/// # Examples
/// ```
/// let wire = asyncer_protocol::encode_frame(&42u64).unwrap();
/// assert_eq!(asyncer_protocol::decode_frame::<u64>(&wire).unwrap(), 42);
/// ```
///
/// # Errors
/// As [`write_frame`].
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    write_frame(&mut out, message)?;
    Ok(out)
}

/// Reads one frame and decodes its body, refusing bodies over `max_len` bytes
/// before allocating them.
///
/// # Examples
/// ```
/// use asyncer_protocol::{encode_frame, read_frame, FrameError};
/// let wire = encode_frame(&vec![0u8; 100]).unwrap();
/// let err = read_frame::<Vec<u8>>(&mut wire.as_slice(), 10).unwrap_err();
/// assert!(matches!(err, FrameError::TooLarge { max: 10, .. }));
/// let back: Vec<u8> = read_frame(&mut wire.as_slice(), 1 << 20).unwrap();
/// assert_eq!(back.len(), 100);
/// ```
///
/// # Errors
/// See [`FrameError`].
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    max_len: u64,
) -> Result<T, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    r.read_exact(&mut header)?;
    let len = frame_body_len(&header, max_len)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(postcard::from_bytes(&body)?)
}

/// Checks a frame header (magic, version) and returns the length of the body
/// that follows it, refusing lengths over `max_len`. The one header parser of
/// both sides: [`read_frame`] uses it, and so does the executor's async
/// reader.
///
/// # Examples
/// ```
/// use asyncer_protocol::{encode_frame, frame_body_len, FrameError, FRAME_HEADER_LEN};
/// let wire = encode_frame(&vec![7u8; 100]).unwrap();
/// let header: [u8; FRAME_HEADER_LEN] = wire[..FRAME_HEADER_LEN].try_into().unwrap();
/// assert_eq!(frame_body_len(&header, 1 << 20).unwrap(), wire.len() - FRAME_HEADER_LEN);
/// assert!(matches!(frame_body_len(&header, 10), Err(FrameError::TooLarge { max: 10, .. })));
/// ```
///
/// # Errors
/// [`FrameError::BadMagic`], [`FrameError::Version`] or
/// [`FrameError::TooLarge`].
pub fn frame_body_len(header: &[u8; FRAME_HEADER_LEN], max_len: u64) -> Result<usize, FrameError> {
    if header[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version { found: version });
    }
    let len = u64::from(u32::from_le_bytes([
        header[6], header[7], header[8], header[9],
    ]));
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    usize::try_from(len).map_err(|_| FrameError::TooLarge { len, max: max_len })
}

/// The head of a frame whose body is `head`'s postcard encoding followed by
/// `tail` as a postcard byte string (varint length, then the bytes): the
/// encoding of a struct whose last field is those bytes (as
/// [`Request::input`] is). Write the returned head, then `tail` itself, so
/// that a large payload is never copied into a frame buffer.
///
/// # Examples
/// ```
/// use asyncer_protocol::{decode_frame, frame_head_with_tail};
/// #[derive(serde::Serialize)]
/// struct Head { id: u32 }
/// #[derive(serde::Deserialize)]
/// struct Whole { id: u32, #[serde(with = "serde_bytes")] payload: Vec<u8> }
///
/// let payload = vec![9u8; 1000];
/// let mut wire = frame_head_with_tail(&Head { id: 7 }, &payload).unwrap();
/// wire.extend_from_slice(&payload);
/// let whole: Whole = decode_frame(&wire).unwrap();
/// assert_eq!((whole.id, whole.payload), (7, payload));
/// ```
///
/// # Errors
/// When `head` does not encode or the body exceeds `u32::MAX` bytes.
pub fn frame_head_with_tail<T: Serialize>(head: &T, tail: &[u8]) -> Result<Vec<u8>, FrameError> {
    // Room for a typical head and a small inlined tail: one allocation.
    let mut out = Vec::with_capacity(1024);
    out.resize(FRAME_HEADER_LEN, 0);
    let mut out = postcard::to_extend(head, out)?;
    let mut varint = [0u8; 10];
    let mut n = tail.len() as u64;
    let mut used = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        varint[used] = if n == 0 { byte } else { byte | 0x80 };
        used += 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&varint[..used]);
    let body_len = (out.len() - FRAME_HEADER_LEN) as u64 + tail.len() as u64;
    let len = u32::try_from(body_len).map_err(|_| FrameError::TooLarge {
        len: body_len,
        max: u32::MAX.into(),
    })?;
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out[6..FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    Ok(out)
}

/// Decodes a frame held entirely in `bytes` (trailing bytes are an error).
///
/// # Examples
/// ```
/// use asyncer_protocol::{decode_frame, encode_frame};
/// let mut wire = encode_frame(&1u8).unwrap();
/// wire.push(0);
/// assert!(decode_frame::<u8>(&wire).is_err(), "trailing bytes are refused");
/// ```
///
/// # Errors
/// See [`FrameError`].
pub fn decode_frame<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FrameError> {
    let mut r = bytes;
    let message = read_frame(&mut r, bytes.len() as u64)?;
    if !r.is_empty() {
        return Err(FrameError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "trailing bytes after frame",
        )));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_reply() -> Reply {
        Reply {
            outcome: Err(Failure {
                kind: ErrorKind::Trap,
                message: "wasm trap: integer divide by zero".into(),
                trap_code: Some("IntegerDivisionByZero".into()),
                backtrace: Some("0: f".into()),
            }),
            usage: Usage {
                fuel_consumed: Some(7),
                peak_memory_bytes: 65536,
                run_time: Duration::from_micros(1500),
                worker_rss_bytes: 1 << 20,
            },
            stdout: b"hi".to_vec(),
            stderr: vec![],
            stdout_dropped: 3,
            stderr_dropped: 0,
            log_dropped: 5,
            sandbox: Some({
                let mut status = SandboxStatus::default();
                status.set(SandboxLayer::Seccomp, LayerState::Active);
                status.set(
                    SandboxLayer::Landlock,
                    LayerState::Partial("no scopes".into()),
                );
                Box::new(status)
            }),
        }
    }

    #[test]
    fn reply_round_trips_through_a_frame() {
        let wire = encode_frame(&sample_reply()).unwrap();
        let back: Reply = decode_frame(&wire).unwrap();
        assert_eq!(back, sample_reply());
    }

    #[test]
    fn worker_messages_round_trip() {
        for message in [
            WorkerMessage::Guest(GuestMessage::Progress(Progress {
                done: u64::MAX,
                total: 7,
                message: "étape".into(),
            })),
            WorkerMessage::Guest(GuestMessage::Log(LogRecord {
                level: LogLevel::Warn,
                message: "careful".into(),
            })),
            WorkerMessage::Reply(sample_reply()),
        ] {
            let back: WorkerMessage = decode_frame(&encode_frame(&message).unwrap()).unwrap();
            assert_eq!(back, message);
        }
    }

    #[test]
    fn log_levels_map_to_abi_numbers_and_back() {
        for (i, level) in LogLevel::ALL.into_iter().enumerate() {
            assert_eq!(level.to_abi(), i as i32);
            assert_eq!(LogLevel::from_abi(i as i32), Some(level));
        }
        assert_eq!(LogLevel::from_abi(-1), None);
        assert_eq!(LogLevel::from_abi(5), None);
        assert!(LogLevel::Trace < LogLevel::Error);
    }

    #[test]
    fn wrong_magic_version_and_length_are_refused() {
        let mut wire = encode_frame(&sample_reply()).unwrap();
        wire[0] = b'X';
        assert!(matches!(
            decode_frame::<Reply>(&wire),
            Err(FrameError::BadMagic)
        ));

        let mut wire = encode_frame(&sample_reply()).unwrap();
        wire[4] = 9;
        assert!(matches!(
            decode_frame::<Reply>(&wire),
            Err(FrameError::Version { found: 9 })
        ));

        let wire = encode_frame(&sample_reply()).unwrap();
        let err = read_frame::<Reply>(&mut wire.as_slice(), 4).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 4, .. }));
    }

    #[test]
    fn truncated_and_garbage_frames_are_errors_not_panics() {
        let wire = encode_frame(&sample_reply()).unwrap();
        for cut in 0..wire.len() {
            assert!(decode_frame::<Reply>(&wire[..cut]).is_err(), "cut at {cut}");
        }
        let mut state = 0x1234_5678_u32;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let mut bytes = Vec::with_capacity(len + 10);
            bytes.extend_from_slice(&wire[..10.min(wire.len())]);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                bytes.push(state as u8);
            }
            bytes[6..10].copy_from_slice(&(len as u32).to_le_bytes());
            let _ = decode_frame::<Reply>(&bytes);
            let _ = decode_frame::<Request>(&bytes);
        }
    }

    #[test]
    fn a_request_written_head_then_input_is_the_same_frame() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let request = Request {
                uid: "u-1".into(),
                artifact: "/cache/a.cwasm".into(),
                flavor: EngineFlavor {
                    fuel: true,
                    epoch: false,
                },
                task: "echo".into(),
                limits: Limits::default(),
                capabilities: Capabilities::default(),
                command: None,
                input: (0..len).map(|i| i as u8).collect(),
            };
            let mut wire = request.frame_head().unwrap();
            wire.extend_from_slice(&request.input);
            assert_eq!(wire, encode_frame(&request).unwrap(), "len {len}");
        }
    }

    #[test]
    fn error_kind_names_are_stable_and_distinct() {
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::GuestPanic.to_string(), "guest_panic");
        assert_eq!(ErrorKind::ShutDown.as_str(), "shut_down");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the decoder and never make it
        /// allocate more than the frame limit.
        #[test]
        fn arbitrary_bytes_are_an_error_or_a_message(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<Reply>(&bytes);
            let _ = read_frame::<Reply>(&mut bytes.as_slice(), 64);
        }

        /// A valid header followed by arbitrary bodies of the announced
        /// length: the body decoder itself is fuzzed.
        #[test]
        fn arbitrary_bodies_behind_a_valid_header(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut frame = Vec::with_capacity(body.len() + 10);
            frame.extend_from_slice(&MAGIC);
            frame.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
            frame.extend_from_slice(&body);
            let _ = decode_frame::<Request>(&frame);
            let _ = decode_frame::<Reply>(&frame);
            let _ = decode_frame::<WorkerMessage>(&frame);
        }

        /// Any request survives the round trip.
        #[test]
        fn requests_round_trip(
            uid in ".{0,40}",
            task in "[a-z_]{1,20}",
            input in proptest::collection::vec(any::<u8>(), 0..300),
            fuel in proptest::option::of(any::<u64>()),
            epoch in any::<bool>(),
        ) {
            let request = Request {
                uid,
                artifact: "/cache/x.cwasm".into(),
                flavor: EngineFlavor { fuel: fuel.is_some(), epoch },
                task,
                input,
                limits: Limits { fuel, ..Limits::default() },
                capabilities: Capabilities::default(),
                command: epoch.then(|| CommandLine { args: vec!["prog".into(), "-v".into()] }),
            };
            let back: Request = decode_frame(&encode_frame(&request).unwrap()).unwrap();
            prop_assert_eq!(back, request);
        }
    }
}
