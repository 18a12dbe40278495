//! The future of one submitted task, and its progress watch.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use asyncer_protocol::Progress;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::Error;

pub(crate) type RawResult = Result<Vec<u8>, Error>;

/// What a [`ProgressWatch`] sees; the task's owner holds the sender and
/// drops it when the task has its result.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProgressState {
    /// Bumped at every new progress value.
    pub(crate) version: u64,
    pub(crate) latest: Option<Progress>,
    /// The run under way: 1, or more once retried.
    pub(crate) attempt: u32,
}

/// A submitted task: a future of its typed result.
///
/// The task runs whether or not the handle is polled. Dropping the handle
/// detaches the task (like tokio's `JoinHandle`): it still runs to
/// completion and its event is still published. To stop it, call
/// [`TaskHandle::cancel`].
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// let mut handle = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
/// tokio::select! {
///     sum = &mut handle => println!("{}", sum?),
///     _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => handle.cancel(),
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Cancel safety
/// Awaiting `&mut handle` is cancel safe: the result stays in the handle.
#[must_use = "a TaskHandle is the only way to get the task's result"]
pub struct TaskHandle<T> {
    uid: String,
    /// The task's own cancellation token.
    cancel: CancellationToken,
    rx: oneshot::Receiver<RawResult>,
    progress: watch::Receiver<ProgressState>,
    decode: Decode<T>,
}

/// Turns a task's output bytes into what its handle resolves to: a plain
/// function (postcard into a type), or one that carries what it needs (a
/// module's type description).
pub(crate) enum Decode<T> {
    Fn(fn(Vec<u8>) -> Result<T, Error>),
    Boxed(Box<dyn Fn(Vec<u8>) -> Result<T, Error> + Send + Sync>),
}

impl<T> Decode<T> {
    fn decode(&self, bytes: Vec<u8>) -> Result<T, Error> {
        match self {
            Decode::Fn(decode) => decode(bytes),
            Decode::Boxed(decode) => decode(bytes),
        }
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(
        uid: String,
        cancel: CancellationToken,
        rx: oneshot::Receiver<RawResult>,
        progress: watch::Receiver<ProgressState>,
        decode: Decode<T>,
    ) -> Self {
        TaskHandle {
            uid,
            cancel,
            rx,
            progress,
            decode,
        }
    }

    /// Which run of the task is under way (or was the last): 1, or more
    /// once it was retried ([`RetryPolicy`](crate::RetryPolicy)).
    pub fn attempt(&self) -> u32 {
        self.progress.borrow().attempt.max(1)
    }

    /// The task's uid, as in its events and logs.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::TaskOptions;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let fresh = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
    /// assert_eq!(fresh.uid().len(), 36); // a uuid v4
    /// let named = exec.submit_with::<_, u64>(&module, "add", &(1u64, 2u64), TaskOptions::new().uid("mine"))?;
    /// assert_eq!(named.uid(), "mine");
    /// # Ok(())
    /// # }
    /// ```
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Cancels the task. A queued task leaves the queue at once; a running
    /// one has its worker killed (and reaped), which frees its slot. Either
    /// way the handle resolves to [`Error::Cancelled`] and a `cancelled`
    /// event is published, unless the task had already finished, in which
    /// case this does nothing.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit::<_, ()>(&module, "spin", &())?;
    /// handle.cancel();
    /// assert!(matches!(handle.await, Err(asyncer::Error::Cancelled)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Watches the task's progress, as its guest reports it with
    /// `asyncer_guest::progress`. Independent of the handle: move it into
    /// another task and keep awaiting the handle.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit::<_, u64>(&module, "count", &1_000_000u64)?;
    /// let mut progress = handle.progress();
    /// tokio::spawn(async move {
    ///     while let Some(p) = progress.next().await {
    ///         println!("{}/{} {}", p.done, p.total, p.message);
    ///     }
    /// });
    /// let total = handle.await?;
    /// # let _ = total;
    /// # Ok(())
    /// # }
    /// ```
    pub fn progress(&self) -> ProgressWatch {
        ProgressWatch {
            rx: self.progress.clone(),
            seen: 0,
            changed: None,
        }
    }
}

/// The progress of one task, from [`TaskHandle::progress`].
///
/// A watch, not a queue: a slow reader skips to the newest value (every
/// value is on [`Executor::updates`](crate::Executor::updates) if you need
/// them all).
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// # let module = exec.load("tasks.wasm").await?;
/// let handle = exec.submit::<_, u64>(&module, "count", &1_000_000u64)?;
/// let mut progress = handle.progress();
/// let printer = tokio::spawn(async move {
///     while let Some(p) = progress.next().await {
///         println!("{}/{} {}", p.done, p.total, p.message);
///     }
/// });
/// let total = handle.await?;
/// printer.await.expect("the printer ends with the task");
/// # let _ = total;
/// # Ok(())
/// # }
/// ```
pub struct ProgressWatch {
    rx: watch::Receiver<ProgressState>,
    /// The version of the last value returned.
    seen: u64,
    /// Waits for the next change, on a clone of `rx`, while polled as a
    /// stream.
    changed: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl fmt::Debug for ProgressWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressWatch")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Clone for ProgressWatch {
    fn clone(&self) -> Self {
        ProgressWatch {
            rx: self.rx.clone(),
            seen: self.seen,
            changed: None,
        }
    }
}

impl ProgressWatch {
    /// The newest progress the task reported, if any.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit::<_, u64>(&module, "count", &1_000_000u64)?;
    /// let progress = handle.progress();
    /// if let Some(p) = progress.latest() {
    ///     println!("{:.0}%", 100.0 * p.fraction().unwrap_or(0.0));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn latest(&self) -> Option<Progress> {
        self.rx.borrow().latest.clone()
    }

