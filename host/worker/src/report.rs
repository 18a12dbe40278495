//! The `asyncer` host import module: a guest's progress and log records,
//! bounded so that a hostile guest cannot flood the host.
//!
//! - `asyncer::progress(done: i64, total: i64, msg_ptr: i32, msg_len: i32)`:
//!   sent at once when the last one went out at least
//!   [`PROGRESS_INTERVAL`] ago, otherwise kept as the pending value (a newer
//!   call replaces it) and sent once the interval is over (by a flusher
//!   thread, started for the task the first time a value is held back), or
//!   earlier by the next log record or the end of the task. A guest calling it in a tight loop costs the host about
//!   one message per interval. Messages are cut to [`MAX_PROGRESS_MESSAGE`]
//!   bytes.
//! - `asyncer::log(level: i32, msg_ptr: i32, msg_len: i32)`: sends a
//!   held-back progress value first, so the host sees the guest's order; each record's
//!   bytes count against the task's `max_log_bytes` budget (the same size as
//!   its stdout and stderr caps); past it records are dropped and counted.
//!
//! A pointer and length outside the guest's memory, or an unknown level, is
//! a guest fault: the call traps with a message naming the import.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use asyncer_protocol::{
    GuestMessage, LogLevel, LogRecord, Progress, ABI_HOST_MODULE, ABI_LOG_IMPORT,
    ABI_MEMORY_EXPORT, ABI_PROGRESS_IMPORT,
};
use wasmtime::{Caller, Extern, Linker};

use crate::StoreState;

/// Where a running guest's progress and log records go. The worker program
/// sends them to the host as frames; an in-process run hands them to the
/// caller.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use asyncer_protocol::GuestMessage;
/// // Print what guests report.
/// let sink: asyncer_worker::GuestSink = Arc::new(|message| match message {
///     GuestMessage::Progress(p) => eprintln!("{}/{}", p.done, p.total),
///     GuestMessage::Log(r) => eprintln!("[{}] {}", r.level, r.message),
/// });
/// # let _ = sink;
/// ```
pub type GuestSink = Arc<dyn Fn(GuestMessage) + Send + Sync>;

/// Shortest time between two progress messages of one task.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(10);

/// Longest progress message kept, in bytes.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;

/// A guest called an `asyncer` import with arguments that break the ABI.
#[derive(Debug)]
struct BadHostCall(String);

impl std::fmt::Display for BadHostCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadHostCall {}

/// Per-task state of the `asyncer` imports.
pub(crate) struct Reporter {
    outbox: Arc<Mutex<Outbox>>,
    log_budget: u64,
    log_dropped: u64,
    /// Sends a held-back progress value once its interval is over, while
    /// the guest computes without calling again; started on first need.
    flusher: Option<Flusher>,
}

/// What goes to the sink, and when the last progress went. Every send
/// happens under its lock, so messages keep the guest's order.
struct Outbox {
    sink: Option<GuestSink>,
    last_progress: Option<Instant>,
    pending: Option<Progress>,
}

impl Outbox {
    fn send(&self, message: GuestMessage) {
        if let Some(sink) = &self.sink {
            sink(message);
        }
    }

    fn send_progress(&mut self, progress: Progress, now: Instant) {
        self.pending = None;
        self.last_progress = Some(now);
        self.send(GuestMessage::Progress(progress));
    }

    /// Sends the held-back value now.
    fn flush(&mut self) {
        if let Some(progress) = self.pending.take() {
            self.send_progress(progress, Instant::now());
        }
    }

    /// Sends the held-back value if its interval is over.
    fn flush_due(&mut self) {
        let due = self
            .last_progress
            .is_none_or(|last| last.elapsed() >= PROGRESS_INTERVAL);
        if due {
            self.flush();
        }
    }
}

