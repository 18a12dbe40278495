//! Running one task: instantiate, call the `task:NAME` export, read the
//! result envelope, and account for what the guest used.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use asyncer_protocol::{
    read_frame, write_frame, Capabilities, CommandLine, CommandOutput, EngineFlavor, ErrorKind,
    Failure, FrameError, Limits, Reply, Request, SandboxSettings, Usage, WorkerMessage,
    ABI_ALLOC_EXPORT, ABI_INITIALIZE_EXPORT, ABI_MEMORY_EXPORT, ABI_START_EXPORT,
    ABI_TASK_ALT_PREFIX, ABI_TASK_PREFIX, ENVELOPE_ERR, ENVELOPE_INPUT_DECODE_ERR, ENVELOPE_OK,
};
use wasmtime::{Engine, InstancePre, Linker, Module, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::capture::Capture;
use crate::classify::{classify_error, MemoryLimitExceeded};
use crate::report::{GuestSink, Reporter};
use crate::sandbox::{Policy, Sandbox};

/// The largest request frame a worker accepts (the input plus a little).
const MAX_REQUEST_BYTES: u64 = 1 << 30;

/// Per-store state: the guest's WASI context, the resource limiter and the
/// state of the `asyncer` imports.
///
/// # Examples
/// ```
/// // Made by `run_loaded` for each task; a linker is typed by it.
/// let engine = asyncer_worker::new_engine(Default::default()).unwrap();
/// let linker: wasmtime::Linker<asyncer_worker::StoreState> = asyncer_worker::new_linker(&engine).unwrap();
/// # let _ = linker;
/// ```
pub struct StoreState {
    /// The sandboxed WASI preview 1 context.
    pub wasi: WasiP1Ctx,
    limiter: Limiter,
    pub(crate) reporter: Reporter,
}

/// Caps linear memory and records the largest size reached.
struct Limiter {
    max_memory_bytes: Option<u64>,
    peak_memory_bytes: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(limit) = self.max_memory_bytes {
            if desired as u64 > limit {
                return Err(wasmtime::Error::new(MemoryLimitExceeded { desired, limit }));
            }
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The most elements a guest's table may have.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// One task against an already loaded module.
///
/// # Examples
/// ```
/// // See `run_loaded` for a complete run.
/// fn describe(task: &asyncer_worker::LoadedTask<'_>) -> String {
///     format!("{} with {} input bytes", task.task, task.input.len())
/// }
/// ```
pub struct LoadedTask<'a> {
    /// The engine the module was loaded into.
    pub engine: &'a Engine,
    /// A linker from [`crate::new_linker`].
    pub linker: &'a Linker<StoreState>,
    /// The module.
    pub module: &'a Module,
    /// The flavor the engine was built with.
    pub flavor: EngineFlavor,
    /// Task name, without the `task:` prefix.
    pub task: &'a str,
    /// Postcard-encoded input.
    pub input: &'a [u8],
    /// Limits to enforce.
    pub limits: &'a Limits,
    /// What the guest may reach.
    pub capabilities: &'a Capabilities,
    /// Where the guest's progress and log records go (dropped when `None`).
    pub sink: Option<GuestSink>,
    /// Set to run the module as a WASI command (`_start`) with these
    /// arguments and `input` as its standard input, instead of `task`.
    pub command: Option<&'a CommandLine>,
    /// The module's imports resolved in `linker` once
    /// ([`Linker::instantiate_pre`]), for callers that run many tasks of one
    /// module; `None`: resolved for this task.
    pub pre: Option<&'a InstancePre<StoreState>>,
}

/// Runs one task of an already loaded module in a fresh store and instance.
///
/// Never panics on guest misbehaviour: every failure is a [`Failure`] in the
/// reply.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use asyncer_protocol::{Capabilities, EngineFlavor, GuestMessage, Limits};
/// use asyncer_worker::{new_engine, new_linker, run_loaded, GuestSink, LoadedTask};
///
/// const GUEST: &str = r#"(module
///   (import "asyncer" "log" (func $log (param i32 i32 i32)))
///   (memory (export "memory") 1)
///   (data (i32.const 16) "\00\07hi")
///   (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
///   (func (export "task:seven") (param i32 i32) (result i64)
///     (call $log (i32.const 2) (i32.const 18) (i32.const 2))
///     (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2))))"#;
///
/// let engine = new_engine(EngineFlavor::default()).unwrap();
/// let linker = new_linker(&engine).unwrap();
/// let module = wasmtime::Module::new(&engine, wat::parse_str(GUEST).unwrap()).unwrap();
/// let records = Arc::new(std::sync::Mutex::new(Vec::new()));
/// let sink: GuestSink = {
///     let records = records.clone();
///     Arc::new(move |message: GuestMessage| records.lock().unwrap().push(message))
/// };
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let reply = runtime.block_on(run_loaded(LoadedTask {
///     engine: &engine,
///     linker: &linker,
///     module: &module,
///     flavor: EngineFlavor::default(),
///     task: "seven",
///     input: &[],
///     limits: &Limits::default(),
///     capabilities: &Capabilities::default(),
///     sink: Some(sink),
///     command: None,
///     pre: None,
/// }));
/// assert_eq!(reply.outcome, Ok(vec![7]));
/// assert!(matches!(&records.lock().unwrap()[0], GuestMessage::Log(r) if r.message == "hi"));
/// ```
pub async fn run_loaded(task: LoadedTask<'_>) -> Reply {
    let started = Instant::now();
    let limits = task.limits;
    let log_cap = usize::try_from(limits.max_log_bytes).unwrap_or(usize::MAX);
    let stdout = Capture::new(log_cap);
    let stderr = Capture::new(log_cap);
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout.clone()).stderr(stderr.clone());
    if let Some(command) = task.command {
        wasi.args(&command.args)
            .stdin(MemoryInputPipe::new(task.input.to_vec()));
    }
    for (key, value) in &task.capabilities.env {
        wasi.env(key, value);
    }
    for dir in &task.capabilities.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        if let Err(e) = wasi.preopened_dir(&dir.host, &dir.guest, perms) {
            return Reply::failed(Failure::new(
                ErrorKind::InvalidModule,
                format!("cannot grant directory {}: {e:#}", dir.host),
            ));
        }
    }
    let wasi = wasi.build_p1();
    let mut store = Store::new(
        task.engine,
        StoreState {
            wasi,
            limiter: Limiter {
                max_memory_bytes: limits.max_memory_bytes,
                peak_memory_bytes: 0,
            },
            reporter: Reporter::new(task.sink.clone(), limits.max_log_bytes),
        },
    );
    store.limiter(|state| &mut state.limiter);
    let fuel_budget = limits.fuel.unwrap_or(u64::MAX);
    if task.flavor.fuel {
        // Cannot fail: fuel is enabled in this engine.
        let _ = store.set_fuel(fuel_budget);
    }
    let _deadline = match (task.flavor.epoch, limits.timeout) {
        (true, Some(timeout)) => {
            // The epoch is the engine's, shared by every store in it (other
            // in-process runs): an increment is only a reason to look at this
            // task's own deadline.
            let deadline = Instant::now() + timeout;
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if Instant::now() >= deadline {
                    Err(wasmtime::Trap::Interrupt.into())
                } else {
                    Ok(UpdateDeadline::Continue(1))
                }
            });
            Some(crate::deadline::EpochDeadline::arm(task.engine, timeout))
        }
        (true, None) => {
            store.set_epoch_deadline(u64::MAX);
            None
        }
        (false, _) => None,
    };

    let call = async {
        match task.command {
            Some(_) => call_command(&mut store, &task).await.map(Finished::Exited),
            None => call_task(&mut store, &task).await.map(Finished::Output),
        }
    };
    let outcome = match limits.timeout {
        // Covers host calls (a long WASI sleep) that the epoch cannot interrupt.
        Some(timeout) => match tokio::time::timeout(timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CallError::Failure(Failure::new(
                ErrorKind::Timeout,
                format!("task did not finish within {timeout:?}"),
            ))),
        },
        None => call.await,
    };
    // The last progress goes out before the reply.
    store.data_mut().reporter.flush();
    let recent_stderr = stderr.recent();
    let (stderr, stderr_dropped) = stderr.take();
    let (stdout, stdout_dropped) = stdout.take();
    let outcome = match outcome {
        Ok(Finished::Output(output)) => Ok(output),
        // A command's output is how it ended and what it wrote.
        Ok(Finished::Exited(exit_code)) => postcard::to_allocvec(&CommandOutput {
            exit_code,
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            stdout_dropped,
            stderr_dropped,
        })
        .map_err(|e| {
            Failure::new(
                ErrorKind::Decode,
                format!("cannot encode the command's output: {e}"),
            )
        }),
        Err(CallError::Wasm(error)) => Err(classify_error(&error, &recent_stderr)),
        Err(CallError::Failure(failure)) => Err(failure),
    };
    let fuel_consumed = task
        .flavor
        .fuel
        .then(|| fuel_budget.saturating_sub(store.get_fuel().unwrap_or(0)));
    Reply {
        outcome,
        usage: Usage {
            fuel_consumed,
            peak_memory_bytes: store.data().limiter.peak_memory_bytes,
            run_time: started.elapsed(),
            worker_rss_bytes: 0,
        },
        stdout,
        stderr,
        stdout_dropped,
        stderr_dropped,
        log_dropped: store.data().reporter.log_dropped(),
        sandbox: None,
    }
}

