//! The future of one submitted task.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use asyncer_protocol::Progress;
use tokio::sync::{oneshot, watch};

use crate::job::{JobControl, ProgressState};
use crate::Error;

pub(crate) type RawResult = Result<Vec<u8>, Error>;

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
    job: Arc<JobControl>,
    rx: oneshot::Receiver<RawResult>,
    decode: fn(Vec<u8>) -> Result<T, Error>,
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("uid", &self.job.uid)
            .finish_non_exhaustive()
    }
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(
        job: Arc<JobControl>,
        rx: oneshot::Receiver<RawResult>,
        decode: fn(Vec<u8>) -> Result<T, Error>,
    ) -> Self {
        TaskHandle { job, rx, decode }
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
        &self.job.uid
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
        self.job.stop(Error::Cancelled);
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
            rx: self.job.progress_signal(),
            seen: 0,
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
#[derive(Debug, Clone)]
pub struct ProgressWatch {
    rx: watch::Receiver<ProgressState>,
    seen: u64,
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
    /// task has its result and every reported value was seen.
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
        loop {
            {
                let state = self.rx.borrow_and_update();
                if state.version > self.seen {
                    self.seen = state.version;
                    return state.latest.clone();
                }
                if state.finished {
                    return None;
                }
            }
            if self.rx.changed().await.is_err() {
                // The task is gone; whatever it sent last was returned.
                let state = self.rx.borrow();
                if state.version > self.seen {
                    self.seen = state.version;
                    return state.latest.clone();
                }
                return None;
            }
        }
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
        self.rx.borrow().finished
    }
}

impl<T> Unpin for TaskHandle<T> {}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Ok(bytes))) => Poll::Ready((this.decode)(bytes)),
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
