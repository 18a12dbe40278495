//! The submitter's side: a [`Backend`] that puts each task on the work
//! queue and waits for its one result in the result bucket.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use asyncer::dispatch::{Assignment, Backend, BoxFuture, Run, RunContext};
use asyncer::{Error, ErrorKind, GuestMessage, Module};
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::connect::Connection;
use crate::wire::{
    cancel_subject, dedupe_id, event_subject, module_key, ready_subject, result_key, task_subject,
    RemoteFailure, RemoteResult, RemoteTask, WireCapabilities, WireLimits, RESULT_BUCKET,
};

/// Runs tasks on the cluster's worker hosts: behind
/// [`ExecutorBuilder::backend`](asyncer::ExecutorBuilder::backend), the
/// same `submit`, handles, progress, cancellation and events as locally.
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use asyncer_cluster::{ClusterBackend, ClusterOptions, Connection};
/// let connection = Connection::connect(ClusterOptions::new("nats://127.0.0.1:4222")).await?;
/// let exec = asyncer::Executor::builder()
///     .backend(ClusterBackend::new(connection))
///     .max_processes(64) // tasks in flight at once
///     .build()?;
/// let module = exec.load("tasks.wasm").await?;
/// let sum: u64 = exec.submit(&module, "add", &(1u64, 2u64))?.await?;
/// # let _ = sum;
/// # Ok(())
/// # }
/// ```
pub struct ClusterBackend {
    connection: Connection,
    /// Modules known to be in the module store.
    uploaded: Arc<Mutex<HashSet<String>>>,
    /// Stops the watcher of lost tasks.
    stop: CancellationToken,
}

impl ClusterBackend {
    /// A backend on `connection`. It also watches for tasks that ran out of
    /// deliveries and gives them their `worker_lost` result.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(connection: Connection) -> Self {
        let stop = CancellationToken::new();
        tokio::spawn(crate::lost::watch_lost_tasks(
            connection.clone(),
            stop.clone(),
        ));
        ClusterBackend {
            connection,
            uploaded: Arc::default(),
            stop,
        }
    }
}

impl Drop for ClusterBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Backend for ClusterBackend {
    fn run(&self, task: Assignment, context: RunContext) -> BoxFuture<'static, Run> {
        let connection = self.connection.clone();
        let uploaded = self.uploaded.clone();
        Box::pin(async move {
            let started = SystemTime::now();
            if task.command.is_some() {
                // The task wire format has no command line yet.
                return Run::new(
                    Err(Error::InvalidConfig {
                        message: "WASI commands run on local workers only, not through a cluster"
                            .into(),
                    }),
                    started,
                );
            }
            let module = task.module.clone();
            match run_remote(&connection, &uploaded, task, &context).await {
                Ok(result) => into_run(result, &module),
                Err(error) => Run::new(Err(error), started),
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stop.cancel();
            let _ = self.connection.client.flush().await;
        })
    }
}

/// How long a submit keeps trying to reach the stream (a JetStream
/// cluster electing a leader refuses or drops requests for a few seconds).
const SUBMIT_PATIENCE: Duration = Duration::from_secs(20);

