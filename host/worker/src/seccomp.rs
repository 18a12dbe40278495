//! The worker's system-call allow-list (seccomp-bpf, built with
//! `seccompiler`), and the SIGSYS handler that names a forbidden call before
//! the worker dies of it.
//!
//! The list holds what the worker, wasmtime's runtime and WASI preview 1
//! use once a task's module is loaded: memory, signals, time, randomness,
//! reading and writing open descriptors, and the file operations WASI
//! performs in granted directories. Everything else (sockets, `execve`,
//! `fork` and `clone`, `ptrace`, `mount`, `bpf`, `kill` of another process,
//! namespaces, keyrings, io_uring, ...) traps: the handler writes
//! `sandbox violation: system call `NAME` (NR) is not allowed` to stderr and
//! the worker dies of SIGSYS.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

/// `(number, name)` pairs for `libc::SYS_*` constants.
macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name, stringify!($name)),)*]
    };
}

/// What a locked-down worker may call, on every architecture.
const ALLOWED: &[(libc::c_long, &str)] = syscalls![
    // Descriptors it holds: the pipes to the host, artifact, granted files.
    SYS_read,
    SYS_write,
    SYS_readv,
    SYS_writev,
    SYS_pread64,
    SYS_pwrite64,
    SYS_preadv,
    SYS_pwritev,
    SYS_preadv2,
    SYS_pwritev2,
    SYS_lseek,
    SYS_close,
    SYS_fcntl,
    SYS_ioctl,
    SYS_dup,
    SYS_dup3,
    SYS_fstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_fstatfs,
    SYS_ppoll,
    SYS_pselect6,
    // WASI's file operations (Landlock decides where).
    SYS_openat,
    SYS_openat2,
    SYS_getdents64,
    SYS_readlinkat,
    SYS_mkdirat,
    SYS_unlinkat,
    SYS_renameat2,
    SYS_symlinkat,
    SYS_linkat,
    SYS_utimensat,
    SYS_ftruncate,
    SYS_fallocate,
    SYS_fsync,
    SYS_fdatasync,
    SYS_fadvise64,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_flock,
    // Memory: wasm linear memories, stacks, the allocator.
    SYS_mmap,
    SYS_munmap,
    SYS_mremap,
    SYS_mprotect,
    SYS_madvise,
    SYS_brk,
    SYS_membarrier,
    // Signals (wasmtime's trap handlers), the runtime's parking, time.
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_sigaltstack,
    SYS_futex,
    SYS_sched_yield,
    SYS_sched_getaffinity,
    SYS_getpid,
    SYS_gettid,
    SYS_clock_gettime,
    SYS_clock_getres,
    SYS_clock_nanosleep,
    SYS_nanosleep,
    SYS_gettimeofday,
    SYS_getrandom,
    SYS_restart_syscall,
    SYS_exit,
    SYS_exit_group,
    // A panic's report (the worker's own bug) names paths relative to it.
    SYS_getcwd,
    // Locking down further once the task is known: Landlock can only take
    // rights away, and the limits are set hard (soft ones cannot rise past
    // them); `prlimit64` only on this process (see `filter`).
    SYS_landlock_create_ruleset,
    SYS_landlock_add_rule,
    SYS_landlock_restrict_self,
    SYS_setrlimit,
    // A new thread's set-up (threads only: see `filter`).
    SYS_set_robust_list,
    SYS_rseq,
];

/// More allowed calls that exist on x86_64 only.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[(libc::c_long, &str)] = syscalls![SYS_poll, SYS_renameat];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[(libc::c_long, &str)] = &[];

