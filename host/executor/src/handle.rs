//! The future of one submitted task.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::job::JobControl;
use crate::Error;

pub(crate) type RawResult = Result<Vec<u8>, Error>;

/// A submitted task: a future of its typed result.
///
/// The task runs whether or not the handle is polled. Dropping the handle
/// detaches the task (like tokio's `JoinHandle`): it still runs to
/// completion and its event is still published. To stop it, call
/// [`TaskHandle::cancel`].
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
    pub fn uid(&self) -> &str {
        &self.job.uid
    }

    /// Cancels the task. A queued task leaves the queue at once; a running
    /// one has its worker killed (and reaped), which frees its slot. Either
    /// way the handle resolves to [`Error::Cancelled`] and a `cancelled`
    /// event is published, unless the task had already finished, in which
    /// case this does nothing.
    pub fn cancel(&self) {
        self.job.stop(Error::Cancelled);
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
