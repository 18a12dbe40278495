//! Process hygiene of the worker program: applied first thing in `main`.

/// Hardens the worker process (Linux): SIGKILL when the parent dies (and exit
/// at once if the parent named by `--parent-pid PID` is already gone), no core
/// dumps, no file descriptors beyond stdin, stdout and stderr, and the
/// scheduling niceness given by `--nice N` (so that the host's event loop wins
/// the CPU over busy workers).
pub(crate) fn harden() {
    let arg_after = |flag: &str| std::env::args().skip_while(|arg| arg != flag).nth(1);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: these calls take plain integers or a pointer to a local
        // struct, and touch no memory of ours otherwise. Closing fds >= 3
        // happens before anything in this process opened one.
        #[allow(unsafe_code)]
        let set = unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong);
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                0 as libc::c_uint,
            );
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong)
        };
        if let Some(nice) = arg_after("--nice").and_then(|n| n.parse::<libc::c_int>().ok()) {
            // SAFETY: plain integers in, no memory touched.
            #[allow(unsafe_code)]
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            }
        }
        let expected = arg_after("--parent-pid").and_then(|pid| pid.parse::<u32>().ok());
        if set == 0 && expected.is_some_and(|pid| std::os::unix::process::parent_id() != pid) {
            std::process::exit(5);
        }
    }
}
