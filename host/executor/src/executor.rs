//! The executor: a queue, a runner, and a semaphore bounding live workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use asyncer_protocol::{EngineFlavor, Request};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::event::{EventStream, Subscribers, TaskEvent};
use crate::handle::{decode_postcard, raw, RawResult, TaskHandle};
use crate::module::{Artifact, Compiler, Module};
use crate::process::{locate_worker, run_in_worker, WorkerRun};
use crate::{Error, Limits};

/// Runs guest tasks in worker processes, at most `max_processes` at a time.
///
/// Cheap to clone; all clones share one queue. When the last clone is
/// dropped the queue closes: tasks already submitted still run and resolve.
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("max_processes", &self.shared.max_processes)
            .field("worker", &self.shared.worker)
            .finish_non_exhaustive()
    }
}

struct Shared {
    max_processes: usize,
    worker: PathBuf,
    limits: Limits,
    compiler: Compiler,
    subscribers: Subscribers,
    work_dir: PathBuf,
    /// Owns the temporary cache and work directories, when not caller-given.
    _temp: Option<tempfile::TempDir>,
}

/// One queued task.
struct Job {
    uid: String,
    module: Module,
    task: String,
    input: Vec<u8>,
    limits: Limits,
    queued_at: SystemTime,
    reply: oneshot::Sender<RawResult>,
}

/// Configures an [`Executor`]; made by [`Executor::builder`].
#[derive(Debug, Clone, Default)]
pub struct ExecutorBuilder {
    max_processes: Option<usize>,
    worker: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    limits: Limits,
}

impl ExecutorBuilder {
    /// Most worker processes alive at once (default: the number of CPUs).
    pub fn max_processes(mut self, n: usize) -> Self {
        self.max_processes = Some(n.max(1));
        self
    }

    /// The worker program to run, instead of looking it up (see
    /// [`Executor::builder`]).
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker = Some(path.into());
        self
    }

    /// Keep precompiled artifacts in `dir` (created if missing) so that they
    /// survive the process; by default a private temporary directory is used
    /// and removed with the executor. The directory must be trusted: workers
    /// load native code from it.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Default limits of every task.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Starts the executor's runner on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::SpawnFailed`] when the worker program cannot be found or the
    /// cache directory cannot be made.
    ///
    /// # Panics
    /// Panics when called outside a tokio runtime.
    pub fn build(self) -> Result<Executor, Error> {
        let worker = locate_worker(self.worker.as_deref())?;
        let io_error = |what: &str, e: std::io::Error| Error::SpawnFailed {
            message: format!("cannot create the {what}: {e}"),
        };
        let temp = tempfile::Builder::new()
            .prefix("asyncer-")
            .tempdir()
            .map_err(|e| io_error("executor's temporary directory", e))?;
        let cache_dir = match self.cache_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| io_error("cache directory", e))?;
                dir
            }
            None => temp.path().join("cache"),
        };
        std::fs::create_dir_all(&cache_dir).map_err(|e| io_error("cache directory", e))?;
        let work_dir = temp.path().join("work");
        std::fs::create_dir_all(&work_dir).map_err(|e| io_error("work directory", e))?;
        let max_processes = self
            .max_processes
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let shared = Arc::new(Shared {
            max_processes,
            worker,
            limits: self.limits,
            compiler: Compiler::new(cache_dir),
            subscribers: Subscribers::default(),
            work_dir,
            _temp: Some(temp),
        });
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(runner(shared.clone(), jobs));
        Ok(Executor { shared, queue })
    }
}

/// Per-task settings for [`Executor::submit_with`].
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    uid: Option<String>,
    limits: Option<Limits>,
}

impl TaskOptions {
    /// Default options: a fresh uuid v4 and the executor's limits.
    pub fn new() -> Self {
        TaskOptions::default()
    }

    /// The task's uid, carried by its events and log lines.
    pub fn uid(mut self, uid: impl Into<String>) -> Self {
        self.uid = Some(uid.into());
        self
    }

    /// Limits for this task instead of the executor's.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }
}

impl Executor {
    /// A builder. The worker program is looked up in this order: the path
    /// given to [`ExecutorBuilder::worker_program`], `$ASYNCER_WORKER`,
    /// `asyncer-worker` next to the current executable (or one directory up),
    /// then `$PATH`.
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// Most worker processes alive at once.
    pub fn max_processes(&self) -> usize {
        self.shared.max_processes
    }