enum CallError {
    Wasm(wasmtime::Error),
    Failure(Failure),
}

/// How a guest call ended well.
enum Finished {
    /// A task's output bytes.
    Output(Vec<u8>),
    /// A command's exit code.
    Exited(i32),
}

impl From<wasmtime::Error> for CallError {
    fn from(error: wasmtime::Error) -> Self {
        CallError::Wasm(error)
    }
}

fn abi_violation(message: impl Into<String>) -> CallError {
    CallError::Failure(Failure::new(ErrorKind::InvalidModule, message))
}

fn decode_failure(message: impl Into<String>) -> CallError {
    CallError::Failure(Failure::new(ErrorKind::Decode, message))
}

/// A fresh instance of the task's module in `store`.
async fn instantiate(
    store: &mut Store<StoreState>,
    task: &LoadedTask<'_>,
) -> wasmtime::Result<wasmtime::Instance> {
    match task.pre {
        Some(pre) => pre.instantiate_async(&mut *store).await,
        None => {
            task.linker
                .instantiate_async(&mut *store, task.module)
                .await
        }
    }
}

async fn call_task(
    store: &mut Store<StoreState>,
    task: &LoadedTask<'_>,
) -> Result<Vec<u8>, CallError> {
    let instance = instantiate(store, task).await?;
    // Looked up without making an error when it is absent (most modules):
    // an error captures a backtrace, a measurable share of a warm task.
    let init = instance
        .get_func(&mut *store, ABI_INITIALIZE_EXPORT)
        .and_then(|init| init.typed::<(), ()>(&*store).ok());
    if let Some(init) = init {
        init.call_async(&mut *store, ()).await?;
    }
    let memory = instance
        .get_memory(&mut *store, ABI_MEMORY_EXPORT)
        .ok_or_else(|| abi_violation("module exports no `memory`"))?;
    let alloc = instance
        .get_typed_func::<i32, i32>(&mut *store, ABI_ALLOC_EXPORT)
        .map_err(|e| abi_violation(format!("`{ABI_ALLOC_EXPORT}`: {e}")))?;
    // `task:NAME`, or the alternative naming `asyncer_task_NAME`.
    let found = [ABI_TASK_PREFIX, ABI_TASK_ALT_PREFIX]
        .into_iter()
        .map(|prefix| format!("{prefix}{}", task.task))
        .find_map(|export| Some((instance.get_func(&mut *store, &export)?, export)));
    let func = match found {
        Some((func, export)) => func
            .typed::<(i32, i32), i64>(&*store)
            .map_err(|e| abi_violation(format!("`{export}` has the wrong signature: {e}")))?,
        None => {
            return Err(CallError::Failure(Failure::new(
                ErrorKind::NoSuchTask,
                format!("module has no task `{}`", task.task),
            )))
        }
    };

    let input_len = i32::try_from(task.input.len())
        .map_err(|_| decode_failure("input is larger than 2 GiB"))?;
    let input_ptr = alloc.call_async(&mut *store, input_len).await?;
    memory
        .write(&mut *store, input_ptr as u32 as usize, task.input)
        .map_err(|_| {
            decode_failure(format!(
                "asyncer_alloc returned {input_ptr:#x}, outside the guest's memory for {input_len} bytes"
            ))
        })?;

    let packed = func.call_async(&mut *store, (input_ptr, input_len)).await? as u64;
    let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    let data = memory.data(&*store);
    let envelope = guest_range(data, out_ptr, out_len).ok_or_else(|| {
        decode_failure(format!(
            "result at {out_ptr:#x}+{out_len} lies outside the guest's memory of {} bytes",
            data.len()
        ))
    })?;
    if out_len as u64 > task.limits.max_output_bytes {
        return Err(CallError::Failure(Failure::new(
            ErrorKind::OutputTooLarge,
            format!(
                "output of {out_len} bytes exceeds the limit of {} bytes",
                task.limits.max_output_bytes
            ),
        )));
    }
    open_envelope(envelope)
}

