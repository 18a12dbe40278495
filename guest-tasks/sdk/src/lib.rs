//! Write task functions for [asyncer](https://docs.rs/asyncer): ordinary Rust
//! functions that a host runs in a sandboxed worker process.
//!
//! A guest task crate is a `cdylib` built for `wasm32-wasip1`. Mark each task
//! with [`#[task]`](task); inputs and outputs are serde types carried as
//! postcard bytes (guest ABI v1). Async tasks run on a small executor inside
//! the guest; [`sleep`] waits through WASI, so the worker's own event loop stays
//! free while the guest waits.
//!
//! ```
//! use asyncer_guest::{sleep, task};
//! use std::time::Duration;
//!
//! #[task]
//! async fn double(n: u64) -> Result<u64, String> {
//!     sleep(Duration::from_millis(1)).await;
//!     n.checked_mul(2).ok_or_else(|| format!("{n} is too large"))
//! }
//!
//! // In a native build the function is still a plain function:
//! assert_eq!(asyncer_guest::block_on(double(21)), Ok(42));
//! ```
//!
//! A panic inside a task reaches the host as a `guest_panic` error carrying the
//! panic message (the worker reads it from the guest's stderr).
//!
//! A task tells the host how far it has come with [`progress`] and logs with
//! [`info!`], [`warn!`] and their siblings (tracing's levels). Both go through
//! the optional `asyncer` host import module of guest ABI v1; the host gets
//! them as updates tagged with the task's uid, and through `tracing`. In a
//! native build they go to stderr, or to [`recorded`] in tests:
//!
//! ```
//! use asyncer_guest::{info, progress, recorded, task, GuestMessage};
//!
//! #[task]
//! fn count(n: u64) -> u64 {
//!     info!("counting to {n}");
//!     for i in 1..=n {
//!         progress(i, n, "counting");
//!     }
//!     n
//! }
//!
//! let (out, reports) = recorded(|| count(3));
//! assert_eq!(out, 3);
//! assert_eq!(reports.len(), 4);
//! assert!(matches!(&reports[0], GuestMessage::Log(log) if log.message == "counting to 3"));
//! ```
// `unsafe_code` is denied, not forbidden: the ABI exports need `#[no_mangle]`,
// which that lint flags; each such place allows it locally.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Makes a function an asyncer task, exported as `task:NAME` (guest ABI v1),
/// and defines `const NAME: TaskRef<In, Out>` beside it for typed
/// submission. The function itself stays as written, so it can be called and
/// unit-tested natively.
///
/// # Examples
/// ```
/// use asyncer_guest::task;
///
/// #[task]
/// pub fn add(pair: (u64, u64)) -> u64 {
///     pair.0 + pair.1
/// }
///
/// assert_eq!(add((2, 3)), 5);
/// assert_eq!(ADD.name(), "add");
/// ```
#[doc(inline)]
pub use asyncer_guest_macros::task;
pub use asyncer_protocol::{GuestMessage, LogLevel, LogRecord, Progress, TaskRef};
#[doc(hidden)]
pub use postcard_schema;
/// Describes a type's postcard encoding (derive it beside `Serialize` and
/// `Deserialize`): `#[task]` records the input and output descriptions in
/// the module so that hosts can speak JSON to the task. The derive names
/// the `postcard_schema` crate: depend on `postcard-schema` (features
/// `derive`, `use-std`), or add `#[postcard(crate = asyncer_guest::postcard_schema)]`.
pub use postcard_schema::Schema;

mod schema;

thread_local! {
    /// Pending sleeps of the running [`block_on`]: deadline and who to wake.
    static TIMERS: RefCell<Vec<(Instant, Waker)>> = const { RefCell::new(Vec::new()) };
    /// Whether a [`block_on`] is driving futures on this thread.
    static IN_BLOCK_ON: Cell<bool> = const { Cell::new(false) };
    /// Where [`recorded`] collects reports, while it runs.
    static RECORDING: RefCell<Option<Vec<GuestMessage>>> = const { RefCell::new(None) };
}

