//! Progress and log records from guests: they reach the update stream, the
//! task's handle and `tracing`, tagged with the task's uid, in the guest's
//! order; floods are bounded by the worker; ABI abuse is a typed error.

mod common;

use std::time::Duration;

use asyncer::{Error, ErrorKind, Executor, Limits, LogLevel, TaskOptions, TaskUpdate, WarmOptions};
use common::{executor, faults, finished, heavy, progress_of, updates_of, updates_of_all, WORKER};
use heavy::{HeavyInput, HeavyOutput, REPORTING_STEPS};

#[tokio::test]
async fn a_progress_flood_is_coalesced_and_a_log_flood_is_capped() {
    let exec = executor(2);
    let module = faults(&exec).await;
    let mut updates = exec.updates();

    let calls = 3_000_000u64;
    let flood = exec
        .submit_with::<_, u64>(
            &module,
            "progress_flood",
            &calls,
            TaskOptions::new().uid("progress-flood"),
        )
        .unwrap();
    let limits = Limits::default().with_max_log_bytes(16 << 10);
    let logs = exec
        .submit_with::<_, u64>(
            &module,
            "log_flood",
            &1000u64,
            TaskOptions::new().uid("log-flood").limits(limits),
        )
        .unwrap();
    assert_eq!(flood.await.unwrap(), calls);
    assert_eq!(logs.await.unwrap(), 1000);

    let mut all = updates_of_all(&mut updates, &["progress-flood", "log-flood"]).await;
    let mine = all.remove("progress-flood").unwrap();
    let steps = progress_of(&mine);
    let event = finished(&mine);
    // At most one message per 10 ms of the task, plus the first and the last.
    let bound = event.wall_time.as_millis() as usize / 10 + 2;
    assert!(
        steps.len() <= bound,
        "{} progress updates in {:?}",
        steps.len(),
        event.wall_time
    );
    assert_eq!(steps.last(), Some(&(calls, calls)));

    let mine = all.remove("log-flood").unwrap();
    let records: Vec<_> = mine
        .iter()
        .filter_map(|u| match u {
            TaskUpdate::Log(log) => Some(log),
            _ => None,
        })
        .collect();
    let event = finished(&mine);
    assert_eq!(records.len(), 16, "16 records of 1 KiB fit in 16 KiB");
    assert!(records
        .iter()
        .all(|r| r.level == LogLevel::Warn && r.message.len() == 1024));
    assert_eq!(event.log_dropped, (1000 - 16) * 1024);
}

#[tokio::test]
async fn a_held_back_progress_value_arrives_while_the_guest_keeps_computing() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let mut updates = exec.updates();
    let handle = exec
        .submit_with::<_, u64>(
            &module,
            "report_then_compute",
            &1500u64,
            TaskOptions::new().uid("held-back"),
        )
        .unwrap();
    handle.await.unwrap();
    let mine = updates_of(&mut updates, "held-back").await;
    let done = finished(&mine);
    let second = mine
        .iter()
        .find_map(|u| match u {
            TaskUpdate::Progress(p) if p.progress.done == 2 => Some(p),
            _ => None,
        })
        .expect("the second value arrives");
    // It was held back (made within 10 ms of the first), then sent by the
    // worker's flusher while the guest computed, not at the end.
    let before_end = done
        .finished_at
        .duration_since(second.at)
        .expect("progress comes before the completion");
    assert!(
        before_end >= Duration::from_millis(700),
        "the held-back value came only {before_end:?} before the end"
    );
    assert_eq!(progress_of(&mine), vec![(1, 2), (2, 2)]);
}

/// A guest that abuses the `asyncer` imports, and modules that import what
/// the host does not offer.
const ABUSER: &str = r#"(module
  (import "asyncer" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "task:bad_pointer") (param i32 i32) (result i64)
    (call $log (i32.const 2) (i32.const -16) (i32.const 64))
    (i64.const 0)))"#;

fn module_importing(import: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  {import}
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 0)
  (func (export "task:t") (param i32 i32) (result i64) i64.const 0))"#
    ))
    .unwrap()
}

