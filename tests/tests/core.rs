//! The core flow, end to end through real worker processes.

mod common;

use std::collections::HashSet;

use asyncer::{Error, ErrorKind, Executor};
use common::{collect_events, executor, faults, heavy, max_overlap, WORKER};
use faults::Pair;
use heavy::{HeavyInput, HeavyOutput};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_task_returns_the_seeds_exact_result() {
    let exec = executor(2);
    let module = heavy(&exec).await;
    let input = HeavyInput {
        uid: "seed".into(),
        n: 10_000_000,
    };
    let out: HeavyOutput = exec
        .submit(&module, "heavy", &input)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.uid, "seed");
    assert_eq!(out.result, 333_333_283_333_335_000_000);
}

#[tokio::test(flavor = "current_thread")]
async fn eight_tasks_never_exceed_four_live_workers() {
    let exec = executor(4);
    let module = heavy(&exec).await;
    let mut events = exec.events();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let input = HeavyInput {
                uid: format!("t{i}"),
                n: 30_000_000,
            };
            exec.submit::<_, HeavyOutput>(&module, "heavy", &input)
                .unwrap()
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        let out = handle.await.unwrap();
        assert_eq!(out.uid, format!("t{i}"));
        assert_eq!(out.result, closed_formula(30_000_000));
    }
    let events = collect_events(&mut events, 8).await;
    let pids: HashSet<_> = events
        .iter()
        .map(|e| e.pid.expect("a worker ran"))
        .collect();
    assert_eq!(pids.len(), 8, "one fresh process per task");
    let overlap = max_overlap(&events);
    assert!(overlap <= 4, "{overlap} workers were alive at once");
    assert!(overlap >= 2, "tasks never ran in parallel (peak {overlap})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_gets_an_event_even_when_nobody_reads_for_a_while() {
    let exec = executor(3);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let mut expected = Vec::new();
    let mut handles = Vec::new();
    for i in 0..24u64 {
        let (task, outcome) = match i % 3 {
            0 => ("add", "ok"),
            1 => ("divide", "guest_error"),
            _ => ("trap", "trap"),
        };
        let handle = match task {
            "trap" => exec.submit_bytes_with(&module, task, vec![], Default::default()),
            _ => exec.submit_bytes_with(
                &module,
                task,
                postcard::to_allocvec(&Pair { a: i, b: 0 }).unwrap(),
                Default::default(),
            ),
        }
        .unwrap();
        expected.push((handle.uid().to_owned(), task, outcome));
        handles.push(handle);
    }
    for handle in handles {
        let _ = handle.await;
    }
    // Nobody read until every task was done: all events must still be there.
    let received = collect_events(&mut events, expected.len()).await;
    assert!(received.iter().all(|e| e.module_hash == module.hash()));
    for (uid, task, outcome) in expected {
        let event = received
            .iter()
            .find(|e| e.uid == uid)
            .expect("event for every uid");
        assert_eq!(event.task, task);
        assert_eq!(event.outcome(), outcome, "{event:?}");
        assert!(event.pid.is_some());
        assert!(event.started_at.unwrap() >= event.queued_at);
        assert!(event.finished_at >= event.started_at.unwrap());
        assert_eq!(event.bytes_in, if task == "trap" { 0 } else { 2 });
    }
    assert!(events.try_recv().is_none(), "no extra events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_typed_and_leave_other_tasks_alone() {
    let exec = executor(4);
    let module = faults(&exec).await;

    let good: Vec<_> = (0..4u64)
        .map(|i| {
            exec.submit::<_, u64>(&module, "add", &Pair { a: i, b: 10 })
                .unwrap()
        })
        .collect();
    let trap = exec.submit::<_, ()>(&module, "trap", &()).unwrap();
    let guest_err = exec
        .submit::<_, u64>(&module, "divide", &Pair { a: 7, b: 0 })
        .unwrap();
    let panic = exec.submit::<_, u64>(&module, "panic", "kaboom").unwrap();
    // `add` wants two varints; one byte is not enough.
    let undecodable = exec
        .submit_bytes_with(&module, "add", vec![0x05], Default::default())
        .unwrap();
    let wrong_output = exec
        .submit::<_, String>(&module, "add", &Pair { a: 200, b: 0 })
        .unwrap();

    match trap.await {
        Err(Error::Trap {
            code,
            message,
            backtrace,
        }) => {
            assert_eq!(code.as_deref(), Some("UnreachableCodeReached"), "{message}");
            let backtrace = backtrace.expect("a wasm backtrace");
            assert!(backtrace.contains("trap"), "{backtrace}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    match guest_err.await {
        Err(Error::Guest { message }) => assert_eq!(message, "cannot divide 7 by zero"),
        other => panic!("expected a guest error, got {other:?}"),
    }
    match panic.await {
        Err(Error::GuestPanic { message }) => assert_eq!(message, "guest says: kaboom"),
        other => panic!("expected a guest panic, got {other:?}"),
    }
    let err = undecodable.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    assert!(err.to_string().contains("Pair"), "{err}");
    let err = wrong_output.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");

    match exec.submit::<_, u64>(&module, "nope", &()) {
        Err(Error::NoSuchTask { task, available }) => {
            assert_eq!(task, "nope");
            assert!(available.contains(&"add".to_string()));
        }
        other => panic!("expected NoSuchTask, got {other:?}"),
    }

    for (i, handle) in good.into_iter().enumerate() {
        assert_eq!(handle.await.unwrap(), i as u64 + 10);
    }
    // The executor still works after all that.
    let after: u64 = exec
        .submit(&module, "add", &Pair { a: 1, b: 1 })
        .unwrap()
        .await
        .unwrap();
    assert_eq!(after, 2);
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_and_non_conforming_modules_are_refused_at_load() {
    let exec = executor(1);
    let expect_invalid = |result: Result<asyncer::Module, Error>, needle: &str| match result {
        Err(Error::InvalidModule { message }) => {
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            )
        }
        other => panic!("expected InvalidModule mentioning {needle:?}, got {other:?}"),
    };
    expect_invalid(exec.load_bytes(b"definitely not wasm".to_vec()).await, "");
    let abi = r#"(memory (export "memory") 1)
        (func (export "asyncer_alloc") (param i32) (result i32) i32.const 0)"#;
    let env_import = format!(
        r#"(module (import "env" "secret" (func)) {abi}
           (func (export "task:t") (param i32 i32) (result i64) i64.const 0))"#
    );
    expect_invalid(
        exec.load_bytes(wat::parse_str(env_import).unwrap()).await,
        "env::secret",
    );
    let unknown_wasi = format!(
        r#"(module (import "wasi_snapshot_preview1" "no_such_call" (func)) {abi}
           (func (export "task:t") (param i32 i32) (result i64) i64.const 0))"#
    );
    expect_invalid(
        exec.load_bytes(wat::parse_str(unknown_wasi).unwrap()).await,
        "no_such_call",
    );
    let bad_signature =
        format!(r#"(module {abi} (func (export "task:t") (param i32) (result i32) i32.const 0))"#);
    expect_invalid(
        exec.load_bytes(wat::parse_str(bad_signature).unwrap())
            .await,
        "task:t",
    );
    let no_alloc = r#"(module (memory (export "memory") 1)
        (func (export "task:t") (param i32 i32) (result i64) i64.const 0))"#;
    expect_invalid(
        exec.load_bytes(wat::parse_str(no_alloc).unwrap()).await,
        "asyncer_alloc",
    );
    match exec.load("/no/such/module.wasm").await {
        Err(err @ Error::ModuleNotFound { .. }) => assert_eq!(err.kind(), ErrorKind::InvalidModule),
        other => panic!("expected ModuleNotFound, got {other:?}"),
    }
}

/// A guest written by hand in WAT, with no Rust and no SDK: ABI v1 is enough.
const WAT_GUEST: &str = r#"
(module
  (memory (export "memory") 1)
  ;; The input always goes to offset 1024.
  (func (export "asyncer_alloc") (param $len i32) (result i32)
    i32.const 1024)
  ;; input: postcard (u8, u8) = two raw bytes; output: Ok(a + b) as a u8.
  (func (export "task:add_bytes") (param $ptr i32) (param $len i32) (result i64)
    (i32.store8 (i32.const 2048) (i32.const 0))
    (i32.store8 (i32.const 2049)
      (i32.add (i32.load8_u (local.get $ptr))
               (i32.load8_u (i32.add (local.get $ptr) (i32.const 1)))))
    (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const 2)))
  ;; output: Err("nope")
  (data (i32.const 4096) "\01\04nope")
  (func (export "task:refuse") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const 6)))
)
"#;

