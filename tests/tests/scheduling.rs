//! The scheduler with real worker processes: a small tenant is not held
//! back by a big one, priorities order the queue, deadlines expire, bounds
//! refuse at once.

mod common;

use std::time::Duration;

use asyncer::{Error, ErrorKind, Executor, Priority, TaskOptions};

fn executor(slots: usize, max_queued: Option<usize>) -> Executor {
    let mut builder = Executor::builder()
        .max_processes(slots)
        .worker_program(common::WORKER);
    if let Some(max) = max_queued {
        builder = builder.max_queued(max);
    }
    builder.build().expect("executor starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_1000_tasks_does_not_hold_back_one_with_10() {
    let exec = executor(2, None);
    let faults = common::faults(&exec).await;
    let slow = |tenant: &str| TaskOptions::new().tenant(tenant);
    let big: Vec<_> = (0..1000)
        .map(|_| {
            exec.submit_with::<_, u64>(&faults, "slow", &20u64, slow("big"))
                .unwrap()
        })
        .collect();
    let small: Vec<_> = (0..10)
        .map(|_| {
            exec.submit_with::<_, u64>(&faults, "slow", &20u64, slow("small"))
                .unwrap()
        })
        .collect();
    for handle in small {
        tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("the small tenant's tasks finish")
            .unwrap();
    }
    let (_, big_queued) = exec.queued(Some("big"));
    assert!(
        big_queued >= 950,
        "only {big_queued} of the big tenant's tasks still queued"
    );
    for handle in &big {
        handle.cancel();
    }
    exec.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_order_the_queue_and_deadlines_expire() {
    let exec = executor(1, None);
    let faults = common::faults(&exec).await;
    let mut events = exec.events();
    let busy = exec.submit::<_, u64>(&faults, "slow", &300u64).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let submit = |priority: i32, uid: &str| {
        exec.submit_with::<_, u64>(
            &faults,
            "slow",
            &1u64,
            TaskOptions::new().priority(priority).uid(uid),
        )
        .unwrap()
    };
    let low = submit(Priority::LOW, "low");
    let normal = submit(Priority::NORMAL, "normal");
    let urgent = submit(Priority::URGENT, "urgent");
    let late = exec
        .submit_with::<_, u64>(
            &faults,
            "slow",
            &1u64,
            TaskOptions::new()
                .uid("late")
                .priority(Priority::URGENT)
                .start_within(Duration::from_millis(100)),
        )
        .unwrap();
    match late.await {
        Err(Error::Expired { waited }) => assert!(waited >= Duration::from_millis(100)),
        other => panic!("expected expired, got {other:?}"),
    }
    for handle in [busy, low, normal, urgent] {
        handle.await.unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..5 {
        let event = events.recv().await.unwrap();
        if event.error == Some(ErrorKind::Expired) {
            assert!(event.started_at.is_none() && event.pid.is_none());
            assert!(event.queue_wait() >= Duration::from_millis(100));
            continue;
        }
        if event.uid.len() < 10 {
            order.push(event.uid.clone());
        }
    }
    assert_eq!(order, ["urgent", "normal", "low"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_room_lets_a_caller_wait() {
    let exec = executor(1, Some(2));
    let faults = common::faults(&exec).await;
    let busy = exec.submit::<_, u64>(&faults, "slow", &200u64).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued: Vec<_> = (0..2)
        .map(|_| exec.submit::<_, u64>(&faults, "slow", &1u64).unwrap())
        .collect();
    let refused = exec.submit::<_, u64>(&faults, "slow", &1u64).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::QueueFull);
    assert!(
        matches!(
            refused,
            Error::QueueFull {
                tenant: None,
                limit: 2
            }
        ),
        "{refused}"
    );
    // Waiting for room, then submitting, works.
    tokio::time::timeout(Duration::from_secs(10), exec.room(None))
        .await
        .expect("room comes when the busy task ends");
    let extra = exec.submit::<_, u64>(&faults, "slow", &1u64).unwrap();
    for handle in queued.into_iter().chain([busy, extra]) {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_tasks_are_retried_with_backoff_and_guest_errors_are_not() {
    use asyncer::RetryPolicy;
    let exec = Executor::builder()
        .max_processes(2)
        .worker_program(common::WORKER)
        .retry(RetryPolicy::new(3).backoff(Duration::from_millis(100), Duration::from_secs(1)))
        .build()
        .unwrap();
    let faults = common::faults(&exec).await;
    let mut events = exec.events();
    // `exit` ends its worker: worker_crashed, every time.
    let started = std::time::Instant::now();
    let handle = exec.submit::<_, ()>(&faults, "exit", &3i32).unwrap();
    let error = handle.await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WorkerCrashed, "{error}");
    // Two waits: at least half of 100 ms and of 200 ms (jitter).
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let event = events.recv().await.unwrap();
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
    // A deterministic guest error runs once.
    let error = exec
        .submit::<_, u64>(&faults, "divide", &faults::Pair { a: 1, b: 0 })
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::GuestError);
    assert_eq!(events.recv().await.unwrap().attempt, 1);
    // A task's own policy wins over the executor's: here, no second run.
    let once = TaskOptions::new().retry(RetryPolicy::new(1));
    exec.submit_with::<_, ()>(&faults, "exit", &3i32, once)
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(events.recv().await.unwrap().attempt, 1);
}