#[tokio::test]
async fn abusing_the_host_imports_is_a_typed_error_and_unknown_ones_are_refused_at_load() {
    let exec = executor(2);
    let abuser = exec
        .load_bytes(wat::parse_str(ABUSER).unwrap())
        .await
        .expect("a module importing asyncer::log loads");
    assert!(abuser.imports().contains(&"asyncer::log".to_string()));
    let err = exec
        .submit::<_, ()>(&abuser, "bad_pointer", &())
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap, "{err}");
    assert!(
        err.to_string()
            .contains("asyncer::log called with a message at 0xfffffff0+64"),
        "{err}"
    );

    for (import, expected) in [
        (
            r#"(import "asyncer" "telemetry" (func (param i32)))"#,
            "asyncer::telemetry",
        ),
        (
            r#"(import "asyncer" "progress" (func (param i32 i32)))"#,
            "asyncer::progress",
        ),
        (
            r#"(import "env" "progress" (func (param i64 i64 i32 i32)))"#,
            "may only import from `wasi_snapshot_preview1` and `asyncer`",
        ),
    ] {
        let err = exec
            .load_bytes(module_importing(import))
            .await
            .expect_err(import);
        assert!(matches!(err, Error::InvalidModule { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{import}: {err}");
    }

    // The executor is unaffected.
    let module = faults(&exec).await;
    let sum: u64 = exec
        .submit(&module, "add", &faults::Pair { a: 2, b: 3 })
        .unwrap()
        .await
        .unwrap();
    assert_eq!(sum, 5);
}

#[tokio::test]
async fn warm_workers_keep_each_tasks_reports_apart() {
    let exec = Executor::builder()
        .max_processes(1)
        .worker_program(WORKER)
        .warm(WarmOptions::default())
        .build()
        .unwrap();
    let module = heavy(&exec).await;
    let mut updates = exec.updates();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let input = HeavyInput {
                uid: format!("w{i}"),
                n: 1000 + i,
            };
            exec.submit_with::<_, HeavyOutput>(
                &module,
                "heavy_reporting",
                &input,
                TaskOptions::new().uid(format!("warm-{i}")),
            )
            .unwrap()
        })
        .collect();
    let mut all = updates_of_all(&mut updates, &["warm-0", "warm-1", "warm-2"]).await;
    let mut pids = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        handle.await.unwrap();
        let mine = all.remove(&format!("warm-{i}")).unwrap();
        let TaskUpdate::Log(first) = &mine[0] else {
            panic!("{mine:?}")
        };
        assert_eq!(first.message, format!("w{i}: summing {} squares", 1000 + i));
        assert_eq!(
            progress_of(&mine).last(),
            Some(&(REPORTING_STEPS, REPORTING_STEPS))
        );
        pids.push(finished(&mine).pid);
    }
    assert!(
        pids.windows(2).all(|w| w[0] == w[1]),
        "one warm worker: {pids:?}"
    );
}

#[tokio::test]
async fn cancelling_a_reporting_task_ends_its_progress_watch() {
    let exec = executor(1);
    let module = heavy(&exec).await;
    let input = HeavyInput {
        uid: "long".into(),
        n: 2_000_000_000,
    };
    let handle = exec
        .submit::<_, HeavyOutput>(&module, "heavy_reporting", &input)
        .unwrap();
    let mut progress = handle.progress();
    let first = tokio::time::timeout(Duration::from_secs(60), progress.next())
        .await
        .expect("the first step is reported")
        .expect("the task is running");
    assert_eq!(first.done, 1);
    handle.cancel();
    // No more steps come; the watch ends.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Some(p) = progress.next().await {
            rest.push(p);
        }
        rest
    })
    .await
    .expect("the watch ends when the task is cancelled");
    assert!(rest.len() <= 1, "{rest:?}");
    assert!(matches!(handle.await, Err(Error::Cancelled)));
}

#[tokio::test]
async fn the_hand_written_guest_in_the_abi_document_runs_as_documented() {
    let doc = include_str!("../../host/protocol/ABI.md");
    let start = doc
        .find("```wat\n")
        .expect("the ABI document has a WAT guest")
        + 7;
    let end = start + doc[start..].find("```").expect("closed code block");
    let exec = executor(1);
    let module = exec
        .load_bytes(wat::parse_str(&doc[start..end]).expect("the WAT parses"))
        .await
        .expect("the documented guest loads");
    let mut updates = exec.updates();
    let handle = exec.submit::<_, u64>(&module, "answer", &()).unwrap();
    let uid = handle.uid().to_owned();
    assert_eq!(handle.await.unwrap(), 42);
    let mine = updates_of(&mut updates, &uid).await;
    assert_eq!(progress_of(&mine), vec![(1, 1)]);
}

#[tokio::test]
async fn events_updates_and_progress_are_streams_for_stream_ext() {
    use tokio_stream::StreamExt;

    let exec = executor(2);
    let module = heavy(&exec).await;
    let events = exec.events();
    let updates = exec.updates();
    let input = HeavyInput {
        uid: "stream".into(),
        n: 100_000,
    };
    let handle = exec
        .submit_with::<_, HeavyOutput>(
            &module,
            "heavy_reporting",
            &input,
            TaskOptions::new().uid("streamed"),
        )
        .unwrap();
    let progress = handle.progress();
    let output = handle.await.unwrap();
    assert_eq!(output.uid, "stream");

    // The watch ends with the task: collect() returns.
    let seen: Vec<_> = tokio::time::timeout(Duration::from_secs(10), progress.collect::<Vec<_>>())
        .await
        .expect("the progress stream ends with the task");
    assert!(
        seen.last()
            .is_some_and(|p| (p.done, p.total) == (REPORTING_STEPS, REPORTING_STEPS)),
        "{seen:?}"
    );

    let mut events = events.filter(|e| e.uid == "streamed");
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .expect("its event");
    assert!(event.is_ok());

    let mine: Vec<TaskUpdate> = tokio::time::timeout(
        Duration::from_secs(10),
        updates
            .filter(|u| u.uid() == "streamed")
            .take_while(|u| !matches!(u, TaskUpdate::Finished(_)))
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the updates end at the completion");
    assert_eq!(
        progress_of(&mine).last(),
        Some(&(REPORTING_STEPS, REPORTING_STEPS))
    );
}
