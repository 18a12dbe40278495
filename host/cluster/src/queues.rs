//! A worker host's view of the cluster's queues, and which one it pulls
//! from next.
//!
//! Every tenant's tasks of one priority are a queue of their own: a durable
//! pull consumer (`asyncer-q-<priority>-<tenant>`) of the work-queue
//! stream, made by the first submitter that needs it. A host with a free
//! slot picks a queue the way a local executor picks a task: among tenants
//! with waiting work and under their cap on this host, the one with the
//! fewest tasks running here for its weight (ties: the one passed over the
//! longest); within it, the highest priority plus its aging (one level per
//! aging step while this host passes a queue with work over). It then
//! takes one task from that queue. What waits where is the server's count
//! (every [`LOOK_EVERY`], and whenever the host has nothing to do), plus
//! the submitters' ready notices since; a pull that finds a queue empty
//! sets it straight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, pull, FromConsumer, PullConsumer};
use async_nats::jetstream::Message;
use futures_util::StreamExt;

use crate::connect::Connection;
use crate::wire::{queue_name, queue_of_filter, queue_of_ready, QUEUE_PREFIX};

/// How stale a host's counts may get before it asks the server again (a
/// missed notice, or a task handed back by a host that died, waits no
/// longer than this once its lease is over).
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long a pull may wait for the server's answer.
const PULL_ANSWER: Duration = Duration::from_secs(1);

/// One queue as the server counts it ([`Connection::queues`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueState {
    /// Whose tasks.
    pub tenant: String,
    /// Of which priority.
    pub priority: i32,
    /// Not yet delivered to any host.
    pub waiting: u64,
    /// Delivered and not yet acknowledged: running on a host, or about to
    /// be delivered again (its host died or handed it back).
    pub taken: u64,
}

/// Every queue on the server, by the server's counts.
pub(crate) async fn queue_states(connection: &Connection) -> Result<Vec<QueueState>, String> {
    let mut states: Vec<_> = list(connection)
        .await?
        .into_iter()
        .map(|(tenant, priority, info)| QueueState {
            tenant,
            priority,
            waiting: info.num_pending,
            taken: info.num_ack_pending as u64,
        })
        .collect();
    states.sort_by(|a, b| {
        (&a.tenant, std::cmp::Reverse(a.priority)).cmp(&(&b.tenant, std::cmp::Reverse(b.priority)))
    });
    Ok(states)
}

/// Every queue's consumer on the server, with its tenant and priority.
async fn list(connection: &Connection) -> Result<Vec<(String, i32, consumer::Info)>, String> {
    let mut queues = Vec::new();
    let mut consumers = connection.stream.consumers();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| e.to_string())?;
        if let Some((tenant, priority)) = queue_of(&info) {
            queues.push((tenant, priority, info));
        }
    }
    Ok(queues)
}

/// The tenant and priority of a queue's consumer (`None`: not a queue).
fn queue_of(info: &consumer::Info) -> Option<(String, i32)> {
    if !info.name.starts_with(QUEUE_PREFIX) {
        return None;
    }
    queue_of_filter(&info.config.filter_subject)
}

/// One tenant's tasks of one priority, as this host sees them.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) tenant: String,
    pub(crate) priority: i32,
    /// Found at a look, or asked for at the first pull.
    consumer: Option<PullConsumer>,
    /// Tasks that may wait there.
    waiting: u64,
    /// Since when this host has passed it over while it had work.
    passed_over: Option<Instant>,
    /// Its tasks this host is running.
    running: usize,
}

impl Queue {
    fn new(tenant: String, priority: i32) -> Self {
        Queue {
            tenant,
            priority,
            consumer: None,
            waiting: 0,
            passed_over: None,
            running: 0,
        }
    }
}

/// A task taken from a queue, with the queue's lease settings.
pub(crate) struct Taken {
    pub(crate) message: Message,
    /// The queue's consumer name.
    pub(crate) queue: String,
    pub(crate) tenant: String,
    pub(crate) priority: i32,
    /// The queue's lease: renewed every third of it.
    pub(crate) ack_wait: Duration,
    /// Its deliveries before `worker_lost` (0 or less: no bound).
    pub(crate) max_deliver: i64,
}

/// What a host knows of a tenant's share: its weight and its cap of running
/// tasks on this host.
pub(crate) type Share = (u32, Option<usize>);

/// The queues a host knows of, by consumer name.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    queues: HashMap<String, Queue>,
    looked: Option<Instant>,
}

impl Queues {
    /// Whether the counts are older than [`LOOK_EVERY`] (or never taken).
    pub(crate) fn stale(&self) -> bool {
        self.looked.is_none_or(|at| at.elapsed() >= LOOK_EVERY)
    }

    /// Counts go stale at once: the next decision looks first.
    pub(crate) fn forget_counts(&mut self) {
        self.looked = None;
    }

