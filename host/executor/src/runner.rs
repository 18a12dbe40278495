//! The runner: the queue of tasks waiting for a slot, the semaphore bounding
//! the tasks that run at once, and what every task's owner shares (the
//! backend, the subscribers, the executor's cancellation token and task
//! tracker).
//!
//! `submit` makes a task's [`Owner`] and puts its turn in the queue; one
//! loop hands out slots to the turns in submit order (FIFO) as permits
//! free up; the owner takes it from there.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::{Assignment, Backend};
use crate::event::{EventStream, Subscribers, UpdateStream};
use crate::handle::{Decode, ProgressState, TaskHandle};
use crate::owner::{Owner, TaskMeta};
use crate::Error;

/// Where a queued task's slot is sent when its turn comes.
type Turn = oneshot::Sender<OwnedSemaphorePermit>;

/// Queues tasks and owns what their owners share.
pub(crate) struct Runner {
    backend: Arc<dyn Backend>,
    subscribers: Arc<Subscribers>,
    /// Every owner runs on it; `shutdown` and `abort` wait on it.
    tracker: TaskTracker,
    /// The executor's token: cancelled, it stops every task (shut down).
    stop: CancellationToken,
    turns: mpsc::UnboundedSender<Turn>,
}

impl Runner {
    /// Starts the slot loop with `slots` slots, on the current runtime.
    pub(crate) fn start(backend: Arc<dyn Backend>, slots: usize) -> Self {
        let (turns, queue) = mpsc::unbounded_channel();
        tokio::spawn(hand_out_slots(slots, queue));
        Runner {
            backend,
            subscribers: Arc::default(),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            turns,
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
        let (turn, turn_rx) = oneshot::channel();
        self.turns.send(turn).map_err(|_| Error::ShutDown)?;
        let meta = TaskMeta {
            uid: assignment.uid.clone(),
            task: assignment.task.clone(),
            module_hash: assignment.module.hash().to_owned(),
            queued_at: SystemTime::now(),
            bytes_in: assignment.input.len(),
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
            assignment,
            turn: turn_rx,
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

/// Hands a slot to each turn in queue order, as slots free up. A task
/// stopped while waiting has dropped its receiver: it is skipped, and a
/// slot sent to a task stopped a moment ago comes straight back.
async fn hand_out_slots(slots: usize, mut queue: mpsc::UnboundedReceiver<Turn>) {
    let slots = Arc::new(Semaphore::new(slots));
    while let Some(mut turn) = queue.recv().await {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = turn.closed() => continue,
        };
        let _ = turn.send(permit);
    }
}