    /// Loads, validates and precompiles the module at `path`, off the event
    /// loop. Loading the same bytes twice returns the same module.
    ///
    /// # Errors
    /// [`Error::ModuleNotFound`] when the file cannot be read,
    /// [`Error::InvalidModule`] when it is not valid wasm or breaks the guest
    /// ABI (imports other than WASI, missing exports, wrong task signatures).
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<Module, Error> {
        let path = path.as_ref().to_owned();
        let shared = self.shared.clone();
        let flavor = shared.limits.flavor();
        blocking(move || shared.compiler.load_path(&path, flavor)).await
    }

    /// Like [`Executor::load`], from bytes in memory.
    ///
    /// # Errors
    /// As [`Executor::load`].
    pub async fn load_bytes(&self, bytes: impl Into<Vec<u8>>) -> Result<Module, Error> {
        let bytes: Arc<[u8]> = bytes.into().into();
        let shared = self.shared.clone();
        let flavor = shared.limits.flavor();
        blocking(move || shared.compiler.load_bytes("<bytes>".into(), bytes, flavor)).await
    }

    /// Queues task `task` of `module` with `input`; the handle resolves to its
    /// output. Never blocks: the task waits in the queue for a free slot.
    ///
    /// # Errors
    /// [`Error::NoSuchTask`] when the module has no such task,
    /// [`Error::Decode`] when the input does not encode,
    /// [`Error::OutputTooLarge`] when it is larger than the input limit,
    /// [`Error::ShutDown`] when the executor's runner is gone.
    pub fn submit<I, O>(
        &self,
        module: &Module,
        task: &str,
        input: &I,
    ) -> Result<TaskHandle<O>, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        self.submit_with(module, task, input, TaskOptions::default())
    }

    /// [`Executor::submit`] with a uid and limits of its own.
    ///
    /// # Errors
    /// As [`Executor::submit`].
    pub fn submit_with<I, O>(
        &self,
        module: &Module,
        task: &str,
        input: &I,
        options: TaskOptions,
    ) -> Result<TaskHandle<O>, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let input = postcard::to_allocvec(input).map_err(|e| Error::Decode {
            message: format!("input does not encode: {e}"),
        })?;
        self.enqueue(module, task, input, options, decode_postcard::<O>)
    }

    /// Queues a task with raw postcard input bytes; the handle resolves to the
    /// raw output bytes (the postcard `Output`, without envelope byte).
    ///
    /// # Errors
    /// As [`Executor::submit`].
    pub fn submit_bytes(
        &self,
        module: &Module,
        task: &str,
        input: Vec<u8>,
        options: TaskOptions,
    ) -> Result<TaskHandle<Vec<u8>>, Error> {
        self.enqueue(module, task, input, options, raw)
    }

    /// Runs a task inside this process, on the calling thread, with the
    /// executor's limits: no worker process, no parallelism, no event. The
    /// guest's CPU work blocks the event loop while it runs (its sleeps do
    /// not). Meant for comparisons (the seed example's `[No MP]` half),
    /// debugging and tests; use [`Executor::submit`] for real work.
    ///
    /// # Errors
    /// As [`Executor::submit`] and the task itself; a host-side kill cannot
    /// happen here, so only in-guest limits apply.
    pub async fn run_in_process<I, O>(
        &self,
        module: &Module,
        task: &str,
        input: &I,
    ) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        module.check_task(task)?;
        let input = postcard::to_allocvec(input).map_err(|e| Error::Decode {
            message: format!("input does not encode: {e}"),
        })?;
        let limits = &self.shared.limits;
        let flavor = limits.flavor();
        let artifact = artifact(&self.shared, module, flavor).await?;
        let linker =
            asyncer_worker::new_linker(&artifact.engine).map_err(|e| Error::SpawnFailed {
                message: format!("cannot link WASI: {e:#}"),
            })?;
        let wire_limits = limits.to_wire();
        let reply = asyncer_worker::run_loaded(asyncer_worker::LoadedTask {
            engine: &artifact.engine,
            linker: &linker,
            module: &artifact.compiled,
            flavor,
            task,
            input: &input,
            limits: &wire_limits,
        })
        .await;
        let output = reply
            .outcome
            .map_err(|failure| Error::from_failure(failure, limits.get_timeout()))?;
        decode_postcard(output)
    }

    /// Subscribes to completion events of tasks finishing from now on.
    pub fn events(&self) -> EventStream {
        self.shared.subscribers.subscribe()
    }

    fn enqueue<O>(
        &self,
        module: &Module,
        task: &str,
        input: Vec<u8>,
        options: TaskOptions,
        decode: fn(Vec<u8>) -> Result<O, Error>,
    ) -> Result<TaskHandle<O>, Error> {
        module.check_task(task)?;
        let limits = options.limits.unwrap_or_else(|| self.shared.limits.clone());
        if input.len() as u64 > limits.get_max_input_bytes() {
            return Err(Error::OutputTooLarge {
                message: format!(
                    "input of {} bytes exceeds the limit of {} bytes",
                    input.len(),
                    limits.get_max_input_bytes()
                ),
            });
        }
        let uid = options
            .uid
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (reply, rx) = oneshot::channel();
        let job = Job {
            uid: uid.clone(),
            module: module.clone(),
            task: task.to_owned(),
            input,
            limits,
            queued_at: SystemTime::now(),
            reply,
        };
        self.queue.send(job).map_err(|_| Error::ShutDown)?;
        tracing::debug!(uid = %uid, task, module = module.name(), "task queued");
        Ok(TaskHandle::new(uid, rx, decode))
    }
}

