//! The scheduler through the runner and owners, with a scripted backend:
//! priorities with aging, tenants by weight and cap, bounds and deadlines.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::schedule::{Policy, TenantSettings};

/// Answers the next call, returning its uid.
async fn run_next(h: &mut Harness) -> String {
    let call = h.call().await;
    let uid = call.task.uid.clone();
    call.answer.send(ok_run(&[], 1)).ok();
    uid
}

fn submit(h: &Harness, uid: &str, tenant: &str, priority: i32) -> TaskHandle<Vec<u8>> {
    h.try_submit_as(uid, vec![], tenant, priority, None)
        .expect("accepted")
}

#[tokio::test]
async fn higher_priorities_run_first_and_fifo_within_a_level() {
    let mut h = harness(1);
    // The only slot is busy: everything else queues.
    let _busy = submit(&h, "busy", "", 0);
    let busy = h.call().await;
    let _handles: Vec<_> = [
        ("low-1", -5),
        ("mid-1", 0),
        ("high-1", 5),
        ("mid-2", 0),
        ("low-2", -5),
        ("high-2", 5),
    ]
    .into_iter()
    .map(|(uid, priority)| submit(&h, uid, "", priority))
    .collect();
    settle().await;
    busy.answer.send(ok_run(&[], 1)).ok();
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(run_next(&mut h).await);
    }
    assert_eq!(
        order,
        ["high-1", "high-2", "mid-1", "mid-2", "low-1", "low-2"]
    );
}

#[tokio::test]
async fn a_low_priority_task_ages_past_newer_high_ones() {
    let policy = Policy {
        aging: Some(Duration::from_millis(20)),
        ..Policy::fifo(1)
    };
    let mut h = harness_with(policy);
    let _busy = submit(&h, "busy", "", 0);
    let busy = h.call().await;
    let _low = submit(&h, "low", "", 0);
    // 3 levels higher, but 100 ms (5 agings) younger.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _high = submit(&h, "high", "", 3);
    busy.answer.send(ok_run(&[], 1)).ok();
    assert_eq!(run_next(&mut h).await, "low");
    assert_eq!(run_next(&mut h).await, "high");
}

#[tokio::test]
async fn a_small_tenant_is_not_held_back_by_a_big_one() {
    let mut h = harness(2);
    let big: Vec<_> = (0..1000)
        .map(|i| submit(&h, &format!("big-{i}"), "big", 0))
        .collect();
    let small: Vec<_> = (0..10)
        .map(|i| submit(&h, &format!("small-{i}"), "small", 0))
        .collect();
    // Run tasks one by one until every small one ran.
    let mut ran = Vec::new();
    while !(0..10).all(|i| ran.contains(&format!("small-{i}"))) {
        ran.push(run_next(&mut h).await);
        assert!(
            ran.len() <= 40,
            "the small tenant waited behind the big one: {ran:?}"
        );
    }
    // Alternating: about as many big tasks as small ones ran.
    let big_ran = ran.iter().filter(|uid| uid.starts_with("big")).count();
    assert!(big_ran <= 12, "{big_ran} big tasks ran meanwhile: {ran:?}");
    assert!(h.runner.queued("big").1 >= 980);
    drop((big, small));
}

#[tokio::test]
async fn weights_share_slots_and_caps_bound_a_tenant() {
    let mut tenants = HashMap::new();
    tenants.insert("heavy".to_owned(), TenantSettings::new().weight(3));
    tenants.insert("capped".to_owned(), TenantSettings::new().max_running(1));
    let mut h = harness_with(Policy {
        tenants,
        ..Policy::fifo(4)
    });
    let _handles: Vec<_> = (0..20)
        .flat_map(|i| {
            [
                submit(&h, &format!("heavy-{i}"), "heavy", 0),
                submit(&h, &format!("light-{i}"), "light", 0),
                submit(&h, &format!("capped-{i}"), "capped", 0),
            ]
        })
        .collect();
    // The first 4 slots: 3 to the tenant of weight 3... once the others have
    // one each: shares follow running/weight.
    let mut calls = Vec::new();
    for _ in 0..4 {
        calls.push(h.call().await);
    }
    let running: Vec<&str> = calls.iter().map(|c| c.task.tenant.as_str()).collect();
    assert_eq!(
        running.iter().filter(|t| **t == "capped").count(),
        1,
        "{running:?}"
    );
    h.no_call().await;
    // Free the capped tenant's slot: it may take it again, but never two.
    let capped = calls
        .iter()
        .position(|c| c.task.tenant == "capped")
        .expect("capped ran");
    let call = calls.remove(capped);
    call.answer.send(ok_run(&[], 1)).ok();
    calls.push(h.call().await);
    let capped_running = calls.iter().filter(|c| c.task.tenant == "capped").count();
    assert!(capped_running <= 1);
    // Over many slots, heavy gets about 3 for light's 1.
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..24 {
        let call = calls.remove(0);
        *count.entry(call.task.tenant.clone()).or_default() += 1;
        call.answer.send(ok_run(&[], 1)).ok();
        calls.push(h.call().await);
    }
    let (heavy, light) = (count["heavy"], count.get("light").copied().unwrap_or(0));
    assert!(
        heavy >= 2 * light,
        "heavy {heavy}, light {light}: {count:?}"
    );
    assert!(
        count.get("capped").copied().unwrap_or(0) <= 24 / 4 + 1,
        "{count:?}"
    );
}

