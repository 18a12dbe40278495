//! The asyncer worker: runs one task of a precompiled wasm module inside a
//! WASI preview 1 sandbox and reports a typed outcome.
//!
//! The executor starts the `asyncer-worker` program once per task, writes one
//! [`Request`](asyncer_protocol::Request) frame to its stdin and reads
//! [`WorkerMessage`](asyncer_protocol::WorkerMessage) frames from its stdout
//! ([`serve_stdio`]): the guest's progress and log records while it runs
//! (the `asyncer` host import module, see [`report`]), then one reply. The same engine settings ([`engine_config`]) are used by
//! the host to precompile modules and by the worker to load them, so the
//! artifacts always match.
//!
//! The sandbox is default-deny: no preopened directories, no environment, no
//! arguments, closed stdin; stdout and stderr are captured up to a limit.
//! Behind it the worker process is a sandbox of its own ([`Sandbox`]: new
//! namespaces, tight resource limits, Landlock and a seccomp allow-list),
//! locked before any guest code runs.
#![warn(missing_docs)]

pub mod artifact;
mod capture;
mod classify;
mod deadline;
mod hygiene;
pub mod report;
mod run;
mod sandbox;
#[cfg(target_os = "linux")]
mod seccomp;
#[cfg(target_os = "linux")]
mod template;

use asyncer_protocol::EngineFlavor;
use wasmtime::{Config, Engine, WasmBacktraceDetails};

pub use classify::{classify_error, panic_message};
pub use report::GuestSink;
pub use run::{build_info, run_loaded, serve_stdio, serve_stdio_with_hook, LoadedTask, StoreState};
pub use sandbox::{Policy, Sandbox, SharedNamespaces};
#[cfg(target_os = "linux")]
pub use seccomp::syscall_name;

/// The wasmtime version the worker is built with (part of artifact names).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The default largest wasm stack of a guest.
pub const MAX_WASM_STACK: usize = 1 << 20;

/// The wasmtime configuration shared by the host (which compiles) and the
/// worker (which only loads): every setting that changes compiled code is
/// fixed here, explicitly, so that the two always agree.
///
/// # Examples
/// ```
/// use asyncer_protocol::EngineFlavor;
/// let flavor = EngineFlavor { fuel: true, epoch: false };
/// let engine = wasmtime::Engine::new(&asyncer_worker::engine_config(flavor)).unwrap();
/// # let _ = engine;
/// ```
pub fn engine_config(flavor: EngineFlavor) -> Config {
    engine_config_with_stack(flavor, MAX_WASM_STACK)
}

/// [`engine_config`] with another wasm stack limit. The stack limit does not
/// change compiled code, so an artifact from [`engine_config`] loads here.
pub fn engine_config_with_stack(flavor: EngineFlavor, max_wasm_stack: usize) -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(flavor.fuel)
        .epoch_interruption(flavor.epoch)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64))
        .wasm_backtrace_details(WasmBacktraceDetails::Disable)
        .debug_info(false)
        .wasm_component_model(false)
        // 128-bit arithmetic instructions: `u128` code runs at native speed.
        .wasm_wide_arithmetic(true)
        .max_wasm_stack(max_wasm_stack)
        .async_stack_size(max_wasm_stack + (1 << 20));
    config
}

/// The pooling allocator a warm worker's engines use: slots for the one
/// instance a worker runs at a time (and one more while the last one is
/// torn down), reused from task to task, their memories reset from the
/// module's copy-on-write image instead of mapped and unmapped each time.
/// The limits are wide so that whatever runs in a fresh process runs here:
/// any table a task may have and any 32-bit memory fits a slot, and a module with more
/// memories or tables, or a bigger instance, than a slot holds is refused
/// when it is loaded, and the worker then runs it on demand instead.
pub fn warm_pool() -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_core_instances(2)
        .total_memories(2 * 4)
        .total_tables(2 * 8)
        .total_stacks(2)
        .max_memories_per_module(4)
        .max_tables_per_module(8)
        // Every table a task may have (checked only when instantiating, so
        // it must).
        .table_elements(run::MAX_TABLE_ELEMENTS)
        .max_core_instance_size(16 << 20)
        // The first 64 KiB of a memory and a stack are zeroed in place
        // rather than given back and faulted in again.
        .linear_memory_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10);
    pool
}

/// Creates an engine with [`engine_config`].
///
/// # Examples
/// ```
/// let engine = asyncer_worker::new_engine(Default::default()).unwrap();
/// let linker = asyncer_worker::new_linker(&engine).unwrap();
/// # let _ = linker;
/// ```
///
/// # Errors
/// Fails when wasmtime rejects the configuration on this machine.
pub fn new_engine(flavor: EngineFlavor) -> wasmtime::Result<Engine> {
    Engine::new(&engine_config(flavor))
}

/// A linker with WASI preview 1 (async) and the `asyncer` host module
/// (progress and logs, see [`report`]): the only imports a guest may use.
///
/// # Examples
/// ```
/// let engine = asyncer_worker::new_engine(Default::default()).unwrap();
/// let linker = asyncer_worker::new_linker(&engine).unwrap();
/// let wasm = wat::parse_str(r#"(module (import "asyncer" "log" (func (param i32 i32 i32))))"#).unwrap();
/// let module = wasmtime::Module::new(&engine, wasm).unwrap();
/// assert!(linker.instantiate_pre(&module).is_ok());
/// ```
///
/// # Errors
/// Fails only if wasmtime cannot define the functions.
pub fn new_linker(engine: &Engine) -> wasmtime::Result<wasmtime::Linker<StoreState>> {
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut StoreState| &mut state.wasi)?;
    report::add_to_linker(&mut linker)?;
    Ok(linker)
}
