//! The executor: a queue, a runner, and a semaphore bounding live workers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use asyncer_protocol::{EngineFlavor, Request, TaskRef};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::event::{EventStream, TaskEvent, UpdateStream};
use crate::handle::{decode_postcard, raw, RawResult, TaskHandle};
use crate::job::{Hub, JobControl};
use crate::module::{Artifact, Compiler, Module};
use crate::process::{locate_worker, ExitingWorker, Pool, PoolMode, WarmOptions, WorkerRun};
use crate::{Capabilities, Error, Limits};

/// Runs guest tasks in worker processes, at most `max_processes` at a time.
///
/// Cheap to clone; all clones share one queue. When the last clone is
/// dropped the queue closes: tasks already submitted still run and resolve.
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// let exec = asyncer::Executor::builder().max_processes(4).build()?;
/// let module = exec.load("tasks.wasm").await?;
/// // Clones share the queue, the workers and the events.
/// let other = exec.clone();
/// let a = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
/// let b = other.submit::<_, u64>(&module, "add", &(3u64, 4u64))?;
/// assert_eq!(a.await? + b.await?, 10);
/// exec.shutdown(std::time::Duration::from_secs(5)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("max_processes", &self.shared.max_processes)
            .field("mode", &self.shared.pool_mode)
            .finish_non_exhaustive()
    }
}

struct Shared {
    max_processes: usize,
    pool: Arc<Pool>,
    pool_mode: PoolMode,
    limits: Limits,
    capabilities: Capabilities,
    compiler: Compiler,
    hub: Arc<Hub>,
    /// Set by shutdown and abort: no more submissions.
    closed: AtomicBool,
    /// Owns the temporary cache and work directories, when not caller-given.
    _temp: Option<tempfile::TempDir>,
}

/// One queued task.
struct Job {
    control: Arc<JobControl>,
    module: Module,
    input: Vec<u8>,
    limits: Limits,
    capabilities: Capabilities,
}

/// Configures an [`Executor`]; made by [`Executor::builder`].
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// use asyncer::{Executor, Limits};
/// use std::time::Duration;
/// let exec = Executor::builder()
///     .max_processes(8)
///     .prestart(2)
///     .limits(Limits::default().timeout(Duration::from_secs(30)))
///     .build()?;
/// # let _ = exec;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ExecutorBuilder {
    max_processes: Option<usize>,
    worker: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    limits: Limits,
    capabilities: Capabilities,
    prestart: usize,
    warm: Option<WarmOptions>,
    nice: Option<i32>,
}