/// Runs a WASI command: `_start`, whose return is exit code 0 and whose
/// `proc_exit(code)` is exit code `code`.
async fn call_command(
    store: &mut Store<StoreState>,
    task: &LoadedTask<'_>,
) -> Result<i32, CallError> {
    let instance = instantiate(store, task).await?;
    let start = instance
        .get_typed_func::<(), ()>(&mut *store, ABI_START_EXPORT)
        .map_err(|e| abi_violation(format!("`{ABI_START_EXPORT}`: {e}")))?;
    match start.call_async(&mut *store, ()).await {
        Ok(()) => Ok(0),
        Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(CallError::Wasm(error)),
        },
    }
}

/// The `len` bytes at `start` of a guest's memory, if all of them lie in it
/// (no overflow past `usize`).
pub(crate) fn guest_range(data: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    start.checked_add(len).and_then(|end| data.get(start..end))
}

/// Reads a guest ABI v1 result envelope.
fn open_envelope(envelope: &[u8]) -> Result<Vec<u8>, CallError> {
    let message = |body: &[u8]| {
        postcard::from_bytes::<String>(body)
            .map_err(|e| decode_failure(format!("guest error message does not decode: {e}")))
    };
    match envelope.split_first() {
        Some((&ENVELOPE_OK, output)) => Ok(output.to_vec()),
        Some((&ENVELOPE_ERR, body)) => Err(CallError::Failure(Failure::new(
            ErrorKind::GuestError,
            message(body)?,
        ))),
        Some((&ENVELOPE_INPUT_DECODE_ERR, body)) => Err(decode_failure(message(body)?)),
        Some((tag, _)) => Err(decode_failure(format!(
            "result envelope starts with {tag:#04x}, expected 0x00 or 0x01"
        ))),
        None => Err(decode_failure("result envelope is empty")),
    }
}

