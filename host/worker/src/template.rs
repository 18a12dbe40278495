//! The template worker (`asyncer-worker --template`, Linux): a fresh process
//! per task without the cost of starting one.
//!
//! The executor starts one template per pool. It enters the workers' user,
//! network and IPC namespaces, makes the engine and the WASI linker, loads
//! the seccomp allow-list (with the few calls only it needs; see
//! `seccomp.rs`), and then waits on its control socket
//! (its stdin, a `SOCK_SEQPACKET` socket) for [`ForkRequest`]s. It never
//! runs guest code and has one thread, so a fork of it holds nothing but
//! that. For each request it loads the task's artifact (once: later
//! children find it mapped), and forks a child with `CLONE_PARENT` (the
//! child is the executor's own, which waits for it, kills it and reads how
//! it ended as for a spawned worker) and, when namespaces are wanted,
//! `CLONE_NEWPID` (PID 1 of a new PID namespace, as a spawned worker is).
//! The child takes the three descriptors that came with the request as its
//! stdin, stdout and stderr, dies with the executor, adds a small seccomp
//! filter that takes the template's extra calls away again, and serves
//! exactly one request as a spawned worker does (the
//! same lock-down, limits and reply), then exits. The template answers with
//! the child's process id.
//!
//! The template must never make what a child must make for itself: no
//! thread, no async runtime, and no random number generator (WASI's is
//! seeded in each child, on its first task; one seeded here would hand every
//! child the same numbers).

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use asyncer_protocol::{decode_frame, ForkRequest, SandboxLayer, SandboxSettings};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use crate::run::{serve_requests, wasm_stack, WorkerCache};
use crate::sandbox::Sandbox;

/// The largest request message (an artifact path and a few flags).
const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The template's process name, as `ps` and `/proc/PID/stat` show it.
const TEMPLATE_NAME: &[u8] = b"asyncer-zygote\0";
/// A forked child's process name.
const CHILD_NAME: &[u8] = b"asyncer-worker\0";

/// Serves fork requests until the control socket is closed; the exit code.
pub(crate) fn serve(settings: SandboxSettings, args: &[String], before_task: fn(&str)) -> u8 {
    set_name(TEMPLATE_NAME);
    let sandbox = Sandbox::enter_template(settings, args);
    // Each child gets a PID namespace of its own when the template entered
    // the others (as a spawned worker gets all four, or none).
    let new_pid_namespace = settings.wants(SandboxLayer::Namespaces)
        && sandbox.status().get(SandboxLayer::Namespaces).is_active();
    let mut cache = WorkerCache::new(sandbox, false);
    let _ = cache.engine(Default::default(), crate::MAX_WASM_STACK, false);
    detect_cpu_features();
    // The allow-list is loaded here, once, and inherited by every child,
    // which only adds a small filter of its own (see `seccomp.rs`).
    let seccomp = if settings.wants(SandboxLayer::Seccomp) {
        crate::seccomp::install_violation_handler();
        crate::seccomp::template_allow_list()
            .and_then(|programs| crate::seccomp::apply(&programs))
            .and_then(|()| crate::seccomp::child_filter())
            .map(|child| vec![child])
    } else {
        Ok(Vec::new())
    };
    let control = std::io::stdin();
    let mut buffer = vec![0u8; MAX_REQUEST_BYTES];
    loop {
        let (request, fds) = match receive(control.as_fd(), &mut buffer) {
            Ok(Some(received)) => received,
            // The executor closed the socket: no more tasks.
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("asyncer-worker: template cannot read a request: {e}");
                return 3;
            }
        };
        let answer = match (request, <[OwnedFd; 3]>::try_from(fds)) {
            (Ok(request), Ok(fds)) => {
                // Loaded here once, so that this child and the next find it;
                // a failure is the child's to report (it loads again).
                let stack = wasm_stack(request.max_wasm_stack);
                let _ = cache.load((&request.artifact, request.flavor), stack, false);
                match fork(new_pid_namespace) {
                    Ok(Forked::Child(pid_namespace)) => {
                        let code = child(fds, &mut cache, pid_namespace, &seccomp, before_task);
                        // SAFETY: ends this child at once, without the exit
                        // handlers and destructors the template's copy holds
                        // (its reply is flushed; nothing else is buffered).
                        #[allow(unsafe_code)]
                        unsafe {
                            libc::_exit(i32::from(code))
                        }
                    }
                    Ok(Forked::Parent(pid)) => pid,
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                }
            }
            _ => -libc::EINVAL,
        };
        if let Err(e) = rustix::net::send(
            control.as_fd(),
            &answer.to_le_bytes(),
            rustix::net::SendFlags::empty(),
        ) {
            eprintln!("asyncer-worker: template cannot answer: {e}");
            return 4;
        }
    }
}