impl ExecutorBuilder {
    /// Keeps `n` idle worker processes started ahead of need (engine made,
    /// waiting for a request), so that process start-up is off a task's
    /// critical path. Each still serves exactly one task and exits. These
    /// idle workers use no CPU and are not counted in `max_processes`, which
    /// bounds the workers running tasks. Default 0. Ignored in warm mode.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().max_processes(4).prestart(2).build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn prestart(mut self, n: usize) -> Self {
        self.prestart = n;
        self
    }

    /// Scheduling niceness of the worker processes (Unix `nice`, 0 to 19;
    /// default 10). Workers yield the CPU to the host, so that its event loop
    /// stays responsive while every core runs tasks; other work on the
    /// machine is favoured over tasks too. Use 0 to schedule them like the
    /// host.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// // Schedule the workers like the host.
    /// let exec = asyncer::Executor::builder().worker_nice(0).build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn worker_nice(mut self, nice: i32) -> Self {
        self.nice = Some(nice.clamp(0, 19));
        self
    }

    /// Warm mode: each worker serves many tasks (each in a fresh wasm store
    /// and instance, so tasks stay isolated from one another) and is replaced
    /// after [`WarmOptions::max_tasks`] tasks, when it crashes, is killed (on
    /// timeout or cancellation), or grows past [`WarmOptions::max_rss_bytes`].
    /// Same API, errors and events; at most `max_processes` workers exist.
    /// Off by default: a fresh process per task isolates tasks at the OS level
    /// too.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Executor, WarmOptions};
    /// let exec = Executor::builder()
    ///     .warm(WarmOptions { max_tasks: 500, ..WarmOptions::default() })
    ///     .build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn warm(mut self, options: WarmOptions) -> Self {
        self.warm = Some(options);
        self
    }

    /// Most worker processes alive at once (default: the number of CPUs).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().max_processes(2).build()?;
    /// assert_eq!(exec.max_processes(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_processes(mut self, n: usize) -> Self {
        self.max_processes = Some(n.max(1));
        self
    }

    /// The worker program to run, instead of looking it up (see
    /// [`Executor::builder`]).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder()
    ///     .worker_program("/opt/myapp/bin/asyncer-worker")
    ///     .build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker = Some(path.into());
        self
    }

    /// Keep precompiled artifacts in `dir` (created if missing) so that they
    /// survive the process; by default a private temporary directory is used
    /// and removed with the executor. The directory must be trusted: workers
    /// load native code from it.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder()
    ///     .cache_dir("/var/cache/myapp/asyncer")
    ///     .build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Default limits of every task.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Executor, Limits};
    /// use std::time::Duration;
    /// let exec = Executor::builder()
    ///     .limits(Limits::default().timeout(Duration::from_secs(5)).max_memory_bytes(256 << 20))
    ///     .build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// use asyncer::TaskOptions;
    /// use std::time::Duration;
    /// let options = TaskOptions::new().limits(asyncer::Limits::default().timeout(Duration::from_secs(1)));
    /// let handle = exec.submit_with::<_, u64>(&module, "add", &(1u64, 2u64), options)?;
    /// # let _ = handle;
    /// # Ok(())
    /// # }
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Default capabilities of every task (none unless set).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Capabilities, Executor};
    /// let exec = Executor::builder()
    ///     .capabilities(Capabilities::none().read_only_dir("/srv/models", "/models"))
    ///     .build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// use asyncer::TaskOptions;
    /// let options = TaskOptions::new().capabilities(asyncer::Capabilities::none().env("MODE", "fast"));
    /// let handle = exec.submit_with::<_, u64>(&module, "add", &(1u64, 2u64), options)?;
    /// # let _ = handle;
    /// # Ok(())
    /// # }
    /// ```
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Starts the executor's runner on the current tokio runtime.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().build()?;
    /// println!("up to {} workers", exec.max_processes());
    /// # Ok(())
    /// # }
    /// ```
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
        let pool_mode = PoolMode {
            warm: self.warm,
            prestart: self.prestart,
            nice: self.nice.unwrap_or(DEFAULT_NICE),
        };
        let shared = Arc::new(Shared {
            max_processes,
            pool: Pool::new(worker, work_dir, pool_mode),
            pool_mode,
            limits: self.limits,
            capabilities: self.capabilities,
            compiler: Compiler::new(cache_dir),
            hub: Arc::default(),
            closed: AtomicBool::new(false),
            _temp: Some(temp),
        });
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(runner(shared.clone(), jobs));
        Ok(Executor { shared, queue })
    }
}

/// Default niceness of worker processes.
const DEFAULT_NICE: i32 = 10;

/// Per-task settings for [`Executor::submit_with`].
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// use asyncer::{Capabilities, Limits, TaskOptions};
/// let options = TaskOptions::new()
///     .uid("report-2026-11")
///     .limits(Limits::default().max_memory_bytes(128 << 20))
///     .capabilities(Capabilities::none().read_only_dir("/srv/reports", "/reports"));
/// let handle = exec.submit_with::<_, u64>(&module, "add", &(1u64, 2u64), options)?;
/// # let _ = handle;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    uid: Option<String>,
    limits: Option<Limits>,
    capabilities: Option<Capabilities>,
}

impl TaskOptions {
    /// Default options: a fresh uuid v4 and the executor's limits.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Limits, TaskOptions};
    /// use std::time::Duration;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let options = TaskOptions::new()
    ///     .uid("order-1234")
    ///     .limits(Limits::default().timeout(Duration::from_millis(500)));
    /// let handle = exec.submit_with::<_, u64>(&module, "price", &1234u64, options)?;
    /// assert_eq!(handle.uid(), "order-1234");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new() -> Self {
        TaskOptions::default()
    }

    /// The task's uid, carried by its events and log lines.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// use asyncer::TaskOptions;
    /// let handle = exec.submit_with::<_, u64>(&module, "add", &(1u64, 2u64), TaskOptions::new().uid("a-1"))?;
    /// assert_eq!(handle.uid(), "a-1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn uid(mut self, uid: impl Into<String>) -> Self {
        self.uid = Some(uid.into());
        self
    }

    /// Limits for this task instead of the module's or the executor's.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Capabilities for this task instead of the module's or the executor's.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }
}