/// Tells the host how far the task has come: `done` of `total` units
/// (`total` 0 when unknown), and what it is doing.
///
/// Cheap enough to call in a loop: the worker forwards at most one value per
/// 10 ms (the newest, and always the last one before the task ends). The
/// message is cut to 1 KiB. In a native build it goes to stderr, or to
/// [`recorded`].
///
/// ```
/// asyncer_guest::progress(1, 4, "reading");
/// ```
pub fn progress(done: u64, total: u64, message: impl AsRef<str>) {
    let message = message.as_ref();
    if record(|| {
        GuestMessage::Progress(Progress {
            done,
            total,
            message: message.to_owned(),
        })
    }) {
        return;
    }
    #[cfg(target_arch = "wasm32")]
    host::progress(done, total, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[progress {done}/{total}] {message}");
}

/// Logs one record at `level`; the host sees it as a log update of this task
/// and through `tracing`. Records count against the task's log limit (the
/// size of its stdout cap); past it they are dropped, and the completion
/// event says how many bytes were. Usually called through [`info!`] and its
/// siblings. In a native build it goes to stderr, or to [`recorded`].
///
/// ```
/// asyncer_guest::log(asyncer_guest::LogLevel::Warn, "disk almost full");
/// ```
pub fn log(level: LogLevel, message: impl AsRef<str>) {
    let message = message.as_ref();
    if record(|| {
        GuestMessage::Log(LogRecord {
            level,
            message: message.to_owned(),
        })
    }) {
        return;
    }
    #[cfg(target_arch = "wasm32")]
    host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level}] {message}");
}

/// Keeps the report if [`recorded`] is collecting; says whether it did.
fn record(report: impl FnOnce() -> GuestMessage) -> bool {
    RECORDING.with_borrow_mut(|recording| match recording {
        Some(reports) => {
            reports.push(report());
            true
        }
        None => false,
    })
}

/// Runs `f` and returns what it reported with [`progress`] and the log
/// macros, in order, instead of sending it: for unit tests of tasks.
///
/// ```
/// use asyncer_guest::{recorded, warn, GuestMessage, LogLevel};
/// let ((), reports) = recorded(|| warn!("low on {}", "memory"));
/// let GuestMessage::Log(record) = &reports[0] else { panic!() };
/// assert_eq!((record.level, record.message.as_str()), (LogLevel::Warn, "low on memory"));
/// ```
pub fn recorded<T>(f: impl FnOnce() -> T) -> (T, Vec<GuestMessage>) {
    struct Restore(Option<Vec<GuestMessage>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            RECORDING.set(self.0.take());
        }
    }
    let outer = Restore(RECORDING.replace(Some(Vec::new())));
    let out = f();
    let reports = RECORDING.replace(None).unwrap_or_default();
    drop(outer);
    (out, reports)
}

/// Logs a record at `level` with `format!` arguments: `log!(LogLevel::Info, "x = {x}")`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log($level, ::std::format!($($arg)+))
    };
}

/// Logs at the trace level, like `tracing::trace!`: `trace!("x = {x}")`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Trace, $($arg)+) };
}

/// Logs at the debug level, like `tracing::debug!`: `debug!("x = {x}")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Debug, $($arg)+) };
}

/// Logs at the info level, like `tracing::info!`: `info!("x = {x}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Info, $($arg)+) };
}

/// Logs at the warn level, like `tracing::warn!`: `warn!("x = {x}")`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Warn, $($arg)+) };
}

/// Logs at the error level, like `tracing::error!`: `error!("x = {x}")`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::LogLevel::Error, $($arg)+) };
}

/// The `asyncer` host import module (guest ABI v1, optional).
#[cfg(target_arch = "wasm32")]
mod host {
    use asyncer_protocol::LogLevel;

    #[link(wasm_import_module = "asyncer")]
    extern "C" {
        #[link_name = "progress"]
        fn asyncer_progress(done: i64, total: i64, msg_ptr: i32, msg_len: i32);
        #[link_name = "log"]
        fn asyncer_log(level: i32, msg_ptr: i32, msg_len: i32);
    }

    pub(crate) fn progress(done: u64, total: u64, message: &str) {
        // SAFETY: the host reads `msg_len` bytes at `msg_ptr`, which `message`
        // owns for the duration of the call; it checks the range itself.
        #[allow(unsafe_code)]
        unsafe {
            asyncer_progress(
                done as i64,
                total as i64,
                message.as_ptr() as usize as i32,
                message.len() as i32,
            )
        }
    }

    pub(crate) fn log(level: LogLevel, message: &str) {
        // SAFETY: as in `progress`.
        #[allow(unsafe_code)]
        unsafe {
            asyncer_log(
                level.to_abi(),
                message.as_ptr() as usize as i32,
                message.len() as i32,
            )
        }
    }
}

/// Waits for `duration` without spinning.
///
/// Inside a task (driven by [`block_on`]) other futures of the same task keep
/// running, and the guest waits through WASI `poll_oneoff` only when every
/// future is waiting, so joined sleeps overlap. Polled outside [`block_on`]
/// (for example natively on a tokio runtime) it blocks the thread, as a
/// CPU-bound task would.
///
/// ```
/// use std::time::{Duration, Instant};
/// let start = Instant::now();
/// asyncer_guest::block_on(asyncer_guest::sleep(Duration::from_millis(5)));
/// assert!(start.elapsed() >= Duration::from_millis(5));
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now() + duration,
    }
}