    /// Waits for progress newer than the last one returned; `None` once the
    /// task has its result and every reported value was seen. The watch is
    /// also a [`Stream`](futures_core::Stream) of the same values.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit::<_, u64>(&module, "count", &1_000_000u64)?;
    /// let mut progress = handle.progress();
    /// while let Some(p) = progress.next().await {
    ///     println!("{}/{}", p.done, p.total);
    /// }
    /// assert!(progress.is_finished());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: a value not returned stays available.
    pub async fn next(&mut self) -> Option<Progress> {
        std::future::poll_fn(|cx| self.poll_progress(cx)).await
    }

    /// Whether the task has its result (no more progress will come).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// # let module = exec.load("tasks.wasm").await?;
    /// let handle = exec.submit::<_, u64>(&module, "count", &10u64)?;
    /// let progress = handle.progress();
    /// handle.await?;
    /// assert!(progress.is_finished());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_finished(&self) -> bool {
        // The owner drops the sender when the task has its result.
        self.rx.has_changed().is_err()
    }

    /// A value newer than the last one returned, if there is one.
    fn take_new(&mut self) -> Option<Progress> {
        let state = self.rx.borrow_and_update();
        if state.version > self.seen {
            self.seen = state.version;
            state.latest.clone()
        } else {
            None
        }
    }

    fn poll_progress(&mut self, cx: &mut Context<'_>) -> Poll<Option<Progress>> {
        loop {
            if let Some(progress) = self.take_new() {
                self.changed = None;
                return Poll::Ready(Some(progress));
            }
            let changed = self.changed.get_or_insert_with(|| {
                // The clone has seen what `rx` has seen.
                let mut rx = self.rx.clone();
                Box::pin(async move { rx.changed().await.is_ok() })
            });
            let alive = std::task::ready!(changed.as_mut().poll(cx));
            self.changed = None;
            if !alive {
                // The task has its result; a value sent just before that
                // is still returned.
                return Poll::Ready(self.take_new());
            }
        }
    }
}

impl futures_core::Stream for ProgressWatch {
    type Item = Progress;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Progress>> {
        self.get_mut().poll_progress(cx)
    }
}

impl<T> Unpin for TaskHandle<T> {}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Ok(bytes))) => Poll::Ready(this.decode.decode(bytes)),
            Poll::Ready(Ok(Err(error))) => Poll::Ready(Err(error)),
            // The executor's runner went away with the task still queued.
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ShutDown)),
        }
    }
}

pub(crate) fn decode_postcard<T: serde::de::DeserializeOwned>(bytes: Vec<u8>) -> Result<T, Error> {
    postcard::from_bytes(&bytes).map_err(|e| Error::Decode {
        message: format!(
            "output does not decode as {}: {e}",
            std::any::type_name::<T>()
        ),
    })
}

pub(crate) fn raw(bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
    Ok(bytes)
}