#[tokio::test]
async fn bounds_refuse_at_once_and_room_waits_for_a_place() {
    let mut h = harness_with(Policy {
        max_queued: Some(3),
        max_queued_per_tenant: Some(2),
        ..Policy::fifo(1)
    });
    let _busy = submit(&h, "busy", "", 0);
    let busy = h.call().await;
    let _a = submit(&h, "a-1", "a", 0);
    let _b = submit(&h, "a-2", "a", 0);
    match h.try_submit_as("a-3", vec![], "a", 0, None) {
        Err(Error::QueueFull { tenant, limit }) => {
            assert_eq!((tenant.as_deref(), limit), (Some("a"), 2));
        }
        other => panic!(
            "expected queue_full for the tenant, got {:?}",
            other.map(|h| h.uid().to_owned())
        ),
    }
    let _c = submit(&h, "b-1", "b", 0);
    match h.try_submit_as("b-2", vec![], "b", 0, None) {
        Err(Error::QueueFull { tenant, limit }) => assert_eq!((tenant, limit), (None, 3)),
        other => panic!(
            "expected queue_full for the executor, got {:?}",
            other.map(|h| h.uid().to_owned())
        ),
    }
    assert_eq!(h.runner.queued("a"), (3, 2));
    // Room comes when a queued task leaves (here: gets the slot).
    {
        let room = h.runner.room("b");
        tokio::pin!(room);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), room.as_mut())
                .await
                .is_err(),
            "no room yet"
        );
        busy.answer.send(ok_run(&[], 1)).ok();
        within(room).await;
    }
    assert_eq!(h.runner.queued("").0, 2);
    let b2 = h.try_submit_as("b-2", vec![], "b", 0, None).expect("room");
    assert_eq!(h.runner.queued("").0, 3);
    assert!(matches!(
        h.try_submit_as("c-1", vec![], "c", 0, None),
        Err(Error::QueueFull { .. })
    ));
    // A cancelled queued task gives its place back as soon as its owner
    // sees the cancel.
    b2.cancel();
    within(b2).await.expect_err("cancelled");
    assert_eq!(h.runner.queued("").0, 2);
    assert!(h.try_submit_as("c-1", vec![], "c", 0, None).is_ok());
}

#[tokio::test]
async fn a_tenant_with_a_bound_of_its_own_keeps_it() {
    let mut tenants = HashMap::new();
    tenants.insert("vip".to_owned(), TenantSettings::new().max_queued(4));
    let mut h = harness_with(Policy {
        max_queued_per_tenant: Some(1),
        tenants,
        ..Policy::fifo(1)
    });
    let _busy = submit(&h, "busy", "", 0);
    let _call = h.call().await;
    let vip: Vec<_> = (0..4)
        .map(|i| submit(&h, &format!("vip-{i}"), "vip", 0))
        .collect();
    assert!(matches!(
        h.try_submit_as("vip-4", vec![], "vip", 0, None),
        Err(Error::QueueFull { limit: 4, .. })
    ));
    let _other = submit(&h, "other-0", "other", 0);
    assert!(matches!(
        h.try_submit_as("other-1", vec![], "other", 0, None),
        Err(Error::QueueFull { limit: 1, .. })
    ));
    drop(vip);
}

#[tokio::test]
async fn a_task_that_cannot_start_in_time_expires_without_running() {
    let mut h = harness(1);
    let _busy = submit(&h, "busy", "", 0);
    let busy = h.call().await;
    let late = h
        .try_submit_as("late", vec![], "", 0, Some(Duration::from_millis(50)))
        .expect("accepted");
    let patient = h
        .try_submit_as("patient", vec![], "", 0, Some(Duration::from_secs(30)))
        .expect("accepted");
    match within(late).await {
        Err(Error::Expired { waited }) => {
            assert!(waited >= Duration::from_millis(50), "{waited:?}")
        }
        other => panic!("expected expired, got {other:?}"),
    }
    let event = h.event().await;
    assert_eq!(event.uid, "late");
    assert_eq!(event.error, Some(ErrorKind::Expired));
    assert!(event.started_at.is_none());
    assert!(
        event.queue_wait() >= Duration::from_millis(50),
        "{:?}",
        event.queue_wait()
    );
    // It left the queue: the next slot goes to the patient one.
    assert_eq!(h.runner.queued("").0, 1);
    busy.answer.send(ok_run(&[], 1)).ok();
    assert_eq!(h.event().await.uid, "busy");
    assert_eq!(run_next(&mut h).await, "patient");
    within(patient).await.expect("ran");
}

