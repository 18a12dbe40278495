//! Finding the worker program.

use std::path::{Path, PathBuf};

use crate::Error;

/// The worker program's file name.
///
/// # Examples
/// ```
/// assert_eq!(asyncer::WORKER_PROGRAM, "asyncer-worker");
/// ```
pub const WORKER_PROGRAM: &str = "asyncer-worker";
/// Environment variable naming the worker program, checked second.
///
/// # Examples
/// ```
/// // The process's own environment names the worker, e.g. in a container:
/// // ASYNCER_WORKER=/usr/local/bin/asyncer-worker ./my-service
/// assert_eq!(asyncer::WORKER_ENV, "ASYNCER_WORKER");
/// ```
pub const WORKER_ENV: &str = "ASYNCER_WORKER";

/// Finds the worker program: `explicit`, then `$ASYNCER_WORKER`, then next to
/// the current executable (and in its parent directory, for test and example
/// binaries under `target/*/deps` and `target/*/examples`), then `$PATH`.
pub(crate) fn locate_worker(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let mut searched = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = explicit {
        candidates.push(path.to_owned());
    } else if let Some(path) = std::env::var_os(WORKER_ENV).filter(|p| !p.is_empty()) {
        candidates.push(path.into());
    } else {
        let exe_name = format!("{WORKER_PROGRAM}{}", std::env::consts::EXE_SUFFIX);
        if let Ok(exe) = std::env::current_exe() {
            let mut dir = exe.parent();
            for _ in 0..2 {
                if let Some(d) = dir {
                    candidates.push(d.join(&exe_name));
                    dir = d.parent();
                }
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&paths).map(|d| d.join(&exe_name)));
        }
    }
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
        searched.push(candidate.display().to_string());
    }
    Err(Error::SpawnFailed {
        message: format!(
            "cannot find the `{WORKER_PROGRAM}` program (searched: {}); build it with \
             `cargo build -p asyncer-worker` next to your binary, install it with \
             `cargo install asyncer-worker`, or name it with ${WORKER_ENV} or \
             `Executor::builder().worker_program(path)`",
            searched.join(", ")
        ),
    })
}