/// An engine with its WASI linker.
type Linked = (Engine, Arc<Linker<StoreState>>);

/// A loaded module with its imports resolved once (`None` when they cannot
/// be: the task's instantiation then says why).
type Prepared = (Module, Option<InstancePre<StoreState>>);

/// Engines, linkers and loaded modules a worker keeps between the tasks it
/// serves (one in the default mode, many in warm mode), and its sandbox.
pub(crate) struct WorkerCache {
    /// By flavor, wasm stack and whether the engine pools its instances.
    /// The linker is shared, not cloned per task: a clone copies every WASI
    /// definition (a measurable share of a warm task).
    engines: HashMap<(EngineFlavor, usize, bool), Linked>,
    modules: HashMap<(String, EngineFlavor, usize, bool), Prepared>,
    /// Artifacts that do not fit the warm pool's slots (more memories or
    /// tables, or bigger ones, than [`crate::warm_pool`] allows): they run
    /// with instances allocated on demand, as in a fresh process.
    unpooled: std::collections::HashSet<String>,
    sandbox: Sandbox,
    /// Warm mode: later tasks load their artifacts from the same cache.
    warm: bool,
    /// `/proc/self/statm`, opened before the sandbox closes the file system.
    statm: Option<std::fs::File>,
}

/// Most modules a warm worker keeps loaded.
const MAX_CACHED_MODULES: usize = 16;