/// Puts a task on its queue, made first if missing (each tenant's
/// priorities are queues of their own, so that hosts take the most urgent
/// work of the tenant whose turn it is). Failures are tried again for
/// [`SUBMIT_PATIENCE`]: the message id makes a copy that did reach the
/// stream a duplicate the stream drops.
async fn publish_task(
    connection: &Connection,
    priority: i32,
    subject: String,
    id: String,
    payload: bytes::Bytes,
) -> Result<(), Error> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.as_str());
    let give_up = tokio::time::Instant::now() + SUBMIT_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        let attempt = async {
            connection
                .ensure_queue(priority)
                .await
                .map_err(|e| unavailable("making the task's queue", e))?;
            connection
                .js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|e| unavailable("submitting", e))?
                .await
                .map_err(|e| unavailable("submitting", e))?;
            Ok(())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause < give_up => {
                tracing::debug!(%subject, "trying again: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A failure of the cluster itself, as a task error.
fn unavailable(what: &str, error: impl std::fmt::Display) -> Error {
    Error::SpawnFailed {
        message: format!("cluster: {what}: {error}"),
    }
}

async fn run_remote(
    connection: &Connection,
    uploaded: &Mutex<HashSet<String>>,
    task: Assignment,
    context: &RunContext,
) -> Result<RemoteResult, Error> {
    let tenant = connection.tenant().to_owned();
    let key = result_key(&tenant, &task.uid);
    // Listen before submitting, so that nothing is missed: a stored result
    // is also published on its key's subject. An existing result (the same
    // uid submitted before) is found by the first look below.
    let mut results = connection
        .client
        .subscribe(format!("$KV.{RESULT_BUCKET}.{key}"))
        .await
        .map_err(|e| unavailable("watching the result", e))?;
    let mut reports = connection
        .client
        .subscribe(event_subject(&tenant, &task.uid))
        .await
        .map_err(|e| unavailable("subscribing to progress", e))?;
    upload_module(connection, uploaded, &task.module).await?;

    let remote = RemoteTask {
        uid: task.uid.clone(),
        tenant: tenant.clone(),
        task: task.task.clone(),
        module_hash: task.module.hash().to_owned(),
        limits: WireLimits::from_limits(&task.limits),
        capabilities: WireCapabilities::from_capabilities(&task.capabilities),
        input: task.input,
    };
    let payload = postcard::to_allocvec(&remote).map_err(|e| Error::Decode {
        message: format!("cannot encode the task: {e}"),
    })?;
    let limit = connection.max_payload();
    if payload.len() > limit {
        return Err(Error::InputTooLarge {
            size: payload.len() as u64,
            limit: limit as u64,
        });
    }
    publish_task(
        connection,
        task.priority,
        task_subject(&tenant, task.priority, &task.uid),
        dedupe_id(&tenant, &task.uid),
        payload.into(),
    )
    .await?;
    // Idle hosts look at once (a lost notice costs a host's next look).
    let _ = connection
        .client
        .publish(ready_subject(&tenant, task.priority), "".into())
        .await;

    tracing::debug!(uid = %task.uid, "task published");
    let mut cancel_sent = false;
    // A look at the bucket now and then: the result may be there already,
    // or have been published while the connection was down.
    let mut look = tokio::time::interval(LOOK_EVERY);
    let result = loop {
        tokio::select! {
            biased;
            Some(message) = reports.next() => report(context, &message.payload),
            // A publish on the key's subject is only a wake-up: a create the
            // bucket refused (a second result) is published too, so the
            // stored value is read back, and it is the one.
            Some(_) = results.next() => if let Some(result) = stored(connection, &key).await? {
                break result;
            },
            _ = look.tick() => if let Some(result) = stored(connection, &key).await? {
                break result;
            },
            () = context.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                // A running host kills the task; a host that takes it later
                // finds this result and skips it. Whichever result is stored
                // first is the one.
                let _ = connection.client.publish(cancel_subject(&tenant, &task.uid), "".into()).await;
                let marker = RemoteResult::failed(RemoteFailure::new(ErrorKind::Cancelled, "cancelled"), 0);
                let bytes = postcard::to_allocvec(&marker).expect("a result encodes");
                // An error here means a result is already stored: the next
                // wake-up or look finds it.
                let _ = connection.results.create(&key, bytes.into()).await;
            }
        }
    };
    // Reports that came before the result and are still queued.
    while let Some(Some(message)) = reports.next().now_or_never() {
        report(context, &message.payload);
    }
    Ok(result)
}

/// How often a waiting client looks in the result bucket itself (the first
/// look at once): a safety net for a result published while its
/// connection was down.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// The task's stored result, if the bucket has one (and answers).
async fn stored(connection: &Connection, key: &str) -> Result<Option<RemoteResult>, Error> {
    match connection.results.get(key).await {
        Ok(Some(bytes)) => postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| Error::Decode {
                message: format!("unreadable result: {e}"),
            }),
        // Not stored yet, or the server is away: the next wake-up or look.
        Ok(None) | Err(_) => Ok(None),
    }
}

/// Hands a host's progress or log record to the task's owner.
fn report(context: &RunContext, payload: &[u8]) {
    if let Ok(message) = postcard::from_bytes::<GuestMessage>(payload) {
        context.report(message);
    }
}

/// Puts the module in the module store under its hash, once.
async fn upload_module(
    connection: &Connection,
    uploaded: &Mutex<HashSet<String>>,
    module: &Module,
) -> Result<(), Error> {
    let hash = module.hash().to_owned();
    if uploaded.lock().expect("uploaded poisoned").contains(&hash) {
        return Ok(());
    }
    let key = module_key(&hash);
    if connection.modules.info(&key).await.is_err() {
        let mut bytes = module.bytes();
        connection
            .modules
            .put(key.as_str(), &mut bytes)
            .await
            .map_err(|e| unavailable("uploading the module", e))?;
    }
    uploaded.lock().expect("uploaded poisoned").insert(hash);
    Ok(())
}

/// The owner's view of a remote result.
fn into_run(result: RemoteResult, module: &Module) -> Run {
    let started_at = result
        .started_at_ms
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let outcome = result
        .outcome
        .map(serde_bytes::ByteBuf::into_vec)
        .map_err(|failure| failure.into_error(module.tasks()));
    let mut run = Run::new(outcome, started_at.unwrap_or_else(SystemTime::now));
    let report = &mut run.report;
    report.started_at = started_at;
    report.pid = result.pid;
    report.exit_status = result.exit_status;
    report.fuel_consumed = result.fuel_consumed;
    report.peak_memory_bytes = result.peak_memory_bytes;
    report.worker_rss_bytes = result.worker_rss_bytes;
    report.stdout = result.stdout;
    report.stderr = result.stderr;
    report.stdout_dropped = result.stdout_dropped;
    report.stderr_dropped = result.stderr_dropped;
    report.log_dropped = result.log_dropped;
    report.host = (!result.host.is_empty()).then_some(result.host);
    report.attempt = result.attempt;
    run
}
