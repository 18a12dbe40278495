//! The `asyncer` host import module, run in-process: progress and log
//! records reach the sink in order, and ABI violations trap with a clear
//! message instead of reaching the host.

use std::sync::{Arc, Mutex};

use asyncer_protocol::{
    Capabilities, EngineFlavor, ErrorKind, GuestMessage, Limits, LogLevel, LogRecord, Progress,
    Reply,
};
use asyncer_worker::{engine_config, new_linker, run_loaded, GuestSink, LoadedTask};

const REPORTER: &str = r#"(module
  (import "asyncer" "progress" (func $progress (param i64 i64 i32 i32)))
  (import "asyncer" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello")
  (data (i32.const 32) "\00")
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  ;; progress 1/2 "hello", info "hello", progress 2/2 "", then Ok(()).
  (func (export "task:report") (param i32 i32) (result i64)
    (call $progress (i64.const 1) (i64.const 2) (i32.const 16) (i32.const 5))
    (call $log (i32.const 2) (i32.const 16) (i32.const 5))
    (call $progress (i64.const 2) (i64.const 2) (i32.const 16) (i32.const 0))
    (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 1)))
  ;; A message that runs past the end of memory.
  (func (export "task:bad_pointer") (param i32 i32) (result i64)
    (call $log (i32.const 2) (i32.const 65530) (i32.const 100))
    (i64.const 0))
  ;; A length whose end wraps around 2^32.
  (func (export "task:wrapping_length") (param i32 i32) (result i64)
    (call $progress (i64.const 0) (i64.const 0) (i32.const 16) (i32.const -1))
    (i64.const 0))
  (func (export "task:bad_level") (param i32 i32) (result i64)
    (call $log (i32.const 7) (i32.const 16) (i32.const 5))
    (i64.const 0))
  ;; 1,000 records of 100 bytes each against a small budget.
  (func (export "task:log_flood") (param i32 i32) (result i64)
    (local $i i32)
    (loop $again
      (call $log (i32.const 4) (i32.const 100) (i32.const 100))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
    (i64.or (i64.shl (i64.const 32) (i64.const 32)) (i64.const 1))))"#;

fn run(task: &str, limits: &Limits) -> (Reply, Vec<GuestMessage>) {
    let flavor = EngineFlavor::default();
    let engine = wasmtime::Engine::new(&engine_config(flavor)).unwrap();
    let module = wasmtime::Module::new(&engine, wat::parse_str(REPORTER).unwrap()).unwrap();
    let linker = new_linker(&engine).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink: GuestSink = {
        let seen = seen.clone();
        Arc::new(move |message| seen.lock().unwrap().push(message))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = runtime.block_on(run_loaded(LoadedTask {
        engine: &engine,
        linker: &linker,
        module: &module,
        flavor,
        task,
        input: &[],
        limits,
        capabilities: &Capabilities::default(),
        sink: Some(sink),
        command: None,
        pre: None,
    }));
    let seen = seen.lock().unwrap().clone();
    (reply, seen)
}

#[test]
fn progress_and_logs_reach_the_sink_in_order_with_the_last_progress_flushed() {
    let (reply, seen) = run("report", &Limits::default());
    assert_eq!(reply.outcome, Ok(vec![]));
    assert_eq!(
        seen,
        vec![
            GuestMessage::Progress(Progress {
                done: 1,
                total: 2,
                message: "hello".into()
            }),
            GuestMessage::Log(LogRecord {
                level: LogLevel::Info,
                message: "hello".into()
            }),
            // Within the interval of the first: held back, then flushed
            // when the task ended.
            GuestMessage::Progress(Progress {
                done: 2,
                total: 2,
                message: String::new()
            }),
        ]
    );
    assert_eq!(reply.log_dropped, 0);
}

#[test]
fn out_of_bounds_messages_and_unknown_levels_trap_with_the_import_named() {
    for (task, expected) in [
        (
            "bad_pointer",
            "asyncer::log called with a message at 0xfffa+100",
        ),
        ("wrapping_length", "asyncer::progress called with a message"),
        ("bad_level", "asyncer::log called with level 7"),
    ] {
        let (reply, seen) = run(task, &Limits::default());
        let failure = reply.outcome.unwrap_err();
        assert_eq!(failure.kind, ErrorKind::Trap, "{task}: {failure:?}");
        assert!(
            failure.message.contains(expected),
            "{task}: {}",
            failure.message
        );
        assert!(seen.is_empty(), "{task}: {seen:?}");
    }
}

#[test]
fn log_records_past_the_log_budget_are_dropped_and_counted() {
    let limits = Limits {
        max_log_bytes: 1000,
        ..Limits::default()
    };
    let (reply, seen) = run("log_flood", &limits);
    assert_eq!(reply.outcome, Ok(vec![]));
    assert_eq!(seen.len(), 10, "10 records of 100 bytes fit in 1000");
    assert_eq!(reply.log_dropped, 990 * 100);
    assert!(seen.iter().all(|m| matches!(
        m,
        GuestMessage::Log(LogRecord {
            level: LogLevel::Error,
            ..
        })
    )));
}
