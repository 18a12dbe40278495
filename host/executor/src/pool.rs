//! The pool of worker processes (fresh, spawned ahead, or warm): spawns
//! them, hands each a request, reads the guest's reports and the reply, and
//! always reaps them.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use asyncer_protocol::{
    decode_frame, frame_body_len, FrameError, Reply, Request, SandboxSettings, SandboxStatus,
    WorkerMessage, FRAME_HEADER_LEN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::dispatch::RunContext;
use crate::Error;

/// How much of a worker's own stderr is kept for crash reports.
const STDERR_TAIL_BYTES: usize = 4096;
/// How long the host waits past the task's timeout before killing the worker
/// (the worker's own deadline should have answered first).
const KILL_GRACE: Duration = Duration::from_millis(500);

/// Inputs up to this size are copied behind the request's head and written
/// with it; larger ones are written on their own, straight from the request.
const INLINE_INPUT_BYTES: usize = 64 << 10;

/// What became of one task's trip to a worker.
pub(crate) struct WorkerRun {
    pub(crate) pid: Option<u32>,
    pub(crate) exit_status: Option<String>,
    pub(crate) started_at: std::time::SystemTime,
    pub(crate) reply: Result<Reply, Error>,
    /// A worker that replied and is on its way out: reap it after the
    /// result is delivered (the slot stays taken until then).
    pub(crate) exiting: Option<ExitingWorker>,
}

/// A worker that has replied and was told to exit.
pub(crate) struct ExitingWorker(Worker);

impl ExitingWorker {
    /// Waits for the worker to exit (killing it if it lingers) and says how
    /// it ended.
    pub(crate) async fn reap(mut self) -> Option<String> {
        self.0.retire().await.ok().map(describe)
    }
}

/// How workers are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolMode {
    /// `Some`: warm mode, a worker serves many tasks.
    pub(crate) warm: Option<WarmOptions>,
    /// Idle workers started ahead of need (fresh-process mode only).
    pub(crate) prestart: usize,
    /// How other fresh processes are started.
    pub(crate) launch: Launch,
    /// Scheduling niceness of the workers.
    pub(crate) nice: i32,
    /// The layers of each worker's own sandbox.
    pub(crate) sandbox: SandboxSettings,
    /// Most idle warm workers kept (the executor's process bound).
    pub(crate) max_idle: usize,
}

/// Warm mode: each worker serves many tasks, each in a fresh wasm store and
/// instance, and is replaced after `max_tasks` tasks, after any failure that
/// kills it, or once its resident memory exceeds `max_rss_bytes`.
///
/// # Examples
/// ```
/// use asyncer::WarmOptions;
/// let options = WarmOptions::default().max_rss_bytes(128 << 20);
/// assert_eq!(options.max_tasks, 1000);
/// assert_eq!(options.max_rss_bytes, 128 << 20);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmOptions {
    /// Tasks a worker serves before it is replaced.
    pub max_tasks: u64,
    /// Resident memory past which a worker is replaced after its task.
    pub max_rss_bytes: u64,
}

impl WarmOptions {
    /// Tasks a worker serves before it is replaced (at least 1).
    ///
    /// # Examples
    /// ```
    /// let options = asyncer::WarmOptions::default().max_tasks(500);
    /// assert_eq!(options.max_tasks, 500);
    /// ```
    pub fn max_tasks(mut self, tasks: u64) -> Self {
        self.max_tasks = tasks;
        self
    }

    /// Resident memory past which a worker is replaced after its task.
    ///
    /// # Examples
    /// ```
    /// let options = asyncer::WarmOptions::default().max_rss_bytes(256 << 20);
    /// assert_eq!(options.max_rss_bytes, 256 << 20);
    /// ```
    pub fn max_rss_bytes(mut self, bytes: u64) -> Self {
        self.max_rss_bytes = bytes;
        self
    }
}

impl Default for WarmOptions {
    /// 1,000 tasks or 512 MiB, whichever comes first.
    fn default() -> Self {
        WarmOptions {
            max_tasks: 1000,
            max_rss_bytes: 512 << 20,
        }
    }
}

