//! What the executor records through the [`metrics`] facade: nothing
//! unless the application installs a recorder (an exporter), at the cost of
//! a check per task otherwise. Names, all prefixed `asyncer_`:
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `asyncer_tasks_total` | counter | `outcome` (`ok` or the error kind), `tenant` | tasks finished |
//! | `asyncer_queue_wait_seconds` | histogram | `tenant` | submit to start (or to the end, for tasks that never started) |
//! | `asyncer_run_seconds` | histogram | `tenant` | start to end of the run (worker reaped) |
//! | `asyncer_fuel_consumed` | histogram | `tenant` | fuel, for tasks with metering |
//! | `asyncer_peak_memory_bytes` | histogram | `tenant` | the guest's largest linear memory |
//! | `asyncer_attempts` | histogram | `tenant` | runs a task took (retries and cluster redeliveries) |
//! | `asyncer_queued_tasks` | gauge | | tasks waiting for a slot |
//! | `asyncer_running_tasks` | gauge | | tasks holding a slot |
//! | `asyncer_live_workers` | gauge | | worker processes alive (local pool) |

use crate::TaskEvent;

/// Records a finished task.
pub(crate) fn task_finished(event: &TaskEvent) {
    let tenant = event.tenant.clone();
    metrics::counter!(
        "asyncer_tasks_total",
        "outcome" => event.outcome(),
        "tenant" => tenant.clone()
    )
    .increment(1);
    metrics::histogram!("asyncer_queue_wait_seconds", "tenant" => tenant.clone())
        .record(event.queue_wait().as_secs_f64());
    if event.started_at.is_some() {
        metrics::histogram!("asyncer_run_seconds", "tenant" => tenant.clone())
            .record(event.wall_time.as_secs_f64());
        metrics::histogram!("asyncer_peak_memory_bytes", "tenant" => tenant.clone())
            .record(event.peak_memory_bytes as f64);
        metrics::histogram!("asyncer_attempts", "tenant" => tenant.clone())
            .record(f64::from(event.attempt.max(1)));
    }
    if let Some(fuel) = event.fuel_consumed {
        metrics::histogram!("asyncer_fuel_consumed", "tenant" => tenant).record(fuel as f64);
    }
}

/// Sets the queued and running gauges.
pub(crate) fn slots(queued: usize, running: usize) {
    metrics::gauge!("asyncer_queued_tasks").set(queued as f64);
    metrics::gauge!("asyncer_running_tasks").set(running as f64);
}

/// Counts a worker process while it lives.
pub(crate) struct LiveWorker(());

impl LiveWorker {
    pub(crate) fn new() -> Self {
        metrics::gauge!("asyncer_live_workers").increment(1.0);
        LiveWorker(())
    }
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        metrics::gauge!("asyncer_live_workers").decrement(1.0);
    }
}
