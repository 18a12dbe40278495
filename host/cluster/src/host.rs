//! A worker host: pulls tasks when it has a free slot, runs each in its own
//! local sandboxed workers, keeps its lease while it runs, stores the one
//! result, and only then acknowledges the task.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{AckKind, Message};
use asyncer::{Capabilities, Error, Executor, Module, TaskOptions, TaskUpdate};
use futures_util::{FutureExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connect::{ClusterError, Connection};
use crate::queues::{Queues, Taken, LOOK_EVERY};
use crate::wire::{
    cancel_subject, event_subject, module_key, ready_subject, result_key, RemoteFailure,
    RemoteResult, RemoteTask, WireCapabilities, READY_SUBJECTS,
};

/// How a worker host runs.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let options = asyncer_cluster::HostOptions::new("host-a")
///     .max_tasks(4)
///     .grace(Duration::from_secs(30))
///     .allow_env(false);
/// assert_eq!(options.name(), "host-a");
/// ```
#[derive(Debug, Clone)]
pub struct HostOptions {
    name: String,
    max_tasks: usize,
    grace: Duration,
    allowed_dirs: Vec<PathBuf>,
    allow_env: bool,
}

impl HostOptions {
    /// A host called `name` (in events: which host ran a task), running as
    /// many tasks at once as the machine has CPUs, 30 s of grace when
    /// stopped, no directories or environment for remote tasks.
    pub fn new(name: impl Into<String>) -> Self {
        HostOptions {
            name: name.into(),
            max_tasks: std::thread::available_parallelism().map_or(1, usize::from),
            grace: Duration::from_secs(30),
            allowed_dirs: Vec::new(),
            allow_env: false,
        }
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tasks pulled and run at once (match the executor's `max_processes`).
    pub fn max_tasks(mut self, tasks: usize) -> Self {
        self.max_tasks = tasks.max(1);
        self
    }

    /// How long running tasks may finish after a stop before they are
    /// handed back to the queue.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Lets remote tasks be granted directories under `dir` (as they ask,
    /// read-only or read-write); grants anywhere else are refused.
    pub fn allow_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.allowed_dirs.push(dir.into());
        self
    }

    /// Lets remote tasks set environment variables for their guest.
    pub fn allow_env(mut self, allow: bool) -> Self {
        self.allow_env = allow;
        self
    }

    /// The capabilities a remote task asked for, if this host grants them.
    fn grant(&self, asked: &WireCapabilities) -> Result<Capabilities, String> {
        if !asked.env.is_empty() && !self.allow_env {
            return Err(format!(
                "host {} does not let remote tasks set environment variables",
                self.name
            ));
        }
        let mut granted = Capabilities::none();
        for (host, guest, writable) in &asked.dirs {
            let path = PathBuf::from(host);
            let inside = path.is_absolute()
                && !path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                && self.allowed_dirs.iter().any(|dir| path.starts_with(dir));
            if !inside {
                return Err(format!(
                    "host {} does not grant {host} to remote tasks",
                    self.name
                ));
            }
            granted = if *writable {
                granted.read_write_dir(path, guest.clone())
            } else {
                granted.read_only_dir(path, guest.clone())
            };
        }
        for (key, value) in &asked.env {
            granted = granted.env(key.clone(), value.clone());
        }
        Ok(granted)
    }
}

/// What every task of a host shares.
struct HostState {
    connection: Connection,
    exec: Executor,
    options: HostOptions,
    modules: Mutex<HashMap<String, Module>>,
    /// Cancelled when the grace is over: running tasks are handed back.
    hand_back: CancellationToken,
}

/// Serves tasks from the cluster on `exec` (a local executor: its limits,
/// modes, sandbox, tenant weights and caps, and priority aging apply) until
/// `stop` is cancelled; then stops pulling, lets running tasks finish for
/// the options' grace, hands back the rest, and returns.
///
/// Each free slot takes one task from the queue whose turn it is: the
/// tenant with the fewest tasks running here for its weight, then that
/// tenant's highest priority (see the crate's README, Cluster).
///
/// # Errors
/// When the host cannot listen for ready notices.
pub async fn serve(
    connection: Connection,
    exec: Executor,
    options: HostOptions,
    stop: CancellationToken,
) -> Result<(), ClusterError> {
    let mut ready = connection
        .client
        .subscribe(READY_SUBJECTS)
        .await
        .map_err(|e| ClusterError::Setup {
            what: "the hosts' ready notices",
            message: e.to_string(),
        })?;
    let lost = CancellationToken::new();
    tokio::spawn(crate::lost::watch_lost_tasks(
        connection.clone(),
        lost.clone(),
    ));
    let state = Arc::new(HostState {
        connection,
        exec,
        hand_back: CancellationToken::new(),
        modules: Mutex::default(),
        options,
    });
    let slots = Arc::new(Semaphore::new(state.options.max_tasks));
    let tracker = TaskTracker::new();
    // Tasks over, by queue: their slots return with them.
    let (done, mut finished) = mpsc::unbounded_channel::<String>();
    let mut queues = Queues::default();
    tracing::info!(host = %state.options.name, "worker host serving");
    loop {
        let permit = loop {
            tokio::select! {
                () = stop.cancelled() => break None,
                permit = slots.clone().acquire_owned() => break Some(permit.expect("never closed")),
                Some(notice) = ready.next() => queues.noticed(&notice.subject),
            }
        };
        let Some(permit) = permit else { break };
        let mut pull = Pull {
            state: &state,
            queues: &mut queues,
            ready: &mut ready,
            finished: &mut finished,
        };
        let Some(taken) = pull.next(&stop).await else {
            break;
        };
        let state = state.clone();
        let done = done.clone();
        tracker.spawn(async move {
            let queue = taken.queue.clone();
            run_task(&state, taken).await;
            // Before the slot is free, so that the next choice counts it.
            let _ = done.send(queue);
            drop(permit);
        });
    }
    tracing::info!(host = %state.options.name, "worker host draining");
    tracker.close();
    if tokio::time::timeout(state.options.grace, tracker.wait())
        .await
        .is_err()
    {
        state.hand_back.cancel();
        tracker.wait().await;
    }
    lost.cancel();
    let _ = state.connection.client.flush().await;
    Ok(())
}

/// What choosing and taking the next task needs.
struct Pull<'a> {
    state: &'a HostState,
    queues: &'a mut Queues,
    ready: &'a mut async_nats::Subscriber,
    finished: &'a mut mpsc::UnboundedReceiver<String>,
}

impl Pull<'_> {
    /// The next task for a free slot: from the queue whose turn it is, or,
    /// while every queue is empty, the first one announced; `None` at stop.
    async fn next(&mut self, stop: &CancellationToken) -> Option<Taken> {
        let exec = &self.state.exec;
        let share = |tenant: &str| {
            let settings = exec.tenant_settings(tenant);
            (settings.share(), settings.running_cap())
        };
        loop {
            if stop.is_cancelled() {
                return None;
            }
            while let Ok(queue) = self.finished.try_recv() {
                self.queues.finished(&queue);
            }
            while let Some(Some(notice)) = self.ready.next().now_or_never() {
                self.queues.noticed(&notice.subject);
            }
            if self.queues.stale() {
                if let Err(e) = self.queues.look(&self.state.connection).await {
                    tracing::warn!("cannot count the queued tasks: {e}");
                }
            }
            let chosen = self
                .queues
                .choose(share, exec.priority_aging(), Instant::now());
            let Some(queue) = chosen else {
                // Nothing waits: the next notice, or another look soon.
                tokio::select! {
                    () = stop.cancelled() => return None,
                    Some(notice) = self.ready.next() => self.queues.noticed(&notice.subject),
                    () = tokio::time::sleep(LOOK_EVERY) => self.queues.forget_counts(),
                }
                continue;
            };
            match self.queues.take(&self.state.connection, &queue).await {
                Ok(Some(taken)) => return Some(taken),
                // Another host was first: the queue counts as empty now.
                Ok(None) => {}
                Err(e) => tracing::debug!("{e}"),
            }
        }
    }
}

