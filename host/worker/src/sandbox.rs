//! The worker process's own sandbox: the second wall behind wasmtime.
//!
//! Two steps. [`Sandbox::enter`], first thing in `main` while the process
//! has one thread, moves it into user, network and IPC namespaces that are
//! not the host's (joined: made once per executor, see [`SharedNamespaces`];
//! or made for it alone) and a PID namespace of its own (which takes a fork:
//! the process the host started waits for its child, PID 1 of the new
//! namespace, and ends as it ends), then installs
//! the seccomp allow-list (see `seccomp.rs`): neither depends on the task, so
//! both are in force before the request is even read (and a worker started
//! ahead has them before its task arrives). [`Sandbox::lock_down`], once the
//! task's module is loaded and before any guest code runs, tightens the
//! resource limits and restricts the file system with Landlock (read the
//! artifact, write only granted directories, no TCP, no signals or abstract
//! sockets outside). Each layer the kernel lacks is skipped and reported in
//! [`Sandbox::status`]; none is skipped silently.
//!
//! A worker forked from a template (`template.rs`) gets the same layers:
//! the namespaces and the allow-list from the template (a fork inherits
//! both), a PID namespace of its own from the fork, then a filter of its
//! own and the same lock-down.
//!
//! Outside Linux nothing is applied and every layer reports `unavailable`.

use std::path::PathBuf;

use asyncer_protocol::{SandboxLayer, SandboxSettings, SandboxStatus};

/// Most threads tokio may start for WASI's file operations in a worker.
pub(crate) const MAX_BLOCKING_THREADS: usize = 4;
/// Most threads and processes one worker holds: the main thread, the
/// deadline thread, the progress flusher, the blocking threads, and the
/// process left behind by the PID namespace's fork. `RLIMIT_NPROC` counts
/// them per user namespace; seccomp lets none of them be a new process.
const TASKS_PER_WORKER: u64 = 4 + MAX_BLOCKING_THREADS as u64;

/// Namespaces made once, for many workers to join (`setns`) instead of each
/// making its own (`unshare`): joining costs a tenth of making, and nothing
/// is torn down after each task. The executor makes them with
/// [`SharedNamespaces::make`] and keeps them open; its workers join through
/// `/proc/<host pid>/fd/<n>` ([`SharedNamespaces::worker_args`]). Workers of
/// one executor then share their user, network and IPC namespaces (each
/// still gets a PID namespace of its own): none of them may open a socket or
/// use System V IPC (seccomp), so sharing lets nothing pass between them.
///
/// # Examples
/// ```no_run
/// use asyncer_worker::SharedNamespaces;
/// let program = std::path::Path::new("/usr/local/bin/asyncer-worker");
/// let namespaces = SharedNamespaces::make(program).expect("namespaces allowed here");
/// // Every worker started with these arguments joins them:
/// let status = std::process::Command::new(program)
///     .args(namespaces.worker_args(4))
///     .arg("--probe-sandbox")
///     .status();
/// # let _ = status;
/// ```
#[derive(Debug)]
pub struct SharedNamespaces {
    /// The user, network and IPC namespaces, open.
    files: Vec<std::fs::File>,
}

/// The namespaces a worker joins, and the bound on threads and processes in
/// the shared user namespace (`RLIMIT_NPROC` there counts every worker's).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Join {
    paths: Vec<PathBuf>,
    max_tasks: u64,
}

impl Join {
    /// `--join-namespaces USER,NET,IPC --max-tasks N` among `args`.
    fn from_args(args: &[String]) -> Option<Join> {
        let after = |flag| arg_after(args, flag);
        let paths: Vec<PathBuf> = after("--join-namespaces")?
            .split(',')
            .map(PathBuf::from)
            .collect();
        let max_tasks = after("--max-tasks")?.parse().ok()?;
        (paths.len() == 3).then_some(Join { paths, max_tasks })
    }
}