/// How a fresh worker process (one per task) is started.
///
/// # Examples
/// ```
/// assert_eq!(asyncer::Launch::default(), asyncer::Launch::Fork);
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Launch {
    /// Forked from a template: one worker process per executor, started
    /// once, that holds the engine, the WASI linker and the tasks' loaded
    /// modules and never runs guest code. Each task gets a new child of it
    /// (a child of the executor's process, as a spawned worker is) that
    /// serves that one task in its own sandbox and exits. A template that
    /// dies is replaced. Linux; elsewhere this means [`Launch::Spawn`].
    #[default]
    Fork,
    /// Spawned: the worker program is started anew for each task.
    Spawn,
}

/// The worker processes of one executor: spawns them, hands them requests,
/// keeps idle ones (spawned ahead, or warm), and always reaps them.
pub(crate) struct Pool {
    program: PathBuf,
    work_dir: PathBuf,
    mode: PoolMode,
    idle: std::sync::Mutex<Vec<Worker>>,
    closed: std::sync::atomic::AtomicBool,
    /// Held while workers are started ahead, so that `drain` waits for a
    /// refill under way instead of missing the worker it adds.
    refilling: tokio::sync::Mutex<()>,
    /// Whether a worker's missing sandbox layer was logged (once).
    missing_layer_logged: std::sync::atomic::AtomicBool,
    /// The user, network and IPC namespaces made once for the workers to
    /// join (`None`: each worker makes its own, or none are wanted).
    namespaces: Option<asyncer_worker::SharedNamespaces>,
    /// The template fresh workers are forked from ([`Launch::Fork`]),
    /// started with the first task that needs it.
    #[cfg(target_os = "linux")]
    template: tokio::sync::Mutex<Option<crate::template::Template>>,
    /// Set once templates failed: workers are spawned from then on.
    #[cfg(target_os = "linux")]
    fork_off: std::sync::atomic::AtomicBool,
    /// The artifact of the last task, for children forked ahead.
    #[cfg(target_os = "linux")]
    last_artifact: std::sync::Mutex<asyncer_protocol::ForkRequest>,
}

/// One live worker process.
struct Worker {
    process: Process,
    pid: u32,
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    stderr_tail: Arc<std::sync::Mutex<Vec<u8>>>,
    stderr_done: tokio::task::JoinHandle<()>,
    tasks_served: u64,
    /// The directory grants its sandbox is locked to, once it served a task
    /// (a warm worker serves only tasks with the same grants).
    grants: Option<Grants>,
    /// Counted in the live-workers gauge while it exists.
    _live: crate::measure::LiveWorker,
}

/// The directories a task is granted, as a worker's sandbox sees them.
type Grants = Vec<(String, bool)>;

fn grants(request: &Request) -> Grants {
    request
        .capabilities
        .dirs
        .iter()
        .map(|dir| (dir.host.clone(), dir.writable))
        .collect()
}

/// Why no reply frame came.
enum NoReply {
    /// The stream ended or failed: the worker died.
    Gone(String),
    /// The reply is larger than allowed.
    TooLarge(u64),
}

impl Pool {
    pub(crate) fn new(program: PathBuf, work_dir: PathBuf, mode: PoolMode) -> Arc<Self> {
        // Made once: a worker joins them in a tenth of the time it takes to
        // make its own, and nothing is torn down after each task.
        let namespaces = mode
            .sandbox
            .wants(asyncer_protocol::SandboxLayer::Namespaces)
            .then(|| asyncer_worker::SharedNamespaces::make(&program))
            .and_then(|made| {
                made.map_err(|e| {
                    tracing::debug!("no shared namespaces ({e}): each worker makes its own")
                })
                .ok()
            });
        let pool = Arc::new(Pool {
            namespaces,
            program,
            work_dir,
            mode,
            idle: std::sync::Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            refilling: tokio::sync::Mutex::new(()),
            missing_layer_logged: std::sync::atomic::AtomicBool::new(false),
            #[cfg(target_os = "linux")]
            template: tokio::sync::Mutex::new(None),
            #[cfg(target_os = "linux")]
            fork_off: std::sync::atomic::AtomicBool::new(false),
            #[cfg(target_os = "linux")]
            last_artifact: std::sync::Mutex::new(asyncer_protocol::ForkRequest {
                artifact: String::new(),
                flavor: Default::default(),
                max_wasm_stack: None,
            }),
        });
        pool.refill();
        pool
    }

