//! What crosses NATS: the names of the stream, buckets and subjects, and the
//! task and result messages (postcard).

use asyncer::{Capabilities, Error, ErrorKind, Limits};
use serde::{Deserialize, Serialize};

/// The work-queue stream of tasks.
pub(crate) const TASK_STREAM: &str = "ASYNCER_TASKS";
/// The single consumer of earlier versions (one FIFO for every task); its
/// filter overlaps the queues', so it is removed at connect.
pub(crate) const LEGACY_CONSUMER: &str = "asyncer-hosts";
/// What every queue's consumer name starts with.
pub(crate) const QUEUE_PREFIX: &str = "asyncer-q-";
/// The key-value bucket of results, one key per task.
pub(crate) const RESULT_BUCKET: &str = "ASYNCER_RESULTS";
/// The object store of modules, keys `sha256-<hex>`.
pub(crate) const MODULE_STORE: &str = "ASYNCER_MODULES";

/// A task's subject: `asyncer.task.<tenant>.<priority>.<uid>`, the uid
/// hex-encoded so that any uid makes a valid subject token.
pub(crate) fn task_subject(tenant: &str, priority: i32, uid: &str) -> String {
    format!("asyncer.task.{tenant}.{priority}.{}", token(uid))
}

/// The durable consumer of one tenant's tasks of one priority (a queue):
/// `asyncer-q-<priority>-<tenant>` (the priority's digits end at the `-`
/// before the tenant, so no two queues share a name).
pub(crate) fn queue_name(tenant: &str, priority: i32) -> String {
    format!("{QUEUE_PREFIX}{priority}-{tenant}")
}

/// The subjects of a queue's tasks.
pub(crate) fn queue_filter(tenant: &str, priority: i32) -> String {
    format!("asyncer.task.{tenant}.{priority}.*")
}

/// The tenant and priority of a queue, from its consumer's filter.
pub(crate) fn queue_of_filter(filter: &str) -> Option<(String, i32)> {
    let rest = filter.strip_prefix("asyncer.task.")?.strip_suffix(".*")?;
    let (tenant, priority) = rest.split_once('.')?;
    Some((tenant.to_owned(), priority.parse().ok()?))
}

/// Where a submitter announces a new task of a queue (and a host one it
/// handed back), so that idle hosts look at once: `asyncer.ready.<tenant>.<priority>`.
pub(crate) fn ready_subject(tenant: &str, priority: i32) -> String {
    format!("asyncer.ready.{tenant}.{priority}")
}

/// Every ready notice.
pub(crate) const READY_SUBJECTS: &str = "asyncer.ready.>";

/// The tenant and priority of a ready notice's subject.
pub(crate) fn queue_of_ready(subject: &str) -> Option<(String, i32)> {
    let rest = subject.strip_prefix("asyncer.ready.")?;
    let (tenant, priority) = rest.split_once('.')?;
    Some((tenant.to_owned(), priority.parse().ok()?))
}

/// Where a task's progress and log records go: `asyncer.evt.<tenant>.<uid>`.
pub(crate) fn event_subject(tenant: &str, uid: &str) -> String {
    format!("asyncer.evt.{tenant}.{}", token(uid))
}

/// Where a task's cancellation is announced.
pub(crate) fn cancel_subject(tenant: &str, uid: &str) -> String {
    format!("asyncer.cancel.{tenant}.{}", token(uid))
}

/// A task's key in the result bucket.
pub(crate) fn result_key(tenant: &str, uid: &str) -> String {
    format!("{tenant}.{}", token(uid))
}

/// A module's key in the module store.
pub(crate) fn module_key(hash: &str) -> String {
    format!("sha256-{hash}")
}

/// The message id that makes JetStream drop a second submit of a uid.
pub(crate) fn dedupe_id(tenant: &str, uid: &str) -> String {
    format!("{tenant}.{}", token(uid))
}