impl Executor {
    /// A builder. The worker program is looked up in this order: the path
    /// given to [`ExecutorBuilder::worker_program`], `$ASYNCER_WORKER`,
    /// `asyncer-worker` next to the current executable (or one directory up),
    /// then `$PATH`.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().max_processes(4).build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> ExecutorBuilder {
        ExecutorBuilder::default()
    }

    /// Most worker processes alive at once.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().max_processes(3).build()?;
    /// assert_eq!(exec.max_processes(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_processes(&self) -> usize {
        self.shared.max_processes
    }

    /// Loads, validates and precompiles the module at `path`, off the event
    /// loop. Loading the same bytes twice returns the same module.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("heavy.wasm").await?;
    /// println!("{} exports {:?}", module.name(), module.tasks());
    /// # Ok(())
    /// # }
    /// ```
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
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let bytes = std::fs::read("uploaded.wasm").expect("readable");
    /// match exec.load_bytes(bytes).await {
    ///     Ok(module) => println!("accepted, tasks {:?}", module.tasks()),
    ///     Err(asyncer::Error::InvalidModule { message }) => println!("refused: {message}"),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(())
    /// # }
    /// ```
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
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
    /// assert_eq!(handle.await?, 3);
    /// # Ok(())
    /// # }
    /// ```
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
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Limits, TaskOptions};
    /// use std::time::Duration;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let options = TaskOptions::new().uid("job-7").limits(Limits::default().fuel(10_000_000));
    /// let handle = exec.submit_with::<_, u64>(&module, "add", &(1u64, 2u64), options)?;
    /// match handle.await {
    ///     Err(asyncer::Error::OutOfFuel { .. }) => println!("too expensive"),
    ///     other => println!("{other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
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
        let input = encode_input(input)?;
        self.enqueue(module, task, input, options, decode_postcard::<O>)
    }

    /// [`Executor::submit`] through a typed reference: the name and the
    /// input and output types come from the guest crate's `#[task]`
    /// (`heavy::HEAVY` for `#[task] fn heavy`), so they cannot be mismatched.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::TaskRef;
    /// // What `#[task] fn add(pair: (u64, u64)) -> u64` defines in the guest crate:
    /// const ADD: TaskRef<(u64, u64), u64> = TaskRef::new("add");
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let sum: u64 = exec.submit_task(&module, ADD, &(1, 2))?.await?;
    /// assert_eq!(sum, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Executor::submit`].
    pub fn submit_task<I, O>(
        &self,
        module: &Module,
        task: TaskRef<I, O>,
        input: &I,
    ) -> Result<TaskHandle<O>, Error>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        self.submit(module, task.name(), input)
    }

    /// Queues a task with raw postcard input bytes; the handle resolves to the
    /// raw output bytes (the postcard `Output`, without envelope byte).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::TaskOptions;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// // (1u64, 2u64) in postcard is [1, 2]; the output 3u64 is [3].
    /// let handle = exec.submit_bytes(&module, "add", vec![1, 2], TaskOptions::new())?;
    /// assert_eq!(handle.await?, vec![3]);
    /// # Ok(())
    /// # }
    /// ```
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
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let sum: u64 = exec.run_in_process(&module, "add", &(1u64, 2u64)).await?;
    /// assert_eq!(sum, 3);
    /// # Ok(())
    /// # }
    /// ```
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
        let input = encode_input(input)?;
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
            capabilities: &self.shared.capabilities.to_wire(),
            sink: Some(in_process_sink(task)),
        })
        .await;
        let output = reply.outcome.map_err(|failure| {
            Error::from_failure(
                failure,
                limits.get_timeout(),
                std::process::id(),
                &reply.stderr,
            )
        })?;
        decode_postcard(output)
    }

    /// Subscribes to completion events of tasks finishing from now on.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let mut events = exec.events();
    /// let _detached = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
    /// let event = events.recv().await.expect("one event per task");
    /// println!("{} {} in {:?}", event.uid, event.outcome(), event.wall_time);
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&self) -> EventStream {
        self.shared.hub.subscribers.subscribe()
    }

    /// Subscribes to everything tasks report from now on: their progress and
    /// log records while they run, and their completion events (the same as
    /// [`Executor::events`]), on one channel.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Executor, TaskUpdate};
    ///
    /// let exec = Executor::builder().build()?;
    /// let module = exec.load("tasks.wasm").await?;
    /// let mut updates = exec.updates();
    /// let handle = exec.submit::<_, u64>(&module, "count", &1_000_000u64)?;
    /// while let Some(update) = updates.recv().await {
    ///     match update {
    ///         TaskUpdate::Progress(p) => println!("{}: {}/{}", p.uid, p.progress.done, p.progress.total),
    ///         TaskUpdate::Log(log) => println!("{}: [{}] {}", log.uid, log.level, log.message),
    ///         TaskUpdate::Finished(done) => {
    ///             println!("{}: {}", done.uid, done.outcome());
    ///             break;
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// let total = handle.await?;
    /// # let _ = total;
    /// # Ok(())
    /// # }
    /// ```
    pub fn updates(&self) -> UpdateStream {
        self.shared.hub.subscribers.subscribe_updates()
    }

    /// Graceful shutdown: refuses new tasks ([`Error::ShutDown`]), lets queued
    /// and running tasks finish for up to `grace`, then stops the rest (their
    /// handles resolve to [`Error::ShutDown`]). Returns once every worker
    /// process has been reaped.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use std::time::Duration;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// exec.shutdown(Duration::from_secs(10)).await;
    /// # let module = exec.load("tasks.wasm").await?;
    /// assert!(matches!(
    ///     exec.submit::<_, u64>(&module, "add", &(1u64, 2u64)),
    ///     Err(asyncer::Error::ShutDown)
    /// ));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future leaves the executor closed; tasks keep running
    /// until they finish or are stopped by another shutdown or abort.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if tokio::time::timeout(grace, self.shared.hub.drained())
            .await
            .is_err()
        {
            self.shared.hub.stop_all(&Error::ShutDown);
            self.shared.hub.drained().await;
        }
        self.shared.pool.drain().await;
    }

    /// Immediate shutdown: refuses new tasks and stops every queued and
    /// running one now (their handles resolve to [`Error::ShutDown`]).
    /// Returns once every worker process has been reaped.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// exec.abort().await; // every worker is reaped when this returns
    /// # Ok(())
    /// # }
    /// ```
    pub async fn abort(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.hub.stop_all(&Error::ShutDown);
        self.shared.hub.drained().await;
        self.shared.pool.drain().await;
    }

    fn enqueue<O>(
        &self,
        module: &Module,
        task: &str,
        input: Vec<u8>,
        options: TaskOptions,
        decode: fn(Vec<u8>) -> Result<O, Error>,
    ) -> Result<TaskHandle<O>, Error> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::ShutDown);
        }
        module.check_task(task)?;
        let limits = options
            .limits
            .or_else(|| module.limits().cloned())
            .unwrap_or_else(|| self.shared.limits.clone());
        let capabilities = options
            .capabilities
            .or_else(|| module.capabilities().cloned())
            .unwrap_or_else(|| self.shared.capabilities.clone());
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
        let control = self.shared.hub.register(
            uid,
            task.to_owned(),
            module.hash().to_owned(),
            input.len(),
            reply,
        );
        let job = Job {
            control: control.clone(),
            module: module.clone(),
            input,
            limits,
            capabilities,
        };
        if self.queue.send(job).is_err() {
            control.stop(Error::ShutDown);
            return Err(Error::ShutDown);
        }
        tracing::debug!(uid = %control.uid, task, module = module.name(), "task queued");
        Ok(TaskHandle::new(control, rx, decode))
    }
}