    fn spawn_worker(&self, prewarm: bool) -> Result<Worker, Error> {
        self.spawn_with(&[if prewarm { "--prewarm" } else { "" }])
    }

    /// Starts the worker program with `extra` arguments (empty ones
    /// skipped) besides the pool's own.
    fn spawn_with(&self, extra: &[&str]) -> Result<Worker, Error> {
        let mut child = self
            .command(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.cannot_start(e))?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(Worker::new(
            Process::Spawned(child),
            pid,
            (Box::new(stdin), Box::new(stdout)),
            stderr,
        ))
    }

    fn cannot_start(&self, e: std::io::Error) -> Error {
        Error::SpawnFailed {
            message: format!("cannot start {}: {e}", self.program.display()),
        }
    }

    /// A new worker for `request`: forked from the template
    /// ([`Launch::Fork`], fresh processes) or spawned. A template that
    /// cannot serve (the worker program is not one, or this kernel refuses
    /// what it needs) is given up for the pool's life, with a warning, and
    /// workers are spawned instead.
    async fn new_worker(self: &Arc<Self>, request: &Request) -> Result<Worker, Error> {
        #[cfg(target_os = "linux")]
        if self.forks() {
            let fork = asyncer_protocol::ForkRequest::for_request(request);
            let pool = self.clone();
            // Run to its end even when this task is dropped: a child forked
            // for it is then killed and reaped, never left behind.
            let why = match tokio::spawn(async move { pool.fork(&fork).await }).await {
                Ok(Ok(worker)) => return Ok(worker),
                Ok(Err(why)) => why,
                Err(e) => e.to_string(),
            };
            if !self
                .fork_off
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                tracing::warn!(
                    "cannot fork workers from a template ({why}): spawning each one instead"
                );
            }
        }
        let _ = request;
        self.spawn_worker(false)
    }

    /// A child of the template (started, or replaced when it died or
    /// failed, here) that will serve one task of `request`'s artifact; or
    /// why none could be had from two templates in a row.
    #[cfg(target_os = "linux")]
    async fn fork(&self, request: &asyncer_protocol::ForkRequest) -> Result<Worker, String> {
        use crate::template::Template;
        let mut template = self.template.lock().await;
        let mut failed = String::new();
        for _ in 0..2 {
            if !template.as_mut().is_some_and(Template::is_alive) {
                if let Some(dead) = template.take() {
                    tokio::spawn(dead.stop(Duration::ZERO));
                }
                let started = Template::start(self.command(&[]))
                    .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
                *template = Some(started);
            }
            let Some(live) = template.as_ref() else {
                continue;
            };
            match live.fork(request).await {
                Ok(forked) => {
                    let pid = forked.process.pid();
                    return Ok(Worker::new(
                        Process::Forked(forked.process),
                        pid,
                        (Box::new(forked.stdin), Box::new(forked.stdout)),
                        forked.stderr,
                    ));
                }
                Err(e) => {
                    tracing::debug!("the template worker failed ({e}); starting another");
                    if let Some(broken) = template.take() {
                        tokio::spawn(broken.stop(Duration::ZERO));
                    }
                    failed = e.to_string();
                }
            }
        }
        Err(failed)
    }

    /// The worker program's command line with `extra` arguments (empty
    /// ones skipped) besides the pool's own, in the pool's work directory
    /// with an empty environment.
    fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg("--parent-pid")
            .arg(OsString::from(std::process::id().to_string()));
        command.args(extra.iter().filter(|arg| !arg.is_empty()));
        if self.mode.warm.is_some() {
            command.arg("--warm");
        }
        command.args(self.mode.sandbox.to_args());
        if let Some(namespaces) = &self.namespaces {
            // Every worker that may be alive at once: running, idle (warm or
            // spawned ahead), and one retiring or probing.
            let workers = 2 * self.mode.max_idle + self.mode.prestart + 2;
            command.args(namespaces.worker_args(workers as u64));
        }
        command.arg("--nice").arg(self.mode.nice.to_string());
        command.env_clear().current_dir(&self.work_dir);
        command
    }

    /// Starts a worker that applies its sandbox with nothing granted and
    /// replies with how each layer stands.
    pub(crate) async fn probe_sandbox(&self) -> Result<SandboxStatus, Error> {
        let mut worker = self.spawn_with(&["--probe-sandbox"])?;
        let reply = read_frame_bytes(&mut worker.stdout, 1 << 16).await;
        let status = worker.retire().await;
        let why = match reply.map(|frame| decode_frame::<WorkerMessage>(&frame)) {
            Ok(Ok(WorkerMessage::Reply(Reply {
                sandbox: Some(sandbox),
                ..
            }))) => return Ok(*sandbox),
            Ok(_) => "no sandbox status in its reply".to_string(),
            Err(NoReply::Gone(why)) => why,
            Err(NoReply::TooLarge(max)) => format!("a reply over {max} bytes"),
        };
        Err(worker.crash_report(&status, &why).await)
    }

    /// Starts idle workers until `prestart` are waiting (fresh-process mode).
    fn refill(self: &Arc<Self>) {
        if self.mode.warm.is_some() || self.mode.prestart == 0 {
            return;
        }
        if self.forks() {
            // Forked ahead on the runtime (when the pool is built in one).
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let pool = self.clone();
                runtime.spawn(async move {
                    let _refilling = pool.refilling.lock().await;
                    pool.refill_locked().await;
                });
            }
            return;
        }
        // Nobody else can hold it while the pool is being built.
        let Ok(_refilling) = self.refilling.try_lock() else {
            return;
        };
        self.spawn_ahead();
    }

    /// Whether fresh workers are forked from the template.
    fn forks(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.mode.warm.is_none()
                && self.mode.launch == Launch::Fork
                && !self.fork_off.load(std::sync::atomic::Ordering::SeqCst)
        }
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Starts idle workers until `prestart` are waiting: forked from the
    /// template (a child forked for the last task's artifact, which the
    /// template then holds loaded), or spawned.
    async fn refill_locked(&self) {
        #[cfg(target_os = "linux")]
        if self.forks() {
            loop {
                let idle = self.idle.lock().expect("idle poisoned").len();
                if idle >= self.mode.prestart
                    || self.closed.load(std::sync::atomic::Ordering::SeqCst)
                {
                    return;
                }
                let hint = self.last_artifact.lock().expect("hint poisoned").clone();
                match self.fork(&hint).await {
                    Ok(worker) => self.idle.lock().expect("idle poisoned").push(worker),
                    Err(e) => {
                        tracing::warn!("cannot fork a worker ahead of time: {e}");
                        return;
                    }
                }
            }
        }
        self.spawn_ahead();
    }

    fn spawn_ahead(&self) {
        let missing = self
            .mode
            .prestart
            .saturating_sub(self.idle.lock().expect("idle poisoned").len());
        for _ in 0..missing {
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            match self.spawn_worker(true) {
                Ok(worker) => self.idle.lock().expect("idle poisoned").push(worker),
                Err(e) => {
                    tracing::warn!("cannot start a worker ahead of time: {e}");
                    return;
                }
            }
        }
    }

    /// An idle worker that is still alive and may take a task granted
    /// `grants` (one not locked yet, or locked to the same grants), if any.
    fn take_idle(&self, grants: &Grants) -> Option<Worker> {
        loop {
            let mut idle = self.idle.lock().expect("idle poisoned");
            let at = idle
                .iter()
                .rposition(|worker| worker.grants.as_ref().is_none_or(|g| g == grants))?;
            let mut worker = idle.remove(at);
            drop(idle);
            match worker.process.try_wait() {
                Ok(None) => return Some(worker),
                // It died while idle: reap it (done by try_wait) and look on.
                _ => continue,
            }
        }
    }

    /// Keeps a warm worker for later tasks; when more are idle than the
    /// executor may run at once, the one idle longest is retired.
    fn keep_idle(&self, worker: Worker) {
        let oldest = {
            let mut idle = self.idle.lock().expect("idle poisoned");
            idle.push(worker);
            (idle.len() > self.mode.max_idle.max(1)).then(|| idle.remove(0))
        };
        if let Some(mut oldest) = oldest {
            tokio::spawn(async move {
                let _ = oldest.retire().await;
            });
        }
    }

    /// Logs, once per pool, a sandbox layer a worker asked for but lacks.
    fn note_sandbox(&self, status: Option<&SandboxStatus>) {
        let Some(status) = status else { return };
        let missing: Vec<String> = status
            .missing()
            .filter(|(layer, _)| self.mode.sandbox.wants(*layer))
            .map(|(layer, state)| format!("{layer}: {state}"))
            .collect();
        if !missing.is_empty()
            && !self
                .missing_layer_logged
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(
                "worker processes run without part of their own sandbox ({})",
                missing.join("; ")
            );
        }
    }

    /// Runs one request in a worker, handing the guest's progress and log
    /// records to `context` as they arrive, and stopping (killing the
    /// worker) when the context is cancelled; the worker is reaped before
    /// this returns unless it goes back to the warm pool (or is handed back
    /// as [`WorkerRun::exiting`]). The request's input is written to the
    /// worker straight from the request, never copied into a frame buffer.
    pub(crate) async fn run(
        self: &Arc<Self>,
        request: Request,
        host_timeout: Option<Duration>,
        context: &RunContext,
    ) -> WorkerRun {
        let started_at = std::time::SystemTime::now();
        let mut run = WorkerRun {
            pid: None,
            exit_status: None,
            started_at,
            reply: Err(Error::Cancelled),
            exiting: None,
        };
        let inline = request.input.len() <= INLINE_INPUT_BYTES;
        let head = match request.frame_head() {
            // A small input rides in the head's buffer: one write, one
            // wake-up of the worker. A large one is written from the request
            // itself, never copied.
            Ok(mut head) if inline => {
                head.extend_from_slice(&request.input);
                head
            }
            Ok(head) => head,
            Err(e) => {
                run.reply = Err(Error::Decode {
                    message: format!("cannot encode the request: {e}"),
                });
                return run;
            }
        };
        let warm = self.mode.warm;
        let grants = grants(&request);
        #[cfg(target_os = "linux")]
        if self.mode.prestart > 0 && self.forks() {
            let mut last = self.last_artifact.lock().expect("hint poisoned");
            if last.artifact != request.artifact {
                *last = asyncer_protocol::ForkRequest::for_request(&request);
            }
        }
        let taken = self.take_idle(&grants);
        if taken.is_some() && warm.is_none() {
            let pool = self.clone();
            tokio::spawn(async move {
                let _refilling = pool.refilling.lock().await;
                pool.refill_locked().await;
            });
        }
        let made = match taken {
            Some(worker) => Ok(worker),
            None => self.new_worker(&request).await,
        };
        let mut worker = match made {
            Ok(worker) => worker,
            Err(error) => {
                run.reply = Err(error);
                return run;
            }
        };
        run.pid = Some(worker.pid);
        worker.grants = Some(grants);
        let max_reply =
            request.limits.max_output_bytes + 2 * request.limits.max_log_bytes + (1 << 16);

        let exchange = async {
            let Some(stdin) = worker.stdin.as_mut() else {
                return Err(NoReply::Gone("stdin already closed".into()));
            };
            // A write error only means the worker died: the read says so.
            if stdin.write_all(&head).await.is_ok() && !inline {
                let _ = stdin.write_all(&request.input).await;
            }
            let _ = stdin.flush().await;
            if warm.is_none() {
                // One task per process: EOF tells the worker to exit after it.
                worker.stdin = None;
            }
            read_reply(&mut worker.stdout, max_reply, context).await
        };
        let timed = async {
            match host_timeout {
                Some(timeout) => tokio::time::timeout(timeout + KILL_GRACE, exchange)
                    .await
                    .map_err(|_| Error::Timeout { timeout }),
                None => Ok(exchange.await),
            }
        };
        let exchanged = tokio::select! {
            exchanged = timed => exchanged,
            () = context.cancelled() => Err(Error::Cancelled),
        };
        let reply = match exchanged {
            Ok(reply) => reply,
            Err(error) => {
                // Timed out or stopped: kill and reap.
                let status = worker.kill().await;
                run.exit_status = status;
                run.reply = Err(error);
                return run;
            }
        };
        match reply {
            Ok(reply) => {
                self.note_sandbox(reply.sandbox.as_deref());
                worker.tasks_served += 1;
                let keep = warm.is_some_and(|warm| {
                    worker.tasks_served < warm.max_tasks
                        && reply.usage.worker_rss_bytes <= warm.max_rss_bytes
                        && !self.closed.load(std::sync::atomic::Ordering::SeqCst)
                });
                if keep {
                    self.keep_idle(worker);
                    run.reply = Ok(reply);
                    return run;
                }
                // The reply is complete and valid: deliver it now, reap after.
                worker.stdin = None;
                run.reply = Ok(reply);
                run.exiting = Some(ExitingWorker(worker));
            }
            Err(NoReply::TooLarge(max)) => {
                run.exit_status = worker.kill().await;
                run.reply = Err(Error::OutputTooLarge {
                    message: format!("worker reply exceeds {max} bytes"),
                });
            }
            Err(NoReply::Gone(why)) => {
                let status = worker.retire().await;
                run.reply = Err(worker.crash_report(&status, &why).await);
                run.exit_status = status.ok().map(describe);
            }
        }
        run
    }

    /// Closes the pool: no more workers are started ahead, and every idle
    /// worker is told to exit and reaped.
    pub(crate) async fn drain(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        // A refill under way finishes (and sees `closed` next time) first.
        let _refilling = self.refilling.lock().await;
        let idle = std::mem::take(&mut *self.idle.lock().expect("idle poisoned"));
        for mut worker in idle {
            let _ = worker.retire().await;
        }
        #[cfg(target_os = "linux")]
        if let Some(template) = self.template.lock().await.take() {
            template.stop(RETIRE_GRACE).await;
        }
    }
}

