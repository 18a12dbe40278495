//! The public face of the executor: loading modules, submitting tasks,
//! subscribing to events, shutting down. A submitted task goes to the
//! [`Runner`](crate::runner) (queue and slots), whose
//! [`Owner`](crate::owner) hands it to the backend
//! ([`dispatch`](crate::dispatch)).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use asyncer_protocol::{CommandLine, TaskRef, ABI_START_EXPORT};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::dispatch::Assignment;
use crate::event::{EventStream, UpdateStream};
use crate::handle::{decode_postcard, raw, Decode, TaskHandle};
use crate::local::{blocking, run_in_process};
use crate::module::{Compiler, Module};
use crate::pool::{Pool, PoolMode};
use crate::runner::Runner;
use crate::{
    Capabilities, CommandInput, CommandOutput, Error, ExecutorBuilder, Limits, TaskOptions,
};

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
    inner: Arc<Inner>,
}

struct Inner {
    runner: Runner,
    compiler: Arc<Compiler>,
    settings: Settings,
}

/// The executor-wide settings, checked by [`ExecutorBuilder::build`].
pub(crate) struct Settings {
    pub(crate) max_processes: usize,
    pub(crate) mode: PoolMode,
    pub(crate) limits: Limits,
    pub(crate) capabilities: Capabilities,
    /// Every task's retries unless its options say otherwise.
    pub(crate) retry: Option<crate::RetryPolicy>,
    /// The local worker pool (`None` with another backend).
    pub(crate) pool: Option<Arc<Pool>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("max_processes", &self.inner.settings.max_processes)
            .field("mode", &self.inner.settings.mode)
            .finish_non_exhaustive()
    }
}

impl Executor {
    pub(crate) fn new(runner: Runner, compiler: Arc<Compiler>, settings: Settings) -> Self {
        Executor {
            inner: Arc::new(Inner {
                runner,
                compiler,
                settings,
            }),
        }
    }

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
        self.inner.settings.max_processes
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
    /// ABI (imports other than WASI, missing exports, wrong task signatures),
    /// [`Error::ModuleNotAllowed`] when the executor has an allow-list of
    /// module hashes without this one's.
    pub async fn load(&self, path: impl AsRef<Path>) -> Result<Module, Error> {
        let path = path.as_ref().to_owned();
        let compiler = self.inner.compiler.clone();
        let flavor = self.inner.settings.limits.flavor();
        blocking(move || compiler.load_path(&path, flavor)).await
    }

    /// How each layer of the worker processes' own sandbox stands on this
    /// machine: a worker is started with the executor's settings, locks
    /// itself down with nothing granted, and reports (no task runs).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let exec = asyncer::Executor::builder().build()?;
    /// let status = exec.sandbox_status().await?;
    /// for (layer, state) in status.layers() {
    ///     println!("{layer}: {state}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when tasks run on another backend (its hosts
    /// have sandboxes of their own), [`Error::SpawnFailed`] or
    /// [`Error::WorkerCrashed`] when the worker cannot be started or dies.
    pub async fn sandbox_status(&self) -> Result<crate::SandboxStatus, Error> {
        match &self.inner.settings.pool {
            Some(pool) => pool.probe_sandbox().await,
            None => Err(Error::InvalidConfig {
                message: "tasks run on another backend, whose hosts have their own sandboxes"
                    .into(),
            }),
        }
    }

