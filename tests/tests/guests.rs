//! Guests from other languages: the C guest (`guest-tasks/c`, built with
//! clang and wasi-libc through `asyncer.h`) gives what the Rust guests give
//! for the same inputs, and the ABI's alternative export naming
//! (`asyncer_task_NAME`, for toolchains that only export identifiers) loads
//! and runs, proven by hand-written modules.

mod common;

use asyncer::{Error, LogLevel, TaskUpdate};

#[tokio::test]
async fn the_c_guest_computes_what_the_rust_guests_compute() {
    let exec = common::executor(2);
    let c = exec.load(asyncer_tests::C_TASKS).await.unwrap();
    assert_eq!(c.tasks(), ["add", "refuse", "shout", "sum_squares"]);
    // The imports the header declares, and the WASI calls printf needs.
    assert!(c.imports().iter().any(|i| i == "asyncer::progress"));
    assert!(c.imports().iter().any(|i| i == "asyncer::log"));

    let faults = common::faults(&exec).await;
    let heavy = common::heavy(&exec).await;
    for (a, b) in [(2u64, 3u64), (0, 0), (u64::MAX - 1, 1), (300, 1 << 40)] {
        let from_c: u64 = exec.submit(&c, "add", &(a, b)).unwrap().await.unwrap();
        let from_rust: u64 = exec.submit(&faults, "add", &(a, b)).unwrap().await.unwrap();
        assert_eq!(from_c, from_rust, "add({a}, {b})");
    }
    for n in [0u64, 1, 10, 3_000_000] {
        let from_c: u128 = exec.submit(&c, "sum_squares", &n).unwrap().await.unwrap();
        let from_rust: u128 = exec
            .submit(&heavy, "sum_squares", &n)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(from_c, from_rust, "sum_squares({n})");
    }
}

#[tokio::test]
async fn the_c_guest_reports_progress_logs_output_and_errors() {
    let exec = common::executor(1);
    let c = exec.load(asyncer_tests::C_TASKS).await.unwrap();
    let mut updates = exec.updates();

    let handle = exec
        .submit::<_, String>(&c, "shout", &"quiet please")
        .unwrap();
    let uid = handle.uid().to_owned();
    assert_eq!(handle.await.unwrap(), "QUIET PLEASE");
    let seen = common::updates_of(&mut updates, &uid).await;
    assert!(seen.iter().any(|u| matches!(
        u,
        TaskUpdate::Log(log) if log.level == LogLevel::Info && log.message == "shouting"
    )));
    let event = common::finished(&seen);
    assert_eq!(
        String::from_utf8_lossy(&event.stdout),
        "shouting 12 bytes\n"
    );

    // Progress every 2^20 steps: 2 of them for 2.5 million.
    let handle = exec
        .submit::<_, u128>(&c, "sum_squares", &2_500_000u64)
        .unwrap();
    let uid = handle.uid().to_owned();
    handle.await.unwrap();
    let progress = common::progress_of(&common::updates_of(&mut updates, &uid).await);
    assert_eq!(progress.last(), Some(&(2 << 20, 2_500_000)), "{progress:?}");

    match exec.submit::<_, ()>(&c, "refuse", &()).unwrap().await {
        Err(Error::Guest { message }) => assert_eq!(message, "C says no"),
        other => panic!("expected the guest's error, got {other:?}"),
    }
    // An input the C code cannot read: its own decode error.
    let bad = exec
        .submit_bytes(&c, "add", vec![0xff])
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), asyncer::ErrorKind::Decode, "{bad}");
    assert!(
        bad.to_string().contains("expected two u64 varints"),
        "{bad}"
    );
}

/// A guest whose tasks use both namings: `asyncer_task_answer` (42) and
/// `task:other` (7), postcard u64s.
const BOTH_NAMINGS: &str = r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "\00\2a")
  (data (i32.const 32) "\00\07")
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "asyncer_task_answer") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2)))
  (func (export "task:other") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 2))))"#;

#[tokio::test]
async fn identifier_only_exports_are_tasks_too() {
    let exec = common::executor(1);
    let module = exec
        .load_bytes(wat::parse_str(BOTH_NAMINGS).unwrap())
        .await
        .unwrap();
    assert_eq!(module.tasks(), ["answer", "other"]);
    let answer: u64 = exec.submit(&module, "answer", &()).unwrap().await.unwrap();
    let other: u64 = exec.submit(&module, "other", &()).unwrap().await.unwrap();
    assert_eq!((answer, other), (42, 7));
    // In process, the same.
    let answer: u64 = exec.run_in_process(&module, "answer", &()).await.unwrap();
    assert_eq!(answer, 42);
    assert!(matches!(
        exec.submit::<_, u64>(&module, "asyncer_task_answer", &()),
        Err(Error::NoSuchTask { .. })
    ));
}

#[tokio::test]
async fn a_task_named_both_ways_or_nameless_is_refused() {
    let exec = common::executor(1);
    let module = |exports: &str| {
        wat::parse_str(format!(
            r#"(module
              (memory (export "memory") 1)
              (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
              (func $t (param i32 i32) (result i64) i64.const 0)
              {exports})"#
        ))
        .unwrap()
    };
    let twice = exec
        .load_bytes(module(
            r#"(export "task:x" (func $t)) (export "asyncer_task_x" (func $t))"#,
        ))
        .await
        .unwrap_err();
    assert!(matches!(twice, Error::InvalidModule { .. }), "{twice}");
    assert!(twice.to_string().contains("exported twice"), "{twice}");

    let nameless = exec
        .load_bytes(module(r#"(export "asyncer_task_" (func $t))"#))
        .await
        .unwrap_err();
    assert!(
        nameless.to_string().contains("exports no task"),
        "{nameless}"
    );

    let wrong_type = exec
        .load_bytes(
            wat::parse_str(
                r#"(module
                  (memory (export "memory") 1)
                  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
                  (func (export "asyncer_task_x") (param i32) (result i32) i32.const 0))"#,
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        wrong_type
            .to_string()
            .contains("must have type (i32, i32) -> i64"),
        "{wrong_type}"
    );
}