/// A worker process: spawned (tokio's child), or forked by the template (a
/// child of this process that tokio does not know).
enum Process {
    Spawned(Child),
    #[cfg(target_os = "linux")]
    Forked(crate::template::Forked),
}

impl Process {
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Process::Spawned(child) => child.try_wait(),
            #[cfg(target_os = "linux")]
            Process::Forked(forked) => forked.try_wait(),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Process::Spawned(child) => child.wait().await,
            #[cfg(target_os = "linux")]
            Process::Forked(forked) => forked.wait().await,
        }
    }

    fn start_kill(&mut self) -> std::io::Result<()> {
        match self {
            Process::Spawned(child) => child.start_kill(),
            #[cfg(target_os = "linux")]
            Process::Forked(forked) => forked.start_kill(),
        }
    }
}

/// A worker's standard input and output, as the pool writes and reads them.
type Streams = (
    Box<dyn AsyncWrite + Send + Unpin>,
    Box<dyn AsyncRead + Send + Unpin>,
);

impl Worker {
    /// A worker just started, its stderr's tail kept for crash reports.
    fn new(
        process: Process,
        pid: u32,
        (stdin, stdout): Streams,
        stderr: impl AsyncRead + Send + Unpin + 'static,
    ) -> Worker {
        let stderr_tail = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr_done = tokio::spawn(keep_tail(stderr, stderr_tail.clone(), STDERR_TAIL_BYTES));
        Worker {
            process,
            pid,
            stdin: Some(stdin),
            stdout,
            stderr_tail,
            stderr_done,
            tasks_served: 0,
            grants: None,
            _live: crate::measure::LiveWorker::new(),
        }
    }

