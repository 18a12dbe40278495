//! Retries, opt-in: which error kinds are worth another run, how many runs
//! at most, and how long to wait between them.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::ErrorKind;

/// When and how a failed task runs again ([`TaskOptions::retry`], or every
/// task's default with [`ExecutorBuilder::retry`]). Off unless set.
///
/// By default only the failures of the machinery are retried
/// (`worker_crashed`, `worker_lost`), never a deterministic guest error
/// unless asked with [`on`](Self::on). Between runs the task waits
/// `initial * 2^(n-1)` (at most `max`), scaled by a random factor between
/// 0.5 and 1 (jitter), holding no slot; then it queues again, ahead of
/// nothing (its priority and tenant as before). Its events and
/// [`TaskHandle::attempt`] say which run it is; the final event's message
/// says how many runs were made.
///
/// [`TaskOptions::retry`]: crate::TaskOptions::retry
/// [`ExecutorBuilder::retry`]: crate::ExecutorBuilder::retry
/// [`TaskHandle::attempt`]: crate::TaskHandle::attempt
///
/// # Examples
/// ```
/// use asyncer::{ErrorKind, RetryPolicy};
/// use std::time::Duration;
/// let retry = RetryPolicy::new(4)
///     .on([ErrorKind::WorkerCrashed, ErrorKind::Timeout])
///     .backoff(Duration::from_millis(200), Duration::from_secs(5));
/// assert_eq!(retry.max_attempts(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    /// The kinds retried, a bit each (by their place in `ErrorKind::ALL`).
    on: u32,
    initial: Duration,
    max: Duration,
}

/// The bit of `kind` in [`RetryPolicy::on`]'s set.
fn bit(kind: ErrorKind) -> u32 {
    let at = ErrorKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in ALL");
    1 << at
}

impl RetryPolicy {
    /// At most `max_attempts` runs in all (at least 1), on
    /// `worker_crashed` and `worker_lost`, backing off from 100 ms to 10 s.
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            on: bit(ErrorKind::WorkerCrashed) | bit(ErrorKind::WorkerLost),
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }

    /// Retries on these kinds instead.
    #[must_use]
    pub fn on(mut self, kinds: impl IntoIterator<Item = ErrorKind>) -> Self {
        self.on = kinds.into_iter().fold(0, |set, kind| set | bit(kind));
        self
    }

    /// Waits `initial` before the second run, doubling up to `max`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max = max.max(initial);
        self
    }

    /// The most runs a task makes.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a run that failed with `kind` as run number `attempt` is
    /// followed by another.
    pub(crate) fn retries(&self, kind: ErrorKind, attempt: u32) -> bool {
        attempt < self.max_attempts && self.on & bit(kind) != 0
    }

    /// The wait before run `attempt + 1`: exponential, capped, jittered.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self.initial.saturating_mul(1 << doublings).min(self.max);
        // A random factor in [0.5, 1): std's per-process random keys.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let factor = 0.5 + (random >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        full.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let retry =
            RetryPolicy::new(10).backoff(Duration::from_millis(100), Duration::from_secs(1));
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            let full = Duration::from_millis(full);
            for _ in 0..20 {
                let delay = retry.delay(attempt);
                assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
            }
        }
        // Not all the same: jitter.
        let delays: std::collections::HashSet<_> = (0..20).map(|_| retry.delay(3)).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn only_the_chosen_kinds_and_attempts_retry() {
        let retry = RetryPolicy::new(3);
        assert!(retry.retries(ErrorKind::WorkerCrashed, 1));
        assert!(retry.retries(ErrorKind::WorkerLost, 2));
        assert!(!retry.retries(ErrorKind::WorkerCrashed, 3));
        assert!(!retry.retries(ErrorKind::GuestError, 1));
        let guest = RetryPolicy::new(2).on([ErrorKind::GuestError]);
        assert!(guest.retries(ErrorKind::GuestError, 1));
        assert!(!guest.retries(ErrorKind::WorkerCrashed, 1));
        assert_eq!(RetryPolicy::new(0).max_attempts(), 1);
    }
}
