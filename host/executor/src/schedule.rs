//! The scheduler: which queued task gets the next free slot.
//!
//! Slots are shared between the tenants that have work, by weight: the next
//! slot goes to the tenant with the fewest running tasks per unit of weight
//! (ties to the one whose oldest task has waited longest), skipping tenants
//! at their cap of running tasks. Within a tenant, the task with the highest
//! effective priority runs first, FIFO within a level; a task's effective
//! priority grows by one for every `aging` interval it waits, so a low
//! priority is never starved forever. Queues are bounded (per executor and
//! per tenant): at the bound, `submit` fails at once with `queue_full`.
//!
//! Each queued task holds a [`Ticket`]; the scheduler sends it a [`Slot`]
//! (a semaphore permit that also counts against its tenant's cap) when its
//! turn comes. A task that stops waiting (cancelled, shut down, expired)
//! drops its ticket, which takes it out of the counts at once; its entry is
//! skipped when reached, and entries left behind that way are swept once
//! they outnumber the live ones, so memory follows the queue's size.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use crate::Error;

/// How the slots of an executor are shared (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) slots: usize,
    pub(crate) max_queued: Option<usize>,
    pub(crate) max_queued_per_tenant: Option<usize>,
    pub(crate) aging: Option<Duration>,
    pub(crate) tenants: HashMap<String, TenantSettings>,
}

impl Policy {
    /// Tenant `tenant`'s settings, or the defaults.
    pub(crate) fn settings(&self, tenant: &str) -> TenantSettings {
        self.tenants.get(tenant).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
impl Policy {
    /// `slots` slots, no bounds, no aging, no tenant settings.
    pub(crate) fn fifo(slots: usize) -> Self {
        Policy {
            slots,
            max_queued: None,
            max_queued_per_tenant: None,
            aging: None,
            tenants: HashMap::new(),
        }
    }
}

/// The share of one tenant, set with
/// [`ExecutorBuilder::tenant`](crate::ExecutorBuilder::tenant).
///
/// # Examples
/// ```
/// use asyncer::TenantSettings;
/// // Twice the default share, never more than 2 tasks running, at most 500 queued.
/// let paying = TenantSettings::new().weight(2).max_running(2).max_queued(500);
/// # let _ = paying;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSettings {
    pub(crate) weight: u32,
    pub(crate) max_running: Option<usize>,
    pub(crate) max_queued: Option<usize>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            weight: 1,
            max_running: None,
            max_queued: None,
        }
    }
}

impl TenantSettings {
    /// Weight 1, no cap of running tasks, the executor's per-tenant queue
    /// bound.
    pub fn new() -> Self {
        TenantSettings::default()
    }

    /// The tenant's share of the slots relative to the others' (default 1;
    /// at least 1).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// At most this many of the tenant's tasks run at once (at least 1).
    #[must_use]
    pub fn max_running(mut self, max: usize) -> Self {
        self.max_running = Some(max.max(1));
        self
    }

    /// At most this many of the tenant's tasks wait in the queue.
    #[must_use]
    pub fn max_queued(mut self, max: usize) -> Self {
        self.max_queued = Some(max);
        self
    }

    /// The tenant's weight (its share of the slots).
    pub fn share(&self) -> u32 {
        self.weight
    }

    /// Its cap of running tasks, if any.
    pub fn running_cap(&self) -> Option<usize> {
        self.max_running
    }
}

/// A task's place in the queue.
pub(crate) struct Turn {
    pub(crate) tenant: String,
    pub(crate) priority: i32,
}

/// A slot to run in: gives its place back, and its tenant's, when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    tenant: String,
    scheduler: Arc<Scheduler>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.scheduler.lock();
        if let Some(tenant) = state.tenants.get_mut(&self.tenant) {
            tenant.running -= 1;
        }
        state.running -= 1;
        crate::measure::slots(state.queued, state.running);
        state.forget_idle(&self.tenant, &self.scheduler.policy);
        drop(state);
        // A tenant at its cap may run again.
        self.scheduler.wake.notify_one();
    }
}

/// A queued task's claim on a slot; a future of the slot. Dropped before
/// the slot came, it takes the task out of the queue.
pub(crate) struct Ticket {
    rx: Option<oneshot::Receiver<Slot>>,
    tenant: String,
    scheduler: Arc<Scheduler>,
}

impl Future for Ticket {
    type Output = Slot;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(Ok(slot)) => {
                self.rx = None;
                Poll::Ready(slot)
            }
            // The scheduler never drops a sender without sending: only its
            // runtime going away does.
            Poll::Ready(Err(_)) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut state = self.scheduler.lock();
        // Under the lock the scheduler either sent the slot already or will
        // see the entry closed.
        rx.close();
        let slot = rx.try_recv().ok();
        if slot.is_none() {
            state.unqueue(&self.tenant);
            crate::measure::slots(state.queued, state.running);
            state.stale += 1;
            state.sweep();
            state.forget_idle(&self.tenant, &self.scheduler.policy);
        }
        drop(state);
        self.scheduler.room.notify_waiters();
        // A slot that came too late goes back (its drop takes the lock).
        drop(slot);
    }
}

