//! The life of one task: queued, running, finished; and its cancellation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use asyncer_protocol::{GuestMessage, LogLevel, LogRecord, Progress};
use tokio::sync::{oneshot, watch, Notify};

use crate::event::{LogEvent, ProgressEvent, Subscribers, TaskEvent, TaskUpdate};
use crate::handle::RawResult;
use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Running,
    Finished,
}

/// Shared by a task's handle, its queue entry and the executor: whoever
/// finishes the task first (the run, or a cancellation while queued) sends
/// the one reply and the one event.
pub(crate) struct JobControl {
    id: u64,
    pub(crate) uid: String,
    pub(crate) task: String,
    pub(crate) module_hash: String,
    pub(crate) queued_at: SystemTime,
    pub(crate) bytes_in: usize,
    phase: Mutex<Phase>,
    reply: Mutex<Option<oneshot::Sender<RawResult>>>,
    /// Set once, to the error a running task should end with.
    stop: watch::Sender<Option<Error>>,
    /// The latest progress, for [`crate::ProgressWatch`]es.
    progress: watch::Sender<ProgressState>,
    hub: Arc<Hub>,
}

/// What a [`crate::ProgressWatch`] sees.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProgressState {
    /// Bumped at every new progress value.
    pub(crate) version: u64,
    pub(crate) latest: Option<Progress>,
    /// The task has its result: no more progress will come.
    pub(crate) finished: bool,
}

/// What an executor's jobs share: the event subscribers and the set of jobs
/// not yet finished.
#[derive(Default)]
pub(crate) struct Hub {
    pub(crate) subscribers: Subscribers,
    jobs: Mutex<HashMap<u64, Arc<JobControl>>>,
    next_id: AtomicU64,
    drained: Notify,
}

impl Hub {
    /// Registers a new queued job.
    pub(crate) fn register(
        self: &Arc<Self>,
        uid: String,
        task: String,
        module_hash: String,
        bytes_in: usize,
        reply: oneshot::Sender<RawResult>,
    ) -> Arc<JobControl> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(JobControl {
            id,
            uid,
            task,
            module_hash,
            queued_at: SystemTime::now(),
            bytes_in,
            phase: Mutex::new(Phase::Queued),
            reply: Mutex::new(Some(reply)),
            stop: watch::Sender::new(None),
            progress: watch::Sender::new(ProgressState::default()),
            hub: self.clone(),
        });
        self.jobs
            .lock()
            .expect("jobs poisoned")
            .insert(id, job.clone());
        job
    }

    /// Stops every job not yet finished with `reason`.
    pub(crate) fn stop_all(&self, reason: &Error) {
        let jobs: Vec<_> = self
            .jobs
            .lock()
            .expect("jobs poisoned")
            .values()
            .cloned()
            .collect();
        for job in jobs {
            job.stop(reason.clone());
        }
    }

    /// Waits until no job is left.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.jobs.lock().expect("jobs poisoned").is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn remove(&self, id: u64) {
        let mut jobs = self.jobs.lock().expect("jobs poisoned");
        jobs.remove(&id);
        if jobs.is_empty() {
            self.drained.notify_waiters();
        }
    }
}

impl JobControl {
    /// Moves a queued job to running; false if it was cancelled meanwhile.
    pub(crate) fn start(&self) -> bool {
        let mut phase = self.phase.lock().expect("phase poisoned");
        if *phase == Phase::Queued {
            *phase = Phase::Running;
            true
        } else {
            false
        }
    }

