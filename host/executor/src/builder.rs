//! Configuring an executor ([`ExecutorBuilder`]) and a task
//! ([`TaskOptions`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::Backend;
use crate::executor::Settings;
use crate::local::LocalBackend;
use crate::locate::locate_worker;
use crate::module::Compiler;
use crate::pool::{Launch, Pool, PoolMode, WarmOptions};
use crate::runner::Runner;
use crate::schedule::{Policy, TenantSettings};
use crate::{ArtifactCache, Capabilities, Error, Executor, Limits, RetryPolicy, SandboxSettings};

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
///     .limits(Limits::default().with_timeout(Duration::from_secs(30)))
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
    cache_max_bytes: Option<u64>,
    limits: Limits,
    capabilities: Capabilities,
    prestart: usize,
    warm: Option<WarmOptions>,
    launch: Launch,
    nice: Option<i32>,
    backend: Option<CustomBackend>,
    sandbox: SandboxSettings,
    allowed_modules: Option<Vec<String>>,
    max_queued: Option<usize>,
    max_queued_per_tenant: Option<usize>,
    priority_aging: Option<Option<Duration>>,
    tenants: HashMap<String, TenantSettings>,
    retry: Option<RetryPolicy>,
}

/// A backend given with [`ExecutorBuilder::backend`].
#[derive(Clone)]
struct CustomBackend(Arc<dyn Backend>);

impl std::fmt::Debug for CustomBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomBackend")
    }
}