/// Where an in-process run's progress and log records go: `tracing`, with
/// the uid `in-process`.
fn in_process_sink(task: &str) -> asyncer_worker::GuestSink {
    let task = task.to_owned();
    Arc::new(move |message| match message {
        asyncer_protocol::GuestMessage::Log(record) => {
            crate::job::log_guest_record("in-process", &task, &record);
        }
        asyncer_protocol::GuestMessage::Progress(p) => {
            crate::job::log_guest_progress("in-process", &task, &p);
        }
    })
}

/// The postcard bytes of a task's input.
fn encode_input<I: Serialize + ?Sized>(input: &I) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(input).map_err(|e| Error::Decode {
        message: format!("input does not encode: {e}"),
    })
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
/// task holding the slot until its worker is reaped. A job cancelled while
/// queued is skipped (it already finished).
async fn runner(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(shared.max_processes));
    while let Some(job) = jobs.recv().await {
        let mut stop = job.control.stop_signal();
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            // Stopped while waiting at the head of the queue.
            _ = stop.changed() => continue,
        };
        if !job.control.start() {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let (result, mut event, exiting) = run_job(&shared, &job).await;
            // The caller gets the result as soon as it is known; the worker
            // is reaped after, still holding the slot, and the event (with
            // the exit status) follows.
            job.control.respond(result);
            if let Some(exiting) = exiting {
                event.exit_status = exiting.reap().await;
                event.finished(SystemTime::now());
            }
            drop(permit);
            job.control.complete(event);
        });
    }
}