#[tokio::test]
async fn cancelled_queued_tasks_leave_no_memory_behind() {
    let h = harness(1);
    let _busy = submit(&h, "busy", "", 0);
    for round in 0..20 {
        let handles: Vec<_> = (0..500)
            .map(|i| submit(&h, &format!("{round}-{i}"), "t", 0))
            .collect();
        for handle in &handles {
            handle.cancel();
        }
        drop(handles);
        settle().await;
        assert_eq!(h.runner.queued("t").1, 0);
    }
    let retained = h.runner.retained();
    assert!(
        retained < 1100,
        "{retained} entries kept for 0 queued tasks"
    );
}

fn crashed(pid: u32) -> Run {
    Run::new(
        Err(Error::WorkerCrashed {
            pid,
            status: "signal 9".into(),
            stderr_tail: String::new(),
        }),
        SystemTime::now(),
    )
}

/// Submits with `retry`.
fn submit_retrying(h: &Harness, uid: &str, retry: crate::RetryPolicy) -> TaskHandle<Vec<u8>> {
    let mut assignment = h.assignment(uid, vec![7]);
    assignment.retry = Some(retry);
    h.runner
        .submit(assignment, Decode::Fn(raw))
        .expect("accepted")
}

#[tokio::test]
async fn a_crashed_run_is_retried_with_backoff_until_it_succeeds() {
    let mut h = harness(1);
    let retry =
        crate::RetryPolicy::new(3).backoff(Duration::from_millis(40), Duration::from_secs(1));
    let handle = submit_retrying(&h, "flaky", retry);
    assert_eq!(handle.attempt(), 1);
    let first = h.call().await;
    assert_eq!(first.task.input, vec![7]);
    let crashed_at = std::time::Instant::now();
    first.answer.send(crashed(11)).ok();
    let second = h.call().await;
    // Backoff: at least half the initial delay (jitter), with no slot held.
    assert!(crashed_at.elapsed() >= Duration::from_millis(20));
    assert_eq!(second.task.input, vec![7], "the same input again");
    assert_eq!(handle.attempt(), 2);
    second.answer.send(ok_run(&[1], 12)).ok();
    assert_eq!(within(handle).await.expect("ok"), vec![1]);
    let event = h.event().await;
    assert!(event.is_ok());
    assert_eq!(event.attempt, 2);
    assert_eq!(event.pid, Some(12));
}

#[tokio::test]
async fn retries_end_with_the_last_error_and_say_how_many_runs_were_made() {
    let mut h = harness(1);
    let retry =
        crate::RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(5));
    let handle = submit_retrying(&h, "doomed", retry);
    for pid in 1..=3 {
        h.call().await.answer.send(crashed(pid)).ok();
    }
    match within(handle).await {
        Err(Error::WorkerCrashed { pid, .. }) => assert_eq!(pid, 3),
        other => panic!("expected the last crash, got {other:?}"),
    }
    let event = h.event().await;
    assert_eq!(event.attempt, 3);
    assert!(
        event
            .message
            .as_deref()
            .unwrap_or_default()
            .ends_with("(after 3 attempts)"),
        "{:?}",
        event.message
    );
    h.no_call().await;

    // A guest's own error is not retried unless asked.
    let handle = submit_retrying(&h, "guest", crate::RetryPolicy::new(3));
    h.call()
        .await
        .answer
        .send(Run::new(
            Err(Error::Guest {
                message: "no".into(),
            }),
            SystemTime::now(),
        ))
        .ok();
    assert!(matches!(within(handle).await, Err(Error::Guest { .. })));
    h.no_call().await;
    assert_eq!(h.event().await.attempt, 1);
}

#[tokio::test]
async fn a_task_cancelled_while_it_waits_to_retry_ends_cancelled() {
    let mut h = harness(1);
    let retry =
        crate::RetryPolicy::new(5).backoff(Duration::from_secs(30), Duration::from_secs(30));
    let handle = submit_retrying(&h, "waiting", retry);
    h.call().await.answer.send(crashed(1)).ok();
    settle().await;
    handle.cancel();
    assert!(matches!(within(handle).await, Err(Error::Cancelled)));
    h.no_call().await;
}