/// Names of calls the list forbids, for the violation message (a number
/// not here is printed alone).
const FORBIDDEN_NAMES: &[(libc::c_long, &str)] = syscalls![
    SYS_socket,
    SYS_socketpair,
    SYS_connect,
    SYS_bind,
    SYS_listen,
    SYS_accept,
    SYS_accept4,
    SYS_sendto,
    SYS_sendmsg,
    SYS_sendmmsg,
    SYS_recvfrom,
    SYS_recvmsg,
    SYS_shutdown,
    SYS_setsockopt,
    SYS_getsockopt,
    SYS_execve,
    SYS_execveat,
    SYS_clone,
    SYS_clone3,
    SYS_kill,
    SYS_tkill,
    SYS_tgkill,
    SYS_ptrace,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_unshare,
    SYS_setns,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_kexec_load,
    SYS_reboot,
    SYS_swapon,
    SYS_swapoff,
    SYS_userfaultfd,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_memfd_create,
    SYS_seccomp,
    SYS_prctl,
    SYS_setuid,
    SYS_setgid,
    SYS_setresuid,
    SYS_setresgid,
    SYS_setgroups,
    SYS_chdir,
    SYS_fchdir,
    SYS_uname,
    SYS_sysinfo,
    SYS_getuid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getegid,
    SYS_getppid,
    SYS_wait4,
    SYS_waitid,
    SYS_pipe2,
    SYS_eventfd2,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_pwait,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pidfd_getfd,
    SYS_prlimit64,
    SYS_setpriority,
    SYS_sched_setaffinity,
    SYS_mknodat,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_quotactl,
    SYS_acct,
    SYS_syslog,
    SYS_personality,
    SYS_capset,
    SYS_capget,
    SYS_timer_create,
    SYS_setitimer,
    SYS_inotify_init1,
    SYS_fanotify_init,
    SYS_name_to_handle_at,
    SYS_open_by_handle_at,
    SYS_mbind,
    SYS_migrate_pages,
    SYS_move_pages,
    SYS_set_mempolicy,
    SYS_set_tid_address,
    SYS_mlock,
    SYS_mlockall,
    SYS_msgget,
    SYS_semget,
    SYS_shmget,
    SYS_shmat,
];

/// More forbidden names that exist on x86_64 only.
#[cfg(target_arch = "x86_64")]
const FORBIDDEN_NAMES_X86_64: &[(libc::c_long, &str)] = syscalls![
    SYS_fork,
    SYS_vfork,
    SYS_open,
    SYS_creat,
    SYS_stat,
    SYS_lstat,
    SYS_access,
    SYS_pipe,
    SYS_mkdir,
    SYS_unlink,
    SYS_rename,
    SYS_iopl,
    SYS_ioperm,
    SYS_modify_ldt,
    SYS_arch_prctl,
    SYS_alarm,
    SYS_uselib,
];
#[cfg(not(target_arch = "x86_64"))]
const FORBIDDEN_NAMES_X86_64: &[(libc::c_long, &str)] = &[];

/// The name of system call `nr` (without the `SYS_` prefix), if known.
///
/// # Examples
/// ```
/// assert_eq!(asyncer_worker::syscall_name(libc::SYS_socket as i64), Some("socket"));
/// assert_eq!(asyncer_worker::syscall_name(100_000), None);
/// ```
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    [
        ALLOWED,
        ALLOWED_X86_64,
        FORBIDDEN_NAMES,
        FORBIDDEN_NAMES_X86_64,
    ]
    .into_iter()
    .flatten()
    .find(|(number, _)| *number == nr)
    .map(|(_, name)| name.strip_prefix("SYS_").unwrap_or(name))
}

/// What the process left behind by the fork into a PID namespace may call:
/// wait for its child and end as it ended.
const REAPER_ALLOWED: &[(libc::c_long, &str)] = syscalls![
    SYS_wait4,
    SYS_waitid,
    SYS_rt_sigaction,
    SYS_rt_sigprocmask,
    SYS_rt_sigreturn,
    SYS_getpid,
    SYS_gettid,
    SYS_close,
    SYS_munmap,
    SYS_restart_syscall,
    SYS_exit,
    SYS_exit_group,
];

/// The worker's allow-list as BPF programs for this machine's architecture
/// (see [`filter`]): the list itself, which also lets threads start (`clone`
/// with `CLONE_THREAD`, and `prctl(PR_SET_NAME)` to name them), lets
/// `prctl(PR_SET_NO_NEW_PRIVS)` and `prlimit64` on this process (pid 0)
/// through for the lock-down that follows, and a second
/// filter that answers `clone3` with ENOSYS (its flags cannot be inspected),
/// so that the C library starts threads with `clone` instead. A call both
/// filters allow runs; the kernel takes the stricter answer.
pub(crate) fn allow_list() -> Result<Vec<BpfProgram>, String> {
    lists(false)
}

/// What a template worker calls besides the worker's list (see
/// [`template_allow_list`]).
const TEMPLATE_ALLOWED: &[(libc::c_long, &str)] = syscalls![SYS_recvmsg, SYS_sendto, SYS_seccomp];

