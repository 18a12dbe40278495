//! Fresh worker processes forked from a template (Linux): the executor's
//! side of `asyncer-worker --template` (see the worker crate's
//! `template.rs`).
//!
//! The template is started once per pool, with one end of a
//! `SOCK_SEQPACKET` socket pair as its stdin. For each task the executor
//! makes three pipes, sends a [`ForkRequest`] with the child's ends attached,
//! and reads back the process id of a new child that serves exactly that
//! task. The child is this process's own (`CLONE_PARENT`): it is waited
//! for, killed and described through a pidfd, as a spawned worker is
//! through its [`tokio::process::Child`].

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use asyncer_protocol::{encode_frame, ForkRequest};
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::process::{WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// How long a template may take to fork a child (it loads the task's
/// artifact first, a memory map) before it is taken for hung and replaced.
const FORK_PATIENCE: Duration = Duration::from_secs(10);

/// A template worker and the executor's end of its control socket.
pub(crate) struct Template {
    process: Child,
    control: AsyncFd<OwnedFd>,
}

/// A child the template forked for one task, with the executor's ends of
/// its standard streams.
pub(crate) struct ForkedWorker {
    pub(crate) process: Forked,
    pub(crate) stdin: pipe::Sender,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
}

impl Template {
    /// Starts `command` (the worker program with its sandbox arguments) as
    /// a template.
    pub(crate) fn start(mut command: Command) -> std::io::Result<Template> {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::io::ioctl_fionbio(&ours, true)?;
        let mut process = command
            .arg("--template")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        // What the template says (only when something is wrong: a
        // forbidden call, an unreadable request) goes to the log.
        if let Some(stderr) = process.stderr.take() {
            let pid = process.id().unwrap_or(0);
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if !line.is_empty() {
                        tracing::warn!("template worker {pid}: {line}");
                    }
                }
            });
        }
        Ok(Template {
            process,
            control: register(ours)?,
        })
    }

    /// Whether the template process still runs.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// Asks the template for a child that will serve one task of
    /// `request`'s artifact.
    ///
    /// Not cancellation-safe: a caller that stops waiting may leave a child
    /// unaccounted for, so callers run it to its end (in a task of its own).
    pub(crate) async fn fork(&self, request: &ForkRequest) -> std::io::Result<ForkedWorker> {
        let frame = encode_frame(request).map_err(std::io::Error::other)?;
        let (child_stdin, stdin) = std::io::pipe()?;
        let (stdout, child_stdout) = std::io::pipe()?;
        let (stderr, child_stderr) = std::io::pipe()?;
        let theirs: [OwnedFd; 3] = [child_stdin.into(), child_stdout.into(), child_stderr.into()];
        self.control
            .async_io(Interest::WRITABLE, |control| {
                let fds = [theirs[0].as_fd(), theirs[1].as_fd(), theirs[2].as_fd()];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
                let mut ancillary = SendAncillaryBuffer::new(&mut space);
                ancillary.push(SendAncillaryMessage::ScmRights(&fds));
                Ok(rustix::net::sendmsg(
                    control,
                    &[IoSlice::new(&frame)],
                    &mut ancillary,
                    SendFlags::NOSIGNAL,
                )?)
            })
            .await?;
        // The child has its copies once the template forked it; ours would
        // keep its stdout open past its end.
        drop(theirs);
        let mut answer = [0u8; 4];
        let read = tokio::time::timeout(
            FORK_PATIENCE,
            self.control.async_io(Interest::READABLE, |control| {
                Ok(rustix::net::recv(control, &mut answer, RecvFlags::empty())?.0)
            }),
        )
        .await
        .map_err(|_| std::io::Error::other("the template did not answer"))??;
        if read != answer.len() {
            return Err(std::io::Error::other("the template is gone"));
        }
        let pid = i32::from_le_bytes(answer);
        if pid <= 0 {
            return Err(std::io::Error::from_raw_os_error(-pid));
        }
        Ok(ForkedWorker {
            process: Forked::open(pid)?,
            stdin: pipe::Sender::from_owned_fd(stdin.into())?,
            stdout: pipe::Receiver::from_owned_fd(stdout.into())?,
            stderr: pipe::Receiver::from_owned_fd(stderr.into())?,
        })
    }

    /// Closes the control socket (the template exits) and reaps the
    /// template, killing it if it lingers.
    pub(crate) async fn stop(self, grace: Duration) {
        let Template {
            mut process,
            control,
        } = self;
        drop(control);
        if tokio::time::timeout(grace, process.wait()).await.is_err() {
            let _ = process.start_kill();
            let _ = process.wait().await;
        }
    }
}

