//! One owner per task: a tokio task (tracked by the executor's
//! `TaskTracker`) that holds all of the task's state and walks it through
//! its life, queued → running → finished, producing its result and its
//! completion event exactly once.
//!
//! Where the task is in its life is where the owner is in [`Owner::run`]:
//! waiting for its turn (queued), awaiting the backend (running), or
//! delivering (finished). Nothing else records it. Stopping goes through the
//! task's cancellation token, a child of the executor's: cancelling the
//! child alone is [`Error::Cancelled`], cancelling the parent (shutdown,
//! abort) is [`Error::ShutDown`].

use std::sync::Arc;
use std::time::SystemTime;

use asyncer_protocol::GuestMessage;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::dispatch::{Assignment, Backend, BoxFuture, Run, RunContext, RunReport};
use crate::event::{LogEvent, ProgressEvent, Subscribers, TaskEvent, TaskUpdate};
use crate::handle::{ProgressState, RawResult};
use crate::schedule::{Scheduler, Slot, Ticket, Turn};
use crate::{trace, Error, ErrorKind};

/// What identifies a task in its events, fixed at submit.
#[derive(Debug, Clone)]
pub(crate) struct TaskMeta {
    pub(crate) uid: String,
    pub(crate) task: String,
    pub(crate) module_hash: String,
    pub(crate) queued_at: SystemTime,
    pub(crate) bytes_in: usize,
    pub(crate) tenant: String,
    pub(crate) priority: i32,
}

/// Everything one task is, from submit to its event.
pub(crate) struct Owner {
    pub(crate) meta: TaskMeta,
    /// Boxed: a queued owner stays small.
    pub(crate) assignment: Box<Assignment>,
    /// Receives the task's slot when its turn comes.
    pub(crate) ticket: Ticket,
    /// Where a retried task queues again.
    pub(crate) scheduler: Arc<Scheduler>,
    /// The task's own token, a child of `shutdown`.
    pub(crate) cancel: CancellationToken,
    /// The executor's token.
    pub(crate) shutdown: CancellationToken,
    pub(crate) reply: oneshot::Sender<RawResult>,
    pub(crate) progress: watch::Sender<ProgressState>,
    pub(crate) subscribers: Arc<Subscribers>,
    pub(crate) backend: Arc<dyn Backend>,
}

/// The parts of an owner that deliver the outcome and the event.
struct Delivery {
    meta: TaskMeta,
    reply: oneshot::Sender<RawResult>,
    progress: watch::Sender<ProgressState>,
    subscribers: Arc<Subscribers>,
}

impl Owner {
    /// Lives the task's life; returns once its event is published.
    // An async block, not an async fn: an async fn keeps its argument and a
    // local copy of it, which nearly doubles a queued owner's size.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            // Queued: wait for a slot, unless stopped or expired first.
            // Boxed, and only for tasks with a deadline: queued owners stay
            // small.
            let mut deadline = self.assignment.start_by.map(|by| {
                let left = by.duration_since(SystemTime::now()).unwrap_or_default();
                Box::pin(tokio::time::sleep(left))
            });
            let expiry = async {
                match deadline.as_mut() {
                    Some(sleep) => sleep.await,
                    None => std::future::pending().await,
                }
            };
            let waited = tokio::select! {
                biased;
                () = self.cancel.cancelled() => Waited::Stopped,
                slot = &mut self.ticket => Waited::Slot(slot),
                () = expiry => Waited::Expired,
            };
            // The rest is boxed once it starts, so that the owners of
            // queued tasks stay small (an allocation malloc serves from its
            // per-thread cache).
            Box::pin(self.live(waited)).await;
        }
    }

    /// Running (with a slot) and finished, or finished at once when
    /// stopped or expired while queued (no slot).
    async fn live(self, waited: Waited) {
        let Owner {
            meta,
            mut assignment,
            ticket,
            scheduler,
            cancel,
            shutdown,
            reply,
            progress,
            subscribers,
            backend,
        } = self;
        // Out of the queue (if still in it) before anything else.
        drop(ticket);
        let delivery = Delivery {
            meta,
            reply,
            progress,
            subscribers,
        };
        let permit = match waited {
            Waited::Slot(slot) => Some(slot),
            Waited::Stopped => None,
            Waited::Expired => {
                let waited = SystemTime::now()
                    .duration_since(delivery.meta.queued_at)
                    .unwrap_or_default();
                let run = Run {
                    outcome: Err(Error::Expired { waited }),
                    report: RunReport::default(),
                    cleanup: None,
                };
                return delivery.finish(run, None).await;
            }
        };
        let Some(mut permit) = permit else {
            return delivery.stopped(&cancel, &shutdown).await;
        };

        let mut attempt = 1;
        loop {
            // Running: the backend has it; its reports come back on a
            // channel. A task that may run again keeps its assignment.
            let retry = assignment.retry.clone();
            let again = retry
                .as_ref()
                .filter(|r| r.max_attempts() > attempt)
                .map(|_| assignment.clone());
            let mut run = delivery
                .run_once(&*backend, *assignment, &cancel, &shutdown)
                .await;
            if retry.is_some() {
                run.report.attempt = run.report.attempt.max(attempt);
            }
            let retried = match (&run.outcome, retry, again) {
                (Err(error), Some(retry), Some(next))
                    if retry.retries(error.kind(), attempt) && !cancel.is_cancelled() =>
                {
                    Some((retry.delay(attempt), next, error.kind()))
                }
                _ => None,
            };
            let Some((delay, next, kind)) = retried else {
                // Finished.
                return delivery.finish(run, Some(permit)).await;
            };
            // Reap this run's worker, give the slot back, wait, queue again.
            let _ = cleanup_status(run.cleanup.take()).await;
            drop(permit);
            attempt += 1;
            tracing::info!(
                uid = %delivery.meta.uid,
                task = %delivery.meta.task,
                failed = %kind,
                attempt,
                ?delay,
                "retrying the task"
            );
            delivery
                .progress
                .send_modify(|state| state.attempt = attempt);
            let ticket = scheduler.requeue(&Turn {
                tenant: delivery.meta.tenant.clone(),
                priority: delivery.meta.priority,
            });
            let slot = tokio::select! {
                biased;
                () = cancel.cancelled() => None,
                slot = async {
                    tokio::time::sleep(delay).await;
                    ticket.await
                } => Some(slot),
            };
            let Some(slot) = slot else {
                return delivery.stopped(&cancel, &shutdown).await;
            };
            permit = slot;
            assignment = next;
        }
    }
}

