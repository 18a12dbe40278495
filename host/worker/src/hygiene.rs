//! Process hygiene of the worker program.

/// Asks the kernel to SIGKILL this process when its parent dies (Linux), and
/// exits at once if the parent named by `--parent-pid PID` is already gone.
pub(crate) fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no
        // memory of ours.
        #[allow(unsafe_code)]
        let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        let expected = std::env::args()
            .skip_while(|arg| arg != "--parent-pid")
            .nth(1)
            .and_then(|pid| pid.parse::<u32>().ok());
        if set == 0 && expected.is_some_and(|pid| std::os::unix::process::parent_id() != pid) {
            std::process::exit(5);
        }
    }
}