/// A thread that calls [`Outbox::flush_due`] every interval until dropped.
struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(outbox: Arc<Mutex<Outbox>>) -> Option<Flusher> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("asyncer-progress".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(PROGRESS_INTERVAL)
                {
                    lock(&outbox).flush_due();
                }
            })
            // Without the thread, held-back values still go out at the next
            // call or at the end.
            .ok()?;
        Some(Flusher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Disconnecting wakes the thread at once.
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The outbox, even if a sink panicked while holding it.
fn lock(outbox: &Mutex<Outbox>) -> std::sync::MutexGuard<'_, Outbox> {
    outbox
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Reporter {
    pub(crate) fn new(sink: Option<GuestSink>, max_log_bytes: u64) -> Self {
        Reporter {
            outbox: Arc::new(Mutex::new(Outbox {
                sink,
                last_progress: None,
                pending: None,
            })),
            log_budget: max_log_bytes,
            log_dropped: 0,
            flusher: None,
        }
    }

    fn progress(&mut self, progress: Progress) {
        let now = Instant::now();
        let mut outbox = lock(&self.outbox);
        let due = outbox
            .last_progress
            .is_none_or(|last| now.duration_since(last) >= PROGRESS_INTERVAL);
        if due {
            outbox.send_progress(progress, now);
            return;
        }
        outbox.pending = Some(progress);
        drop(outbox);
        if self.flusher.is_none() {
            self.flusher = Flusher::start(self.outbox.clone());
        }
    }

    fn log(&mut self, level: LogLevel, message: &[u8]) {
        let mut outbox = lock(&self.outbox);
        // A held-back progress value was made before this record: keep the
        // guest's order.
        outbox.flush();
        let len = message.len() as u64;
        if len > self.log_budget {
            self.log_dropped += len;
            // Nothing smaller gets through either once the budget is short:
            // records are never reordered by size.
            self.log_budget = 0;
            return;
        }
        self.log_budget -= len;
        outbox.send(GuestMessage::Log(LogRecord {
            level,
            message: String::from_utf8_lossy(message).into_owned(),
        }));
    }

    /// Sends the pending progress, if any, and stops the flusher: called
    /// when the task ends, before its reply.
    pub(crate) fn flush(&mut self) {
        self.flusher = None;
        lock(&self.outbox).flush();
    }

    /// Bytes of log records dropped past the budget.
    pub(crate) fn log_dropped(&self) -> u64 {
        self.log_dropped
    }
}

/// Copies up to `keep` bytes of the guest's `(ptr, len)` after checking that
/// the whole range lies in its memory.
fn guest_bytes(
    caller: &mut Caller<'_, StoreState>,
    import: &str,
    ptr: i32,
    len: i32,
    keep: usize,
) -> wasmtime::Result<Vec<u8>> {
    let fault = |why: String| {
        wasmtime::Error::new(BadHostCall(format!(
            "{ABI_HOST_MODULE}::{import} called with {why}"
        )))
    };
    let Some(Extern::Memory(memory)) = caller.get_export(ABI_MEMORY_EXPORT) else {
        return Err(fault(format!("no `{ABI_MEMORY_EXPORT}` export")));
    };
    let data = memory.data(&*caller);
    let (start, len_u) = (ptr as u32 as usize, len as u32 as usize);
    let bytes = crate::run::guest_range(data, start, len_u).ok_or_else(|| {
        fault(format!(
            "a message at {start:#x}+{len_u} outside the guest's memory of {} bytes",
            data.len()
        ))
    })?;
    Ok(bytes[..bytes.len().min(keep)].to_vec())
}

/// Cuts `bytes` to valid UTF-8 (lossily) of at most `max` bytes, on a
/// character boundary.
fn bounded_text(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Defines the `asyncer` import module in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        ABI_HOST_MODULE,
        ABI_PROGRESS_IMPORT,
        |mut caller: Caller<'_, StoreState>,
         done: i64,
         total: i64,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<()> {
            let message = guest_bytes(
                &mut caller,
                ABI_PROGRESS_IMPORT,
                ptr,
                len,
                MAX_PROGRESS_MESSAGE + 4,
            )?;
            caller.data_mut().reporter.progress(Progress {
                done: done as u64,
                total: total as u64,
                message: bounded_text(&message, MAX_PROGRESS_MESSAGE),
            });
            Ok(())
        },
    )?;
    linker.func_wrap(
        ABI_HOST_MODULE,
        ABI_LOG_IMPORT,
        |mut caller: Caller<'_, StoreState>,
         level: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<()> {
            let level = LogLevel::from_abi(level).ok_or_else(|| {
                wasmtime::Error::new(BadHostCall(format!(
                    "{ABI_HOST_MODULE}::{ABI_LOG_IMPORT} called with level {level}, expected 0 (trace) to 4 (error)"
                )))
            })?;
            let message = guest_bytes(&mut caller, ABI_LOG_IMPORT, ptr, len, usize::MAX)?;
            caller.data_mut().reporter.log(level, &message);
            Ok(())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recording() -> (GuestSink, Arc<Mutex<Vec<GuestMessage>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: GuestSink = Arc::new(move |m| sink_seen.lock().unwrap().push(m));
        (sink, seen)
    }

    fn progress(done: u64) -> Progress {
        Progress {
            done,
            total: 100,
            message: String::new(),
        }
    }

    #[test]
    fn progress_is_coalesced_to_one_message_per_interval_and_flushed_at_the_end() {
        let (sink, seen) = recording();
        let mut reporter = Reporter::new(Some(sink), 100);
        let start = Instant::now();
        for done in 0..=100_000 {
            reporter.progress(progress(done));
        }
        reporter.flush();
        let intervals = (start.elapsed().as_micros() / PROGRESS_INTERVAL.as_micros()) as usize;
        let seen = seen.lock().unwrap();
        // The first goes out at once, the last is flushed; in between at
        // most one per interval.
        assert_eq!(seen.first(), Some(&GuestMessage::Progress(progress(0))));
        assert_eq!(
            seen.last(),
            Some(&GuestMessage::Progress(progress(100_000)))
        );
        assert!(seen.len() <= intervals + 2, "{} messages", seen.len());
    }

    #[test]
    fn progress_past_the_interval_is_sent_at_once() {
        let (sink, seen) = recording();
        let mut reporter = Reporter::new(Some(sink), 100);
        reporter.progress(progress(1));
        std::thread::sleep(PROGRESS_INTERVAL + Duration::from_millis(2));
        reporter.progress(progress(2));
        assert_eq!(seen.lock().unwrap().len(), 2);
        reporter.flush();
        assert_eq!(seen.lock().unwrap().len(), 2, "nothing was pending");
    }

    #[test]
    fn a_held_back_progress_goes_out_after_the_interval_without_another_call() {
        let (sink, seen) = recording();
        let mut reporter = Reporter::new(Some(sink), 100);
        reporter.progress(progress(1));
        reporter.progress(progress(2));
        assert_eq!(seen.lock().unwrap().len(), 1, "the second is held back");
        // The guest computes without calling again: the flusher sends it.
        std::thread::sleep(PROGRESS_INTERVAL * 5);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                GuestMessage::Progress(progress(1)),
                GuestMessage::Progress(progress(2))
            ]
        );
        reporter.flush();
        assert_eq!(seen.lock().unwrap().len(), 2, "sent once only");
    }

    #[test]
    fn a_held_back_progress_goes_out_before_the_next_log_record() {
        let (sink, seen) = recording();
        let mut reporter = Reporter::new(Some(sink), 100);
        reporter.progress(progress(1));
        reporter.progress(progress(2));
        reporter.log(LogLevel::Info, b"after two");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1], GuestMessage::Progress(progress(2)));
        assert!(matches!(&seen[2], GuestMessage::Log(r) if r.message == "after two"));
    }

    #[test]
    fn log_records_past_the_budget_are_dropped_and_counted() {
        let (sink, seen) = recording();
        let mut reporter = Reporter::new(Some(sink), 10);
        reporter.log(LogLevel::Info, b"123456");
        reporter.log(LogLevel::Info, b"1234567");
        reporter.log(LogLevel::Info, b"1");
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(reporter.log_dropped(), 8);
    }

    #[test]
    fn progress_messages_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_PROGRESS_MESSAGE);
        let cut = bounded_text(text.as_bytes(), MAX_PROGRESS_MESSAGE);
        assert_eq!(cut.len(), MAX_PROGRESS_MESSAGE);
        assert_eq!(bounded_text(b"ok\xff", 10), "ok\u{fffd}");
        let odd = bounded_text(text.as_bytes(), 5);
        assert_eq!(odd, "éé");
    }
}