    /// Kills and reaps the worker, returning how it ended.
    async fn kill(&mut self) -> Option<String> {
        let _ = self.process.start_kill();
        self.process.wait().await.ok().map(describe)
    }

    /// Closes its stdin so that it exits, and reaps it (killing it if it does
    /// not exit promptly).
    async fn retire(&mut self) -> std::io::Result<ExitStatus> {
        self.stdin = None;
        match tokio::time::timeout(RETIRE_GRACE, self.process.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let _ = self.process.start_kill();
                self.process.wait().await
            }
        }
    }

    async fn crash_report(&mut self, status: &std::io::Result<ExitStatus>, why: &str) -> Error {
        // The worker is gone, so its stderr reaches EOF soon.
        let _ = tokio::time::timeout(RETIRE_GRACE, &mut self.stderr_done).await;
        let tail = self.stderr_tail.lock().expect("tail poisoned").clone();
        let tail = String::from_utf8_lossy(&tail).into_owned();
        let why = match sandbox_violation(&tail) {
            Some(line) => line,
            // The call was made with signals blocked (as `fork` does): the
            // kernel killed the worker before its handler could name it.
            None if killed_by_forbidden_call(status) => {
                "sandbox violation: a system call the worker may not make"
            }
            None => why,
        };
        Error::WorkerCrashed {
            pid: self.pid,
            status: match status {
                Ok(s) => format!("{}; {why}", describe(*s)),
                Err(e) => format!("wait failed: {e}; {why}"),
            },
            stderr_tail: tail,
        }
    }
}

