//! Turning wasmtime errors into typed task failures.

use asyncer_protocol::{ErrorKind, Failure};
use wasmtime::{Trap, WasmBacktrace};

/// The error a [`crate::StoreState`] limiter raises when a guest tries to grow
/// its memory past the limit; classified as [`ErrorKind::MemoryLimit`].
#[derive(Debug)]
pub(crate) struct MemoryLimitExceeded {
    pub(crate) desired: usize,
    pub(crate) limit: u64,
}

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "linear memory of {} bytes requested, the limit is {} bytes",
            self.desired, self.limit
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// Classifies an error raised while instantiating or calling a guest.
///
/// `stderr` is the guest's captured stderr: a Rust guest's panic is an
/// `unreachable` trap whose message the panic hook wrote there.
///
/// # Examples
/// ```
/// use asyncer_protocol::ErrorKind;
/// let error = wasmtime::Error::new(wasmtime::Trap::OutOfFuel);
/// assert_eq!(asyncer_worker::classify_error(&error, b"").kind, ErrorKind::OutOfFuel);
/// let panic = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached);
/// let failure = asyncer_worker::classify_error(&panic, b"thread 'main' panicked at a.rs:1:1:\nboom\n");
/// assert_eq!((failure.kind, failure.message.as_str()), (ErrorKind::GuestPanic, "boom"));
/// ```
pub fn classify_error(error: &wasmtime::Error, stderr: &[u8]) -> Failure {
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| bt.to_string())
        .filter(|bt| !bt.trim().is_empty());
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Failure {
            backtrace,
            ..Failure::new(ErrorKind::MemoryLimit, limit.to_string())
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        // The guest ended its own "process" without a result: the same as a
        // worker exiting on its own.
        return Failure::new(
            ErrorKind::WorkerCrashed,
            format!(
                "guest called proc_exit({}) before returning a result",
                exit.0
            ),
        );
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let kind = match trap {
            Trap::OutOfFuel => ErrorKind::OutOfFuel,
            Trap::Interrupt => ErrorKind::Timeout,
            _ => ErrorKind::Trap,
        };
        if *trap == Trap::UnreachableCodeReached {
            if let Some(message) = panic_message(stderr) {
                return Failure {
                    trap_code: Some(format!("{trap:?}")),
                    backtrace,
                    ..Failure::new(ErrorKind::GuestPanic, message)
                };
            }
        }
        return Failure {
            kind,
            message: trap.to_string(),
            trap_code: Some(format!("{trap:?}")),
            backtrace,
        };
    }
    Failure {
        backtrace,
        ..Failure::new(ErrorKind::Trap, format!("{error:#}"))
    }
}

/// Extracts the last panic message a Rust guest wrote to `stderr`:
/// the lines after `panicked at LOCATION:`, up to the `note:` line.
///
/// # Examples
/// ```
/// let stderr = b"thread 'main' panicked at src/lib.rs:3:5:\nno input\nnote: run with `RUST_BACKTRACE=1`\n";
/// assert_eq!(asyncer_worker::panic_message(stderr).as_deref(), Some("no input"));
/// ```
pub fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let start = text.rfind("panicked at ")?;
    let rest = &text[start + "panicked at ".len()..];
    let (location, body) = rest.split_once('\n').unwrap_or((rest, ""));
    let location = location.trim_end().trim_end_matches(':');
    let body = match body.find("\nnote: ") {
        Some(end) => &body[..end],
        None => body.strip_suffix('\n').unwrap_or(body),
    };
    let body = body.strip_prefix("note: ").map_or(body, |_| "");
    if body.is_empty() {
        Some(format!("panicked at {location}"))
    } else {
        Some(body.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_comes_from_the_std_hook_format() {
        let stderr = b"\nthread '<unnamed>' panicked at src/lib.rs:50:5:\nguest says: hi\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("guest says: hi"));
    }

    #[test]
    fn multi_line_panic_messages_are_kept_whole() {
        let stderr = b"thread 'main' panicked at a.rs:1:1:\nline one\nline two\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("line one\nline two"));
    }

    #[test]
    fn no_panic_marker_means_no_message() {
        assert_eq!(panic_message(b"some other output\n"), None);
    }
}
