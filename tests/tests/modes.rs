//! Warm mode and spawn-ahead: same API, same errors, same events, isolation
//! kept, processes bounded and reaped.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use asyncer::{Error, ErrorKind, Executor, Limits, TaskEvent, TaskOptions, WarmOptions};
use common::{children, collect_events, faults, WORKER};
use faults::Pair;
use tokio::sync::Mutex;

/// These tests count this process's children: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn warm_executor(max_processes: usize, warm: WarmOptions) -> Executor {
    Executor::builder()
        .max_processes(max_processes)
        .worker_program(WORKER)
        .warm(warm)
        .build()
        .unwrap()
}

fn pids(events: &[TaskEvent]) -> HashSet<u32> {
    events.iter().filter_map(|e| e.pid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_workers_serve_many_tasks_each_in_a_fresh_instance() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = warm_executor(2, WarmOptions::default());
    let module = faults(&exec).await;
    let mut events = exec.events();
    for i in 0..20u64 {
        let sum: u64 = exec
            .submit(&module, "add", &Pair { a: i, b: 1 })
            .unwrap()
            .await
            .unwrap();
        assert_eq!(sum, i + 1);
        // Globals do not survive from one task to the next.
        let calls: u64 = exec.submit(&module, "bump", &()).unwrap().await.unwrap();
        assert_eq!(calls, 1);
    }
    let events = collect_events(&mut events, 40).await;
    assert!(pids(&events).len() <= 2, "{:?}", pids(&events));
    eprintln!("PIDS {:?} children {:?}", pids(&events), children());
    assert!(children().len() <= 2);
    exec.shutdown(Duration::from_secs(5)).await;
    assert!(children().is_empty(), "{:?}", children());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_mode_reports_the_same_errors_and_survives_guest_failures() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = warm_executor(1, WarmOptions::default());
    let module = faults(&exec).await;
    let mut events = exec.events();
    let err = exec
        .submit::<_, ()>(&module, "trap", &())
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap);
    match exec
        .submit::<_, u64>(&module, "panic", "warm")
        .unwrap()
        .await
    {
        Err(Error::GuestPanic { message }) => assert_eq!(message, "guest says: warm"),
        other => panic!("expected a panic, got {other:?}"),
    }
    let err = exec
        .submit_with::<_, u64>(
            &module,
            "hog",
            &256u64,
            TaskOptions::new().limits(Limits::default().with_max_memory_bytes(32 << 20)),
        )
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimit);
    let ok: u64 = exec
        .submit(&module, "add", &Pair { a: 1, b: 2 })
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok, 3);
    // Guest failures are replies: the same worker served all four.
    let events = collect_events(&mut events, 4).await;
    assert_eq!(pids(&events).len(), 1, "{events:?}");
    exec.abort().await;
    assert!(children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_workers_are_replaced_after_kills_and_their_task_budget() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = warm_executor(1, WarmOptions::default().max_tasks(3));
    let module = faults(&exec).await;
    let mut events = exec.events();
    for _ in 0..7 {
        let _: u64 = exec
            .submit(&module, "add", &Pair { a: 1, b: 1 })
            .unwrap()
            .await
            .unwrap();
    }
    let budget = collect_events(&mut events, 7).await;
    assert_eq!(pids(&budget).len(), 3, "7 tasks at 3 per worker");

    let err = exec
        .submit_with::<_, u64>(
            &module,
            "slow",
            &10_000u64,
            TaskOptions::new().limits(Limits::default().with_timeout(Duration::from_millis(300))),
        )
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let _: u64 = exec
        .submit(&module, "add", &Pair { a: 1, b: 1 })
        .unwrap()
        .await
        .unwrap();
    // The worker cut the WASI sleep itself and replied, so it stays in the
    // pool (its store was dropped); a worker the host must kill is replaced
    // (below).
    collect_events(&mut events, 2).await;

    let victim = exec.submit::<_, u64>(&module, "slow", &10_000u64).unwrap();
    let pid = loop {
        if let Some(pid) = children().first().copied() {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert_eq!(victim.await.unwrap_err().kind(), ErrorKind::WorkerCrashed);
    let ok: u64 = exec
        .submit(&module, "add", &Pair { a: 2, b: 2 })
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ok, 4);
    exec.shutdown(Duration::from_secs(5)).await;
    assert!(children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_workers_that_grow_too_much_are_replaced() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = warm_executor(1, WarmOptions::default().max_rss_bytes(1));
    let module = faults(&exec).await;
    let mut events = exec.events();
    for _ in 0..3 {
        let _: u64 = exec
            .submit(&module, "add", &Pair { a: 1, b: 1 })
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(pids(&collect_events(&mut events, 3).await).len(), 3);
    exec.shutdown(Duration::from_secs(5)).await;
    assert!(children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_mode_keeps_at_most_max_processes_alive() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = warm_executor(2, WarmOptions::default());
    let module = faults(&exec).await;
    let handles: Vec<_> = (0..40)
        .map(|_| exec.submit::<_, u64>(&module, "slow", &5u64).unwrap())
        .collect();
    let watcher = tokio::spawn(async {
        let mut peak = 0;
        for _ in 0..50 {
            peak = peak.max(children().len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak
    });
    for handle in handles {
        assert_eq!(handle.await.unwrap(), 5);
    }
    assert!(watcher.await.unwrap() <= 2);
    exec.shutdown(Duration::from_secs(5)).await;
    assert!(children().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_ahead_workers_wait_idle_and_each_serves_one_task() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = Executor::builder()
        .max_processes(2)
        .worker_program(WORKER)
        .prestart(2)
        .build()
        .unwrap();
    assert_eq!(children().len(), 2, "two idle workers wait");
    let module = faults(&exec).await;
    let mut events = exec.events();
    for i in 0..6u64 {
        let sum: u64 = exec
            .submit(&module, "add", &Pair { a: i, b: i })
            .unwrap()
            .await
            .unwrap();
        assert_eq!(sum, 2 * i);
    }
    let events = collect_events(&mut events, 6).await;
    assert_eq!(pids(&events).len(), 6, "one process per task");
    assert!(events
        .iter()
        .all(|e| e.exit_status.as_deref() == Some("exit code 0")));
    exec.shutdown(Duration::from_secs(5)).await;
    assert!(
        children().is_empty(),
        "idle workers are reaped at shutdown: {:?}",
        children()
    );
}

/// Returns the byte its memory held at 60000 when it started, then leaves
/// 0xAB there: a second task that saw 0xAB would share the first's memory.
const PEEK_POKE_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  (data (i32.const 16) "\00")
  (func (export "task:peek_poke") (param i32 i32) (result i64)
    (i32.store8 (i32.const 17) (i32.load8_u (i32.const 60000)))
    (i32.store8 (i32.const 60000) (i32.const 0xAB))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pooled_instances_start_clean_and_modules_too_big_for_the_pool_still_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = warm_executor(1, WarmOptions::default());
    // The peek-poke guest with `extra` declared beside its memory.
    let load = |extra: &str| {
        let memory = "(memory (export \"memory\") 1)";
        let wat = PEEK_POKE_WAT.replace(memory, &format!("{memory} {extra}"));
        exec.load_bytes(wat::parse_str(wat).unwrap())
    };
    let module = load("").await.unwrap();
    // Six memories: more than a pool slot holds, so this module runs with
    // instances made on demand, in the same worker.
    let big = load("(memory 1) (memory 1) (memory 1) (memory 1) (memory 1)")
        .await
        .unwrap();
    // And a table of 1,000,000 entries (the most a task may have), which a
    // slot holds.
    let table = load("(table 1000000 funcref)").await.unwrap();
    let mut events = exec.events();
    for round in 0..5 {
        for module in [&module, &big, &table] {
            let before = exec
                .submit_bytes(module, "peek_poke", vec![])
                .unwrap()
                .await
                .unwrap();
            assert_eq!(before, [0], "round {round}: memory left by an earlier task");
        }
    }
    let events = collect_events(&mut events, 15).await;
    assert_eq!(pids(&events).len(), 1, "one warm worker served all");
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactors_initialize_runs_before_each_task_fresh_and_warm() {
    let _one = ONE_AT_A_TIME.lock().await;
    // `_initialize` sets the byte the task returns; a task that ran without
    // it would return 0.
    let wat = r#"(module
      (memory (export "memory") 1)
      (func (export "_initialize") (i32.store8 (i32.const 17) (i32.const 7)))
      (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
      (data (i32.const 16) "\00")
      (func (export "task:seven") (param i32 i32) (result i64)
        (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2))))"#;
    for exec in [
        Executor::builder()
            .max_processes(1)
            .worker_program(WORKER)
            .build()
            .unwrap(),
        warm_executor(1, WarmOptions::default()),
    ] {
        let module = exec.load_bytes(wat::parse_str(wat).unwrap()).await.unwrap();
        for _ in 0..3 {
            let output = exec
                .submit_bytes(&module, "seven", vec![])
                .unwrap()
                .await
                .unwrap();
            assert_eq!(output, [7]);
        }
        exec.shutdown(Duration::from_secs(5)).await;
    }
}