    /// Whether a module with this hash (hex SHA-256 of its bytes) may load:
    /// always, unless the executor was given an allow-list
    /// ([`ExecutorBuilder::allow_modules`]).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// let approved = "70878a3881ce48851de2f2fa58dab4fbce839b78eb6b87c4d81b561a24b9c30a";
    /// let exec = asyncer::Executor::builder().allow_modules([approved]).build()?;
    /// assert!(exec.allows_module(approved));
    /// assert!(!exec.allows_module(&"0".repeat(64)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn allows_module(&self, hash: &str) -> bool {
        self.inner.compiler.allows(hash)
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
        let compiler = self.inner.compiler.clone();
        let flavor = self.inner.settings.limits.flavor();
        blocking(move || compiler.load_bytes("<bytes>".into(), bytes, flavor)).await
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
    /// [`Error::InputTooLarge`] when it is larger than the input limit,
    /// [`Error::ShutDown`] once the executor is shutting down.
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
    /// let options = TaskOptions::new().uid("job-7").limits(Limits::default().with_fuel(10_000_000));
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
        self.submit_task_with(module, task, input, TaskOptions::default())
    }

    /// [`Executor::submit_task`] with a uid, limits or capabilities of its
    /// own.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{TaskOptions, TaskRef};
    /// const ADD: TaskRef<(u64, u64), u64> = TaskRef::new("add");
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit_task_with(&module, ADD, &(1, 2), TaskOptions::new().uid("sum-1"))?;
    /// assert_eq!(handle.uid(), "sum-1");
    /// assert_eq!(handle.await?, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Executor::submit`].
    pub fn submit_task_with<I, O>(
        &self,
        module: &Module,
        task: TaskRef<I, O>,
        input: &I,
        options: TaskOptions,
    ) -> Result<TaskHandle<O>, Error>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        self.submit_with(module, task.name(), input, options)
    }

    /// Queues a task with raw postcard input bytes, moved to the worker
    /// without a copy; the handle resolves to the raw output bytes (the
    /// postcard `Output`, without envelope byte).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// // (1u64, 2u64) in postcard is [1, 2]; the output 3u64 is [3].
    /// let handle = exec.submit_bytes(&module, "add", vec![1, 2])?;
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
    ) -> Result<TaskHandle<Vec<u8>>, Error> {
        self.submit_bytes_with(module, task, input, TaskOptions::default())
    }

    /// [`Executor::submit_bytes`] with a uid, limits or capabilities of its
    /// own.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::TaskOptions;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit_bytes_with(&module, "add", vec![1, 2], TaskOptions::new().uid("raw-1"))?;
    /// assert_eq!(handle.await?, vec![3]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Executor::submit`].
    pub fn submit_bytes_with(
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
        let settings = &self.inner.settings;
        let output = run_in_process(
            &self.inner.compiler,
            module,
            task,
            &input,
            &settings.limits,
            &settings.capabilities,
        )
        .await?;
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
        self.inner.runner.events()
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
        self.inner.runner.updates()
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
        self.inner.runner.shutdown(grace).await;
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
        self.inner.runner.abort().await;
    }

    /// Resolves once a task of `tenant` (`None`: the default tenant) would
    /// be queued rather than refused with [`Error::QueueFull`]: for callers
    /// who would rather wait than fail at the queue's bound. Another
    /// submitter may take the room first, so submit in a loop:
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::Error;
    /// # let exec = asyncer::Executor::builder().max_queued(100).build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = loop {
    ///     match exec.submit::<_, u64>(&module, "add", &(1u64, 2u64)) {
    ///         Err(Error::QueueFull { .. }) => exec.room(None).await,
    ///         other => break other?,
    ///     }
    /// };
    /// # let _ = handle;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn room(&self, tenant: Option<&str>) {
        self.inner.runner.room(tenant.unwrap_or_default()).await;
    }

    /// Tasks waiting for a slot: `(in all, of tenant)` (`None`: the default
    /// tenant).
    pub fn queued(&self, tenant: Option<&str>) -> (usize, usize) {
        self.inner.runner.queued(tenant.unwrap_or_default())
    }

    /// Tenant `tenant`'s settings: those given to
    /// [`ExecutorBuilder::tenant`](crate::ExecutorBuilder::tenant), or the
    /// defaults (weight 1, no cap).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::{Executor, TenantSettings};
    /// let exec = Executor::builder()
    ///     .tenant("batch", TenantSettings::new().max_running(1))
    ///     .build()?;
    /// assert_eq!(exec.tenant_settings("batch").running_cap(), Some(1));
    /// assert_eq!(exec.tenant_settings("anyone").share(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn tenant_settings(&self, tenant: &str) -> crate::TenantSettings {
        self.inner.runner.policy().settings(tenant)
    }

    /// How long a waiting task takes to gain a priority level (`None`:
    /// strict priorities); see
    /// [`ExecutorBuilder::priority_aging`](crate::ExecutorBuilder::priority_aging).
    pub fn priority_aging(&self) -> Option<std::time::Duration> {
        self.inner.runner.policy().aging
    }

    /// Queues task `task` with a JSON input, for modules that describe their
    /// task types (every `#[task]` of `asyncer-guest` does, see
    /// [`Module::task_types`]); the handle resolves to the output as JSON.
    /// The value is encoded to the task's postcard input before anything is
    /// queued; modules without descriptions keep working with bytes
    /// ([`submit_bytes`](Self::submit_bytes)).
    ///
    /// The mapping: structs are objects (every field, no unknown ones;
    /// a missing `Option` field is `None`), sequences and tuples arrays,
    /// `Option` `null` or the value, unit variants `"Name"` and other variants
    /// `{"Name": value}`, maps objects (string keys) or arrays of pairs,
    /// integers numbers within their type's range, and `u128`/`i128`
    /// decimal strings (a number is accepted as input).
    ///
    /// # Errors
    /// [`Error::NoSuchTask`]; [`Error::Decode`] when the module does not
    /// describe the task or the value does not fit its input type, naming
    /// where (`input at .uid: expected a string, found the number 5`);
    /// otherwise as [`submit`](Self::submit).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use serde_json::json;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("heavy.wasm").await?;
    /// let out = exec.submit_json(&module, "heavy", json!({"uid": "a", "n": 10_000_000}))?.await?;
    /// assert_eq!(out, json!({"uid": "a", "result": "333333283333335000000"}));
    /// # Ok(())
    /// # }
    /// ```
    pub fn submit_json(
        &self,
        module: &Module,
        task: &str,
        input: serde_json::Value,
    ) -> Result<TaskHandle<serde_json::Value>, Error> {
        self.submit_json_with(module, task, input, TaskOptions::new())
    }

    /// [`submit_json`](Self::submit_json) with a uid, limits or
    /// capabilities of the task's own.
    ///
    /// # Errors
    /// As [`submit_json`](Self::submit_json).
    pub fn submit_json_with(
        &self,
        module: &Module,
        task: &str,
        input: serde_json::Value,
        options: TaskOptions,
    ) -> Result<TaskHandle<serde_json::Value>, Error> {
        let bytes = module.encode_json(task, &input)?;
        let (described, name) = (module.clone(), task.to_owned());
        let decode = Decode::Boxed(Box::new(move |output: Vec<u8>| {
            described.decode_json(&name, &output)
        }));
        self.enqueue_inner(module, task, bytes, options, decode, None)
    }

    /// Queues a run of a WASI command module (one that exports `_start`):
    /// its arguments, environment and standard input in `input`. The handle
    /// resolves to how it exited and what it wrote; a non-zero exit code is
    /// an outcome (`Ok`), a trap or a limit an error as for any task. Its
    /// event names the task `_start`.
    ///
    /// # Errors
    /// [`Error::NoSuchTask`] (for `_start`) when the module is not a
    /// command; [`Error::InputTooLarge`] for standard input over
    /// `max_input_bytes`; [`Error::ShutDown`] after shutdown.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::CommandInput;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let tool = exec.load("grep.wasm").await?;
    /// let out = exec
    ///     .submit_command(&tool, CommandInput::new().arg("-c").arg("b").stdin("a\nb\nb\n"))?
    ///     .await?;
    /// assert_eq!((out.exit_code, out.stdout_text().as_str()), (0, "2\n"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn submit_command(
        &self,
        module: &Module,
        input: CommandInput,
    ) -> Result<TaskHandle<CommandOutput>, Error> {
        self.submit_command_with(module, input, TaskOptions::new())
    }

    /// [`submit_command`](Self::submit_command) with a uid, limits or
    /// capabilities (directory grants, environment) of the run's own.
    ///
    /// # Errors
    /// As [`submit_command`](Self::submit_command).
    pub fn submit_command_with(
        &self,
        module: &Module,
        input: CommandInput,
        options: TaskOptions,
    ) -> Result<TaskHandle<CommandOutput>, Error> {
        module.check_command()?;
        let CommandInput { args, env, stdin } = input;
        let argv = std::iter::once(module.name().to_owned())
            .chain(args)
            .collect();
        let command = Command {
            line: CommandLine { args: argv },
            env,
        };
        self.enqueue_inner(
            module,
            ABI_START_EXPORT,
            stdin,
            options,
            Decode::Fn(decode_postcard::<CommandOutput>),
            Some(command),
        )
    }

    /// Resolves the task's limits and capabilities (task > module >
    /// executor), checks it, and hands it to the runner.
    fn enqueue<O>(
        &self,
        module: &Module,
        task: &str,
        input: Vec<u8>,
        options: TaskOptions,
        decode: fn(Vec<u8>) -> Result<O, Error>,
    ) -> Result<TaskHandle<O>, Error> {
        module.check_task(task)?;
        self.enqueue_inner(module, task, input, options, Decode::Fn(decode), None)
    }

    /// [`enqueue`](Self::enqueue) after the task (or command) was checked.
    fn enqueue_inner<O>(
        &self,
        module: &Module,
        task: &str,
        input: Vec<u8>,
        options: TaskOptions,
        decode: Decode<O>,
        command: Option<Command>,
    ) -> Result<TaskHandle<O>, Error> {
        let settings = &self.inner.settings;
        let limits = options
            .limits
            .or_else(|| module.limits().cloned())
            .unwrap_or_else(|| settings.limits.clone());
        let mut capabilities = options
            .capabilities
            .or_else(|| module.capabilities().cloned())
            .unwrap_or_else(|| settings.capabilities.clone());
        let command = match command {
            Some(Command { line, env }) => {
                capabilities = capabilities.overriding_env(env);
                Some(line)
            }
            None => None,
        };
        if input.len() as u64 > limits.max_input_bytes() {
            return Err(Error::InputTooLarge {
                size: input.len() as u64,
                limit: limits.max_input_bytes(),
            });
        }
        let start_by = options
            .start_within
            .map(|wait| std::time::SystemTime::now() + wait);
        let assignment = Assignment {
            retry: options.retry.or_else(|| settings.retry.clone()),
            tenant: options.tenant.unwrap_or_default(),
            priority: options.priority,
            start_by,
            uid: options
                .uid
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            task: task.to_owned(),
            module: module.clone(),
            input,
            limits,
            capabilities,
            command,
        };
        self.inner.runner.submit(assignment, decode)
    }
}

/// A command's line and the environment variables it adds.
struct Command {
    line: CommandLine,
    env: Vec<(String, String)>,
}

/// The postcard bytes of a task's input.
fn encode_input<I: Serialize + ?Sized>(input: &I) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(input).map_err(|e| Error::Decode {
        message: format!("input does not encode: {e}"),
    })
}