/// Hands a task back to its queue (after `delay`, if any) and tells idle
/// hosts.
async fn hand_back(connection: &Connection, taken: &Taken, delay: Option<Duration>) {
    let _ = taken.message.ack_with(AckKind::Nak(delay)).await;
    let _ = connection
        .client
        .publish(ready_subject(&taken.tenant, taken.priority), "".into())
        .await;
}

/// Runs one delivered task to its stored result, then acknowledges it.
async fn run_task(state: &HostState, taken: Taken) {
    let message = &taken.message;
    let attempt = message
        .info()
        .map_or(1, |info| info.delivered.max(1) as u32);
    let mut task: RemoteTask = match postcard::from_bytes(&message.payload) {
        Ok(task) => task,
        Err(e) => {
            tracing::warn!("unreadable task on {}: {e}", message.subject);
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    // The lease is kept from delivery on, while the module loads too.
    let lease = Lease::keep(message.clone(), taken.ack_wait);
    let connection = &state.connection;
    let key = result_key(&task.tenant, &task.uid);
    // Already done (a duplicate, or cancelled while queued): nothing to run.
    if let Ok(Some(_)) = connection.results.get(&key).await {
        let _ = message.ack().await;
        return;
    }
    let input = std::mem::take(&mut task.input);
    let result = match execute(state, &taken, &task, input, attempt, &lease).await {
        Some(result) => result,
        // The lease was lost or the task handed back: no result, no ack.
        None => return,
    };
    let mut bytes = match postcard::to_allocvec(&result) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(uid = %task.uid, "cannot encode a result: {e}");
            return;
        }
    };
    // A result the server cannot carry is the task's `output_too_large`,
    // never a silent loss (or a redelivery loop).
    let limit = connection.max_payload().saturating_sub(1024);
    if bytes.len() > limit {
        let error = Error::OutputTooLarge {
            message: format!(
                "a result of {} bytes exceeds the cluster's {limit}-byte messages",
                bytes.len()
            ),
        };
        let mut too_large = RemoteResult::failed(RemoteFailure::from_error(&error), attempt);
        too_large.host = result.host;
        too_large.pid = result.pid;
        too_large.exit_status = result.exit_status;
        too_large.started_at_ms = result.started_at_ms;
        bytes = postcard::to_allocvec(&too_large).expect("a small result encodes");
    }
    // Exactly one visible result: the first stored wins (a cancel's marker,
    // or another host's result after a redelivery).
    match connection.results.create(&key, bytes.into()).await {
        Ok(_) => {}
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => {
            // Not stored: no ack, so the task is delivered again.
            tracing::warn!(uid = %task.uid, "cannot store the result: {e}");
            return;
        }
    }
    drop(lease);
    // Acknowledged only after the result is stored. A plain ack: if it is
    // lost, the next delivery finds the result and is acknowledged then
    // (a double ack waits for an answer that nats-server 2.9 does not send
    // here, holding the slot for the whole request timeout).
    if let Err(e) = message.ack().await {
        tracing::warn!(uid = %task.uid, "cannot acknowledge: {e}");
    }
}