/// A request as received (it may not decode) and the descriptors that came
/// with it.
type Received = (
    Result<ForkRequest, asyncer_protocol::FrameError>,
    Vec<OwnedFd>,
);

/// One request and the descriptors that came with it, or `None` at the end.
fn receive(
    control: std::os::fd::BorrowedFd<'_>,
    buffer: &mut [u8],
) -> std::io::Result<Option<Received>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            control,
            &mut [IoSliceMut::new(buffer)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(received) => break received,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((decode_frame(&buffer[..received.bytes]), fds)))
}

enum Forked {
    /// In the child: whether it is PID 1 of a new PID namespace (or why not).
    Child(Result<(), String>),
    /// In the template: the child's process id.
    Parent(i32),
}

/// Forks a child of the template's parent (`CLONE_PARENT`), in a new PID
/// namespace when `new_pid_namespace` (falling back to none when the kernel
/// refuses one: the child is told why).
fn fork(new_pid_namespace: bool) -> std::io::Result<Forked> {
    let plain = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    let clone = |flags: libc::c_ulong| {
        // SAFETY: a fork-like clone (no new stack, no shared memory: the
        // child gets a copy of this process) of a process with one thread,
        // so the child may run any code. glibc's fork bookkeeping is not
        // run: the child's cached thread id names the template's thread,
        // which only makes a signal it sends itself with `raise` fail (it
        // is PID 1 of its namespace, where such signals are ignored anyway).
        #[allow(unsafe_code)]
        let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        if pid < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(pid as i32)
        }
    };
    let (pid, pid_namespace) = if new_pid_namespace {
        match clone(plain | libc::CLONE_NEWPID as libc::c_ulong) {
            Ok(pid) => (pid, Ok(())),
            Err(e) => (clone(plain)?, Err(e.to_string())),
        }
    } else {
        (clone(plain)?, Ok(()))
    };
    Ok(match pid {
        0 => Forked::Child(pid_namespace),
        pid => Forked::Parent(pid),
    })
}

/// The child's life: the three descriptors become its standard streams, it
/// dies with the executor, enters its sandbox and serves one request.
fn child(
    fds: [OwnedFd; 3],
    cache: &mut WorkerCache,
    pid_namespace: Result<(), String>,
    seccomp: &Result<Vec<seccompiler::BpfProgram>, String>,
    before_task: fn(&str),
) -> u8 {
    // First thing: `ps` and the tests tell children from the template by it.
    set_name(CHILD_NAME);
    // SAFETY: integers and a local pollfd only. PR_SET_PDEATHSIG first,
    // then the check that the executor is still there: its end of the
    // control socket (our stdin, until replaced) hangs up when it dies.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        let mut poll = libc::pollfd {
            fd: 0,
            events: 0,
            revents: 0,
        };
        if libc::poll(&mut poll, 1, 0) != 0 && poll.revents & libc::POLLHUP != 0 {
            libc::_exit(5);
        }
        for (fd, to) in fds.iter().zip(0..) {
            if libc::dup3(fd.as_raw_fd(), to, 0) != to {
                libc::_exit(5);
            }
        }
    }
    drop(fds);
    cache.reopen_statm();
    cache
        .sandbox_mut()
        .enter_forked_child(pid_namespace, seccomp);
    serve_requests(cache, before_task, true)
}

/// Names this process (`comm`, 15 bytes and a NUL at most).
fn set_name(name: &[u8]) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong);
    }
}

/// Runs WASI's random number generator (ChaCha12, as `rand::rng()` uses)
/// once from a fixed seed, so that the CPU features its code picks are
/// detected here, once, and not in every child (each `cpuid` is a trip to
/// the hypervisor in a virtual machine: about 2% of a forked no-op task).
/// Only the detection is kept: no generator, and no thread-local one, is
/// seeded (see the module's rule).
fn detect_cpu_features() {
    use rand::{Rng, SeedableRng};
    let _ = rand::rngs::StdRng::from_seed([0; 32]).next_u32();
}
