//! Capturing a guest's stdout or stderr: keep the first bytes up to a cap,
//! count the rest. The guest never sees an error, and host memory stays
//! bounded however much it writes.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much a single write may hand over (the guest splits larger writes).
const WRITE_BUDGET: usize = 1 << 20;

/// A capped, truncating capture of one output stream.
#[derive(Clone)]
pub(crate) struct Capture {
    cap: usize,
    state: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
    /// The last [`RECENT_BYTES`] written, kept or not (a panic message is
    /// written last, after whatever filled the cap).
    recent: Vec<u8>,
}

/// How many of the most recent bytes are kept apart from the cap.
const RECENT_BYTES: usize = 4096;

impl Capture {
    pub(crate) fn new(cap: usize) -> Self {
        Capture {
            cap,
            state: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut state = self.state.lock().expect("capture poisoned");
        let room = self.cap.saturating_sub(state.kept.len());
        let keep = room.min(bytes.len());
        state.kept.extend_from_slice(&bytes[..keep]);
        state.dropped += (bytes.len() - keep) as u64;
        let tail = &bytes[bytes.len().saturating_sub(RECENT_BYTES)..];
        state.recent.extend_from_slice(tail);
        let excess = state.recent.len().saturating_sub(RECENT_BYTES);
        state.recent.drain(..excess);
    }

    /// The bytes kept and the count of bytes dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        let mut state = self.state.lock().expect("capture poisoned");
        (std::mem::take(&mut state.kept), state.dropped)
    }

    /// The last few KiB written, whether kept or dropped.
    pub(crate) fn recent(&self) -> Vec<u8> {
        self.state.lock().expect("capture poisoned").recent.clone()
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut capture = Capture::new(5);
        capture.write(Bytes::from_static(b"abc")).unwrap();
        capture.write(Bytes::from_static(b"defgh")).unwrap();
        assert_eq!(capture.check_write().unwrap(), WRITE_BUDGET);
        assert_eq!(capture.recent(), b"abcdefgh");
        assert_eq!(capture.take(), (b"abcde".to_vec(), 3));
    }

    #[test]
    fn recent_bytes_survive_a_flood() {
        let mut capture = Capture::new(4);
        capture
            .write(Bytes::from(vec![b'x'; 3 * RECENT_BYTES]))
            .unwrap();
        let message: &[u8] = b"panicked at here:\nboom\n";
        capture.write(Bytes::from_static(message)).unwrap();
        let recent = capture.recent();
        assert_eq!(recent.len(), RECENT_BYTES);
        assert!(recent.ends_with(message));
        let (kept, dropped) = capture.take();
        assert_eq!(kept, b"xxxx");
        assert_eq!(dropped, (3 * RECENT_BYTES + message.len() - 4) as u64);
    }
}