/// The uid back from the last token of a task subject.
pub(crate) fn uid_of_subject(subject: &str) -> Option<String> {
    let hex = subject.rsplit('.').next()?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The tenant of a task subject.
pub(crate) fn tenant_of_subject(subject: &str) -> Option<&str> {
    subject.split('.').nth(2)
}

fn token(uid: &str) -> String {
    uid.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Limits as they travel (the worker's wire limits plus the input bound).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireLimits {
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) fuel: Option<u64>,
    pub(crate) max_memory_bytes: Option<u64>,
    pub(crate) max_input_bytes: u64,
    pub(crate) max_output_bytes: u64,
    pub(crate) max_log_bytes: u64,
    pub(crate) max_wasm_stack: Option<u64>,
}

impl WireLimits {
    pub(crate) fn from_limits(limits: &Limits) -> Self {
        WireLimits {
            timeout: limits.timeout(),
            fuel: limits.fuel(),
            max_memory_bytes: limits.max_memory_bytes(),
            max_input_bytes: limits.max_input_bytes(),
            max_output_bytes: limits.max_output_bytes(),
            max_log_bytes: limits.max_log_bytes(),
            max_wasm_stack: limits.max_wasm_stack(),
        }
    }

    pub(crate) fn to_limits(&self) -> Limits {
        let mut limits = Limits::default()
            .with_max_input_bytes(self.max_input_bytes)
            .with_max_output_bytes(self.max_output_bytes)
            .with_max_log_bytes(self.max_log_bytes);
        if let Some(timeout) = self.timeout {
            limits = limits.with_timeout(timeout);
        }
        if let Some(fuel) = self.fuel {
            limits = limits.with_fuel(fuel);
        }
        if let Some(bytes) = self.max_memory_bytes {
            limits = limits.with_max_memory_bytes(bytes);
        }
        if let Some(bytes) = self.max_wasm_stack {
            limits = limits.with_max_wasm_stack(bytes);
        }
        limits
    }
}

/// What a submitter asks a task may reach; the host decides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WireCapabilities {
    /// (host path, guest path, writable)
    pub(crate) dirs: Vec<(String, String, bool)>,
    pub(crate) env: Vec<(String, String)>,
}

impl WireCapabilities {
    pub(crate) fn from_capabilities(capabilities: &Capabilities) -> Self {
        WireCapabilities {
            dirs: capabilities
                .dirs()
                .iter()
                .map(|d| (d.host.display().to_string(), d.guest.clone(), d.writable))
                .collect(),
            env: capabilities.env_vars().to_vec(),
        }
    }
}

/// One task on the work queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteTask {
    pub(crate) uid: String,
    pub(crate) tenant: String,
    pub(crate) task: String,
    pub(crate) module_hash: String,
    pub(crate) limits: WireLimits,
    pub(crate) capabilities: WireCapabilities,
    #[serde(with = "serde_bytes")]
    pub(crate) input: Vec<u8>,
}

/// A failure as it travels: its kind and enough to rebuild the error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteFailure {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) trap_code: Option<String>,
    pub(crate) backtrace: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) status: Option<String>,
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) attempts: Option<u64>,
}

/// A task's one result, stored in the result bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteResult {
    pub(crate) outcome: Result<serde_bytes::ByteBuf, RemoteFailure>,
    /// The worker host's name (empty when no host ran it).
    pub(crate) host: String,
    pub(crate) attempt: u32,
    pub(crate) pid: Option<u32>,
    pub(crate) exit_status: Option<String>,
    pub(crate) started_at_ms: Option<u64>,
    pub(crate) fuel_consumed: Option<u64>,
    pub(crate) peak_memory_bytes: u64,
    pub(crate) worker_rss_bytes: u64,
    #[serde(with = "serde_bytes")]
    pub(crate) stdout: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) stderr: Vec<u8>,
    pub(crate) stdout_dropped: u64,
    pub(crate) stderr_dropped: u64,
    pub(crate) log_dropped: u64,
}

impl RemoteResult {
    /// A result that no host produced (cancelled while queued, lost).
    pub(crate) fn failed(failure: RemoteFailure, attempt: u32) -> Self {
        RemoteResult::new(Err(failure), attempt)
    }

    /// A result with this outcome and nothing else known yet.
    pub(crate) fn new(outcome: Result<serde_bytes::ByteBuf, RemoteFailure>, attempt: u32) -> Self {
        RemoteResult {
            outcome,
            host: String::new(),
            attempt,
            pid: None,
            exit_status: None,
            started_at_ms: None,
            fuel_consumed: None,
            peak_memory_bytes: 0,
            worker_rss_bytes: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_dropped: 0,
            stderr_dropped: 0,
            log_dropped: 0,
        }
    }
}