/// The `clone` flags a template forks with (with and without a new PID
/// namespace).
const TEMPLATE_CLONE_FLAGS: [libc::c_int; 2] = [
    libc::CLONE_PARENT | libc::SIGCHLD | libc::CLONE_NEWPID,
    libc::CLONE_PARENT | libc::SIGCHLD,
];

/// A template worker's allow-list (see `template.rs`), installed once in
/// the template and inherited by every child it forks: the worker's list
/// and what the template does besides, receive fork requests (`recvmsg`)
/// and answer them (`sendto`), fork (`clone` with exactly the template's
/// flags), and what its children do before they add [`child_filter`]: set
/// their parent-death signal (`prctl(PR_SET_PDEATHSIG)`) and add the filter
/// (`seccomp`). `tgkill` may also name PID 1 (a child in its own PID
/// namespace signalling itself). Compiling and loading a filter of the
/// whole list costs a fresh process about a fifth of a no-op task; a child
/// only adds the small one.
pub(crate) fn template_allow_list() -> Result<Vec<BpfProgram>, String> {
    lists(true)
}

/// What a template's child adds to the template's list before any task
/// code runs: the template's extra calls trap again (`clone` but for
/// threads, `recvmsg`, `sendto`, `seccomp`, `prctl(PR_SET_PDEATHSIG)`), so
/// that the two filters together allow exactly the worker's list.
pub(crate) fn child_filter() -> Result<BpfProgram, String> {
    let not_a_thread = condition(0, SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64), 0)?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [
        (libc::SYS_clone, not_a_thread),
        (libc::SYS_recvmsg, Vec::new()),
        (libc::SYS_sendto, Vec::new()),
        (libc::SYS_seccomp, Vec::new()),
        (
            libc::SYS_prctl,
            condition(0, SeccompCmpOp::Eq, libc::PR_SET_PDEATHSIG as u64)?,
        ),
    ]
    .into();
    compile(
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Trap,
            target_arch()?,
        )
        .map_err(|e| e.to_string())?,
    )
}

/// The worker's lists, or (`template`) a template's.
fn lists(template: bool) -> Result<Vec<BpfProgram>, String> {
    let arch = target_arch()?;
    let mut clone = condition(
        0,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )?;
    let mut prctl_options = vec![libc::PR_SET_NAME, libc::PR_SET_NO_NEW_PRIVS];
    let mut signalled = vec![u64::from(std::process::id())];
    let extra: &[(libc::c_long, &str)] = if template {
        for flags in TEMPLATE_CLONE_FLAGS {
            clone.extend(condition(0, SeccompCmpOp::Eq, flags as u64)?);
        }
        prctl_options.push(libc::PR_SET_PDEATHSIG);
        signalled.push(1);
        TEMPLATE_ALLOWED
    } else {
        &[]
    };
    let mut prctl = Vec::new();
    for option in prctl_options {
        prctl.extend(condition(0, SeccompCmpOp::Eq, option as u64)?);
    }
    let mut tgkill = Vec::new();
    for pid in signalled {
        tgkill.extend(condition(0, SeccompCmpOp::Eq, pid)?);
    }
    let list = filter(
        ALLOWED.iter().chain(ALLOWED_X86_64).chain(extra),
        [
            (libc::SYS_clone, clone),
            (libc::SYS_prctl, prctl),
            (libc::SYS_prlimit64, condition(0, SeccompCmpOp::Eq, 0)?),
            (libc::SYS_clone3, Vec::new()),
            (libc::SYS_tgkill, tgkill),
        ],
    )?;
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![compile(no_clone3)?, list])
}

/// One rule: argument `index` compared with `value` by `op`.
fn condition(index: u8, op: SeccompCmpOp, value: u64) -> Result<Vec<SeccompRule>, String> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
        .and_then(|condition| SeccompRule::new(vec![condition]))
        .map(|rule| vec![rule])
        .map_err(|e| e.to_string())
}

fn target_arch() -> Result<seccompiler::TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("no seccomp filter for {}: {e}", std::env::consts::ARCH))
}