/// The future returned by [`sleep`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let sleep: asyncer_guest::Sleep = asyncer_guest::sleep(Duration::from_millis(1));
/// asyncer_guest::block_on(sleep);
/// ```
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        if now >= self.deadline {
            return Poll::Ready(());
        }
        if !IN_BLOCK_ON.get() {
            std::thread::sleep(self.deadline - now);
            return Poll::Ready(());
        }
        TIMERS.with_borrow_mut(|timers| timers.push((self.deadline, cx.waker().clone())));
        Poll::Pending
    }
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// Resets the thread's executor state when [`block_on`] ends, even by panic.
struct BlockOnGuard {
    was_inside: bool,
    saved_timers: Vec<(Instant, Waker)>,
}

impl Drop for BlockOnGuard {
    fn drop(&mut self) {
        IN_BLOCK_ON.set(self.was_inside);
        TIMERS.set(std::mem::take(&mut self.saved_timers));
    }
}

/// Runs a future to completion on the current thread: the guest's executor.
///
/// Tasks made with [`#[task]`](task) are driven by it; use it in native unit
/// tests of async tasks as well.
///
/// # Examples
/// ```
/// use std::time::Duration;
///
/// async fn twice(n: u64) -> u64 {
///     asyncer_guest::sleep(Duration::from_millis(1)).await;
///     2 * n
/// }
/// assert_eq!(asyncer_guest::block_on(twice(21)), 42);
/// ```
///
/// # Panics
/// Panics when the future is pending while nothing can wake it (no pending
/// [`sleep`] and no wake-up): inside a guest there is no other thread that
/// could.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let _guard = BlockOnGuard {
        was_inside: IN_BLOCK_ON.replace(true),
        saved_timers: TIMERS.take(),
    };
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        if flag.0.swap(false, Ordering::Acquire) {
            continue;
        }
        let next = TIMERS.with_borrow(|timers| timers.iter().map(|(at, _)| *at).min());
        let Some(next) = next else {
            panic!("asyncer_guest::block_on: the future is pending but nothing can wake it");
        };
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let now = Instant::now();
        let due: Vec<Waker> = TIMERS.with_borrow_mut(|timers| {
            let (due, waiting) = std::mem::take(timers)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            *timers = waiting;
            due.into_iter().map(|(_, waker)| waker).collect()
        });
        due.into_iter().for_each(Waker::wake);
    }
}

#[cfg(target_arch = "wasm32")]
mod abi {
    use std::cell::RefCell;

    thread_local! {
        /// Room for the next task's input, handed out by `asyncer_alloc`.
        static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        /// The last task's result envelope, kept alive for the host to read.
        static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Guest ABI v1: returns a pointer to `len` writable bytes for the input.
    #[allow(unsafe_code, unreachable_pub)] // an exported symbol, no unsafe operation
    #[no_mangle]
    pub extern "C" fn asyncer_alloc(len: i32) -> i32 {
        let len = usize::try_from(len).unwrap_or(0);
        INPUT.with_borrow_mut(|input| {
            *input = vec![0; len];
            input.as_mut_ptr() as usize as i32
        })
    }

    /// Takes the input written by the host at `(ptr, len)`.
    pub(crate) fn take_input(ptr: i32, len: i32) -> Result<Vec<u8>, String> {
        INPUT.with_borrow_mut(|input| {
            if input.as_ptr() as usize as i32 != ptr || input.len() != len as usize {
                return Err(format!(
                    "input at ({ptr}, {len}) was not allocated by asyncer_alloc"
                ));
            }
            Ok(std::mem::take(input))
        })
    }

    /// Keeps `envelope` alive and packs its address as `(ptr << 32) | len`.
    pub(crate) fn publish(envelope: Vec<u8>) -> i64 {
        OUTPUT.with_borrow_mut(|output| {
            *output = envelope;
            ((output.as_ptr() as usize as u64) << 32 | output.len() as u64) as i64
        })
    }
}

#[doc(hidden)]
pub mod __private {
    //! Used by the code `#[task]` expands to; not a stable API.
    use super::*;
    use asyncer_protocol::{ENVELOPE_ERR, ENVELOPE_INPUT_DECODE_ERR, ENVELOPE_OK};

    pub use crate::schema::{entry as schema_entry, entry_len as schema_entry_len};
    pub use serde;

