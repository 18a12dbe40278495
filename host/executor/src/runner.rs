//! The runner: the queue of tasks waiting for a slot, the semaphore bounding
//! the tasks that run at once, and what every task's owner shares (the
//! backend, the subscribers, the executor's cancellation token and task
//! tracker).
//!
//! `submit` makes a task's [`Owner`] and puts it in the scheduler's queue
//! (`schedule.rs`: tenants by weight, priorities with aging, bounds), which
//! hands it a slot when its turn comes; the owner takes it from there.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::{Assignment, Backend};
use crate::event::{EventStream, Subscribers, UpdateStream};
use crate::handle::{Decode, ProgressState, TaskHandle};
use crate::owner::{Owner, TaskMeta};
use crate::schedule::{Policy, Scheduler, Turn};
use crate::Error;

/// Queues tasks and owns what their owners share.
pub(crate) struct Runner {
    backend: Arc<dyn Backend>,
    subscribers: Arc<Subscribers>,
    /// Every owner runs on it; `shutdown` and `abort` wait on it.
    tracker: TaskTracker,
    /// The executor's token: cancelled, it stops every task (shut down).
    stop: CancellationToken,
    scheduler: Arc<Scheduler>,
}

impl Runner {
    /// Starts the scheduler with `policy`, on the current runtime.
    pub(crate) fn start(backend: Arc<dyn Backend>, policy: Policy) -> Self {
        Runner {
            backend,
            subscribers: Arc::default(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            scheduler: Scheduler::start(policy),
        }
    }

    /// Queues `assignment` and starts its owner.
    pub(crate) fn submit<O>(
        &self,
        assignment: Assignment,
        decode: Decode<O>,
    ) -> Result<TaskHandle<O>, Error> {
        // Counted before the check, so that a shutdown closing the tracker
        // right now waits for this task rather than missing it.
        let _counted = self.tracker.token();
        if self.tracker.is_closed() {
            return Err(Error::ShutDown);
        }
        let ticket = self.scheduler.enqueue(&Turn {
            tenant: assignment.tenant.clone(),
            priority: assignment.priority,
        })?;
        let meta = TaskMeta {
            uid: assignment.uid.clone(),
            task: assignment.task.clone(),
            module_hash: assignment.module.hash().to_owned(),
            queued_at: SystemTime::now(),
            bytes_in: assignment.input.len(),
            tenant: assignment.tenant.clone(),
            priority: assignment.priority,
        };
        tracing::debug!(uid = %meta.uid, task = %meta.task, module = assignment.module.name(), "task queued");
        let cancel = self.stop.child_token();
        let (reply, reply_rx) = oneshot::channel();
        let (progress, progress_rx) = watch::channel(ProgressState::default());
        let handle = TaskHandle::new(
            meta.uid.clone(),
            cancel.clone(),
            reply_rx,
            progress_rx,
            decode,
        );
        let owner = Owner {
            meta,
            assignment: Box::new(assignment),
            ticket,
            scheduler: self.scheduler.clone(),
            cancel,
            shutdown: self.stop.clone(),
            reply,
            progress,
            subscribers: self.subscribers.clone(),
            backend: self.backend.clone(),
        };
        self.tracker.spawn(owner.run());
        Ok(handle)
    }

    pub(crate) fn events(&self) -> EventStream {
        self.subscribers.subscribe()
    }

    pub(crate) fn updates(&self) -> UpdateStream {
        self.subscribers.subscribe_updates()
    }

    /// Resolves once a task of `tenant` would be queued, not refused.
    pub(crate) async fn room(&self, tenant: &str) {
        self.scheduler.room(tenant).await;
    }

    /// Queue entries held, stale ones included (for tests of memory).
    #[cfg(test)]
    pub(crate) fn retained(&self) -> usize {
        self.scheduler.retained()
    }

    /// Tasks waiting for a slot: in all, and of `tenant`.
    pub(crate) fn queued(&self, tenant: &str) -> (usize, usize) {
        self.scheduler.queued(tenant)
    }

    /// How the slots are shared.
    pub(crate) fn policy(&self) -> &Policy {
        self.scheduler.policy()
    }

    /// Refuses new tasks, lets the others finish for `grace`, stops the
    /// rest, then closes the backend.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            self.stop.cancel();
            self.tracker.wait().await;
        }
        self.backend.close().await;
    }

    /// Refuses new tasks, stops every task now, then closes the backend.
    pub(crate) async fn abort(&self) {
        self.tracker.close();
        self.stop.cancel();
        self.tracker.wait().await;
        self.backend.close().await;
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Queued tasks still get their slots; then the scheduler's loop ends.
        self.scheduler.close();
    }
}