/// How long a retiring worker may take to exit before it is killed.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// Reads the worker's messages up to its reply, handing the guest's records
/// to `context` on the way.
async fn read_reply(
    reader: &mut (impl AsyncRead + Unpin),
    max: u64,
    context: &RunContext,
) -> Result<Reply, NoReply> {
    loop {
        let frame = read_frame_bytes(reader, max).await?;
        match decode_frame::<WorkerMessage>(&frame) {
            Ok(WorkerMessage::Guest(message)) => context.report(message),
            Ok(WorkerMessage::Reply(reply)) => return Ok(reply),
            Err(e) => return Err(NoReply::Gone(format!("unreadable reply: {e}"))),
        }
    }
}

/// Reads exactly one frame (header and body), refusing bodies over `max`
/// bytes before reading them.
async fn read_frame_bytes(
    reader: &mut (impl AsyncRead + Unpin),
    max: u64,
) -> Result<Vec<u8>, NoReply> {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    if let Err(e) = reader.read_exact(&mut frame).await {
        return Err(NoReply::Gone(
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "no reply".to_string()
            } else {
                format!("reading the reply failed: {e}")
            },
        ));
    }
    let header: &[u8; FRAME_HEADER_LEN] = frame[..].try_into().expect("header-sized");
    let len = match frame_body_len(header, max) {
        Ok(len) => len,
        Err(FrameError::TooLarge { .. }) => return Err(NoReply::TooLarge(max)),
        Err(FrameError::Version { found }) => {
            return Err(NoReply::Gone(format!(
                "the worker speaks protocol version {found}, this host {}: \
                 build asyncer-worker from the same asyncer release",
                asyncer_protocol::PROTOCOL_VERSION
            )))
        }
        Err(e) => return Err(NoReply::Gone(format!("unreadable reply: {e}"))),
    };
    frame.resize(FRAME_HEADER_LEN + len, 0);
    reader
        .read_exact(&mut frame[FRAME_HEADER_LEN..])
        .await
        .map_err(|e| NoReply::Gone(format!("reply cut short: {e}")))?;
    Ok(frame)
}

