//! A sandbox layer a worker asked for but could not apply is reported (each
//! reply carries every layer's state) and logged once per executor. Alone in
//! its test binary, like `progress_tracing.rs`: the `tracing` subscriber is
//! set for this thread only.
#![cfg(target_os = "linux")]

mod common;

use asyncer::{Executor, LayerState, SandboxLayer, SandboxSettings};
use common::{faults, Captured, WORKER};

#[tokio::test]
async fn a_layer_the_worker_lacks_is_reported_and_logged_once() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    // The test runtime is current-thread: the executor's tasks log here.
    let _guard = tracing::subscriber::set_default(subscriber);

    // Without a user namespace of its own, RLIMIT_NPROC would count every
    // process of the user: the worker leaves it and says so.
    let exec = Executor::builder()
        .max_processes(1)
        .worker_program(WORKER)
        .sandbox(SandboxSettings::default().without(SandboxLayer::Namespaces))
        .build()
        .unwrap();
    let status = exec.sandbox_status().await.unwrap();
    assert_eq!(status.get(SandboxLayer::Namespaces), &LayerState::Off);
    assert!(
        matches!(status.get(SandboxLayer::Rlimits), LayerState::Partial(why) if why.contains("RLIMIT_NPROC")),
        "{status}"
    );
    assert_eq!(status.get(SandboxLayer::Seccomp), &LayerState::Active);
    let module = faults(&exec).await;
    for _ in 0..3 {
        let sum: u64 = exec
            .submit(&module, "add", &(1u64, 2u64))
            .unwrap()
            .await
            .unwrap();
        assert_eq!(sum, 3);
    }
    exec.shutdown(std::time::Duration::from_secs(5)).await;
    let text = captured.text();
    let warnings = text.matches("without part of their own sandbox").count();
    assert_eq!(warnings, 1, "{text}");
    assert!(text.contains("rlimits: partial"), "{text}");
    // A layer turned off on purpose is not a warning.
    assert!(!text.contains("namespaces"), "{text}");
}