impl ExecutorBuilder {
    /// Runs tasks on `backend` instead of the local worker pool: where tasks
    /// run changes, what [`Executor::submit`] means does not (queue, slots,
    /// handles, cancellation, events). `max_processes` then bounds the
    /// tasks handed to the backend at once; the worker-pool settings
    /// (`worker_program`, `prestart`, `warm`, `worker_nice`) are not used,
    /// and no worker program is looked up. See [`crate::dispatch`] for what a
    /// backend must do.
    ///
    /// # Examples
    /// ```
    /// use asyncer::dispatch::{Assignment, Backend, BoxFuture, Run, RunContext};
    /// use std::time::SystemTime;
    ///
    /// /// Answers every task with its own input.
    /// struct Echo;
    /// impl Backend for Echo {
    ///     fn run(&self, task: Assignment, _: RunContext) -> BoxFuture<'static, Run> {
    ///         Box::pin(async move { Run::new(Ok(task.input), SystemTime::now()) })
    ///     }
    ///     fn close(&self) -> BoxFuture<'_, ()> {
    ///         Box::pin(async {})
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().backend(Echo).build()?;
    /// let wasm = wat::parse_str(
    ///     r#"(module (memory (export "memory") 1)
    ///          (func (export "asyncer_alloc") (param i32) (result i32) i32.const 0)
    ///          (func (export "task:echo") (param i32 i32) (result i64) i64.const 0))"#,
    /// ).expect("valid WAT");
    /// let module = exec.load_bytes(wasm).await?; // validated as always
    /// let output = exec.submit_bytes(&module, "echo", vec![1, 2, 3])?.await?;
    /// assert_eq!(output, vec![1, 2, 3]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn backend(mut self, backend: impl Backend) -> Self {
        self.backend = Some(CustomBackend(Arc::new(backend)));
        self
    }

    /// Keeps `n` idle worker processes started ahead of need (engine made,
    /// waiting for a request), so that process start-up is off a task's
    /// critical path: forked from the template ([`Launch::Fork`], with the
    /// last task's module loaded) or spawned ([`Launch::Spawn`]). Each
    /// still serves exactly one task and exits. These
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

    /// How a fresh worker process is started for each task (not in warm
    /// mode): [`Launch::Fork`] (the default) forks it from a template worker
    /// that holds the engine and loaded modules ready, [`Launch::Spawn`]
    /// starts the worker program anew. Both give each task a process of its
    /// own with the same sandbox, limits and reports.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Executor, Launch};
    /// let exec = Executor::builder().launch(Launch::Spawn).build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn launch(mut self, launch: Launch) -> Self {
        self.launch = launch;
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
        self.nice = Some(nice);
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
    ///     .warm(WarmOptions::default().max_tasks(500))
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
        self.max_processes = Some(n);
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

    /// Keep precompiled artifacts in `dir` (created if missing, private to
    /// this user) so that they survive the process: a module whose artifact
    /// is there is loaded without compiling, by any executor or process that
    /// shares the directory (see [`ArtifactCache`](crate::ArtifactCache)).
    /// By default a private temporary directory is used and removed with the
    /// executor. The directory must be trusted, since workers run the native
    /// code in it: [`build`](Self::build) refuses one that another user owns
    /// or may write to. It is kept within
    /// [`cache_max_bytes`](Self::cache_max_bytes).
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

    /// The size bound of the [`cache_dir`](Self::cache_dir) (default
    /// [`ArtifactCache::DEFAULT_MAX_BYTES`](crate::ArtifactCache::DEFAULT_MAX_BYTES),
    /// 1 GiB): past it, the least recently used artifacts are removed
    /// whenever a new one is written.
    pub fn cache_max_bytes(mut self, max_bytes: u64) -> Self {
        self.cache_max_bytes = Some(max_bytes);
        self
    }

    /// At most `max` tasks wait in the queue (default: no bound); at the
    /// bound, `submit` fails at once with [`Error::QueueFull`]
    /// ([`Executor::room`](crate::Executor::room) waits for room).
    pub fn max_queued(mut self, max: usize) -> Self {
        self.max_queued = Some(max);
        self
    }

    /// At most `max` tasks of each tenant wait in the queue (default: no
    /// bound), unless the tenant has its own ([`TenantSettings::max_queued`]).
    pub fn max_queued_per_tenant(mut self, max: usize) -> Self {
        self.max_queued_per_tenant = Some(max);
        self
    }

    /// A waiting task gains one priority level per `step` it waits
    /// (default 1 s), so that low priority work is never starved; `None`
    /// turns aging off (strict priorities).
    pub fn priority_aging(mut self, step: Option<Duration>) -> Self {
        self.priority_aging = Some(step.filter(|step| !step.is_zero()));
        self
    }

    /// Sets tenant `name`'s share of the slots (weight), its cap of running
    /// tasks and its queue bound. Tenants without settings get weight 1, no
    /// cap and [`max_queued_per_tenant`](Self::max_queued_per_tenant).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Executor, TenantSettings};
    /// let exec = Executor::builder()
    ///     .max_processes(8)
    ///     .max_queued(10_000)
    ///     .tenant("batch", TenantSettings::new().weight(1).max_running(4))
    ///     .tenant("interactive", TenantSettings::new().weight(3))
    ///     .build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tenant(mut self, name: impl Into<String>, settings: TenantSettings) -> Self {
        self.tenants.insert(name.into(), settings);
        self
    }

    /// Retries every task per `retry` unless its options say otherwise
    /// (default: no retries).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
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
    ///     .limits(Limits::default().with_timeout(Duration::from_secs(5)).with_max_memory_bytes(256 << 20))
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
    /// let options = TaskOptions::new().limits(asyncer::Limits::default().with_timeout(Duration::from_secs(1)));
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

    /// Which layers of each worker process's own sandbox to apply (Linux):
    /// every one by default, and it should stay so. Turning a layer off is
    /// for debugging and for kernels that break it; a layer this machine
    /// lacks is skipped and logged once whatever the settings say (see
    /// [`Executor::sandbox_status`]).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Executor, SandboxLayer, SandboxSettings};
    /// // Debugging a guest under strace, which seccomp would stop.
    /// let exec = Executor::builder()
    ///     .sandbox(SandboxSettings::default().without(SandboxLayer::Seccomp))
    ///     .build()?;
    /// # let _ = exec;
    /// # Ok(())
    /// # }
    /// ```
    pub fn sandbox(mut self, settings: SandboxSettings) -> Self {
        self.sandbox = settings;
        self
    }

    /// Runs only modules whose hash (hex SHA-256 of the module bytes, as
    /// [`Module::hash`](crate::Module::hash) shows) is in `hashes`: loading
    /// any other fails with [`Error::ModuleNotAllowed`] before anything is
    /// compiled or spawned. Without it, every valid module loads. Calls add
    /// to the list.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let approved = "70878a3881ce48851de2f2fa58dab4fbce839b78eb6b87c4d81b561a24b9c30a";
    /// let exec = asyncer::Executor::builder().allow_modules([approved]).build()?;
    /// match exec.load("uploaded.wasm").await {
    ///     Err(asyncer::Error::ModuleNotAllowed { hash, .. }) => println!("refused {hash}"),
    ///     other => println!("{other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn allow_modules<S: AsRef<str>>(mut self, hashes: impl IntoIterator<Item = S>) -> Self {
        self.allowed_modules.get_or_insert_with(Vec::new).extend(
            hashes
                .into_iter()
                .map(|h| h.as_ref().trim().to_ascii_lowercase()),
        );
        self
    }

    /// Checks the settings, finds the worker program, and starts the
    /// executor's runner on the current tokio runtime.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().build()?;
    /// println!("up to {} workers", exec.max_processes());
    /// assert!(matches!(
    ///     asyncer::Executor::builder().max_processes(0).build(),
    ///     Err(asyncer::Error::InvalidConfig { .. })
    /// ));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an impossible setting (`max_processes`
    /// of 0, a niceness outside 0..=19, warm workers serving 0 tasks, an
    /// allowed module hash that is not 64 hex digits),
    /// [`Error::SpawnFailed`] when the worker program cannot be found,
    /// [`Error::Cache`] when the cache or work directory cannot be made.
    ///
    /// # Panics
    /// Panics when called outside a tokio runtime.
    pub fn build(self) -> Result<Executor, Error> {
        let max_processes = match self.max_processes {
            Some(0) => return Err(invalid("max_processes must be at least 1")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let nice = self.nice.unwrap_or(DEFAULT_NICE);
        if !(0..=19).contains(&nice) {
            return Err(invalid(format!(
                "worker_nice must be within 0..=19, not {nice}"
            )));
        }
        if self.warm.is_some_and(|warm| warm.max_tasks == 0) {
            return Err(invalid("WarmOptions::max_tasks must be at least 1"));
        }
        if let Some(bad) = self
            .allowed_modules
            .iter()
            .flatten()
            .find(|hash| hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid(format!(
                "`{bad}` is not a module hash (64 hex digits of SHA-256)"
            )));
        }
        // No worker program is needed when tasks run elsewhere.
        let worker = match &self.backend {
            Some(_) => None,
            None => Some(locate_worker(self.worker.as_deref())?),
        };
        let temp = tempfile::Builder::new()
            .prefix("asyncer-")
            .tempdir()
            .map_err(|e| Error::cache(std::env::temp_dir(), e))?;
        let cache = match self.cache_dir {
            Some(dir) => ArtifactCache::open(dir)?.with_max_bytes(
                self.cache_max_bytes
                    .unwrap_or(ArtifactCache::DEFAULT_MAX_BYTES),
            ),
            None => ArtifactCache::open(temp.path().join("cache"))?,
        };
        let work_dir = temp.path().join("work");
        std::fs::create_dir_all(&work_dir).map_err(|e| Error::cache(&work_dir, e))?;
        let mode = PoolMode {
            warm: self.warm,
            prestart: self.prestart,
            launch: self.launch,
            nice,
            sandbox: self.sandbox,
            max_idle: max_processes,
        };
        // The compiler keeps the private directories for as long as the
        // executor or a task that may run needs them.
        let compiler = Arc::new(
            Compiler::new(cache).keeping(temp).allowing(
                self.allowed_modules
                    .map(|hashes| hashes.into_iter().collect()),
            ),
        );
        let pool = worker.map(|worker| Pool::new(worker, work_dir, mode));
        let backend: Arc<dyn Backend> = match (self.backend, &pool) {
            (Some(CustomBackend(backend)), _) => backend,
            (None, Some(pool)) => Arc::new(LocalBackend::new(pool.clone(), compiler.clone())),
            (None, None) => unreachable!("the worker was looked up above"),
        };
        Ok(Executor::new(
            Runner::start(
                backend,
                Policy {
                    slots: max_processes,
                    max_queued: self.max_queued,
                    max_queued_per_tenant: self.max_queued_per_tenant,
                    aging: self.priority_aging.unwrap_or(Some(DEFAULT_PRIORITY_AGING)),
                    tenants: self.tenants,
                },
            ),
            compiler,
            Settings {
                max_processes,
                mode,
                limits: self.limits,
                capabilities: self.capabilities,
                retry: self.retry,
                pool,
            },
        ))
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidConfig {
        message: message.into(),
    }
}

/// Default niceness of worker processes.
const DEFAULT_NICE: i32 = 10;

/// How long a queued task waits for each priority level it gains.
const DEFAULT_PRIORITY_AGING: Duration = Duration::from_secs(1);

/// Per-task settings, taken by every `submit*_with` method of [`Executor`].
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
///     .limits(Limits::default().with_max_memory_bytes(128 << 20))
///     .capabilities(Capabilities::none().read_only_dir("/srv/reports", "/reports"));
/// let handle = exec.submit_with::<_, u64>(&module, "add", &(1u64, 2u64), options)?;
/// # let _ = handle;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub(crate) uid: Option<String>,
    pub(crate) limits: Option<Limits>,
    pub(crate) capabilities: Option<Capabilities>,
    pub(crate) tenant: Option<String>,
    pub(crate) priority: i32,
    pub(crate) start_within: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
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
    ///     .limits(Limits::default().with_timeout(Duration::from_millis(500)));
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

    /// The tenant the task runs for: slots are shared between tenants by
    /// weight, each with its own queue bound and cap (see
    /// [`ExecutorBuilder::tenant`]). Default: the default tenant, `""`.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// The task's priority within its tenant: higher runs first, FIFO within
    /// a level (default 0; [`Priority`](crate::Priority) names a few). A
    /// waiting task gains one level per
    /// [`ExecutorBuilder::priority_aging`] interval, so that low priorities
    /// are never starved.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The task must start within `wait` of its submit; if it cannot (no
    /// slot came in time) it ends as [`Error::Expired`] without running.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Priority, TaskOptions};
    /// use std::time::Duration;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let urgent = TaskOptions::new()
    ///     .tenant("alice")
    ///     .priority(Priority::HIGH)
    ///     .start_within(Duration::from_secs(2));
    /// let quote = exec.submit_with::<_, u64>(&module, "price", &42u64, urgent)?.await;
    /// # let _ = quote;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_within(mut self, wait: Duration) -> Self {
        self.start_within = Some(wait);
        self
    }

    /// Runs the task again after the failures `retry` names (by default
    /// only a crashed or lost worker), instead of the executor's default
    /// ([`ExecutorBuilder::retry`]; none unless set).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// Named priority levels (any `i32` works; higher runs first).
#[derive(Debug, Clone, Copy)]
pub struct Priority;

impl Priority {
    /// Background work.
    pub const LOW: i32 = -10;
    /// The default.
    pub const NORMAL: i32 = 0;
    /// Ahead of normal work.
    pub const HIGH: i32 = 10;
    /// Ahead of everything else.
    pub const URGENT: i32 = 100;
}