impl SharedNamespaces {
    /// Makes new user (when unprivileged), network and IPC namespaces with
    /// `worker_program --make-namespaces`, which waits until they are opened
    /// here and then exits.
    ///
    /// # Errors
    /// The program cannot start, or this machine allows no new namespaces.
    pub fn make(worker_program: &std::path::Path) -> std::io::Result<SharedNamespaces> {
        use std::io::Read;
        let mut helper = std::process::Command::new(worker_program)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--make-namespaces")
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        // Its answer, read on a thread of its own: a program that is not
        // the worker may never answer, and may not stall the executor.
        let mut stdout = helper.stdout.take().expect("stdout is piped");
        let (answer, answered) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut made = [0u8; 1];
            let _ = answer.send(stdout.read_exact(&mut made).map(|()| made[0] == b'1'));
        });
        let opened = match answered.recv_timeout(std::time::Duration::from_secs(2)) {
            Ok(Ok(true)) => ["user", "net", "ipc"]
                .iter()
                .map(|kind| std::fs::File::open(format!("/proc/{}/ns/{kind}", helper.id())))
                .collect::<std::io::Result<Vec<_>>>(),
            Ok(Ok(false)) => Err(std::io::Error::other("no new namespaces allowed here")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the worker program did not answer")),
        };
        if opened.is_err() {
            let _ = helper.kill();
        }
        // Closing its stdin ends the helper; the namespaces live on in `files`.
        drop(helper.stdin.take());
        let _ = helper.wait();
        Ok(SharedNamespaces { files: opened? })
    }

    /// The worker program's arguments to join these namespaces, with at most
    /// `workers` workers alive at once.
    pub fn worker_args(&self, workers: u64) -> Vec<String> {
        use std::os::fd::AsRawFd;
        let paths: Vec<String> = self
            .files
            .iter()
            .map(|file| format!("/proc/{}/fd/{}", std::process::id(), file.as_raw_fd()))
            .collect();
        vec![
            "--join-namespaces".into(),
            paths.join(","),
            "--max-tasks".into(),
            (workers * TASKS_PER_WORKER + TASKS_PER_WORKER).to_string(),
        ]
    }
}

/// The argument after `flag` among `args`.
fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a String> {
    args.iter()
        .position(|arg| arg == flag)
        .and_then(|at| args.get(at + 1))
}

/// What a locked-down worker may still reach on the file system.
///
/// # Examples
/// ```
/// use asyncer_worker::Policy;
/// let policy = Policy::default()
///     .read_file("/var/cache/asyncer/abc.cwasm")
///     .grant("/srv/out", true);
/// assert_eq!(policy.dirs.len(), 1);
/// assert!(policy.writes_files());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Files it may read (its artifact).
    pub read_files: Vec<PathBuf>,
    /// Directories beneath which it may read files, but not list them (a
    /// warm worker's artifact cache: it loads later artifacts from there).
    pub read_beneath: Vec<PathBuf>,
    /// Directories granted to the task: `(path, writable)`.
    pub dirs: Vec<(PathBuf, bool)>,
}

impl Policy {
    /// This policy, also allowing `path` to be read.
    pub fn read_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.read_files.push(path.into());
        self
    }

    /// This policy, also allowing files beneath `dir` to be read.
    pub fn read_beneath(mut self, dir: impl Into<PathBuf>) -> Self {
        self.read_beneath.push(dir.into());
        self
    }

    /// This policy, also granting `dir` (read-only or read-write).
    pub fn grant(mut self, dir: impl Into<PathBuf>, writable: bool) -> Self {
        self.dirs.push((dir.into(), writable));
        self
    }

    /// Whether the task may write files at all (a read-write directory).
    pub fn writes_files(&self) -> bool {
        self.dirs.iter().any(|(_, writable)| *writable)
    }
}

