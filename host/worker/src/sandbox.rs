//! The worker process's own sandbox: the second wall behind wasmtime.
//!
//! Two steps. [`Sandbox::enter`], first thing in `main` while the process
//! has one thread, moves it into new user, network, IPC and PID namespaces
//! (the PID namespace takes a fork: the process the host started waits for
//! its child, PID 1 of the new namespace, and ends as it ends), then installs
//! the seccomp allow-list (see `seccomp.rs`): neither depends on the task, so
//! both are in force before the request is even read (and a worker started
//! ahead has them before its task arrives). [`Sandbox::lock_down`], once the
//! task's module is loaded and before any guest code runs, tightens the
//! resource limits and restricts the file system with Landlock (read the
//! artifact, write only granted directories, no TCP, no signals or abstract
//! sockets outside). Each layer the kernel lacks is skipped and reported in
//! [`Sandbox::status`]; none is skipped silently.
//!
//! Outside Linux nothing is applied and every layer reports `unavailable`.

use std::path::PathBuf;

use asyncer_protocol::{SandboxLayer, SandboxSettings, SandboxStatus};

/// Most threads tokio may start for WASI's file operations in a worker.
pub(crate) const MAX_BLOCKING_THREADS: usize = 4;
/// Most threads and processes a locked-down worker may hold in its own user
/// namespace (`RLIMIT_NPROC` counts them there): the main thread, the
/// deadline thread, the progress flusher, the blocking threads, the process
/// left behind by the PID namespace's fork, and room to spare. seccomp lets
/// none of them be a new process.
const MAX_TASKS: u64 = 16;

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
/// let mut sandbox = Sandbox::enter(SandboxSettings::default());
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
    /// Whether the process has a user namespace of its own (where
    /// `RLIMIT_NPROC` counts only its own threads).
    own_user_namespace: bool,
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
    pub fn enter(settings: SandboxSettings) -> Sandbox {
        let mut status = SandboxStatus::default();
        let mut own_user_namespace = false;
        if settings.wants(SandboxLayer::Namespaces) {
            let (state, user) = os::enter_namespaces();
            status.set(SandboxLayer::Namespaces, state);
            own_user_namespace = user;
        }
        if settings.wants(SandboxLayer::Seccomp) {
            status.set(SandboxLayer::Seccomp, os::seccomp());
        }
        Sandbox {
            settings,
            status,
            locked: None,
            own_user_namespace,
        }
    }

    /// A sandbox that applies nothing (for tests and in-process use).
    pub fn none() -> Sandbox {
        Sandbox {
            settings: SandboxSettings::none(),
            status: SandboxStatus::default(),
            locked: None,
            own_user_namespace: false,
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
        // The deadline thread must exist before threads are forbidden.
        crate::deadline::start();
        if self.settings.wants(SandboxLayer::Rlimits) {
            self.status.set(
                SandboxLayer::Rlimits,
                os::tighten_rlimits(policy, self.own_user_namespace),
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
    /// when only a privileged process may make one); and whether the user
    /// namespace is the process's own.
    pub(super) fn enter_namespaces() -> (LayerState, bool) {
        let shared = libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
        // SAFETY: unshare takes flags only. The process has one thread
        // (required for CLONE_NEWUSER), as `Sandbox::enter` demands.
        #[allow(unsafe_code)]
        let (entered, user) = unsafe {
            if libc::unshare(libc::CLONE_NEWUSER | shared) == 0 {
                (true, true)
            } else {
                (libc::unshare(shared) == 0, false)
            }
        };
        if !entered {
            let why = format!("unprivileged namespaces are not allowed here: {}", errno());
            return (LayerState::Unavailable(why), false);
        }
        let state = match fork_into_pid_namespace() {
            Ok(()) => LayerState::Active,
            Err(e) => LayerState::Partial(format!("no PID namespace: {e}")),
        };
        (state, user)
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
    /// `RLIMIT_NPROC` is set only in a user namespace of the process's own:
    /// elsewhere it would count every process of the user.
    pub(super) fn tighten_rlimits(policy: &Policy, own_user_namespace: bool) -> LayerState {
        let mut limits = vec![
            (libc::RLIMIT_NOFILE, MAX_OPEN_FILES, "RLIMIT_NOFILE"),
            (libc::RLIMIT_CORE, 0, "RLIMIT_CORE"),
        ];
        if own_user_namespace {
            limits.push((libc::RLIMIT_NPROC, super::MAX_TASKS, "RLIMIT_NPROC"));
        }
        if !policy.writes_files() {
            limits.push((libc::RLIMIT_FSIZE, 0, "RLIMIT_FSIZE"));
        }
        let mut failed = Vec::new();
        if !own_user_namespace {
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
        let for_ticker = created.try_clone();
        let status = match created.restrict_self() {
            Ok(status) => status,
            Err(e) => return LayerState::Unavailable(e.to_string()),
        };
        if let Ok(for_ticker) = for_ticker {
            if crate::deadline::started() {
                let _ = crate::deadline::run_on_ticker(move || for_ticker.restrict_self().is_ok());
            }
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

    pub(super) fn enter_namespaces() -> (LayerState, bool) {
        (unavailable(), false)
    }

    pub(super) fn tighten_rlimits(_: &Policy, _: bool) -> LayerState {
        unavailable()
    }

    pub(super) fn landlock(_: &Policy) -> LayerState {
        unavailable()
    }

    pub(super) fn seccomp() -> LayerState {
        unavailable()
    }
}
