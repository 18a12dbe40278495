//! The seed's heavy task: the sum of `i * i` for `i < n`, then a 10 ms sleep.
//!
//! ```
//! let out = asyncer_guest::block_on(heavy::heavy(heavy::HeavyInput { uid: "a".into(), n: 4 }));
//! assert_eq!(out.result, 14);
//! ```

use std::time::Duration;

use asyncer_guest::{debug, info, progress, sleep, task, Schema};
use serde::{Deserialize, Serialize};

/// Input of [`heavy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Schema)]
pub struct HeavyInput {
    /// The caller's id for this piece of work, echoed back.
    pub uid: String,
    /// Upper bound (exclusive) of the sum.
    pub n: u64,
}

/// Output of [`heavy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Schema)]
pub struct HeavyOutput {
    /// The input's uid.
    pub uid: String,
    /// `sum(i * i for i in 0..n)`.
    pub result: u128,
}

/// `sum(i * i for i in 0..n)`, computed term by term: `black_box` keeps the
/// compiler from replacing the loop with the closed formula.
///
/// Below 2^32 a square fits in a `u64`, so the product is a 64-bit multiply
/// (one instruction in wasm as natively) and only the sum is a `u128`; wasm
/// has no 64×64→128 multiply, so a `u128` product would be a library call.
/// Larger `i` take the `u128` path; the result is exact for every `n`.
pub fn sum_of_squares(n: u64) -> u128 {
    sum_of_squares_in(0, n)
}

/// `sum(i * i for i in from..to)`, as [`sum_of_squares`].
pub fn sum_of_squares_in(from: u64, to: u64) -> u128 {
    const SMALL: u64 = 1 << 32;
    let mut acc: u128 = 0;
    for i in from.min(SMALL)..to.min(SMALL) {
        let i = std::hint::black_box(i);
        acc += u128::from(i * i);
    }
    for i in from.max(SMALL)..to.max(SMALL) {
        let i = u128::from(std::hint::black_box(i));
        acc += i * i;
    }
    acc
}

/// The CPU part of [`heavy`] alone, for compute benchmarks.
#[task]
pub fn sum_squares(n: u64) -> u128 {
    sum_of_squares(n)
}

/// The seed's task: CPU work, then an async sleep of 10 ms.
#[task]
pub async fn heavy(input: HeavyInput) -> HeavyOutput {
    let result = sum_of_squares(input.n);
    sleep(Duration::from_millis(10)).await;
    HeavyOutput {
        uid: input.uid,
        result,
    }
}

/// Parts [`heavy_reporting`] splits its work into.
pub const REPORTING_STEPS: u64 = 20;

/// [`heavy`] in [`REPORTING_STEPS`] parts, reporting progress after each and
/// logging at the start and the end: what a long task shows its host.
#[task]
pub async fn heavy_reporting(input: HeavyInput) -> HeavyOutput {
    info!("{}: summing {} squares", input.uid, input.n);
    let mut result = 0;
    let bound =
        |step: u64| (u128::from(input.n) * u128::from(step) / u128::from(REPORTING_STEPS)) as u64;
    for step in 0..REPORTING_STEPS {
        result += sum_of_squares_in(bound(step), bound(step + 1));
        progress(
            step + 1,
            REPORTING_STEPS,
            format!("{} of {} terms", bound(step + 1), input.n),
        );
    }
    sleep(Duration::from_millis(10)).await;
    debug!("{}: done", input.uid);
    HeavyOutput {
        uid: input.uid,
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asyncer_guest::{GuestMessage, LogLevel};

    #[test]
    fn heavy_reporting_reports_every_step_and_matches_heavy() {
        let input = HeavyInput {
            uid: "t".into(),
            n: 1001,
        };
        let (out, reports) =
            asyncer_guest::recorded(|| asyncer_guest::block_on(heavy_reporting(input.clone())));
        assert_eq!(out.result, sum_of_squares(1001));
        let steps: Vec<_> = reports
            .iter()
            .filter_map(|r| match r {
                GuestMessage::Progress(p) => Some((p.done, p.total)),
                _ => None,
            })
            .collect();
        let expected: Vec<_> = (1..=REPORTING_STEPS)
            .map(|i| (i, REPORTING_STEPS))
            .collect();
        assert_eq!(steps, expected);
        assert!(
            matches!(&reports[0], GuestMessage::Log(l) if l.level == LogLevel::Info && l.message == "t: summing 1001 squares")
        );
        assert!(matches!(reports.last(), Some(GuestMessage::Log(l)) if l.level == LogLevel::Debug));
    }

    #[test]
    fn the_u128_path_past_2_pow_32_is_exact() {
        let start = 1u64 << 32;
        let direct: u128 = (start - 3..start + 5)
            .map(|i| u128::from(i) * u128::from(i))
            .sum();
        assert_eq!(sum_of_squares_in(start - 3, start + 5), direct);
    }

    #[test]
    fn matches_the_closed_formula() {
        for n in [0u64, 1, 2, 3, 10, 1000, 123_457] {
            let n128 = u128::from(n);
            let expected = if n == 0 {
                0
            } else {
                (n128 - 1) * n128 * (2 * n128 - 1) / 6
            };
            assert_eq!(sum_of_squares(n), expected, "n = {n}");
        }
    }
}