/// The worker's own sandbox, as far as it has been applied.
///
/// # Examples
/// ```no_run
/// use asyncer_protocol::SandboxSettings;
/// use asyncer_worker::{Policy, Sandbox};
/// // First thing in main, while the process has one thread (namespaces,
/// // then the system-call allow-list):
/// let args: Vec<String> = std::env::args().collect();
/// let mut sandbox = Sandbox::enter(SandboxSettings::default(), &args);
/// // ...load what the task needs, then, before any guest code runs:
/// sandbox.lock_down(&Policy::default().read_file("task.cwasm")).unwrap();
/// println!("{}", sandbox.status());
/// ```
#[derive(Debug)]
pub struct Sandbox {
    settings: SandboxSettings,
    status: SandboxStatus,
    /// The policy the process is locked to, once it is.
    locked: Option<Policy>,
    /// The bound on threads and processes in the process's user namespace,
    /// when it is not the host's (`RLIMIT_NPROC` counts them there).
    max_tasks: Option<u64>,
}

impl Sandbox {
    /// Enters new namespaces (when `settings` want them); call it first thing
    /// in `main`, while the process has only one thread.
    ///
    /// With a new PID namespace the calling process forks: it stays behind
    /// only to wait for the child and end as it ends, with the same exit code
    /// or signal (this function does not return in it); the child, PID 1 of
    /// the new namespace, returns from here and dies with it. Then (when the
    /// settings want it) the seccomp allow-list is installed: from here on
    /// the process may make only the system calls the worker needs.
    ///
    /// `args` are the worker's command line: with `--join-namespaces` (see
    /// [`SharedNamespaces::worker_args`]) the user, network and IPC
    /// namespaces are joined rather than made, when they are really not the
    /// host's; otherwise, or if joining fails, they are made.
    pub fn enter(settings: SandboxSettings, args: &[String]) -> Sandbox {
        let mut status = SandboxStatus::default();
        let mut max_tasks = None;
        if settings.wants(SandboxLayer::Namespaces) {
            let (state, user) = os::enter_namespaces(Join::from_args(args).as_ref());
            status.set(SandboxLayer::Namespaces, state);
            max_tasks = user;
        }
        if settings.wants(SandboxLayer::Seccomp) {
            status.set(SandboxLayer::Seccomp, os::seccomp());
        }
        Sandbox {
            settings,
            status,
            locked: None,
            max_tasks,
        }
    }

    /// A template worker's sandbox (see `template.rs`): the user, network
    /// and IPC namespaces, as [`Sandbox::enter`] enters them, but no PID
    /// namespace: each child the template forks gets a PID namespace of its
    /// own from the fork. The seccomp allow-list is the template's to load
    /// (with its own few extra calls), and each child adds a filter taking
    /// those away ([`Sandbox::enter_forked_child`]).
    #[cfg(target_os = "linux")]
    pub(crate) fn enter_template(settings: SandboxSettings, args: &[String]) -> Sandbox {
        let mut status = SandboxStatus::default();
        let mut max_tasks = None;
        if settings.wants(SandboxLayer::Namespaces) {
            let (state, user) = os::enter_shared_namespaces(Join::from_args(args).as_ref(), 0);
            status.set(SandboxLayer::Namespaces, state);
            // Every child shares the template's user namespace, also one
            // the template made: the bound covers all of them.
            let all = arg_after(args, "--max-tasks").and_then(|n| n.parse::<u64>().ok());
            max_tasks = user.map(|own| all.map_or(own, |all| all.max(own)));
        }
        Sandbox {
            settings,
            status,
            locked: None,
            max_tasks,
        }
    }

