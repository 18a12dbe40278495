//! Warm mode and spawn-ahead: same API, same errors, same events, isolation
//! kept, processes bounded and reaped.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use asyncer::{Error, ErrorKind, Executor, Launch, Limits, TaskEvent, TaskOptions, WarmOptions};
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
    common::kill(pid);
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
    for launch in [Launch::Spawn, Launch::Fork] {
        started_ahead(launch).await;
    }
}

async fn started_ahead(launch: Launch) {
    let exec = Executor::builder()
        .max_processes(2)
        .worker_program(WORKER)
        .prestart(2)
        .launch(launch)
        .build()
        .unwrap();
    // Spawned at once; forked on the runtime, moments later.
    common::wait_until(|| children().len() >= 2).await;
    assert_eq!(children().len(), 2, "{launch:?}: two idle workers wait");
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

/// Returns 16 bytes from WASI's `random_get`.
const RANDOM_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "task:random") (param i32 i32) (result i64)
    (drop (call $random (i32.const 100) (i32.const 16)))
    (i32.store8 (i32.const 99) (i32.const 0))
    (i64.or (i64.shl (i64.const 99) (i64.const 32)) (i64.const 17))))"#;

fn forking_executor(max_processes: usize) -> Executor {
    Executor::builder()
        .max_processes(max_processes)
        .worker_program(WORKER)
        .launch(Launch::Fork)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forked_workers_start_clean_from_a_template_that_runs_no_task() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = forking_executor(2);
    let module = faults(&exec).await;
    let peek_poke = exec
        .load_bytes(wat::parse_str(PEEK_POKE_WAT).unwrap())
        .await
        .unwrap();
    let mut events = exec.events();
    for round in 0..10u64 {
        // A guest global, and a byte of memory, left by the last task.
        let calls: u64 = exec.submit(&module, "bump", &()).unwrap().await.unwrap();
        assert_eq!(calls, 1, "round {round}: a global survived");
        let before = exec
            .submit_bytes(&peek_poke, "peek_poke", vec![])
            .unwrap()
            .await
            .unwrap();
        assert_eq!(before, [0], "round {round}: memory survived");
    }
    let events = collect_events(&mut events, 20).await;
    assert_eq!(
        pids(&events).len(),
        20,
        "a process of its own for each task"
    );
    // Each child seeds its own random numbers: none inherited from the
    // template, so no two tasks see the same.
    let random = exec
        .load_bytes(wat::parse_str(RANDOM_WAT).unwrap())
        .await
        .unwrap();
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let bytes = exec
            .submit_bytes(&random, "random", vec![])
            .unwrap()
            .await
            .unwrap();
        assert_eq!(bytes.len(), 16);
        assert!(
            seen.insert(bytes),
            "two forked tasks drew the same random bytes"
        );
    }
    assert!(events
        .iter()
        .all(|e| e.exit_status.as_deref() == Some("exit code 0")));
    // One template served them all; it holds no task's pipes (nothing a task
    // had open can reach the next one through it): its control socket,
    // /dev/null, the pipe of its own stderr, the artifacts it loaded and its
    // `/proc/self/statm`.
    let templates = common::templates();
    assert_eq!(templates.len(), 1, "{templates:?}");
    for (fd, target) in common::open_fds(templates[0]) {
        match fd {
            0 => assert!(target.starts_with("socket:"), "fd 0 -> {target}"),
            1 => assert_eq!(target, "/dev/null"),
            2 => assert!(target.starts_with("pipe:"), "fd 2 -> {target}"),
            _ => assert!(
                target.ends_with(".cwasm") || target.ends_with("/statm"),
                "fd {fd} -> {target}"
            ),
        }
    }
    exec.shutdown(Duration::from_secs(5)).await;
    assert!(children().is_empty());
    assert!(
        common::templates().is_empty(),
        "the template is reaped at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_template_is_replaced_and_no_task_is_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = forking_executor(2);
    let module = faults(&exec).await;
    let _: u64 = exec.submit(&module, "slow", &1u64).unwrap().await.unwrap();
    let first = common::templates();
    assert_eq!(first.len(), 1);
    // Two tasks running in children of the old template, more queued.
    let handles: Vec<_> = (0..12u64)
        .map(|i| exec.submit::<_, u64>(&module, "slow", &(100 + i)).unwrap())
        .collect();
    common::wait_until(|| children().len() >= 2).await;
    common::kill(first[0]);
    // The running ones were the executor's children, not the template's:
    // they finish; the queued ones run in children of a new template.
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), 100 + i as u64);
    }
    let now = common::templates();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, first, "a new template");
    drop(exec);
    assert!(
        common::wait_until(|| common::templates().is_empty()).await,
        "a dropped executor's template ends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_program_that_cannot_be_a_template_is_spawned_instead() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A worker that ignores `--template`: it reads its stdin (the control
    // socket) as a request and fails, so the executor spawns workers.
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("plain-worker");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --template ] && exit 7; done\nexec {WORKER} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let exec = Executor::builder()
        .max_processes(1)
        .worker_program(&program)
        .build()
        .unwrap();
    let module = faults(&exec).await;
    for i in 0..3u64 {
        let sum: u64 = exec
            .submit(&module, "add", &Pair { a: i, b: 1 })
            .unwrap()
            .await
            .unwrap();
        assert_eq!(sum, i + 1);
    }
    assert!(common::templates().is_empty());
    exec.shutdown(Duration::from_secs(5)).await;
}