/// Runs the task locally, keeping the lease and relaying reports; `None`
/// when the lease was lost or the task was handed back.
async fn execute(
    state: &HostState,
    taken: &Taken,
    task: &RemoteTask,
    input: Vec<u8>,
    attempt: u32,
    lease: &Lease,
) -> Option<RemoteResult> {
    let failed = |error: &Error| {
        let mut result = RemoteResult::failed(RemoteFailure::from_error(error), attempt);
        result.host = state.options.name.clone();
        result
    };
    let capabilities = match state.options.grant(&task.capabilities) {
        Ok(capabilities) => capabilities,
        Err(message) => return Some(failed(&Error::InvalidConfig { message })),
    };
    let module = match module(state, &task.module_hash).await {
        Ok(module) => module,
        Err(Fetch::Final(error)) => return Some(failed(&error)),
        Err(Fetch::Transient(why)) => {
            // Not the task's fault: try again a little later.
            tracing::warn!(uid = %task.uid, "cannot fetch the module now ({why}): handing the task back");
            hand_back(&state.connection, taken, Some(Duration::from_millis(500))).await;
            return None;
        }
    };
    let connection = &state.connection;
    let mut cancels = connection
        .client
        .subscribe(cancel_subject(&task.tenant, &task.uid))
        .await
        .ok();
    let mut updates = state.exec.updates();
    // The host's scheduler shares its slots between the cluster's tenants.
    let options = TaskOptions::new()
        .uid(task.uid.clone())
        .tenant(task.tenant.clone())
        .priority(taken.priority)
        .limits(task.limits.to_limits())
        .capabilities(capabilities);
    let mut handle = match state
        .exec
        .submit_bytes_with(&module, &task.task, input, options)
    {
        Ok(handle) => handle,
        Err(error) => return Some(failed(&error)),
    };
    let events = event_subject(&task.tenant, &task.uid);
    let mut lease_lost = false;
    let mut handed_back = false;
    // Its completion event (after the worker is reaped) has the figures; it
    // may come before the loop sees the outcome.
    let mut finished = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut handle => break outcome,
            () = lease.lost.cancelled(), if !lease_lost => {
                // Kill it rather than race the redelivery.
                tracing::warn!(uid = %task.uid, "lease lost: stopping the task");
                lease_lost = true;
                handle.cancel();
            }
            Some(_) = async { cancels.as_mut()?.next().await } => handle.cancel(),
            () = state.hand_back.cancelled(), if !handed_back => {
                handed_back = true;
                handle.cancel();
            }
            Some(update) = updates.recv() => match update {
                TaskUpdate::Finished(event) if event.uid == task.uid => finished = Some(event),
                other => relay(connection, &events, &task.uid, other).await,
            },
        }
    };
    if lease_lost || lease.lost.is_cancelled() {
        return None;
    }
    if handed_back && matches!(outcome, Err(Error::Cancelled)) {
        hand_back(connection, taken, None).await;
        return None;
    }
    // A crashed worker is not the task's deterministic outcome: it is tried
    // again (maybe elsewhere) until the deliveries run out.
    if let Err(Error::WorkerCrashed { status, .. }) = &outcome {
        let max_deliver = taken.max_deliver;
        if max_deliver <= 0 || i64::from(attempt) < max_deliver {
            tracing::warn!(uid = %task.uid, attempt, "worker crashed ({status}): handing the task back");
            hand_back(connection, taken, None).await;
            return None;
        }
        return Some(failed(&Error::WorkerLost {
            attempts: u64::from(attempt),
        }));
    }
    let event = match finished {
        Some(event) => Some(event),
        None => tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(update) = updates.recv().await {
                match update {
                    TaskUpdate::Finished(event) if event.uid == task.uid => return Some(event),
                    other => relay(connection, &events, &task.uid, other).await,
                }
            }
            None
        })
        .await
        .ok()
        .flatten(),
    };
    let mut result = RemoteResult::new(
        outcome
            .map(serde_bytes::ByteBuf::from)
            .map_err(|error| RemoteFailure::from_error(&error)),
        attempt,
    );
    result.host = state.options.name.clone();
    if let Some(event) = event {
        result.pid = event.pid;
        result.exit_status = event.exit_status.clone();
        result.started_at_ms = event
            .started_at
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        result.fuel_consumed = event.fuel_consumed;
        result.peak_memory_bytes = event.peak_memory_bytes;
        result.worker_rss_bytes = event.worker_rss_bytes;
        result.stdout = event.stdout.clone();
        result.stderr = event.stderr.clone();
        result.stdout_dropped = event.stdout_dropped;
        result.stderr_dropped = event.stderr_dropped;
        result.log_dropped = event.log_dropped;
    } else {
        result.started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
    }
    Some(result)
}

