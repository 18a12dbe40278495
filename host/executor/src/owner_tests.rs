//! The owner's state transitions, driven through the runner with a scripted
//! backend: queued → running → finished, and cancel and shutdown at each
//! point.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use asyncer_protocol::{GuestMessage, LogLevel, LogRecord, Progress};
use tokio::sync::{mpsc, oneshot};

use crate::dispatch::{Assignment, Backend, BoxFuture, Run, RunContext};
use crate::event::{EventStream, TaskUpdate};
use crate::handle::{raw, Decode, TaskHandle};
use crate::module::Compiler;
use crate::runner::Runner;
use crate::schedule::Policy;
use crate::{Capabilities, Error, ErrorKind, Limits, Module};

/// One call of the scripted backend: the test answers it (or not).
struct Call {
    task: Assignment,
    context: RunContext,
    answer: oneshot::Sender<Run>,
}

/// A backend whose runs are answered by the test; a cancelled run that was
/// not answered yet ends with `Err(Cancelled)`, as the contract asks.
struct Scripted {
    calls: mpsc::UnboundedSender<Call>,
    closed: Arc<AtomicUsize>,
}

impl Backend for Scripted {
    fn run(&self, task: Assignment, context: RunContext) -> BoxFuture<'static, Run> {
        let (answer, answered) = oneshot::channel();
        let watch = context.clone();
        self.calls
            .send(Call {
                task,
                context,
                answer,
            })
            .expect("the test listens");
        Box::pin(async move {
            tokio::select! {
                // An answer already given wins over a later cancel.
                biased;
                run = answered => run.expect("the test answers or cancels"),
                () = watch.cancelled() => Run::new(Err(Error::Cancelled), SystemTime::now()),
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

struct Harness {
    runner: Runner,
    calls: mpsc::UnboundedReceiver<Call>,
    closed: Arc<AtomicUsize>,
    module: Module,
    events: EventStream,
    _cache: tempfile::TempDir,
}

const WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 16)
  (func (export "task:t") (param i32 i32) (result i64) i64.const 0))"#;

fn harness(slots: usize) -> Harness {
    harness_with(Policy::fifo(slots))
}

fn harness_with(policy: Policy) -> Harness {
    let cache = tempfile::tempdir().expect("temp dir");
    let compiler = Compiler::new(crate::ArtifactCache::open(cache.path()).unwrap());
    let module = compiler
        .load_bytes(
            "t.wasm".into(),
            wat::parse_str(WAT).expect("valid wat").into(),
            Default::default(),
        )
        .expect("a valid module");
    let (tx, calls) = mpsc::unbounded_channel();
    let closed = Arc::new(AtomicUsize::new(0));
    let backend = Scripted {
        calls: tx,
        closed: closed.clone(),
    };
    let runner = Runner::start(Arc::new(backend), policy);
    let events = runner.events();
    Harness {
        runner,
        calls,
        closed,
        module,
        events,
        _cache: cache,
    }
}

impl Harness {
    fn submit(&self, uid: &str, input: Vec<u8>) -> TaskHandle<Vec<u8>> {
        self.try_submit_as(uid, input, "", 0, None)
            .expect("accepted")
    }

    /// Submits for `tenant` at `priority`, to start within `start_within`.
    fn try_submit_as(
        &self,
        uid: &str,
        input: Vec<u8>,
        tenant: &str,
        priority: i32,
        start_within: Option<Duration>,
    ) -> Result<TaskHandle<Vec<u8>>, Error> {
        let mut assignment = self.assignment(uid, input);
        assignment.tenant = tenant.into();
        assignment.priority = priority;
        assignment.start_by = start_within.map(|wait| SystemTime::now() + wait);
        self.runner.submit(assignment, Decode::Fn(raw))
    }

    /// Task `t` of the harness's module, with `input` and the defaults.
    fn assignment(&self, uid: &str, input: Vec<u8>) -> Assignment {
        Assignment {
            uid: uid.into(),
            task: "t".into(),
            module: self.module.clone(),
            input,
            limits: Limits::default(),
            capabilities: Capabilities::default(),
            command: None,
            tenant: String::new(),
            priority: 0,
            start_by: None,
            retry: None,
        }
    }

    /// The next call of the backend.
    async fn call(&mut self) -> Call {
        within(self.calls.recv()).await.expect("a call")
    }

    /// No call is pending once every ready task has run.
    async fn no_call(&mut self) {
        settle().await;
        if let Ok(call) = self.calls.try_recv() {
            panic!("unexpected call for {}", call.task.uid);
        }
    }

    async fn event(&mut self) -> crate::TaskEvent {
        within(self.events.recv()).await.expect("an event")
    }

    async fn no_event(&mut self) {
        settle().await;
        if let Some(event) = self.events.try_recv() {
            panic!("unexpected event for {}", event.uid);
        }
    }
}

/// Lets every ready task run (the tests use a current-thread runtime).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("did not happen within 10 s")
}

fn ok_run(output: &[u8], pid: u32) -> Run {
    let mut run = Run::new(Ok(output.to_vec()), SystemTime::now());
    run.report.pid = Some(pid);
    run.report.peak_memory_bytes = 65536;
    run
}

#[tokio::test]
async fn a_task_goes_from_queued_to_running_to_finished() {
    let mut h = harness(1);
    let mut updates = h.runner.updates();
    let handle = h.submit("a", vec![1, 2, 3]);
    let mut progress = handle.progress();
    let call = h.call().await;
    assert_eq!(call.task.uid, "a");
    assert_eq!(call.task.input, vec![1, 2, 3], "the input is handed over");
    call.context.report(GuestMessage::Progress(Progress {
        done: 1,
        total: 2,
        message: "half".into(),
    }));
    let seen = within(progress.next()).await.expect("progress");
    assert_eq!((seen.done, seen.total), (1, 2));
    assert!(!progress.is_finished(), "still running");
    h.no_event().await;
    call.answer.send(ok_run(&[9], 42)).ok();
    assert_eq!(within(handle).await.expect("ok"), vec![9]);
    assert!(progress.is_finished());
    let event = h.event().await;
    assert_eq!(event.uid, "a");
    assert!(event.is_ok());
    assert_eq!(event.pid, Some(42));
    assert!(event.started_at.is_some());
    assert_eq!((event.bytes_in, event.bytes_out), (3, 1));
    assert_eq!(event.peak_memory_bytes, 65536);
    assert!(matches!(
        within(updates.recv()).await,
        Some(TaskUpdate::Progress(_))
    ));
    assert!(matches!(
        within(updates.recv()).await,
        Some(TaskUpdate::Finished(_))
    ));
    h.no_event().await;
}

#[tokio::test]
async fn queued_tasks_take_free_slots_in_submit_order() {
    let mut h = harness(1);
    let a = h.submit("a", vec![]);
    let b = h.submit("b", vec![]);
    let c = h.submit("c", vec![]);
    let first = h.call().await;
    assert_eq!(first.task.uid, "a");
    h.no_call().await;
    first.answer.send(ok_run(&[], 1)).ok();
    let second = h.call().await;
    assert_eq!(second.task.uid, "b");
    second.answer.send(ok_run(&[], 2)).ok();
    let third = h.call().await;
    assert_eq!(third.task.uid, "c");
    third.answer.send(ok_run(&[], 3)).ok();
    for handle in [a, b, c] {
        within(handle).await.expect("ok");
    }
}

#[tokio::test]
async fn cancel_while_queued_ends_the_task_at_once_and_never_runs_it() {
    let mut h = harness(1);
    let a = h.submit("a", vec![]);
    let running = h.call().await;
    let b = h.submit("b", vec![]);
    b.cancel();
    assert!(matches!(within(b).await, Err(Error::Cancelled)));
    let event = h.event().await;
    assert_eq!(event.uid, "b");
    assert_eq!(event.error, Some(ErrorKind::Cancelled));
    assert_eq!(event.started_at, None, "it never ran");
    assert_eq!(event.pid, None);
    // The slot it waited for goes to the next task.
    let c = h.submit("c", vec![]);
    running.answer.send(ok_run(&[], 1)).ok();
    within(a).await.expect("ok");
    let next = h.call().await;
    assert_eq!(next.task.uid, "c", "b never reached the backend");
    next.answer.send(ok_run(&[], 2)).ok();
    within(c).await.expect("ok");
}

#[tokio::test]
async fn cancel_while_running_stops_the_backend_run() {
    let mut h = harness(1);
    let a = h.submit("a", vec![]);
    let call = h.call().await;
    assert!(!call.context.is_cancelled());
    a.cancel();
    within(call.context.cancelled()).await;
    assert!(matches!(within(a).await, Err(Error::Cancelled)));
    let event = h.event().await;
    assert_eq!(event.error, Some(ErrorKind::Cancelled));
    assert!(event.started_at.is_some(), "it ran");
    // Its slot is free again.
    let b = h.submit("b", vec![]);
    h.call().await.answer.send(ok_run(&[5], 2)).ok();
    assert_eq!(within(b).await.expect("ok"), vec![5]);
}

#[tokio::test]
async fn cancel_after_the_result_changes_nothing() {
    let mut h = harness(1);
    let mut a = h.submit("a", vec![]);
    h.call().await.answer.send(ok_run(&[1], 1)).ok();
    assert_eq!(within(&mut a).await.expect("ok"), vec![1]);
    a.cancel();
    assert!(h.event().await.is_ok());
    h.no_event().await;
}

#[tokio::test]
async fn an_outcome_known_before_the_cancel_is_kept() {
    let mut h = harness(1);
    let a = h.submit("a", vec![]);
    let call = h.call().await;
    // The backend answers, and the cancel comes before the owner sees it.
    call.answer.send(ok_run(&[7], 1)).ok();
    a.cancel();
    assert_eq!(within(a).await.expect("the first outcome wins"), vec![7]);
    assert!(h.event().await.is_ok());
}

#[tokio::test]
async fn abort_stops_queued_and_running_tasks_as_shut_down() {
    let mut h = harness(1);
    let a = h.submit("a", vec![]);
    let b = h.submit("b", vec![]);
    let running = h.call().await;
    within(h.runner.abort()).await;
    assert!(running.context.is_cancelled());
    assert!(matches!(within(a).await, Err(Error::ShutDown)));
    assert!(matches!(within(b).await, Err(Error::ShutDown)));
    let mut ends: Vec<_> = [h.event().await, h.event().await]
        .into_iter()
        .map(|e| (e.uid.clone(), e.outcome(), e.started_at.is_some()))
        .collect();
    ends.sort();
    assert_eq!(
        ends,
        vec![
            ("a".into(), "shut_down", true),
            ("b".into(), "shut_down", false)
        ]
    );
    assert_eq!(
        h.closed.load(Ordering::SeqCst),
        1,
        "the backend is closed once"
    );
    h.no_call().await;
}

#[tokio::test]
async fn shutdown_lets_running_tasks_finish_within_the_grace() {
    let mut h = harness(1);
    let a = h.submit("a", vec![]);
    let call = h.call().await;
    let late = h.assignment("late", vec![]);
    let runner = Arc::new(h.runner);
    let stopping = tokio::spawn({
        let runner = runner.clone();
        async move { runner.shutdown(Duration::from_secs(60)).await }
    });
    settle().await;
    assert!(
        matches!(runner.submit(late, Decode::Fn(raw)), Err(Error::ShutDown)),
        "refused once shutting down"
    );
    assert!(!stopping.is_finished(), "waits for the running task");
    assert!(!call.context.is_cancelled(), "not stopped within the grace");
    call.answer.send(ok_run(&[3], 1)).ok();
    assert_eq!(within(a).await.expect("ok"), vec![3]);
    within(stopping).await.expect("shutdown returns");
    assert_eq!(h.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn shutdown_stops_what_outlives_the_grace() {
    let mut h = harness(1);
    let a = h.submit("a", vec![]);
    let call = h.call().await;
    within(h.runner.shutdown(Duration::from_millis(50))).await;
    assert!(call.context.is_cancelled());
    assert!(matches!(within(a).await, Err(Error::ShutDown)));
    assert_eq!(h.event().await.error, Some(ErrorKind::ShutDown));
}

#[tokio::test]
async fn the_result_comes_before_cleanup_and_the_event_after_it() {
    let mut h = harness(1);
    let mut updates = h.runner.updates();
    let a = h.submit("a", vec![]);
    let b = h.submit("b", vec![]);
    let call = h.call().await;
    for i in 0..3 {
        call.context.report(GuestMessage::Log(LogRecord {
            level: LogLevel::Info,
            message: format!("line {i}"),
        }));
    }
    let (reaped, reaping) = oneshot::channel::<()>();
    let mut run = ok_run(&[1], 7);
    run.cleanup = Some(Box::pin(async move {
        reaping.await.ok();
        Some("exit code 0".to_owned())
    }));
    call.answer.send(run).ok();
    assert_eq!(within(a).await.expect("delivered before cleanup"), vec![1]);
    h.no_event().await;
    h.no_call().await; // the slot is held until the worker is reaped
    reaped.send(()).ok();
    let event = h.event().await;
    assert_eq!(event.exit_status.as_deref(), Some("exit code 0"));
    assert!(event.finished_at >= event.started_at.expect("ran"));
    for i in 0..3 {
        match within(updates.recv()).await {
            Some(TaskUpdate::Log(log)) => assert_eq!(log.message, format!("line {i}")),
            other => panic!("expected log line {i}, got {other:?}"),
        }
    }
    assert!(matches!(
        within(updates.recv()).await,
        Some(TaskUpdate::Finished(_))
    ));
    h.call().await.answer.send(ok_run(&[], 8)).ok();
    within(b).await.expect("ok");
}

#[tokio::test]
async fn a_failed_run_is_one_event_with_its_kind() {
    let mut h = harness(2);
    let a = h.submit("a", vec![]);
    let call = h.call().await;
    let run = Run::new(
        Err(Error::Guest {
            message: "nope".into(),
        }),
        SystemTime::now(),
    );
    call.answer.send(run).ok();
    assert!(matches!(within(a).await, Err(Error::Guest { .. })));
    let event = h.event().await;
    assert_eq!(event.error, Some(ErrorKind::GuestError));
    assert_eq!(
        event.message.as_deref(),
        Some("guest returned an error: nope")
    );
    h.no_event().await;
}

/// Every queued task is an owner future waiting for its turn: it must stay
/// small enough for malloc's per-thread cache (chunks up to ~1 KiB), which
/// is why its running part is boxed only once it starts.
#[tokio::test]
async fn a_queued_owner_is_a_small_future() {
    let h = harness(1);
    let scheduler = crate::schedule::Scheduler::start(Policy::fifo(1));
    let ticket = scheduler
        .enqueue(&crate::schedule::Turn {
            tenant: String::new(),
            priority: 0,
        })
        .expect("queued");
    let (reply, _reply) = oneshot::channel();
    let (progress, _progress) = tokio::sync::watch::channel(Default::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let owner = super::Owner {
        meta: super::TaskMeta {
            uid: "a".into(),
            task: "t".into(),
            module_hash: h.module.hash().into(),
            queued_at: SystemTime::now(),
            bytes_in: 0,
            tenant: String::new(),
            priority: 0,
        },
        assignment: Box::new(Assignment {
            uid: "a".into(),
            task: "t".into(),
            module: h.module.clone(),
            input: vec![],
            limits: Limits::default(),
            capabilities: Capabilities::default(),
            command: None,
            tenant: String::new(),
            priority: 0,
            start_by: None,
            retry: None,
        }),
        ticket,
        scheduler: scheduler.clone(),
        cancel: cancel.child_token(),
        shutdown: cancel,
        reply,
        progress,
        subscribers: Default::default(),
        backend: Arc::new(Scripted {
            calls: mpsc::unbounded_channel().0,
            closed: Default::default(),
        }),
    };
    let size = std::mem::size_of_val(&owner.run());
    assert!(size <= 800, "a queued owner takes {size} bytes");
}

#[path = "schedule_tests.rs"]
mod schedule;
