//! The future of one submitted task.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::Error;

pub(crate) type RawResult = Result<Vec<u8>, Error>;

/// A submitted task: a future of its typed result.
///
/// The task runs whether or not the handle is polled. Dropping the handle
/// does not stop the task: it still runs to completion and its event is
/// still published.
///
/// # Cancel safety
/// Awaiting `&mut handle` is cancel safe: the result stays in the handle.
#[must_use = "a TaskHandle is the only way to get the task's result"]
pub struct TaskHandle<T> {
    uid: String,
    rx: oneshot::Receiver<RawResult>,
    decode: fn(Vec<u8>) -> Result<T, Error>,
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
        rx: oneshot::Receiver<RawResult>,
        decode: fn(Vec<u8>) -> Result<T, Error>,
    ) -> Self {
        TaskHandle { uid, rx, decode }
    }

    /// The task's uid, as in its events and logs.
    pub fn uid(&self) -> &str {
        &self.uid
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