/// Reads `reader` to its end, keeping only the last `keep` bytes in `tail`.
async fn keep_tail(
    mut reader: impl AsyncRead + Unpin,
    tail: Arc<std::sync::Mutex<Vec<u8>>>,
    keep: usize,
) {
    let mut chunk = [0u8; 4096];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut tail = tail.lock().expect("tail poisoned");
                tail.extend_from_slice(&chunk[..n]);
                let excess = tail.len().saturating_sub(keep);
                tail.drain(..excess);
            }
        }
    }
}

/// The line a worker's seccomp handler wrote before it died of a forbidden
/// system call: `sandbox violation: system call `socket` (41) is not
/// allowed`.
fn sandbox_violation(stderr: &str) -> Option<&str> {
    const MARK: &str = "sandbox violation: ";
    let at = stderr.rfind(MARK)?;
    stderr[at..].lines().next()
}

/// Whether the worker died of SIGSYS: its seccomp filter refused a call.
fn killed_by_forbidden_call(status: &std::io::Result<ExitStatus>) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status
            .as_ref()
            .is_ok_and(|status| status.signal() == Some(libc::SIGSYS))
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        false
    }
}

/// `"exit code 3"` or `"signal 9 (SIGKILL)"`.
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGSYS => " (SIGSYS)",
                _ => "",
            };
            return format!("signal {signal}{name}");
        }
    }
    status.to_string()
}