    /// A receiver that sees the stop reason of a running job.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<Option<Error>> {
        self.stop.subscribe()
    }

    /// Stops the job with `reason` (`Cancelled` or `ShutDown`): a queued job
    /// finishes at once; a running one is told to kill its worker and
    /// finishes when the worker is reaped.
    pub(crate) fn stop(&self, reason: Error) {
        let mut phase = self.phase.lock().expect("phase poisoned");
        match *phase {
            Phase::Queued => {
                *phase = Phase::Finished;
                drop(phase);
                let event = self.event_for(&Err(reason.clone()), SystemTime::now());
                self.respond(Err(reason));
                self.complete(event);
            }
            Phase::Running => {
                self.stop.send_if_modified(|current| {
                    if current.is_none() {
                        *current = Some(reason);
                        true
                    } else {
                        false
                    }
                });
            }
            Phase::Finished => {}
        }
    }

    /// A receiver of the job's progress.
    pub(crate) fn progress_signal(&self) -> watch::Receiver<ProgressState> {
        self.progress.subscribe()
    }

    /// Handles a progress or log record of the running guest: progress
    /// watchers, update subscribers and `tracing`.
    pub(crate) fn on_guest(&self, message: GuestMessage) {
        let at = SystemTime::now();
        match message {
            GuestMessage::Progress(progress) => {
                log_guest_progress(&self.uid, &self.task, &progress);
                self.hub.subscribers.publish_update(|| {
                    TaskUpdate::Progress(ProgressEvent {
                        uid: self.uid.clone(),
                        task: self.task.clone(),
                        progress: progress.clone(),
                        at,
                    })
                });
                self.progress.send_modify(|state| {
                    state.version += 1;
                    state.latest = Some(progress);
                });
            }
            GuestMessage::Log(record) => {
                log_guest_record(&self.uid, &self.task, &record);
                self.hub.subscribers.publish_update(|| {
                    TaskUpdate::Log(LogEvent {
                        uid: self.uid.clone(),
                        task: self.task.clone(),
                        level: record.level,
                        message: record.message.clone(),
                        at,
                    })
                });
            }
        }
    }

    /// Sends the result of a job that ran. Its event follows with
    /// [`JobControl::complete`], once its worker is reaped.
    pub(crate) fn respond(&self, result: RawResult) {
        *self.phase.lock().expect("phase poisoned") = Phase::Finished;
        self.progress.send_modify(|state| state.finished = true);
        if let Some(reply) = self.reply.lock().expect("reply poisoned").take() {
            log_outcome(&self.uid, &self.task, &result);
            let _ = reply.send(result);
        }
    }

    /// Publishes the event of a job that ran and forgets the job.
    pub(crate) fn complete(&self, event: TaskEvent) {
        self.hub.subscribers.publish(&event);
        self.hub.remove(self.id);
    }

    /// The event of a job that never got a worker.
    pub(crate) fn event_for(&self, result: &RawResult, finished_at: SystemTime) -> TaskEvent {
        TaskEvent {
            uid: self.uid.clone(),
            task: self.task.clone(),
            module_hash: self.module_hash.clone(),
            error: result.as_ref().err().map(Error::kind),
            message: result.as_ref().err().map(ToString::to_string),
            pid: None,
            exit_status: None,
            queued_at: self.queued_at,
            started_at: None,
            finished_at,
            wall_time: Default::default(),
            fuel_consumed: None,
            peak_memory_bytes: 0,
            worker_rss_bytes: 0,
            bytes_in: self.bytes_in,
            bytes_out: result.as_ref().map_or(0, Vec::len),
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_dropped: 0,
            stderr_dropped: 0,
            log_dropped: 0,
        }
    }
}

/// Logs a guest's progress through `tracing` at debug level, with the
/// task's uid.
pub(crate) fn log_guest_progress(uid: &str, task: &str, progress: &Progress) {
    tracing::debug!(
        uid = %uid,
        task = %task,
        done = progress.done,
        total = progress.total,
        "task progress: {}",
        progress.message
    );
}

/// Logs a guest's record through `tracing` at its level, target
/// `asyncer::guest`, with the task's uid.
pub(crate) fn log_guest_record(uid: &str, task: &str, record: &LogRecord) {
    let message = &record.message;
    match record.level {
        LogLevel::Trace => {
            tracing::trace!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Debug => {
            tracing::debug!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Info => {
            tracing::info!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Warn => {
            tracing::warn!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
        LogLevel::Error => {
            tracing::error!(target: "asyncer::guest", uid = %uid, task = %task, "{message}")
        }
    }
}

/// Logs a task's outcome through `tracing`, with its uid.
fn log_outcome(uid: &str, task: &str, result: &RawResult) {
    match result {
        Err(error) => {
            tracing::warn!(uid = %uid, task = %task, kind = %error.kind(), "task failed: {error}")
        }
        Ok(output) => {
            tracing::debug!(uid = %uid, task = %task, bytes_out = output.len(), "task finished")
        }
    }
}