struct Entry {
    seq: u64,
    since: Instant,
    tx: oneshot::Sender<Slot>,
}

#[derive(Default)]
struct Tenant {
    running: usize,
    /// Live entries (those whose ticket is still held).
    queued: usize,
    levels: BTreeMap<i32, VecDeque<Entry>>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Tenant>,
    queued: usize,
    /// Slots held.
    running: usize,
    /// Entries whose ticket was dropped, not yet taken out of the queues.
    stale: usize,
    seq: u64,
}

impl State {
    fn unqueue(&mut self, tenant: &str) {
        self.queued -= 1;
        if let Some(tenant) = self.tenants.get_mut(tenant) {
            tenant.queued -= 1;
        }
    }

    /// Takes the entries of dropped tickets out once they outnumber the
    /// live ones (amortised: each sweep halves the memory held).
    fn sweep(&mut self) {
        if self.stale < 64 || self.stale < self.queued {
            return;
        }
        for tenant in self.tenants.values_mut() {
            for level in tenant.levels.values_mut() {
                level.retain(|entry| !entry.tx.is_closed());
            }
            tenant.levels.retain(|_, level| !level.is_empty());
        }
        self.stale = 0;
    }

    /// Forgets a tenant with nothing queued or running and no settings of
    /// its own, so that tenant names do not accumulate.
    fn forget_idle(&mut self, name: &str, policy: &Policy) {
        let idle = self
            .tenants
            .get(name)
            .is_some_and(|t| t.running == 0 && t.queued == 0 && t.levels.is_empty());
        if idle && !policy.tenants.contains_key(name) {
            self.tenants.remove(name);
        }
    }
}

pub(crate) struct Scheduler {
    policy: Policy,
    state: Mutex<State>,
    slots: Arc<Semaphore>,
    /// A task was queued or a tenant's cap freed up.
    wake: Notify,
    /// A queued task left the queue.
    room: Notify,
    /// The runner is gone: no task comes any more.
    closed: AtomicBool,
}

