//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::SystemTime;

use asyncer::{Executor, Module, TaskEvent};

/// The worker program built with these tests.
pub const WORKER: &str = env!("CARGO_BIN_EXE_test-worker");

/// An executor with at most `max_processes` workers, using the test worker.
pub fn executor(max_processes: usize) -> Executor {
    Executor::builder()
        .max_processes(max_processes)
        .worker_program(WORKER)
        .build()
        .expect("executor starts")
}

pub async fn faults(exec: &Executor) -> Module {
    exec.load(asyncer_tests::FAULTS)
        .await
        .expect("faults module loads")
}

pub async fn heavy(exec: &Executor) -> Module {
    exec.load(asyncer_tests::HEAVY)
        .await
        .expect("heavy module loads")
}

/// Reads exactly `n` events.
pub async fn collect_events(events: &mut asyncer::EventStream, n: usize) -> Vec<TaskEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let event = tokio::time::timeout(std::time::Duration::from_secs(60), events.recv())
            .await
            .expect("events keep coming")
            .expect("stream stays open");
        out.push(event);
    }
    out
}

/// The largest number of [started, finished] intervals that overlap.
pub fn max_overlap(events: &[TaskEvent]) -> usize {
    let mut points: Vec<(SystemTime, i32)> = Vec::new();
    for event in events {
        let start = event.started_at.expect("task ran");
        points.push((start, 1));
        points.push((event.finished_at, -1));
    }
    // At equal times, count ends before starts: touching intervals do not overlap.
    points.sort();
    let (mut live, mut peak) = (0i32, 0i32);
    for (_, delta) in points {
        live += delta;
        peak = peak.max(live);
    }
    peak as usize
}