    /// The sandbox of a child a template forked (first thing in it, while
    /// it has one thread): `pid_namespace` says whether the fork gave it a
    /// PID namespace of its own (it is then PID 1 there); then `seccomp`,
    /// the child's filter on top of the template's allow-list (or why the
    /// template has none), is installed.
    #[cfg(target_os = "linux")]
    pub(crate) fn enter_forked_child(
        &mut self,
        pid_namespace: Result<(), String>,
        seccomp: &Result<Vec<seccompiler::BpfProgram>, String>,
    ) {
        if self.status.get(SandboxLayer::Namespaces).is_active() {
            if let Err(why) = pid_namespace {
                self.status.set(
                    SandboxLayer::Namespaces,
                    asyncer_protocol::LayerState::Partial(format!("no PID namespace: {why}")),
                );
            }
        }
        if self.settings.wants(SandboxLayer::Seccomp) {
            crate::seccomp::install_violation_handler();
            let state = match seccomp
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|programs| crate::seccomp::apply(programs))
            {
                Ok(()) => asyncer_protocol::LayerState::Active,
                Err(e) => asyncer_protocol::LayerState::Unavailable(e),
            };
            self.status.set(SandboxLayer::Seccomp, state);
        }
    }

    /// `--make-namespaces` (see [`SharedNamespaces::make`]): makes the
    /// namespaces, says so, and returns once the executor has opened them.
    pub fn hold_new_namespaces() {
        os::hold_new_namespaces();
    }

    /// A sandbox that applies nothing (for tests and in-process use).
    pub fn none() -> Sandbox {
        Sandbox {
            settings: SandboxSettings::none(),
            status: SandboxStatus::default(),
            locked: None,
            max_tasks: None,
        }
    }

    /// How each layer stands.
    pub fn status(&self) -> &SandboxStatus {
        &self.status
    }

    /// The settings it was entered with.
    pub fn settings(&self) -> SandboxSettings {
        self.settings
    }

    /// Locks the process down to `policy`: resource limits, then Landlock,
    /// each when the settings want it. Once locked, the process
    /// stays locked: a later call with the same directory grants does
    /// nothing, one with other grants fails (a warm worker serves only tasks
    /// with the grants of its first).
    ///
    /// # Errors
    /// A message when the process is already locked to other directories.
    pub fn lock_down(&mut self, policy: &Policy) -> Result<(), String> {
        if let Some(locked) = &self.locked {
            if locked.dirs == policy.dirs {
                return Ok(());
            }
            return Err(format!(
                "this worker is locked to the directories {:?}; the task asks for {:?}",
                locked.dirs, policy.dirs
            ));
        }
        if self.settings.wants(SandboxLayer::Rlimits) {
            self.status.set(
                SandboxLayer::Rlimits,
                os::tighten_rlimits(policy, self.max_tasks),
            );
        }
        if self.settings.wants(SandboxLayer::Landlock) {
            self.status
                .set(SandboxLayer::Landlock, os::landlock(policy));
        }
        self.locked = Some(policy.clone());
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod os {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use asyncer_protocol::LayerState;
    use landlock::{
        Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
        Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
    };

    use super::Policy;

    /// The newest Landlock ABI whose rights the worker asks for (file system,
    /// TCP, and scopes: signals and abstract UNIX sockets).
    const LANDLOCK_ABI: ABI = ABI::V6;
    /// Most descriptors a locked-down worker may hold.
    const MAX_OPEN_FILES: libc::rlim_t = 128;

    fn errno() -> std::io::Error {
        std::io::Error::last_os_error()
    }

    /// New user, network, IPC and PID namespaces (without a user namespace
    /// when only a privileged process may make one), or the shared ones of
    /// `join` and a PID namespace of its own; and the bound on threads and
    /// processes for `RLIMIT_NPROC` when the user namespace is not the host's.
    pub(super) fn enter_namespaces(join: Option<&super::Join>) -> (LayerState, Option<u64>) {
        let (state, max_tasks) = enter_shared_namespaces(join, libc::CLONE_NEWPID);
        if !state.is_active() {
            return (state, max_tasks);
        }
        let state = match fork_into_pid_namespace() {
            Ok(()) => LayerState::Active,
            Err(e) => LayerState::Partial(format!("no PID namespace: {e}")),
        };
        (state, max_tasks)
    }

    /// The user, network and IPC namespaces of `join`, or new ones; and
    /// `pid` (`CLONE_NEWPID`, or 0) unshared with them: the next child is
    /// PID 1 of a new PID namespace. Active, or why none were entered; and
    /// the bound on threads and processes when the user namespace is not the
    /// host's.
    pub(super) fn enter_shared_namespaces(
        join: Option<&super::Join>,
        pid: libc::c_int,
    ) -> (LayerState, Option<u64>) {
        let joined = join.map(|join| (join_shared(&join.paths), join.max_tasks));
        let (entered, max_tasks) = match joined {
            Some((Ok(user), max_tasks)) => {
                // SAFETY: unshare takes flags only (one thread, as required).
                #[allow(unsafe_code)]
                let pid = pid == 0 || unsafe { libc::unshare(pid) == 0 };
                (pid, user.then_some(max_tasks))
            }
            _ => make_namespaces(pid),
        };
        if !entered {
            let why = format!("unprivileged namespaces are not allowed here: {}", errno());
            return (LayerState::Unavailable(why), None);
        }
        (LayerState::Active, max_tasks)
    }

    /// New user (when allowed), network and IPC namespaces of the process's
    /// own, and `pid` (`CLONE_NEWPID` or 0); and the bound on threads for a
    /// user namespace of its own.
    fn make_namespaces(pid: libc::c_int) -> (bool, Option<u64>) {
        let flags = libc::CLONE_NEWNET | libc::CLONE_NEWIPC | pid;
        // SAFETY: unshare takes flags only. The process has one thread
        // (required for CLONE_NEWUSER), as `Sandbox::enter` demands.
        #[allow(unsafe_code)]
        unsafe {
            if libc::unshare(libc::CLONE_NEWUSER | flags) == 0 {
                (true, Some(super::TASKS_PER_WORKER))
            } else {
                (libc::unshare(flags) == 0, None)
            }
        }
    }

    /// `--make-namespaces`: new user (when unprivileged), network and IPC
    /// namespaces, reported as one byte on stdout (`1` made, `0` not); then
    /// waits for stdin to close, so that the executor can open them.
    pub(super) fn hold_new_namespaces() {
        use std::io::{Read, Write};
        let flags = libc::CLONE_NEWNET | libc::CLONE_NEWIPC;
        // SAFETY: unshare takes flags only; the process has one thread.
        #[allow(unsafe_code)]
        let made =
            unsafe { libc::unshare(libc::CLONE_NEWUSER | flags) == 0 || libc::unshare(flags) == 0 };
        let _ = std::io::stdout().write_all(if made { b"1" } else { b"0" });
        let _ = std::io::stdout().flush();
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }

    /// Joins the user (unless it is the host's: a privileged maker made
    /// none), network and IPC namespaces at `paths`; whether the user
    /// namespace was joined. Refuses a network or IPC namespace that is this
    /// process's own already (the maker is gone and its descriptor number
    /// now names something else): that would be no isolation at all.
    fn join_shared(paths: &[std::path::PathBuf]) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let kinds = [
            ("user", libc::CLONE_NEWUSER),
            ("net", libc::CLONE_NEWNET),
            ("ipc", libc::CLONE_NEWIPC),
        ];
        let mut joins = Vec::new();
        for ((kind, flag), path) in kinds.into_iter().zip(paths) {
            let theirs = std::fs::File::open(path)?;
            let (a, b) = (
                theirs.metadata()?,
                std::fs::metadata(format!("/proc/self/ns/{kind}"))?,
            );
            if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                if flag == libc::CLONE_NEWUSER {
                    continue;
                }
                return Err(std::io::Error::other(format!(
                    "{kind} is not a namespace of its own"
                )));
            }
            joins.push((theirs, flag));
        }
        let joined_user = joins.iter().any(|(_, flag)| *flag == libc::CLONE_NEWUSER);
        for (file, flag) in joins {
            // SAFETY: setns takes a descriptor we own and a namespace type,
            // which the kernel checks against it. One thread, as required.
            #[allow(unsafe_code)]
            if unsafe { libc::setns(file.as_raw_fd(), flag) } != 0 {
                return Err(errno());
            }
        }
        Ok(joined_user)
    }

    /// Forks; the parent waits for the child and mirrors how it ends, the
    /// child (PID 1 of the new namespace) returns.
    fn fork_into_pid_namespace() -> Result<(), std::io::Error> {
        let mut alive = [0 as libc::c_int; 2];
        // SAFETY: a two-int array for pipe2.
        #[allow(unsafe_code)]
        if unsafe { libc::pipe2(alive.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(errno());
        }
        // SAFETY: pipe2 returned two fresh descriptors that we now own.
        #[allow(unsafe_code)]
        let (alive_read, alive_write) = unsafe {
            (
                OwnedFd::from_raw_fd(alive[0]),
                OwnedFd::from_raw_fd(alive[1]),
            )
        };
        // SAFETY: the process has one thread, so the child may run any code.
        #[allow(unsafe_code)]
        let child = unsafe { libc::fork() };
        match child {
            -1 => Err(errno()),
            0 => {
                drop(alive_write);
                // SAFETY: plain integers in. The parent is the process the
                // host started: when it dies, so does this one; and if it
                // died before this line, its end of the pipe is closed.
                #[allow(unsafe_code)]
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    let mut poll = libc::pollfd {
                        fd: alive_read.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    if libc::poll(&mut poll, 1, 0) != 0 {
                        libc::_exit(5);
                    }
                }
                drop(alive_read);
                Ok(())
            }
            child => {
                drop(alive_read);
                mirror(child, alive_write)
            }
        }
    }

    /// The parent's life after the fork: it keeps none of the host's pipes
    /// (only its end of the liveness pipe, as descriptor 0), may make no
    /// system call but waiting and ending (seccomp), waits for `child` and
    /// ends as it did. No Landlock here: a Landlock domain would keep the
    /// kernel from sending the child its parent-death signal.
    fn mirror(child: libc::pid_t, alive: OwnedFd) -> ! {
        // SAFETY: closing our standard descriptors (the child holds its own
        // copies) and moving the liveness pipe to 0, then waiting and
        // signalling ourselves: integers and a local status word only.
        #[allow(unsafe_code)]
        unsafe {
            for fd in 0..3 {
                libc::close(fd);
            }
            libc::dup2(alive.as_raw_fd(), 0);
            drop(alive);
            if let Ok(programs) = crate::seccomp::reaper_allow_list() {
                let _ = crate::seccomp::apply(&programs);
            }
            let mut status = 0;
            while libc::waitpid(child, &mut status, 0) == -1 {
                if errno().raw_os_error() != Some(libc::EINTR) {
                    libc::_exit(6);
                }
            }
            if libc::WIFSIGNALED(status) {
                let signal = libc::WTERMSIG(status);
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
                libc::_exit(128 + signal);
            }
            libc::_exit(libc::WEXITSTATUS(status));
        }
    }

    /// Few threads and processes, few descriptors, no core dumps, and no
    /// file writes unless the task has a read-write directory.
    /// `RLIMIT_NPROC` (to `max_tasks`) is set only in a user namespace that
    /// is not the host's: there it would count every process of the user.
    pub(super) fn tighten_rlimits(policy: &Policy, max_tasks: Option<u64>) -> LayerState {
        let mut limits = vec![
            (libc::RLIMIT_NOFILE, MAX_OPEN_FILES, "RLIMIT_NOFILE"),
            (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        ];
        if let Some(max_tasks) = max_tasks {
            limits.push((libc::RLIMIT_NPROC, max_tasks, "RLIMIT_NPROC"));
        }
        if !policy.writes_files() {
            limits.push((libc::RLIMIT_FSIZE, 0, "RLIMIT_FSIZE"));
        }
        let mut failed = Vec::new();
        if max_tasks.is_none() {
            failed.push("RLIMIT_NPROC left as it is (no user namespace of its own)".to_string());
        }
        for (resource, max, name) in limits {
            let mut current = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit and setrlimit read or fill a local struct.
            #[allow(unsafe_code)]
            let set = unsafe {
                libc::getrlimit(resource, &mut current);
                let limit = libc::rlimit {
                    rlim_cur: max.min(current.rlim_cur),
                    rlim_max: max.min(current.rlim_max),
                };
                libc::setrlimit(resource, &limit) == 0
            };
            if !set {
                failed.push(format!("{name}: {}", errno()));
            }
        }
        if failed.is_empty() {
            LayerState::Active
        } else {
            LayerState::Partial(failed.join(", "))
        }
    }

    /// The Landlock ruleset for `policy`, created (not yet enforced).
    fn ruleset(policy: &Policy) -> Result<RulesetCreated, String> {
        let all = AccessFs::from_all(LANDLOCK_ABI);
        let read_only: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
        let read_write = all & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock);
        let mut created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)
            .and_then(|r| r.handle_access(AccessNet::from_all(LANDLOCK_ABI)))
            .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
            .and_then(Ruleset::create)
            .map_err(|e| e.to_string())?;
        // A path that cannot be opened, or a grant that is not a directory,
        // gets no rule (and so no access): WASI refuses to open such a grant
        // and fails the task; it must not cost the whole ruleset.
        let rules = policy
            .read_files
            .iter()
            .chain(&policy.read_beneath)
            .map(|path| (path, BitFlags::from(AccessFs::ReadFile)))
            .chain(
                policy
                    .dirs
                    .iter()
                    .filter(|(dir, _)| dir.is_dir())
                    .map(|(dir, writable)| (dir, if *writable { read_write } else { read_only })),
            );
        for (path, access) in rules {
            if let Ok(fd) = PathFd::new(path) {
                created = created
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        Ok(created)
    }

    /// Restricts this process (every thread: the deadline thread restricts
    /// itself with a copy of the ruleset) to `policy`.
    pub(super) fn landlock(policy: &Policy) -> LayerState {
        let created = match ruleset(policy) {
            Ok(created) => created,
            Err(e) => return LayerState::Unavailable(e),
        };
        // A deadline thread started later inherits the domain; one started
        // already restricts itself with a copy of the ruleset.
        let for_ticker = crate::deadline::running().then(|| created.try_clone());
        let status = match created.restrict_self() {
            Ok(status) => status,
            Err(e) => return LayerState::Unavailable(e.to_string()),
        };
        if let Some(Ok(for_ticker)) = for_ticker {
            let _ = crate::deadline::run_on_ticker(move || for_ticker.restrict_self().is_ok());
        }
        match status.ruleset {
            RulesetStatus::FullyEnforced => LayerState::Active,
            RulesetStatus::PartiallyEnforced => LayerState::Partial(format!(
                "this kernel's Landlock lacks part of ABI {}",
                LANDLOCK_ABI as i32
            )),
            RulesetStatus::NotEnforced => {
                LayerState::Unavailable("this kernel has no Landlock".into())
            }
        }
    }

    /// The SIGSYS handler, then the allow-list on every thread.
    pub(super) fn seccomp() -> LayerState {
        crate::seccomp::install_violation_handler();
        match crate::seccomp::allow_list().and_then(|p| crate::seccomp::apply(&p)) {
            Ok(()) => LayerState::Active,
            Err(e) => LayerState::Unavailable(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    use asyncer_protocol::LayerState;

    use super::Policy;

    fn unavailable() -> LayerState {
        LayerState::Unavailable("only on Linux".into())
    }

    pub(super) fn enter_namespaces(_: Option<&super::Join>) -> (LayerState, Option<u64>) {
        (unavailable(), None)
    }

    pub(super) fn hold_new_namespaces() {}

    pub(super) fn tighten_rlimits(_: &Policy, _: Option<u64>) -> LayerState {
        unavailable()
    }

    pub(super) fn landlock(_: &Policy) -> LayerState {
        unavailable()
    }

    pub(super) fn seccomp() -> LayerState {
        unavailable()
    }
}