fn compile(filter: SeccompFilter) -> Result<BpfProgram, String> {
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// The reaper's allow-list (see [`REAPER_ALLOWED`]).
pub(crate) fn reaper_allow_list() -> Result<Vec<BpfProgram>, String> {
    Ok(vec![filter(REAPER_ALLOWED.iter(), [])?])
}

/// A BPF program allowing `allowed`, the calls in `conditional` when their
/// rules hold, and (unless `conditional` says otherwise) `tgkill` towards
/// this process only (`abort` signals itself); any other call traps
/// (SIGSYS, see [`install_violation_handler`]).
fn filter<'a>(
    allowed: impl Iterator<Item = &'a (libc::c_long, &'static str)>,
    conditional: impl IntoIterator<Item = (libc::c_long, Vec<SeccompRule>)>,
) -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        allowed.map(|(nr, _)| (*nr, Vec::new())).collect();
    let own_pid = u64::from(std::process::id());
    rules.insert(libc::SYS_tgkill, condition(0, SeccompCmpOp::Eq, own_pid)?);
    rules.extend(conditional);
    compile(
        SeccompFilter::new(
            rules,
            SeccompAction::Trap,
            SeccompAction::Allow,
            target_arch()?,
        )
        .map_err(|e| e.to_string())?,
    )
}

/// Applies `programs` to every thread of the process (and sets
/// `no_new_privs`, which a filter requires).
pub(crate) fn apply(programs: &[BpfProgram]) -> Result<(), String> {
    programs
        .iter()
        .try_for_each(|program| seccompiler::apply_filter_all_threads(program))
        .map_err(|e| e.to_string())
}

/// Installs the SIGSYS handler: a forbidden call writes one line naming it
/// to stderr, then the process dies of SIGSYS.
pub(crate) fn install_violation_handler() {
    // SAFETY: `on_violation` is async-signal-safe (it formats into a stack
    // buffer and calls `write`, `sigprocmask` and `syscall` only); the struct is zeroed and
    // then filled as sigaction(2) describes.
    #[allow(unsafe_code)]
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_violation as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut());
    }
}

/// The SIGSYS handler (see [`install_violation_handler`]).
extern "C" fn on_violation(_signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler;
    // for a seccomp trap it is the `_sigsys` variant, whose `_syscall` field
    // sits after the three leading ints and the call address.
    #[allow(unsafe_code)]
    let nr = unsafe {
        let base = info.cast::<u8>();
        let offset = 3 * std::mem::size_of::<libc::c_int>();
        let offset = offset.next_multiple_of(std::mem::align_of::<*const u8>())
            + std::mem::size_of::<*const u8>();
        base.add(offset).cast::<libc::c_int>().read_unaligned()
    };
    let mut line = Line::default();
    line.push(b"\nasyncer-worker: sandbox violation: system call `");
    line.push(syscall_name(i64::from(nr)).unwrap_or("?").as_bytes());
    line.push(b"` (");
    line.push_number(nr);
    line.push(b") is not allowed\n");
    // SAFETY: write(2), sigprocmask(2) and syscall(2) are async-signal-safe;
    // the buffer and the signal set are ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::write(2, line.bytes.as_ptr().cast(), line.len);
        // Die of SIGSYS. `raise` would not do: as PID 1 of its namespace
        // the worker ignores signals it sends itself. A forbidden call made
        // with every signal blocked is different: the kernel then delivers
        // SIGSYS with its default action, death, even to a namespace's init.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME);
        // Not reached while the filter is in force.
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// A fixed buffer for formatting without allocating (in a signal handler).
struct Line {
    bytes: [u8; 160],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            bytes: [0; 160],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, text: &[u8]) {
        let room = self.bytes.len() - self.len;
        let n = text.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: libc::c_int) {
        let mut digits = [0u8; 12];
        let mut at = digits.len();
        let mut rest = i64::from(n).unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if n < 0 {
            self.push(b"-");
        }
        self.push(&digits[at..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_builds_and_names_what_it_forbids() {
        assert!(!allow_list().unwrap().is_empty());
        assert!(!reaper_allow_list().unwrap().is_empty());
        assert_eq!(syscall_name(libc::SYS_execve), Some("execve"));
        assert_eq!(syscall_name(libc::SYS_read), Some("read"));
        for (nr, _) in FORBIDDEN_NAMES.iter().chain(FORBIDDEN_NAMES_X86_64) {
            assert!(
                !ALLOWED.iter().chain(ALLOWED_X86_64).any(|(a, _)| a == nr),
                "{nr} is both allowed and forbidden"
            );
        }
    }

    #[test]
    fn numbers_format_without_allocating() {
        let mut line = Line::default();
        line.push_number(41);
        line.push(b" ");
        line.push_number(-7);
        line.push(b" ");
        line.push_number(0);
        assert_eq!(&line.bytes[..line.len], b"41 -7 0");
    }
}