impl WorkerCache {
    pub(crate) fn new(sandbox: Sandbox, warm: bool) -> Self {
        WorkerCache {
            engines: HashMap::new(),
            modules: HashMap::new(),
            unpooled: std::collections::HashSet::new(),
            sandbox,
            warm,
            statm: std::fs::File::open("/proc/self/statm").ok(),
        }
    }

    /// Locks the worker down to what `request` needs: its artifact (a warm
    /// worker: every artifact in the same cache) and its granted directories.
    fn lock_down(&mut self, request: &Request) -> Result<(), Failure> {
        let artifact = std::path::Path::new(&request.artifact);
        let mut policy = Policy::default().read_file(artifact);
        if self.warm {
            if let Some(cache) = artifact.parent() {
                policy = policy.read_beneath(cache);
            }
        }
        for dir in &request.capabilities.dirs {
            policy = policy.grant(&dir.host, dir.writable);
        }
        self.sandbox
            .lock_down(&policy)
            .map_err(|message| Failure::new(ErrorKind::InvalidConfig, message))
    }

    pub(crate) fn engine(
        &mut self,
        flavor: EngineFlavor,
        stack: usize,
        pooled: bool,
    ) -> Result<Linked, Failure> {
        if let Some(found) = self.engines.get(&(flavor, stack, pooled)) {
            return Ok(found.clone());
        }
        let mut config = crate::engine_config_with_stack(flavor, stack);
        if pooled {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                crate::warm_pool(),
            ));
        }
        let engine = Engine::new(&config).map_err(|e| {
            Failure::new(
                ErrorKind::EngineFailed,
                format!("cannot make the engine: {e:#}"),
            )
        })?;
        let linker = crate::new_linker(&engine)
            .map(Arc::new)
            .map_err(|e| Failure::new(ErrorKind::LinkFailed, format!("cannot link WASI: {e:#}")))?;
        self.engines
            .insert((flavor, stack, pooled), (engine.clone(), linker.clone()));
        Ok((engine, linker))
    }

    fn module(
        &mut self,
        engine: &Engine,
        linker: &Linker<StoreState>,
        (artifact, flavor): (&str, EngineFlavor),
        stack: usize,
        pooled: bool,
    ) -> Result<Prepared, Failure> {
        let key = (artifact.to_string(), flavor, stack, pooled);
        if let Some(module) = self.modules.get(&key) {
            return Ok(module.clone());
        }
        let module = crate::artifact::open(engine, Path::new(artifact)).map_err(|e| {
            Failure::new(
                ErrorKind::CacheFailed,
                format!("cannot load artifact {artifact}: {e:#}"),
            )
        })?;
        let pre = linker.instantiate_pre(&module).ok();
        if self.modules.len() >= MAX_CACHED_MODULES {
            self.modules.clear();
        }
        self.modules.insert(key, (module.clone(), pre.clone()));
        Ok((module, pre))
    }

    /// The engine, linker and module (with its imports resolved) for
    /// `artifact` of `flavor`, each made once.
    pub(crate) fn load(
        &mut self,
        artifact: (&str, EngineFlavor),
        stack: usize,
        pooled: bool,
    ) -> Result<(Prepared, Engine, Arc<Linker<StoreState>>), Failure> {
        let (engine, linker) = self.engine(artifact.1, stack, pooled)?;
        let module = self.module(&engine, &linker, artifact, stack, pooled)?;
        Ok((module, engine, linker))
    }

    /// The worker's sandbox.
    pub(crate) fn sandbox_mut(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }

    /// Opens `/proc/self/statm` again (a forked child: the template's copy
    /// names the template).
    pub(crate) fn reopen_statm(&mut self) {
        self.statm = std::fs::File::open("/proc/self/statm").ok();
    }

    /// Loads the request's precompiled artifact (once) and runs its task.
    async fn run(&mut self, request: &Request, sink: &GuestSink, before_task: fn(&str)) -> Reply {
        let stack = wasm_stack(request.limits.max_wasm_stack);
        let artifact = (request.artifact.as_str(), request.flavor);
        // Warm: pooled instances, unless the module does not fit the pool
        // (its load says so) and then on demand.
        let pooled = self.warm && !self.unpooled.contains(&request.artifact);
        let loaded = match self.load(artifact, stack, pooled) {
            Err(_) if pooled => {
                self.unpooled.insert(request.artifact.clone());
                self.load(artifact, stack, false)
            }
            loaded => loaded,
        };
        let ((module, pre), engine, linker) = match loaded.and_then(|loaded| {
            self.lock_down(request)?;
            Ok(loaded)
        }) {
            Ok(loaded) => loaded,
            Err(failure) => return Reply::failed(failure),
        };
        before_task(&request.task);
        let mut reply = run_loaded(LoadedTask {
            engine: &engine,
            linker: &linker,
            module: &module,
            flavor: request.flavor,
            task: &request.task,
            input: &request.input,
            limits: &request.limits,
            capabilities: &request.capabilities,
            sink: Some(sink.clone()),
            command: request.command.as_ref(),
            pre: pre.as_ref(),
        })
        .await;
        reply.usage.worker_rss_bytes = self.resident_set_bytes();
        reply.sandbox = Some(Box::new(self.sandbox.status().clone()));
        reply
    }

    /// This process's resident set size (Linux; 0 elsewhere).
    fn resident_set_bytes(&self) -> u64 {
        let mut statm = [0u8; 128];
        let read = self.statm.as_ref().and_then(|file| {
            use std::os::unix::fs::FileExt;
            file.read_at(&mut statm, 0).ok()
        });
        let pages: u64 = std::str::from_utf8(&statm[..read.unwrap_or(0)])
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
}