    /// Turns a task's `Err(e)` into the guest's error message.
    pub fn error_to_string<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, String> {
        result.map_err(|e| e.to_string())
    }

    /// Builds the result envelope of one task run.
    pub fn envelope<In, Out, Fut>(input: &[u8], task: impl FnOnce(In) -> Fut) -> Vec<u8>
    where
        In: serde::de::DeserializeOwned,
        Out: serde::Serialize,
        Fut: Future<Output = Result<Out, String>>,
    {
        let input: In = match postcard::from_bytes(input) {
            Ok(input) => input,
            Err(e) => {
                let message = format!(
                    "input does not decode as {}: {e}",
                    std::any::type_name::<In>()
                );
                return tagged(ENVELOPE_INPUT_DECODE_ERR, &message);
            }
        };
        match block_on(task(input)) {
            Ok(output) => {
                let out = vec![ENVELOPE_OK];
                match postcard::to_extend(&output, out) {
                    Ok(out) => out,
                    Err(e) => tagged(ENVELOPE_ERR, &format!("output does not encode: {e}")),
                }
            }
            Err(message) => tagged(ENVELOPE_ERR, &message),
        }
    }

    fn tagged(tag: u8, message: &str) -> Vec<u8> {
        postcard::to_extend(message, vec![tag]).expect("a string always encodes")
    }

    /// The body of every `task:NAME` export.
    #[cfg(target_arch = "wasm32")]
    pub fn run_task<In, Out, Fut>(
        input_ptr: i32,
        input_len: i32,
        task: impl FnOnce(In) -> Fut,
    ) -> i64
    where
        In: serde::de::DeserializeOwned,
        Out: serde::Serialize,
        Fut: Future<Output = Result<Out, String>>,
    {
        let envelope = match abi::take_input(input_ptr, input_len) {
            Ok(input) => envelope(&input, task),
            Err(message) => tagged(ENVELOPE_INPUT_DECODE_ERR, &message),
        };
        abi::publish(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_sleeps_overlap() {
        let start = Instant::now();
        block_on(async {
            let a = sleep(Duration::from_millis(100));
            let b = sleep(Duration::from_millis(100));
            let (mut a, mut b) = (pin!(a), pin!(b));
            let mut a_done = false;
            let mut b_done = false;
            std::future::poll_fn(|cx| {
                a_done |= a.as_mut().poll(cx).is_ready();
                b_done |= b.as_mut().poll(cx).is_ready();
                if a_done && b_done {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        });
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100));
        assert!(
            took < Duration::from_millis(190),
            "sleeps ran in sequence: {took:?}"
        );
    }

    #[test]
    fn recorded_collects_progress_and_logs_in_order_and_nests() {
        let (out, reports) = recorded(|| {
            progress(1, 2, "half");
            crate::debug!("{} + {}", 1, 1);
            let ((), inner) = recorded(|| crate::error!("inner"));
            assert_eq!(inner.len(), 1);
            progress(2, 2, String::from("done"));
            7
        });
        assert_eq!(out, 7);
        assert_eq!(
            reports,
            vec![
                GuestMessage::Progress(Progress {
                    done: 1,
                    total: 2,
                    message: "half".into()
                }),
                GuestMessage::Log(LogRecord {
                    level: LogLevel::Debug,
                    message: "1 + 1".into()
                }),
                GuestMessage::Progress(Progress {
                    done: 2,
                    total: 2,
                    message: "done".into()
                }),
            ]
        );
        // Outside `recorded` nothing is collected (it goes to stderr).
        let ((), after) = recorded(|| ());
        assert!(after.is_empty());
    }

    #[test]
    #[should_panic(expected = "nothing can wake it")]
    fn a_future_that_never_wakes_is_reported() {
        block_on(std::future::pending::<()>());
    }

    #[test]
    fn envelopes_follow_abi_v1() {
        let ok = __private::envelope(
            &postcard::to_allocvec(&20u64).unwrap(),
            |n: u64| async move { Ok::<_, String>(n + 1) },
        );
        assert_eq!(ok, vec![0x00, 21]);

        let err = __private::envelope(&[5], |_: u64| async { Err::<u64, _>("bad".to_string()) });
        assert_eq!(err, vec![0x01, 3, b'b', b'a', b'd']);

        let undecodable = __private::envelope(&[], |n: u64| async move { Ok::<_, String>(n) });
        assert_eq!(undecodable[0], 0x02);
        let message: String = postcard::from_bytes(&undecodable[1..]).unwrap();
        assert!(message.contains("u64"), "{message}");
    }
}