/// The module's artifact for `flavor`, compiled off the event loop if new.
async fn artifact(
    shared: &Arc<Shared>,
    module: &Module,
    flavor: EngineFlavor,
) -> Result<Artifact, Error> {
    if let Some(artifact) = shared.compiler.cached_artifact(module, flavor) {
        return Ok(artifact);
    }
    let (shared, module) = (shared.clone(), module.clone());
    blocking(move || shared.compiler.artifact(&module, flavor)).await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::InvalidModule {
            message: format!("module compilation panicked: {e}"),
        })
    })
}

/// Takes jobs in order, waits for a slot, and starts each in its own tokio
/// task holding the slot until its worker is reaped.
async fn runner(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(shared.max_processes));
    while let Some(job) = jobs.recv().await {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let shared = shared.clone();
        tokio::spawn(async move {
            let (result, event) = run_job(&shared, &job).await;
            drop(permit);
            shared.subscribers.publish(&event);
            let _ = job.reply.send(result);
        });
    }
}

async fn run_job(shared: &Arc<Shared>, job: &Job) -> (RawResult, TaskEvent) {
    let flavor = job.limits.flavor();
    let artifact = artifact(shared, &job.module, flavor).await;
    let run = match artifact {
        Ok(artifact) => {
            let request = Request {
                uid: job.uid.clone(),
                artifact: artifact.path.display().to_string(),
                flavor,
                task: job.task.clone(),
                input: job.input.clone(),
                limits: job.limits.to_wire(),
            };
            run_in_worker(
                &shared.worker,
                &shared.work_dir,
                &request,
                job.limits.get_timeout(),
            )
            .await
        }
        Err(error) => WorkerRun {
            pid: None,
            exit_status: None,
            started_at: SystemTime::now(),
            reply: Err(error),
        },
    };
    finish(job, run)
}

/// Turns a worker's run into the task's result and event, logging failures.
fn finish(job: &Job, run: WorkerRun) -> (RawResult, TaskEvent) {
    let (result, usage, stdout, stderr) = match run.reply {
        Ok(reply) => {
            let result = reply
                .outcome
                .map_err(|failure| Error::from_failure(failure, job.limits.get_timeout()));
            (result, reply.usage, reply.stdout, reply.stderr)
        }
        Err(error) => (Err(error), Default::default(), Vec::new(), Vec::new()),
    };
    let result = result.map_err(|error| match error {
        Error::NoSuchTask { task, .. } => Error::NoSuchTask {
            task,
            available: job.module.tasks().to_vec(),
        },
        other => other,
    });
    if !stdout.is_empty() {
        tracing::info!(uid = %job.uid, task = %job.task, "guest stdout: {}", String::from_utf8_lossy(&stdout).trim_end());
    }
    if !stderr.is_empty() {
        tracing::info!(uid = %job.uid, task = %job.task, "guest stderr: {}", String::from_utf8_lossy(&stderr).trim_end());
    }
    match &result {
        Ok(output) => {
            tracing::debug!(uid = %job.uid, task = %job.task, pid = run.pid, bytes_out = output.len(), "task finished")
        }
        Err(error) => {
            tracing::warn!(uid = %job.uid, task = %job.task, pid = run.pid, kind = %error.kind(), "task failed: {error}")
        }
    }
    let event = TaskEvent {
        uid: job.uid.clone(),
        task: job.task.clone(),
        module_hash: job.module.hash().to_owned(),
        error: result.as_ref().err().map(Error::kind),
        message: result.as_ref().err().map(ToString::to_string),
        pid: run.pid,
        exit_status: run.exit_status,
        queued_at: job.queued_at,
        started_at: Some(run.started_at),
        finished_at: SystemTime::now(),
        fuel_consumed: usage.fuel_consumed,
        peak_memory_bytes: usage.peak_memory_bytes,
        bytes_in: job.input.len(),
        bytes_out: result.as_ref().map_or(0, Vec::len),
        stdout,
        stderr,
    };
    (result, event)
}
