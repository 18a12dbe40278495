//! A worker program that plays an escaped guest: `asyncer-worker` itself,
//! except that, once the worker is locked down, the faults guest's task
//! `trap` makes the system call an escaped guest would try first (`socket`)
//! and its task `exit` tries to run a program (`execve`), instead of
//! running. The worker's own sandbox must kill it.

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
        _ => {}
    })
}
