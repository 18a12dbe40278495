//! Hostile and broken guests: each ends in its exact error kind, within its
//! bound, and the executor keeps working.

mod common;

use std::time::{Duration, Instant};

use asyncer::{Error, ErrorKind, Executor, Limits, Module, TaskOptions};
use common::{executor, faults};

/// The ABI exports every hand-written guest needs.
const ABI: &str = r#"
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
"#;

async fn wat(exec: &Executor, body: &str) -> Module {
    let text = format!("(module {ABI} {body})");
    exec.load_bytes(wat::parse_str(&text).expect("valid wat"))
        .await
        .expect("module loads")
}

/// Runs `task` with `limits` and returns its error and how long it took.
async fn fail(exec: &Executor, module: &Module, task: &str, limits: Limits) -> (Error, Duration) {
    let start = Instant::now();
    let result = exec
        .submit_bytes_with(module, task, vec![], TaskOptions::new().limits(limits))
        .expect("submitted")
        .await;
    let took = start.elapsed();
    (result.expect_err("the task must fail"), took)
}

fn assert_kind(error: &Error, kind: ErrorKind) {
    assert_eq!(error.kind(), kind, "{error}");
}

/// Slack for process start-up and a loaded CI machine.
const SLACK: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_times_out() {
    let exec = executor(2);
    let module = wat(
        &exec,
        r#"(func (export "task:spin") (param i32 i32) (result i64) (loop (br 0)) i64.const 0)"#,
    )
    .await;
    let timeout = Duration::from_millis(500);
    let (err, took) = fail(
        &exec,
        &module,
        "spin",
        Limits::default().with_timeout(timeout),
    )
    .await;
    assert!(err.is_timeout(), "{err}");
    assert!(took < timeout + SLACK, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_in_the_start_function_times_out() {
    let exec = executor(2);
    let module = wat(
        &exec,
        r#"(func $spin (loop (br 0)))
           (start $spin)
           (func (export "task:never") (param i32 i32) (result i64) i64.const 0)"#,
    )
    .await;
    let timeout = Duration::from_millis(500);
    let (err, took) = fail(
        &exec,
        &module,
        "never",
        Limits::default().with_timeout(timeout),
    )
    .await;
    assert_kind(&err, ErrorKind::Timeout);
    assert!(took < timeout + SLACK, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_limit() {
    let exec = executor(2);
    let module = wat(
        &exec,
        r#"(func (export "task:bomb") (param i32 i32) (result i64)
             (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
             i64.const 0)"#,
    )
    .await;
    let (err, _) = fail(
        &exec,
        &module,
        "bomb",
        Limits::default().with_max_memory_bytes(32 << 20),
    )
    .await;
    assert_kind(&err, ErrorKind::MemoryLimit);
    assert!(err.to_string().contains("limit"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_initial_memory_hits_the_memory_limit() {
    let exec = executor(2);
    let text = r#"(module
        (memory (export "memory") 60000)
        (func (export "asyncer_alloc") (param i32) (result i32) i32.const 0)
        (func (export "task:big") (param i32 i32) (result i64) i64.const 0))"#;
    let module = exec
        .load_bytes(wat::parse_str(text).unwrap())
        .await
        .unwrap();
    let (err, _) = fail(
        &exec,
        &module,
        "big",
        Limits::default().with_max_memory_bytes(64 << 20),
    )
    .await;
    assert_kind(&err, ErrorKind::MemoryLimit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_guest_allocating_too_much_hits_the_memory_limit() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let err = exec
        .submit_with::<_, u64>(
            &module,
            "hog",
            &256u64,
            TaskOptions::new().limits(Limits::default().with_max_memory_bytes(64 << 20)),
        )
        .unwrap()
        .await
        .unwrap_err();
    assert_kind(&err, ErrorKind::MemoryLimit);
    // Within the limit, the same task succeeds.
    let kept: u64 = exec.submit(&module, "hog", &8u64).unwrap().await.unwrap();
    assert_eq!(kept, 8 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_recursion_is_a_stack_overflow_trap() {
    let exec = executor(2);
    let module = wat(
        &exec,
        r#"(func $rec (export "task:rec") (param i32 i32) (result i64)
             (call $rec (local.get 0) (local.get 1)))"#,
    )
    .await;
    for limits in [
        Limits::default(),
        Limits::default().with_max_wasm_stack(64 << 10),
    ] {
        match fail(&exec, &module, "rec", limits).await.0 {
            Error::Trap { code, .. } => assert_eq!(code.as_deref(), Some("StackOverflow")),
            other => panic!("expected a stack overflow trap, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dividing_by_zero_is_a_trap_with_its_code() {
    let exec = executor(2);
    let module = wat(
        &exec,
        r#"(func (export "task:div") (param i32 i32) (result i64)
             (drop (i32.div_s (i32.const 1) (local.get 1))) i64.const 0)"#,
    )
    .await;
    match fail(&exec, &module, "div", Limits::default()).await.0 {
        Error::Trap { code, message, .. } => {
            assert_eq!(code.as_deref(), Some("IntegerDivisionByZero"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burning_fuel_runs_out_and_metered_runs_report_fuel() {
    let exec = executor(2);
    let module = wat(
        &exec,
        r#"(func (export "task:burn") (param i32 i32) (result i64) (loop (br 0)) i64.const 0)
           (data (i32.const 16) "\00\2a")
           (func (export "task:small") (param i32 i32) (result i64)
             (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2)))"#,
    )
    .await;
    let (err, _) = fail(
        &exec,
        &module,
        "burn",
        Limits::default().with_fuel(1_000_000),
    )
    .await;
    assert_kind(&err, ErrorKind::OutOfFuel);

    let mut events = exec.events();
    let out: u8 = exec
        .submit_with(
            &module,
            "small",
            &(),
            TaskOptions::new()
                .uid("small")
                .limits(Limits::default().with_fuel(1_000)),
        )
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out, 42);
    // The burn task's event may arrive after its handle resolved: pick ours.
    let event = loop {
        let event = events.recv().await.unwrap();
        if event.uid == "small" {
            break event;
        }
    };
    let fuel = event.fuel_consumed.expect("metered");
    assert!(fuel > 0 && fuel < 1_000, "{fuel}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_result_pointers_lengths_and_envelopes_are_decode_errors() {
    let exec = executor(2);
    let module = wat(
        &exec,
        r#"(func (export "task:oob") (param i32 i32) (result i64)
             (i64.or (i64.shl (i64.const 0xfff0) (i64.const 32)) (i64.const 100)))
           (func (export "task:huge_len") (param i32 i32) (result i64)
             (i64.const 0xffffffff))
           (data (i32.const 64) "\07junk")
           (func (export "task:bad_tag") (param i32 i32) (result i64)
             (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 5)))
           (data (i32.const 128) "\01\ff\ff\ff\ff\0f")
           (func (export "task:bad_message") (param i32 i32) (result i64)
             (i64.or (i64.shl (i64.const 128) (i64.const 32)) (i64.const 6)))
           (func (export "task:empty") (param i32 i32) (result i64) (i64.const 0))"#,
    )
    .await;
    for task in ["oob", "huge_len", "bad_tag", "bad_message", "empty"] {
        let (err, _) = fail(&exec, &module, task, Limits::default()).await;
        assert_kind(&err, ErrorKind::Decode);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_over_the_limit_is_output_too_large() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let big = vec![7u8; 4096];
    let limits = Limits::default().with_max_output_bytes(1024);
    let err = exec
        .submit_with::<_, Vec<u8>>(
            &module,
            "echo",
            &big,
            TaskOptions::new().limits(limits.clone()),
        )
        .unwrap()
        .await
        .unwrap_err();
    assert_kind(&err, ErrorKind::OutputTooLarge);
    let err = exec
        .submit_with::<_, Vec<u8>>(
            &module,
            "echo",
            &big,
            TaskOptions::new().limits(limits.with_max_input_bytes(100)),
        )
        .unwrap_err();
    assert_kind(&err, ErrorKind::InputTooLarge);
    assert!(err.to_string().contains("input"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wasi_sleep_is_cut_by_the_timeout() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let start = Instant::now();
    let err = exec
        .submit_with::<_, u64>(
            &module,
            "slow",
            &30_000u64,
            TaskOptions::new().limits(Limits::default().with_timeout(Duration::from_secs(1))),
        )
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(1) + SLACK,
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_exit_is_a_worker_crash_with_the_exit_code() {
    let exec = executor(1);
    let module = faults(&exec).await;
    match exec.submit::<_, ()>(&module, "exit", &3i32).unwrap().await {
        Err(Error::WorkerCrashed { pid, status, .. }) => {
            assert!(pid > 0);
            assert!(status.contains("proc_exit(3)"), "{status}");
        }
        other => panic!("expected a worker crash, got {other:?}"),
    }
    let text = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "asyncer_alloc") (param i32) (result i32) i32.const 0)
        (func (export "task:quit") (param i32 i32) (result i64) (call $exit (i32.const 0)) i64.const 0))"#;
    let module = exec
        .load_bytes(wat::parse_str(text).unwrap())
        .await
        .unwrap();
    let (err, _) = fail(&exec, &module, "quit", Limits::default()).await;
    assert_kind(&err, ErrorKind::WorkerCrashed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_flood_is_truncated_and_reported() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let mib = 2048u64;
    let limits = Limits::default().with_max_log_bytes(64 << 10);
    let out: u64 = exec
        .submit_with(&module, "flood", &mib, TaskOptions::new().limits(limits))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out, mib);
    let event = events.recv().await.unwrap();
    assert_eq!(event.stdout.len(), 64 << 10);
    assert_eq!(event.stdout_dropped, (mib << 20) - (64 << 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sees_no_files_env_or_args_unless_granted() {
    let exec = executor(2);
    let module = faults(&exec).await;
    let secret = std::env::temp_dir().join(format!("asyncer-secret-{}", std::process::id()));
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key.txt"), "hunter2").unwrap();
    let outside = secret.parent().unwrap().to_owned();

    // Default deny: no file anywhere, no env, no args.
    for path in [
        secret.join("key.txt").display().to_string(),
        "/etc/passwd".to_string(),
        "key.txt".to_string(),
    ] {
        let err = exec
            .submit::<_, String>(&module, "read_file", &path)
            .unwrap()
            .await
            .unwrap_err();
        assert_kind(&err, ErrorKind::GuestError);
    }
    let (env, args): (Vec<(String, String)>, Vec<String>) = exec
        .submit(&module, "environment", &())
        .unwrap()
        .await
        .unwrap();
    assert!(env.is_empty(), "{env:?}");
    assert!(args.is_empty(), "{args:?}");

    // A read-only grant shows that directory and nothing around it.
    let read_only = TaskOptions::new().capabilities(
        asyncer::Capabilities::none()
            .read_only_dir(&secret, "/data")
            .env("MODE", "test"),
    );
    let text: String = exec
        .submit_with(&module, "read_file", "/data/key.txt", read_only.clone())
        .unwrap()
        .await
        .unwrap();
    assert_eq!(text, "hunter2");
    for escape in [
        "/data/../etc/passwd",
        "/data/../../etc/passwd",
        "/etc/passwd",
    ] {
        let err = exec
            .submit_with::<_, String>(&module, "read_file", escape, read_only.clone())
            .unwrap()
            .await
            .unwrap_err();
        assert_kind(&err, ErrorKind::GuestError);
    }
    let _ = outside;
    let err = exec
        .submit_with::<_, ()>(
            &module,
            "write_file",
            &("/data/new.txt".to_string(), "x".to_string()),
            read_only.clone(),
        )
        .unwrap()
        .await
        .unwrap_err();
    assert_kind(&err, ErrorKind::GuestError);
    assert!(!secret.join("new.txt").exists());
    let (env, _): (Vec<(String, String)>, Vec<String>) = exec
        .submit_with(&module, "environment", &(), read_only)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(env, [("MODE".to_string(), "test".to_string())]);

    // A read-write grant lets it write there.
    let read_write = TaskOptions::new()
        .capabilities(asyncer::Capabilities::none().read_write_dir(&secret, "/data"));
    exec.submit_with::<_, ()>(
        &module,
        "write_file",
        &("/data/new.txt".to_string(), "written".to_string()),
        read_write,
    )
    .unwrap()
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(secret.join("new.txt")).unwrap(),
        "written"
    );
    std::fs::remove_dir_all(&secret).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_survives_a_run_of_hostile_guests() {
    let exec = executor(4);
    let module = wat(
        &exec,
        r#"(func (export "task:spin") (param i32 i32) (result i64) (loop (br 0)) i64.const 0)
           (func (export "task:trap") (param i32 i32) (result i64) unreachable)"#,
    )
    .await;
    let good = faults(&exec).await;
    let limits = Limits::default().with_timeout(Duration::from_millis(300));
    let mut handles = Vec::new();
    for _ in 0..4 {
        for task in ["spin", "trap"] {
            handles.push(
                exec.submit_bytes_with(
                    &module,
                    task,
                    vec![],
                    TaskOptions::new().limits(limits.clone()),
                )
                .unwrap(),
            );
        }
    }
    let ok: Vec<_> = (0..4u64)
        .map(|i| {
            exec.submit::<_, u64>(&good, "add", &faults::Pair { a: i, b: i })
                .unwrap()
        })
        .collect();
    for handle in handles {
        let err = handle.await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Timeout | ErrorKind::Trap),
            "{err}"
        );
    }
    for (i, handle) in ok.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), 2 * i as u64);
    }
}
