//! A worker program that plays an escaped guest: `asyncer-worker` itself,
//! except that, once the worker is locked down, the faults guest's task
//! `trap` makes the system call an escaped guest would try first (`socket`)
//! its task `exit` tries to run a program (`execve`), and its task `spin`
//! tries to fork (`clone`), instead of running. The worker's own sandbox
//! must kill it.

fn main() -> std::process::ExitCode {
    asyncer_worker::serve_stdio_with_hook(|task| match task {
        "trap" => {
            let _ = std::net::UdpSocket::bind("127.0.0.1:0");
        }
        "exit" => {
            let program = c"/bin/true";
            let argv = [program.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            // SAFETY: NUL-terminated strings and null-terminated arrays that
            // live across the call; if it ran, the process would be replaced.
            #[allow(unsafe_code)]
            unsafe {
                libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
        }
        "spin" => {
            // A fork exactly as a template worker makes one (which the
            // template's allow-list lets through): a forked worker's own
            // filter must refuse it.
            let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
            // SAFETY: a fork-like clone; if it ran, the child would exit at
            // once.
            #[allow(unsafe_code)]
            unsafe {
                if libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) == 0 {
                    libc::_exit(0);
                }
            }
        }
        _ => {}
    })
}