impl RemoteFailure {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteFailure {
            kind,
            message: message.into(),
            trap_code: None,
            backtrace: None,
            pid: None,
            status: None,
            timeout: None,
            attempts: None,
        }
    }

    /// What travels of a local error.
    pub(crate) fn from_error(error: &Error) -> Self {
        let mut failure = RemoteFailure::new(error.kind(), error.to_string());
        match error {
            Error::Guest { message }
            | Error::GuestPanic { message }
            | Error::Decode { message }
            | Error::OutOfFuel { message }
            | Error::MemoryLimit { message }
            | Error::OutputTooLarge { message }
            | Error::InvalidModule { message }
            | Error::SpawnFailed { message }
            | Error::InvalidConfig { message } => failure.message = message.clone(),
            Error::Trap {
                code,
                message,
                backtrace,
            } => {
                failure.message = message.clone();
                failure.trap_code = code.clone();
                failure.backtrace = backtrace.clone();
            }
            Error::Timeout { timeout } => failure.timeout = Some(*timeout),
            Error::WorkerCrashed {
                pid,
                status,
                stderr_tail,
            } => {
                failure.pid = Some(*pid);
                failure.status = Some(status.clone());
                failure.message = stderr_tail.clone();
            }
            Error::WorkerLost { attempts } => failure.attempts = Some(*attempts),
            Error::ModuleNotAllowed { hash } => failure.message = hash.clone(),
            _ => {}
        }
        failure
    }

    /// The error it stands for, on the submitter's side.
    pub(crate) fn into_error(self, tasks: &[String]) -> Error {
        let RemoteFailure {
            kind,
            message,
            trap_code,
            backtrace,
            pid,
            status,
            timeout,
            attempts,
        } = self;
        match kind {
            ErrorKind::GuestError => Error::Guest { message },
            ErrorKind::GuestPanic => Error::GuestPanic { message },
            ErrorKind::Decode => Error::Decode { message },
            ErrorKind::OutOfFuel => Error::OutOfFuel { message },
            ErrorKind::MemoryLimit => Error::MemoryLimit { message },
            ErrorKind::OutputTooLarge => Error::OutputTooLarge { message },
            ErrorKind::InvalidModule => Error::InvalidModule { message },
            ErrorKind::SpawnFailed => Error::SpawnFailed { message },
            ErrorKind::InvalidConfig => Error::InvalidConfig { message },
            ErrorKind::Timeout => Error::Timeout {
                timeout: timeout.unwrap_or_default(),
            },
            ErrorKind::WorkerCrashed => Error::WorkerCrashed {
                pid: pid.unwrap_or(0),
                status: status.unwrap_or_default(),
                stderr_tail: message,
            },
            ErrorKind::WorkerLost => Error::WorkerLost {
                attempts: attempts.unwrap_or(0),
            },
            ErrorKind::NoSuchTask => Error::NoSuchTask {
                task: message,
                available: tasks.to_vec(),
            },
            ErrorKind::ModuleNotAllowed => Error::ModuleNotAllowed { hash: message },
            ErrorKind::Cancelled => Error::Cancelled,
            ErrorKind::ShutDown => Error::ShutDown,
            _ => Error::Trap {
                code: trap_code,
                message,
                backtrace,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_and_subjects_round_trip_and_never_collide() {
        let queues = [
            ("a", 0),
            ("a", 1),
            ("a", -1),
            ("a-1", 0),
            ("a", 10),
            ("a-1", -1),
            ("1-a", 0),
            ("a_b", i32::MIN),
            ("a_b", i32::MAX),
        ];
        let names: std::collections::HashSet<_> =
            queues.iter().map(|&(t, p)| queue_name(t, p)).collect();
        assert_eq!(names.len(), queues.len());
        for (tenant, priority) in queues {
            let back = Some((tenant.to_owned(), priority));
            assert_eq!(queue_of_filter(&queue_filter(tenant, priority)), back);
            assert_eq!(queue_of_ready(&ready_subject(tenant, priority)), back);
            let subject = task_subject(tenant, priority, "uid.with dots");
            assert_eq!(tenant_of_subject(&subject), Some(tenant));
            assert_eq!(uid_of_subject(&subject).as_deref(), Some("uid.with dots"));
        }
        assert_eq!(queue_of_filter("asyncer.task.>"), None);
        assert_eq!(queue_of_ready("asyncer.ready.a.high"), None);
    }
}