/// `fd`, registered with the runtime. `AsyncFd::new` is deprecated because a
/// descriptor-holding `T` in general may close or swap its descriptor while
/// registered (the unsafe `AsyncFd::register`'s condition); an [`OwnedFd`]
/// cannot, so this is the safe case (the crate allows no unsafe code).
#[allow(deprecated)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::new(fd)
}

/// A process the template forked: a child of this process, waited for
/// through a pidfd (tokio knows nothing of it). Killed and reaped when
/// dropped before it was.
pub(crate) struct Forked {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

impl Forked {
    /// Takes charge of child `pid`. Its pid cannot be reused before this
    /// process reaps it, so the pidfd names it for sure.
    fn open(pid: i32) -> std::io::Result<Forked> {
        let child = rustix::process::Pid::from_raw(pid).expect("a positive pid");
        match rustix::process::pidfd_open(child, rustix::process::PidfdFlags::NONBLOCK)
            .map_err(std::io::Error::from)
            .and_then(register)
        {
            Ok(pidfd) => Ok(Forked {
                pid: pid as u32,
                pidfd: Some(pidfd),
                status: None,
            }),
            Err(e) => {
                // No pidfds here: end the child rather than lose it.
                let _ = rustix::process::kill_process(child, rustix::process::Signal::KILL);
                let _ =
                    rustix::process::waitpid(Some(child), rustix::process::WaitOptions::empty());
                Err(e)
            }
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, if it has (reaping it).
    pub(crate) fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let Some(pidfd) = &self.pidfd else {
            return Err(std::io::Error::other("no pidfd"));
        };
        let waited = rustix::process::waitid(
            WaitId::PidFd(pidfd.get_ref().as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        )?;
        let Some(waited) = waited else {
            return Ok(None);
        };
        let raw = match (waited.exit_status(), waited.terminating_signal()) {
            (Some(code), _) => (code & 0xff) << 8,
            (None, Some(signal)) => signal | if waited.dumped() { 0x80 } else { 0 },
            (None, None) => return Ok(None),
        };
        let status = std::os::unix::process::ExitStatusExt::from_raw(raw);
        self.status = Some(status);
        // The pidfd is done with: the process is gone.
        self.pidfd = None;
        Ok(Some(status))
    }

    /// Waits for it to end (reaping it).
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let Some(pidfd) = &self.pidfd else {
                return Err(std::io::Error::other("no pidfd"));
            };
            // Readable once the process has ended.
            pidfd.readable().await?.clear_ready();
        }
    }

    /// Sends it SIGKILL (once it ended, nothing).
    pub(crate) fn start_kill(&mut self) -> std::io::Result<()> {
        match &self.pidfd {
            Some(pidfd) if self.status.is_none() => Ok(rustix::process::pidfd_send_signal(
                pidfd.get_ref(),
                rustix::process::Signal::KILL,
            )?),
            _ => Ok(()),
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let _ = self.start_kill();
        // Killed: it ends within moments (the pool lets go of a worker
        // unreaped only when a run is abandoned, not on its normal paths).
        if let Some(pidfd) = self.pidfd.take() {
            let _ = rustix::process::waitid(
                WaitId::PidFd(pidfd.get_ref().as_fd()),
                WaitIdOptions::EXITED,
            );
        }
    }
}