    /// Asks the server what waits in every queue.
    pub(crate) async fn look(&mut self, connection: &Connection) -> Result<(), String> {
        let mut listed = HashSet::new();
        for (tenant, priority, info) in list(connection).await? {
            let queue = self
                .queues
                .entry(info.name.clone())
                .or_insert_with(|| Queue::new(tenant, priority));
            // Delivered but not acknowledged: running elsewhere, or waiting
            // for redelivery after a host died. A pull finds out which.
            let unacknowledged = (info.num_ack_pending as u64).saturating_sub(queue.running as u64);
            queue.waiting = info.num_pending + unacknowledged;
            if queue.consumer.is_none() {
                if let Ok(config) = pull::Config::try_from_consumer_config(info.config.clone()) {
                    queue.consumer = Some(PullConsumer::new(
                        config,
                        info.clone(),
                        connection.js.clone(),
                    ));
                }
            }
            listed.insert(info.name);
        }
        // A queue deleted by an operator: forgotten once nothing of it runs.
        self.queues
            .retain(|name, queue| queue.running > 0 || listed.contains(name));
        self.looked = Some(Instant::now());
        tracing::trace!(queues = ?self.queues.values().map(|q| (&q.tenant, q.priority, q.waiting, q.running)).collect::<Vec<_>>(), "looked");
        Ok(())
    }

    /// A ready notice on `subject`: one more task in a tenant's queue of a
    /// priority.
    pub(crate) fn noticed(&mut self, subject: &str) {
        let Some((tenant, priority)) = queue_of_ready(subject) else {
            return;
        };
        let queue = self
            .queues
            .entry(queue_name(&tenant, priority))
            .or_insert_with(|| Queue::new(tenant, priority));
        queue.waiting += 1;
    }

    /// The queue whose turn it is (see the module documentation), if any
    /// has work for this host; `share` gives a tenant's weight and cap.
    pub(crate) fn choose(
        &mut self,
        share: impl Fn(&str) -> Share,
        aging: Option<Duration>,
        now: Instant,
    ) -> Option<String> {
        let chosen = turn(&self.queues, share, aging, now)?;
        for (name, queue) in &mut self.queues {
            if *name == chosen {
                queue.passed_over = None;
            } else if queue.waiting > 0 && queue.passed_over.is_none() {
                queue.passed_over = Some(now);
            }
        }
        Some(chosen)
    }

    /// Takes one task from queue `name`, if it has one; the task counts as
    /// running here until [`finished`](Self::finished).
    pub(crate) async fn take(
        &mut self,
        connection: &Connection,
        name: &str,
    ) -> Result<Option<Taken>, String> {
        let Some(queue) = self.queues.get_mut(name) else {
            return Ok(None);
        };
        let consumer = match &queue.consumer {
            Some(consumer) => consumer.clone(),
            // Announced, not yet seen at a look: normally its submitter
            // made it; made here if an operator removed it meanwhile.
            None => match connection.make_queue(&queue.tenant, queue.priority).await {
                Ok(consumer) => queue.consumer.insert(consumer).clone(),
                Err(e) => {
                    queue.waiting = 0;
                    return Err(format!("queue {name}: {e}"));
                }
            },
        };
        // No waiting on the server: an empty queue answers at once. A queue
        // whose leader is being elected (a JetStream cluster) may not answer
        // at all: then it counts as empty until the next look.
        let pull = async {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            batch.next().await.transpose().map_err(|e| e.to_string())
        };
        let pulled = tokio::time::timeout(PULL_ANSWER, pull)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {PULL_ANSWER:?}")));
        let message = match pulled {
            Ok(Some(message)) => message,
            // Empty (another host was first), or no answer.
            other => {
                queue.waiting = 0;
                return other
                    .map(|_| None)
                    .map_err(|e| format!("pulling from {name}: {e}"));
            }
        };
        queue.waiting = queue.waiting.saturating_sub(1);
        queue.running += 1;
        let config = &consumer.cached_info().config;
        Ok(Some(Taken {
            message,
            queue: name.to_owned(),
            tenant: queue.tenant.clone(),
            priority: queue.priority,
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
        }))
    }

    /// A task taken from queue `name` is over (acknowledged or handed back).
    pub(crate) fn finished(&mut self, name: &str) {
        if let Some(queue) = self.queues.get_mut(name) {
            queue.running = queue.running.saturating_sub(1);
        }
    }
}