#[tokio::test(flavor = "current_thread")]
async fn a_hand_written_wat_guest_works_through_abi_v1() {
    let exec = executor(2);
    let module = exec
        .load_bytes(wat::parse_str(WAT_GUEST).unwrap())
        .await
        .unwrap();
    assert_eq!(module.tasks(), ["add_bytes", "refuse"]);
    let sum: u8 = exec
        .submit(&module, "add_bytes", &(40u8, 2u8))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(sum, 42);
    match exec.submit::<_, u8>(&module, "refuse", &()).unwrap().await {
        Err(Error::Guest { message }) => assert_eq!(message, "nope"),
        other => panic!("expected the guest's error, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn caller_given_uids_are_kept_and_others_are_fresh_uuids() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let named = exec
        .submit_with::<_, u64>(
            &module,
            "add",
            &Pair { a: 1, b: 2 },
            asyncer::TaskOptions::new().uid("job-42"),
        )
        .unwrap();
    assert_eq!(named.uid(), "job-42");
    let fresh = exec
        .submit::<_, u64>(&module, "add", &Pair { a: 1, b: 2 })
        .unwrap();
    assert_eq!(fresh.uid().len(), 36, "a uuid: {}", fresh.uid());
    assert_eq!(named.await.unwrap(), 3);
    assert_eq!(fresh.await.unwrap(), 3);
    let uids: HashSet<_> = collect_events(&mut events, 2)
        .await
        .into_iter()
        .map(|e| e.uid)
        .collect();
    assert!(uids.contains("job-42"));
}

#[tokio::test(flavor = "current_thread")]
async fn guest_output_is_captured_per_task() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let len: u64 = exec
        .submit(&module, "chatter", "hello")
        .unwrap()
        .await
        .unwrap();
    assert_eq!(len, 5);
    let event = collect_events(&mut events, 1).await.remove(0);
    assert_eq!(event.stdout, b"out: hello\n");
    assert_eq!(event.stderr, b"err: hello\n");
}

#[tokio::test(flavor = "current_thread")]
async fn async_sleep_inside_the_guest_waits_without_spinning() {
    let exec = executor(1);
    let module = faults(&exec).await;
    let start = std::time::Instant::now();
    let slept: u64 = exec
        .submit(&module, "slow", &150u64)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(slept, 150);
    assert!(start.elapsed() >= std::time::Duration::from_millis(150));
}

#[tokio::test(flavor = "current_thread")]
async fn impossible_settings_are_refused_by_build_not_clamped() {
    use asyncer::WarmOptions;
    let cases = [
        ("max_processes", Executor::builder().max_processes(0)),
        ("worker_nice", Executor::builder().worker_nice(20)),
        ("worker_nice", Executor::builder().worker_nice(-1)),
        (
            "max_tasks",
            Executor::builder().warm(WarmOptions::default().max_tasks(0)),
        ),
    ];
    for (setting, builder) in cases {
        let err = builder.worker_program(WORKER).build().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains(setting), "{err}");
    }
    // The edges of what is possible are accepted as given.
    let exec = Executor::builder()
        .max_processes(1)
        .worker_nice(19)
        .worker_program(WORKER)
        .build()
        .unwrap();
    assert_eq!(exec.max_processes(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_worker_program_is_a_clear_spawn_error() {
    let err = Executor::builder()
        .worker_program("/no/such/asyncer-worker")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SpawnFailed);
    let message = err.to_string();
    assert!(message.contains("/no/such/asyncer-worker"), "{message}");
    assert!(message.contains("ASYNCER_WORKER"), "{message}");
    // The test worker itself is found when named.
    assert!(std::path::Path::new(WORKER).is_file());
}

#[tokio::test(flavor = "current_thread")]
async fn typed_bindings_from_the_guest_crate_carry_name_and_types() {
    let exec = executor(2);
    let heavy_module = heavy(&exec).await;
    let faults_module = faults(&exec).await;
    assert_eq!(heavy::HEAVY.name(), "heavy");
    assert_eq!(faults::ADD.name(), "add");
    let input = HeavyInput {
        uid: "typed".into(),
        n: 1000,
    };
    let out: HeavyOutput = exec
        .submit_task(&heavy_module, heavy::HEAVY, &input)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.result, heavy::sum_of_squares(1000));
    // `Result<u64, String>` tasks are typed by their Ok type.
    let quotient: u64 = exec
        .submit_task(&faults_module, faults::DIVIDE, &Pair { a: 9, b: 3 })
        .unwrap()
        .await
        .unwrap();
    assert_eq!(quotient, 3);
    // A task without return value is typed `()`.
    let err = exec
        .submit_task(&faults_module, faults::TRAP, &())
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap);
    // A binding for a module that lacks the task is refused at submit.
    match exec.submit_task(&faults_module, heavy::HEAVY, &input) {
        Err(Error::NoSuchTask { task, .. }) => assert_eq!(task, "heavy"),
        other => panic!("expected NoSuchTask, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_guest_with_a_crates_io_dependency_runs_in_the_sandbox() {
    let exec = executor(2);
    let module = exec.load(asyncer_tests::DIGEST).await.unwrap();
    let data = b"asyncer runs real crates".to_vec();
    let hex: String = exec
        .submit_task(&module, digest_task::SHA256, &data)
        .unwrap()
        .await
        .unwrap();
    let expected = common::sha256_hex(&data);
    assert_eq!(hex, expected);
    // The same function natively gives the same answer.
    assert_eq!(digest_task::sha256(data), expected);
    let chained: String = exec
        .submit_task(&module, digest_task::HASH_CHAIN, &(b"seed".to_vec(), 1000))
        .unwrap()
        .await
        .unwrap();
    let native = native_hash_chain(b"seed", 1000);
    assert_eq!(chained, native);
    let err = exec
        .submit_task(&module, digest_task::HASH_CHAIN, &(vec![], 0))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GuestError);
}

fn native_hash_chain(seed: &[u8], rounds: u32) -> String {
    use sha2::Digest;
    let mut state = sha2::Sha256::digest(seed).to_vec();
    for _ in 1..rounds {
        state = sha2::Sha256::digest(&state).to_vec();
    }
    state.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sum(i * i for i < n)` without the loop.
fn closed_formula(n: u64) -> u128 {
    let n = u128::from(n);
    (n - 1) * n * (2 * n - 1) / 6
}

/// A backend from outside the crate, through the public seam: it reports
/// progress and answers with the input reversed, or waits to be cancelled.
struct Reverser;

impl asyncer::dispatch::Backend for Reverser {
    fn run(
        &self,
        task: asyncer::dispatch::Assignment,
        context: asyncer::dispatch::RunContext,
    ) -> asyncer::dispatch::BoxFuture<'static, asyncer::dispatch::Run> {
        use asyncer::dispatch::Run;
        Box::pin(async move {
            let started = std::time::SystemTime::now();
            if task.task == "wait" {
                context.cancelled().await;
                return Run::new(Err(Error::Cancelled), started);
            }
            context.report(asyncer::GuestMessage::Progress(asyncer::Progress {
                done: 1,
                total: 1,
                message: "reversed".into(),
            }));
            let mut output = task.input;
            output.reverse();
            let mut run = Run::new(Ok(output), started);
            run.report.pid = Some(7);
            run
        })
    }

    fn close(&self) -> asyncer::dispatch::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_backend_from_another_crate_runs_tasks_behind_the_same_api() {
    let exec = Executor::builder()
        .backend(Reverser)
        .worker_program("/no/such/asyncer-worker") // never looked up
        .max_processes(1)
        .build()
        .unwrap();
    let module = exec
        .load_bytes(
            wat::parse_str(
                r#"(module (memory (export "memory") 1)
                  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 0)
                  (func (export "task:reverse") (param i32 i32) (result i64) i64.const 0)
                  (func (export "task:wait") (param i32 i32) (result i64) i64.const 0))"#,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mut events = exec.events();
    let handle = exec
        .submit_bytes(&module, "reverse", vec![1, 2, 3])
        .unwrap();
    let mut progress = handle.progress();
    assert_eq!(handle.await.unwrap(), vec![3, 2, 1]);
    assert_eq!(progress.next().await.unwrap().message, "reversed");
    let event = events.recv().await.unwrap();
    assert_eq!(
        (event.pid, event.bytes_in, event.bytes_out),
        (Some(7), 3, 3)
    );

    // Cancellation reaches the backend; the queue and slots are the
    // executor's: a second task waits for the one slot.
    let waiting = exec.submit_bytes(&module, "wait", vec![]).unwrap();
    let queued = exec.submit_bytes(&module, "reverse", vec![9]).unwrap();
    waiting.cancel();
    assert!(matches!(waiting.await, Err(Error::Cancelled)));
    assert_eq!(queued.await.unwrap(), vec![9]);
    exec.shutdown(std::time::Duration::from_secs(5)).await;
}