/// Reads the next request, or `None` when stdin is closed between requests.
fn next_request(stdin: &mut impl BufRead) -> Result<Option<Request>, FrameError> {
    if stdin.fill_buf()?.is_empty() {
        return Ok(None);
    }
    read_frame(stdin, MAX_REQUEST_BYTES).map(Some)
}

/// The worker program: serves requests from stdin until stdin is closed;
/// for each, writes the guest's progress and log records as they come, then
/// one reply, to stdout. The executor sends one request and closes stdin
/// (a fresh process per task), or keeps the pipe open in warm mode.
///
/// With `--prewarm`, the default engine and the WASI linker are made before
/// the first request arrives (for spawned-ahead workers).
///
/// The worker's own sandbox ([`Sandbox`]): it enters new namespaces first
/// thing, and locks itself down once the first task's module is loaded, to
/// that task's artifact and granted directories (`--warm`: to every
/// artifact of the same cache, and it then serves only tasks with the same
/// grants). `--sandbox-off LAYER,...` leaves layers out;
/// `--join-namespaces USER,NET,IPC --max-tasks N` joins namespaces the
/// executor made once ([`SharedNamespaces`](crate::SharedNamespaces)) instead
/// of making new ones; `--make-namespaces` makes them for the executor;
/// `--probe-sandbox` locks down with nothing granted, replies with how each
/// layer stands, and exits. `--template` (Linux) makes the worker a
/// template: with a control socket as its stdin, it forks one child per
/// task, each serving exactly one request (see `template.rs`).
///
/// Exit code 0 when stdin was closed between requests, 2 for an unknown
/// sandbox layer, 3 when a request could not be read, 4 when a reply could
/// not be written.
///
/// # Examples
/// ```no_run
/// // The whole `asyncer-worker` program:
/// fn main() -> std::process::ExitCode {
///     asyncer_worker::serve_stdio()
/// }
/// ```
pub fn serve_stdio() -> ExitCode {
    serve_stdio_with_hook(|_| {})
}

/// What `asyncer-worker --build-info` prints: its version, protocol version,
/// and whether a compiler (cranelift) was built into it. The worker only
/// loads precompiled artifacts; a compiler in it means cargo unified the
/// host's features into its build (`cargo build -p asyncer-worker` inside a
/// project that depends on `asyncer`): a bigger, slower-starting program.
///
/// # Examples
/// ```
/// let info = asyncer_worker::build_info();
/// assert!(info.lines().any(|line| line.starts_with("compiler: ")));
/// ```
pub fn build_info() -> String {
    // The host enables this crate's `compiler` feature (cranelift); cargo
    // unifies it into a worker built in the same build.
    let compiles = cfg!(feature = "compiler");
    format!(
        "asyncer-worker {}\nprotocol: {}\ncompiler: {}\n",
        env!("CARGO_PKG_VERSION"),
        asyncer_protocol::PROTOCOL_VERSION,
        if compiles { "yes" } else { "no" },
    )
}