/// The queue whose turn it is: see the module documentation.
fn turn(
    queues: &HashMap<String, Queue>,
    share: impl Fn(&str) -> Share,
    aging: Option<Duration>,
    now: Instant,
) -> Option<String> {
    struct Tenant {
        running: usize,
        has_work: bool,
        /// The longest a queue of it has been passed over.
        oldest: Instant,
    }
    let mut tenants: BTreeMap<&str, Tenant> = BTreeMap::new();
    for queue in queues.values() {
        let tenant = tenants.entry(&queue.tenant).or_insert(Tenant {
            running: 0,
            has_work: false,
            oldest: now,
        });
        tenant.running += queue.running;
        if queue.waiting > 0 {
            tenant.has_work = true;
            tenant.oldest = tenant.oldest.min(queue.passed_over.unwrap_or(now));
        }
    }
    let mut best: Option<(&str, &Tenant, u32)> = None;
    for (name, tenant) in &tenants {
        let (weight, cap) = share(name);
        let weight = weight.max(1);
        if !tenant.has_work || cap.is_some_and(|cap| tenant.running >= cap) {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, other, other_weight)) => {
                // running / weight, compared without division.
                let mine = tenant.running as u128 * u128::from(other_weight);
                let theirs = other.running as u128 * u128::from(weight);
                mine < theirs || (mine == theirs && tenant.oldest < other.oldest)
            }
        };
        if better {
            best = Some((name, tenant, weight));
        }
    }
    let (tenant, _, _) = best?;
    let aged = |queue: &Queue| {
        let levels = match (aging, queue.passed_over) {
            (Some(step), Some(since)) => {
                (now.saturating_duration_since(since).as_nanos() / step.as_nanos().max(1)) as i64
            }
            _ => 0,
        };
        (
            i64::from(queue.priority).saturating_add(levels),
            queue.priority,
        )
    };
    queues
        .iter()
        .filter(|(_, queue)| queue.tenant == tenant && queue.waiting > 0)
        .max_by(|(a_name, a), (b_name, b)| aged(a).cmp(&aged(b)).then(b_name.cmp(a_name)))
        .map(|(name, _)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ready_subject;

    fn queues(spec: &[(&str, i32, u64, usize)]) -> HashMap<String, Queue> {
        spec.iter()
            .map(|&(tenant, priority, waiting, running)| {
                let mut queue = Queue::new(tenant.into(), priority);
                queue.waiting = waiting;
                queue.running = running;
                (queue_name(tenant, priority), queue)
            })
            .collect()
    }

    fn equal(_: &str) -> Share {
        (1, None)
    }

    #[test]
    fn the_highest_priority_of_a_tenant_goes_first() {
        let q = queues(&[("a", 0, 5, 0), ("a", 10, 1, 0), ("a", -10, 3, 0)]);
        let now = Instant::now();
        assert_eq!(turn(&q, equal, None, now), Some(queue_name("a", 10)));
    }

    #[test]
    fn the_tenant_with_the_fewest_running_for_its_weight_goes_first() {
        let now = Instant::now();
        // "big" runs 3 here, "small" 1: small's turn, even at a lower priority.
        let q = queues(&[("big", 10, 100, 3), ("small", 0, 2, 1)]);
        assert_eq!(turn(&q, equal, None, now), Some(queue_name("small", 0)));
        // With weight 4, big may run 4 for small's 1.
        let weights = |t: &str| if t == "big" { (4, None) } else { (1, None) };
        assert_eq!(turn(&q, weights, None, now), Some(queue_name("big", 10)));
    }

    #[test]
    fn a_tenant_at_its_cap_here_is_skipped_and_empty_queues_never_chosen() {
        let now = Instant::now();
        let q = queues(&[("capped", 0, 9, 1), ("other", 0, 0, 0)]);
        let cap = |t: &str| {
            if t == "capped" {
                (1, Some(1))
            } else {
                (1, None)
            }
        };
        assert_eq!(turn(&q, cap, None, now), None);
        assert_eq!(turn(&q, equal, None, now), Some(queue_name("capped", 0)));
        assert_eq!(turn(&queues(&[("a", 0, 0, 4)]), equal, None, now), None);
    }

    #[test]
    fn a_low_priority_passed_over_long_enough_overtakes() {
        let mut q = Queues {
            queues: queues(&[("a", 0, 50, 0), ("a", 2, 50, 0)]),
            looked: None,
        };
        let step = Duration::from_millis(100);
        let start = Instant::now();
        assert_eq!(q.choose(equal, Some(step), start), Some(queue_name("a", 2)));
        // Passed over for 2 steps, level 0 ties level 2 (a tie goes to the
        // higher base priority); at 3 steps it is ahead.
        assert_eq!(
            q.choose(equal, Some(step), start + step * 2),
            Some(queue_name("a", 2))
        );
        assert_eq!(
            q.choose(equal, Some(step), start + step * 3),
            Some(queue_name("a", 0))
        );
        // Served, it starts over.
        assert_eq!(
            q.choose(equal, Some(step), start + step * 3),
            Some(queue_name("a", 2))
        );
        // Without aging, strict priorities.
        assert_eq!(
            q.choose(equal, None, start + step * 100),
            Some(queue_name("a", 2))
        );
    }

    #[test]
    fn notices_add_work_and_new_queues() {
        let mut q = Queues::default();
        q.noticed(&ready_subject("t", -5));
        q.noticed(&ready_subject("t", -5));
        q.noticed("asyncer.ready.t.not-a-number");
        assert_eq!(q.queues[&queue_name("t", -5)].waiting, 2);
        assert_eq!(
            q.choose(equal, None, Instant::now()),
            Some(queue_name("t", -5))
        );
    }
}