/// A host's lease on a delivered task, renewed with in-progress
/// acknowledgements every third of the ack wait; `lost` is cancelled when it
/// could not be renewed for half the ack wait (the server will soon deliver
/// the task again). Renewal stops when the lease is dropped.
struct Lease {
    lost: CancellationToken,
    stop: CancellationToken,
}

impl Lease {
    fn keep(message: Message, ack_wait: Duration) -> Lease {
        let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
        let lease = Lease {
            lost: lost.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(ack_wait / 3);
            renew.reset();
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = renew.tick() => {}
                }
                let ack =
                    tokio::time::timeout(ack_wait / 3, message.ack_with(AckKind::Progress)).await;
                if matches!(ack, Ok(Ok(()))) {
                    renewed = tokio::time::Instant::now();
                } else if renewed.elapsed() >= ack_wait / 2 {
                    lost.cancel();
                    return;
                }
            }
        });
        lease
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Forwards one of this task's progress or log records to its submitter.
async fn relay(connection: &Connection, subject: &str, uid: &str, update: TaskUpdate) {
    let message = match update {
        TaskUpdate::Progress(p) if p.uid == uid => asyncer::GuestMessage::Progress(p.progress),
        TaskUpdate::Log(log) if log.uid == uid => asyncer::GuestMessage::Log(asyncer::LogRecord {
            level: log.level,
            message: log.message,
        }),
        _ => return,
    };
    if let Ok(bytes) = postcard::to_allocvec(&message) {
        let _ = connection
            .client
            .publish(subject.to_owned(), bytes.into())
            .await;
    }
}

/// Why a module could not be had.
enum Fetch {
    /// The module is missing, corrupt or invalid: the task's result.
    Final(Error),
    /// The store did not answer (a leader change, a restart): try later.
    Transient(String),
}

/// The module with `hash`: from this host's cache, or fetched from the
/// module store, checked against its hash, and loaded (precompiled) once.
async fn module(state: &HostState, hash: &str) -> Result<Module, Fetch> {
    use async_nats::jetstream::object_store::GetErrorKind;
    // This host's operator decides which code runs here: an unapproved
    // module is not even fetched.
    if !state.exec.allows_module(hash) {
        return Err(Fetch::Final(Error::ModuleNotAllowed {
            hash: hash.to_owned(),
        }));
    }
    let mut modules = state.modules.lock().await;
    if let Some(module) = modules.get(hash) {
        return Ok(module.clone());
    }
    let invalid = |message: String| Fetch::Final(Error::InvalidModule { message });
    let mut object = state
        .connection
        .modules
        .get(module_key(hash))
        .await
        .map_err(|e| match e.kind() {
            GetErrorKind::NotFound | GetErrorKind::InvalidName => {
                invalid(format!("module {hash} is not in the module store: {e}"))
            }
            _ => Fetch::Transient(e.to_string()),
        })?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Fetch::Transient(format!("reading module {hash}: {e}")))?;
    let actual: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != hash {
        return Err(invalid(format!(
            "module {hash} from the store hashes to {actual}"
        )));
    }
    let module = state.exec.load_bytes(bytes).await.map_err(Fetch::Final)?;
    modules.insert(hash.to_owned(), module.clone());
    Ok(module)
}
