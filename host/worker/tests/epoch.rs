//! In-guest timeouts when several stores share one engine (in-process runs,
//! warm workers): another task's epoch tick must not cut a task short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use asyncer_protocol::{Capabilities, EngineFlavor, ErrorKind, Limits};
use asyncer_worker::{engine_config, new_linker, run_loaded, LoadedTask};

/// Counts down from the input's first byte × 2^24 and returns Ok(()).
const COUNTDOWN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  (data (i32.const 16) "\00")
  (func (export "task:countdown") (param $ptr i32) (param $len i32) (result i64)
    (local $n i64)
    (local.set $n (i64.shl (i64.load8_u (local.get $ptr)) (i64.const 24)))
    (loop $again
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br_if $again (i64.gt_s (local.get $n) (i64.const 0))))
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 1)))
  (func (export "task:spin") (param i32 i32) (result i64) (loop (br 0)) i64.const 0))"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn foreign_epoch_ticks_do_not_cut_a_task_short() {
    let flavor = EngineFlavor {
        fuel: false,
        epoch: true,
    };
    let engine = wasmtime::Engine::new(&engine_config(flavor)).unwrap();
    let module = wasmtime::Module::new(&engine, wat::parse_str(COUNTDOWN).unwrap()).unwrap();
    let linker = new_linker(&engine).unwrap();
    // Another "task" ticks the shared epoch all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                engine.increment_epoch();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let limits = Limits {
        timeout: Some(Duration::from_secs(60)),
        ..Limits::default()
    };
    let run = |task: &str, input: &[u8], limits: &Limits| {
        runtime().block_on(run_loaded(LoadedTask {
            engine: &engine,
            linker: &linker,
            module: &module,
            flavor,
            task,
            input,
            limits,
            capabilities: &Capabilities::default(),
            sink: None,
            command: None,
            pre: None,
        }))
    };
    // 40 × 2^24 iterations: long enough to see hundreds of foreign ticks.
    let reply = run("countdown", &[40], &limits);
    assert_eq!(reply.outcome, Ok(vec![]), "cut short by a foreign tick");
    // Its own deadline still applies.
    let short = Limits {
        timeout: Some(Duration::from_millis(200)),
        ..Limits::default()
    };
    let reply = run("spin", &[], &short);
    assert_eq!(reply.outcome.unwrap_err().kind, ErrorKind::Timeout);
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();
}
