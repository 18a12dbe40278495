//! Progress and log records reach the update stream, the task's handle and
//! `tracing`, in the guest's order. Alone in its test binary: `tracing`
//! caches per call site whether anyone listens, so a test subscriber set on
//! one thread must not race other tests hitting the same call sites.

mod common;

use asyncer::{LogLevel, TaskOptions, TaskUpdate};
use common::{executor, finished, heavy, progress_of, updates_of, Captured};
use heavy::{HeavyInput, HeavyOutput, REPORTING_STEPS};

#[tokio::test]
async fn progress_and_logs_reach_the_updates_the_handle_and_tracing_in_the_guests_order() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // The test runtime is current-thread: the executor's tasks log here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let exec = executor(2);
    let module = heavy(&exec).await;
    let mut updates = exec.updates();
    let mut events = exec.events();
    let n = 400_000_000;
    let input = HeavyInput {
        uid: "work-1".into(),
        n,
    };
    let handle = exec
        .submit_with::<_, HeavyOutput>(
            &module,
            "heavy_reporting",
            &input,
            TaskOptions::new().uid("reporting-1"),
        )
        .unwrap();
    let mut progress = handle.progress();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(p) = progress.next().await {
            seen.push(p.done);
        }
        (seen, progress.is_finished())
    });
    let out = handle.await.unwrap();
    assert_eq!(out.result, heavy::sum_of_squares(n));

    // The handle's watch saw increasing values, the last one, then the end.
    let (seen, watch_finished) = watcher.await.unwrap();
    assert!(watch_finished);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&REPORTING_STEPS), "{seen:?}");

    // The update stream: the info record, increasing progress ending with
    // the last step, the debug record, then the completion.
    let mine = updates_of(&mut updates, "reporting-1").await;
    let TaskUpdate::Log(first) = &mine[0] else {
        panic!("first update: {:?}", mine[0]);
    };
    assert_eq!(first.level, LogLevel::Info);
    assert_eq!(first.message, "work-1: summing 400000000 squares");
    assert_eq!(first.task, "heavy_reporting");
    let steps = progress_of(&mine);
    assert!(steps.len() >= 2, "{steps:?}");
    assert!(steps.windows(2).all(|w| w[0].0 < w[1].0), "{steps:?}");
    assert_eq!(steps.last(), Some(&(REPORTING_STEPS, REPORTING_STEPS)));
    let TaskUpdate::Log(last_log) = &mine[mine.len() - 2] else {
        panic!("the debug record comes after the last progress: {mine:?}");
    };
    assert_eq!(
        (last_log.level, last_log.message.as_str()),
        (LogLevel::Debug, "work-1: done")
    );
    assert!(
        matches!(&mine[mine.len() - 3], TaskUpdate::Progress(p) if p.progress.done == REPORTING_STEPS)
    );
    let done = finished(&mine);
    assert!(done.is_ok());
    // The same completion on the plain event stream.
    let event = events.recv().await.unwrap();
    assert_eq!(&event, done);

    let logged = captured.text();
    let info_line = logged
        .lines()
        .find(|l| l.contains("summing 400000000 squares"))
        .unwrap_or_else(|| panic!("guest record not in tracing output:\n{logged}"));
    assert!(info_line.contains("INFO"), "{info_line}");
    assert!(info_line.contains("asyncer::guest"), "{info_line}");
    assert!(info_line.contains("uid=reporting-1"), "{info_line}");
    assert!(
        logged
            .lines()
            .any(|l| l.contains("task progress") && l.contains("uid=reporting-1")),
        "{logged}"
    );
}