/// How a task's wait in the queue ended.
enum Waited {
    Slot(Slot),
    Stopped,
    Expired,
}

/// Why a stopped task stopped: the executor's token means shut down.
fn stop_reason(cancel: &CancellationToken, shutdown: &CancellationToken) -> Error {
    if cancel.is_cancelled() && !shutdown.is_cancelled() {
        Error::Cancelled
    } else {
        Error::ShutDown
    }
}

impl Delivery {
    /// One run of the task on `backend`, relaying its reports.
    async fn run_once(
        &self,
        backend: &dyn Backend,
        assignment: Assignment,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Run {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let mut running = backend.run(assignment, RunContext::new(reports_tx, cancel.clone()));
        let mut run = loop {
            tokio::select! {
                run = &mut running => break run,
                Some(message) = reports.recv() => self.on_guest(message),
            }
        };
        // Whatever the backend reported before it answered comes first.
        while let Ok(message) = reports.try_recv() {
            self.on_guest(message);
        }
        if matches!(run.outcome, Err(Error::Cancelled)) && cancel.is_cancelled() {
            run.outcome = Err(stop_reason(cancel, shutdown));
        }
        run
    }

    /// Finishes a task stopped while it held no slot.
    async fn stopped(self, cancel: &CancellationToken, shutdown: &CancellationToken) {
        let run = Run {
            outcome: Err(stop_reason(cancel, shutdown)),
            report: RunReport::default(),
            cleanup: None,
        };
        self.finish(run, None).await;
    }

    /// Hands a progress or log record of the running guest to its watchers,
    /// the update subscribers and `tracing`.
    fn on_guest(&self, message: GuestMessage) {
        let Delivery {
            meta, subscribers, ..
        } = self;
        let at = SystemTime::now();
        match message {
            GuestMessage::Progress(progress) => {
                trace::guest_progress(&meta.uid, &meta.task, &progress);
                subscribers.publish_update(|| {
                    TaskUpdate::Progress(ProgressEvent {
                        uid: meta.uid.clone(),
                        task: meta.task.clone(),
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
                trace::guest_record(&meta.uid, &meta.task, &record);
                subscribers.publish_update(|| {
                    TaskUpdate::Log(LogEvent {
                        uid: meta.uid.clone(),
                        task: meta.task.clone(),
                        level: record.level,
                        message: record.message.clone(),
                        at,
                    })
                });
            }
        }
    }

    /// Delivers the outcome to the handle at once, then finishes the run's
    /// cleanup (reaping its worker) while still holding the slot, then
    /// publishes the one event, made from the complete record.
    async fn finish(self, run: Run, permit: Option<Slot>) {
        let Delivery {
            meta,
            reply,
            progress,
            subscribers,
        } = self;
        let Run {
            outcome,
            mut report,
            cleanup,
        } = run;
        trace::outcome(&meta.uid, &meta.task, &outcome);
        let error = outcome.as_ref().err().map(|e| {
            let mut message = e.to_string();
            // (A lost task's message counts its deliveries already.)
            if report.attempt > 1 && e.kind() != ErrorKind::WorkerLost {
                message = format!("{message} (after {} attempts)", report.attempt);
            }
            (e.kind(), message)
        });
        let bytes_out = outcome.as_ref().map_or(0, Vec::len);
        // Progress watchers see the end before the caller sees the result.
        drop(progress);
        let _ = reply.send(outcome);
        if let Some(status) = cleanup_status(cleanup).await {
            report.exit_status = Some(status);
        }
        let finished_at = SystemTime::now();
        drop(permit);
        trace::guest_output(&meta.uid, &meta.task, &report);
        let event = TaskEvent::new(meta, error, bytes_out, report, finished_at);
        crate::measure::task_finished(&event);
        subscribers.publish(&event);
    }
}

async fn cleanup_status(cleanup: Option<BoxFuture<'static, Option<String>>>) -> Option<String> {
    match cleanup {
        Some(cleanup) => cleanup.await,
        None => None,
    }
}

#[cfg(test)]
#[path = "owner_tests.rs"]
mod tests;