impl Scheduler {
    /// A scheduler handing out `policy.slots` slots, its loop running on the
    /// current runtime.
    pub(crate) fn start(policy: Policy) -> Arc<Self> {
        let scheduler = Arc::new(Scheduler {
            slots: Arc::new(Semaphore::new(policy.slots)),
            policy,
            state: Mutex::default(),
            wake: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(hand_out_slots(scheduler.clone()));
        scheduler
    }

    /// No task comes any more: the loop ends once the queue is empty.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("scheduler state poisoned")
    }

    fn settings(&self, tenant: &str) -> TenantSettings {
        self.policy.settings(tenant)
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    fn queue_bound(&self, tenant: &str) -> Option<usize> {
        self.policy
            .tenants
            .get(tenant)
            .and_then(|t| t.max_queued)
            .or(self.policy.max_queued_per_tenant)
    }

    /// Queues a task.
    ///
    /// # Errors
    /// [`Error::QueueFull`] at the executor's or the tenant's bound.
    pub(crate) fn enqueue(self: &Arc<Self>, turn: &Turn) -> Result<Ticket, Error> {
        self.queue(turn, true)
    }

    /// Queues a task that was accepted before (a retry): the bounds, which
    /// guard submits, do not apply.
    pub(crate) fn requeue(self: &Arc<Self>, turn: &Turn) -> Ticket {
        self.queue(turn, false).expect("no bound applies")
    }

    fn queue(self: &Arc<Self>, turn: &Turn, bounded: bool) -> Result<Ticket, Error> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if let Some(max) = self.policy.max_queued.filter(|_| bounded) {
            if state.queued >= max {
                return Err(Error::QueueFull {
                    tenant: None,
                    limit: max,
                });
            }
        }
        if let Some(max) = self.queue_bound(&turn.tenant).filter(|_| bounded) {
            if state.tenants.get(&turn.tenant).map_or(0, |t| t.queued) >= max {
                return Err(Error::QueueFull {
                    tenant: Some(turn.tenant.clone()),
                    limit: max,
                });
            }
        }
        state.seq += 1;
        let entry = Entry {
            seq: state.seq,
            since: Instant::now(),
            tx,
        };
        state.queued += 1;
        let tenant = state.tenants.entry(turn.tenant.clone()).or_default();
        tenant.queued += 1;
        tenant
            .levels
            .entry(turn.priority)
            .or_default()
            .push_back(entry);
        drop(state);
        self.wake.notify_one();
        Ok(Ticket {
            rx: Some(rx),
            tenant: turn.tenant.clone(),
            scheduler: self.clone(),
        })
    }

    /// Queue entries held, stale ones included.
    #[cfg(test)]
    pub(crate) fn retained(&self) -> usize {
        let state = self.lock();
        state
            .tenants
            .values()
            .flat_map(|t| t.levels.values())
            .map(VecDeque::len)
            .sum()
    }

    /// Tasks waiting for a slot, in all and for `tenant`.
    pub(crate) fn queued(&self, tenant: &str) -> (usize, usize) {
        let state = self.lock();
        let of_tenant = state.tenants.get(tenant).map_or(0, |t| t.queued);
        (state.queued, of_tenant)
    }

    /// Resolves once a task of `tenant` would be queued rather than refused.
    pub(crate) async fn room(&self, tenant: &str) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (all, own) = self.queued(tenant);
            let fits = self.policy.max_queued.is_none_or(|max| all < max)
                && self.queue_bound(tenant).is_none_or(|max| own < max);
            if fits {
                return;
            }
            notified.await;
        }
    }

    /// Sends `permit` to the task whose turn it is; gives it back when no
    /// task may run now.
    fn hand_out(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        let mut state = self.lock();
        let now = Instant::now();
        loop {
            let Some(name) = self.next_tenant(&mut state, now) else {
                return Some(permit);
            };
            let tenant = state.tenants.get_mut(&name).expect("chosen from the map");
            let level = pick_level(tenant, now, self.policy.aging);
            let entries = tenant.levels.get_mut(&level).expect("a level with entries");
            let entry = entries.pop_front().expect("a level with entries");
            if entries.is_empty() {
                tenant.levels.remove(&level);
            }
            if entry.tx.is_closed() {
                // Its ticket was dropped; the counts know already.
                state.stale -= 1;
                continue;
            }
            tenant.running += 1;
            state.running += 1;
            state.unqueue(&name);
            crate::measure::slots(state.queued, state.running);
            let slot = Slot {
                _permit: permit,
                tenant: name,
                scheduler: self.clone(),
            };
            // Cannot fail: the receiver is closed only under this lock.
            if let Err(slot) = entry.tx.send(slot) {
                drop(state);
                drop(slot);
                return None;
            }
            drop(state);
            self.room.notify_waiters();
            return None;
        }
    }

    /// The tenant whose turn it is: the lowest running-to-weight ratio among
    /// those with work and under their cap; first drops the closed entries at
    /// the fronts of its levels, so that a tenant with only stale entries is
    /// not chosen.
    fn next_tenant(&self, state: &mut State, now: Instant) -> Option<String> {
        let mut best: Option<(f64, Duration, &String)> = None;
        let mut stale_dropped = 0;
        for (name, tenant) in &mut state.tenants {
            for level in tenant.levels.values_mut() {
                while level.front().is_some_and(|e| e.tx.is_closed()) {
                    level.pop_front();
                    stale_dropped += 1;
                }
            }
            tenant.levels.retain(|_, level| !level.is_empty());
            let settings = self.settings(name);
            let capped = settings
                .max_running
                .is_some_and(|max| tenant.running >= max);
            let Some(oldest) = tenant
                .levels
                .values()
                .filter_map(|level| level.front())
                .map(|entry| now.saturating_duration_since(entry.since))
                .max()
            else {
                continue;
            };
            if capped {
                continue;
            }
            let load = tenant.running as f64 / f64::from(settings.weight);
            let better = best.is_none_or(|(best_load, best_wait, _)| {
                load < best_load || (load == best_load && oldest > best_wait)
            });
            if better {
                best = Some((load, oldest, name));
            }
        }
        let chosen = best.map(|(_, _, name)| name.clone());
        state.stale -= stale_dropped;
        // Tenants left with nothing (their tasks cancelled) are forgotten.
        let configured = &self.policy.tenants;
        state.tenants.retain(|name, t| {
            t.running > 0 || t.queued > 0 || !t.levels.is_empty() || configured.contains_key(name)
        });
        chosen
    }
}

/// The level whose front entry has the highest effective priority (its
/// level plus one for each `aging` interval it waited); ties to the older.
fn pick_level(tenant: &Tenant, now: Instant, aging: Option<Duration>) -> i32 {
    let effective = |level: i32, entry: &Entry| {
        let aged = aging.map_or(0.0, |step| {
            now.saturating_duration_since(entry.since).as_secs_f64() / step.as_secs_f64()
        });
        f64::from(level) + aged.floor()
    };
    tenant
        .levels
        .iter()
        .filter_map(|(level, entries)| entries.front().map(|e| (*level, e)))
        .max_by(|(la, a), (lb, b)| {
            effective(*la, a)
                .total_cmp(&effective(*lb, b))
                .then(b.seq.cmp(&a.seq))
        })
        .map(|(level, _)| level)
        .expect("a tenant with entries")
}

/// Hands each free slot to the task whose turn it is, as slots free up and
/// tasks arrive; ends once the runner is gone and no task is queued.
async fn hand_out_slots(scheduler: Arc<Scheduler>) {
    loop {
        let Ok(mut permit) = scheduler.slots.clone().acquire_owned().await else {
            return;
        };
        loop {
            let notified = scheduler.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if scheduler.closed.load(Ordering::Acquire) && scheduler.lock().queued == 0 {
                return;
            }
            match scheduler.hand_out(permit) {
                None => break,
                Some(back) => permit = back,
            }
            // Aging can change the order without any event: look again now
            // and then while tasks wait.
            match scheduler.policy.aging {
                Some(step) => {
                    let _ = tokio::time::timeout(step, notified).await;
                }
                None => notified.await,
            }
        }
    }
}
