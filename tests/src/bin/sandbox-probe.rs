//! Plays an escaped guest: applies the worker's own sandbox (the same
//! `Sandbox::enter` and `lock_down` as `asyncer-worker`), then tries one
//! thing an escaped guest would, and says how it went.
//!
//! ```text
//! sandbox-probe [--sandbox-off LAYER,...] [--grant-rw DIR]
//!               [--join-namespaces USER,NET,IPC --max-tasks N] ATTEMPT [ARG]
//! ```
//! Attempts: `read FILE`, `write FILE`, `connect PORT` (127.0.0.1),
//! `exec PROGRAM`, `fork`, `status`. Exit code 0 when the attempt worked
//! (printing `ok`), 10 when it was refused with EPERM or EACCES, 11 when it
//! failed otherwise (printing the error); a forbidden system call kills the
//! probe with SIGSYS instead.

use std::io::Write;
use std::process::ExitCode;

use asyncer_protocol::SandboxSettings;
use asyncer_worker::{Policy, Sandbox};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match SandboxSettings::from_args(args.iter().map(String::as_str)) {
        Ok(settings) => settings,
        Err(e) => return usage(&e),
    };
    let mut sandbox = Sandbox::enter(settings, &args);
    let mut policy = Policy::default();
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sandbox-off" | "--join-namespaces" | "--max-tasks" => {
                args.next();
            }
            "--grant-rw" => match args.next() {
                Some(dir) => policy = policy.grant(dir, true),
                None => return usage("--grant-rw needs a directory"),
            },
            _ => rest.push(arg.as_str()),
        }
    }
    if let Err(e) = sandbox.lock_down(&policy) {
        return usage(&e);
    }
    let attempt = match rest.as_slice() {
        ["status"] => {
            print!("{}", sandbox.status());
            return ExitCode::SUCCESS;
        }
        ["read", file] => std::fs::read(file).map(drop),
        ["write", file] => std::fs::File::create(file).and_then(|mut f| f.write_all(b"escaped")),
        ["connect", port] => match port.parse::<u16>() {
            Ok(port) => std::net::TcpStream::connect(("127.0.0.1", port)).map(drop),
            Err(e) => return usage(&e.to_string()),
        },
        ["exec", program] => std::process::Command::new(program).status().map(drop),
        ["fork"] => fork(),
        _ => return usage("unknown attempt"),
    };
    match attempt {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
            println!("refused: {e}");
            ExitCode::from(10)
        }
        Err(e) => {
            println!("failed: {e}");
            ExitCode::from(11)
        }
    }
}

/// A child process that exits at once.
fn fork() -> std::io::Result<()> {
    // SAFETY: the probe has one thread (no allocation happens in the child
    // before `_exit`).
    #[allow(unsafe_code)]
    unsafe {
        match libc::fork() {
            -1 => Err(std::io::Error::last_os_error()),
            0 => libc::_exit(0),
            child => {
                let mut status = 0;
                libc::waitpid(child, &mut status, 0);
                Ok(())
            }
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("sandbox-probe: {message}");
    ExitCode::from(2)
}