/// [`serve_stdio`], calling `before_task` with each task's name once the
/// worker is locked down and just before the guest runs. For tests that
/// play an escaped guest (a system call the sandbox forbids) and for
/// instrumentation; the `asyncer-worker` program passes nothing.
///
/// # Examples
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     asyncer_worker::serve_stdio_with_hook(|task| eprintln!("running {task}"))
/// }
/// ```
pub fn serve_stdio_with_hook(before_task: fn(&str)) -> ExitCode {
    crate::hygiene::harden();
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|arg| arg == flag);
    if has("--build-info") {
        print!("{}", build_info());
        return ExitCode::SUCCESS;
    }
    let settings = match SandboxSettings::from_args(args.iter().map(String::as_str)) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("asyncer-worker: {e}");
            return ExitCode::from(2);
        }
    };
    if has("--make-namespaces") {
        Sandbox::hold_new_namespaces();
        return ExitCode::SUCCESS;
    }
    #[cfg(target_os = "linux")]
    if has("--template") {
        return ExitCode::from(crate::template::serve(settings, &args, before_task));
    }
    let sandbox = Sandbox::enter(settings, &args);
    if has("--probe-sandbox") {
        return probe_sandbox(sandbox);
    }
    let mut cache = WorkerCache::new(sandbox, has("--warm"));
    if has("--prewarm") {
        let pooled = cache.warm;
        let _ = cache.engine(EngineFlavor::default(), crate::MAX_WASM_STACK, pooled);
    }
    ExitCode::from(serve_requests(&mut cache, before_task, false))
}

/// The largest wasm stack for a task's `max_wasm_stack` limit.
pub(crate) fn wasm_stack(limit: Option<u64>) -> usize {
    limit.map_or(crate::MAX_WASM_STACK, |s| {
        usize::try_from(s).unwrap_or(usize::MAX)
    })
}

/// Serves requests from stdin with `cache` until stdin is closed (`once`:
/// after the first reply); the exit code (see [`serve_stdio`]).
pub(crate) fn serve_requests(cache: &mut WorkerCache, before_task: fn(&str), once: bool) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        // WASI's file operations: few threads (the sandbox caps them).
        .max_blocking_threads(crate::sandbox::MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("asyncer-worker: cannot start runtime: {e}");
            return 4;
        }
    };
    let mut stdin = std::io::stdin().lock();
    // Frames are written whole by one thread (the guest's host calls run on
    // it too), so they never interleave. A failed write means the host is
    // gone: the reply's write fails as well and ends the worker.
    let sink: GuestSink = Arc::new(|message| {
        let _ = write_frame(
            &mut std::io::stdout().lock(),
            &WorkerMessage::Guest(message),
        );
    });
    loop {
        let request = match next_request(&mut stdin) {
            Ok(Some(request)) => request,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("asyncer-worker: cannot read request: {e}");
                return 3;
            }
        };
        let reply = runtime.block_on(cache.run(&request, &sink, before_task));
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = write_frame(&mut stdout, &WorkerMessage::Reply(reply))
            .and_then(|()| Ok(stdout.flush()?))
        {
            eprintln!("asyncer-worker: cannot write reply: {e}");
            return 4;
        }
        if once {
            return 0;
        }
    }
}

/// `--probe-sandbox`: locks down with nothing granted and replies with how
/// each layer stands (no task runs).
fn probe_sandbox(mut sandbox: Sandbox) -> ExitCode {
    let mut reply = Reply::failed(Failure::new(
        ErrorKind::Cancelled,
        "no task: a sandbox probe",
    ));
    reply.sandbox = match sandbox.lock_down(&Policy::default()) {
        Ok(()) => Some(Box::new(sandbox.status().clone())),
        Err(_) => None,
    };
    let mut stdout = std::io::stdout().lock();
    match write_frame(&mut stdout, &WorkerMessage::Reply(reply)).and_then(|()| Ok(stdout.flush()?))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(4),
    }
}