async fn run_job(shared: &Arc<Shared>, job: &Job) -> (RawResult, TaskEvent, Option<ExitingWorker>) {
    let control = &job.control;
    let flavor = job.limits.flavor();
    let artifact = artifact(shared, &job.module, flavor).await;
    let run = match artifact {
        Ok(artifact) => {
            let request = Request {
                uid: control.uid.clone(),
                artifact: artifact.path.display().to_string(),
                flavor,
                task: control.task.clone(),
                input: job.input.clone(),
                limits: job.limits.to_wire(),
                capabilities: job.capabilities.to_wire(),
            };
            let on_guest = |message| control.on_guest(message);
            shared
                .pool
                .run(
                    &request,
                    job.limits.get_timeout(),
                    control.stop_signal(),
                    &on_guest,
                )
                .await
        }
        Err(error) => WorkerRun {
            pid: None,
            exit_status: None,
            started_at: SystemTime::now(),
            reply: Err(error),
            exiting: None,
        },
    };
    finish(job, run)
}

/// Turns a worker's run into the task's result and event.
fn finish(job: &Job, run: WorkerRun) -> (RawResult, TaskEvent, Option<ExitingWorker>) {
    let control = &job.control;
    let (result, reply) = match run.reply {
        Ok(mut reply) => {
            let outcome = std::mem::replace(&mut reply.outcome, Ok(Vec::new()));
            let pid = run.pid.unwrap_or(0);
            let result = outcome.map_err(|failure| {
                match Error::from_failure(failure, job.limits.get_timeout(), pid, &reply.stderr) {
                    Error::NoSuchTask { task, .. } => Error::NoSuchTask {
                        task,
                        available: job.module.tasks().to_vec(),
                    },
                    other => other,
                }
            });
            (result, Some(reply))
        }
        Err(error) => (Err(error), None),
    };
    let mut event = control.event_for(&result, SystemTime::now());
    event.pid = run.pid;
    event.exit_status = run.exit_status;
    event.started_at = Some(run.started_at);
    event.finished(event.finished_at);
    if let Some(reply) = reply {
        for (name, bytes, dropped) in [
            ("stdout", &reply.stdout, reply.stdout_dropped),
            ("stderr", &reply.stderr, reply.stderr_dropped),
        ] {
            if !bytes.is_empty() {
                tracing::info!(uid = %control.uid, task = %control.task, dropped, "guest {name}: {}", String::from_utf8_lossy(bytes).trim_end());
            }
        }
        event.fuel_consumed = reply.usage.fuel_consumed;
        event.peak_memory_bytes = reply.usage.peak_memory_bytes;
        event.worker_rss_bytes = reply.usage.worker_rss_bytes;
        event.stdout = reply.stdout;
        event.stderr = reply.stderr;
        event.stdout_dropped = reply.stdout_dropped;
        event.stderr_dropped = reply.stderr_dropped;
        event.log_dropped = reply.log_dropped;
    }
    (result, event, run.exiting)
}
