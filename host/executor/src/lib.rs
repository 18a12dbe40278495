//! Run CPU-heavy async task functions in parallel, each in its own worker
//! process and inside a WebAssembly sandbox, without blocking the caller's
//! tokio event loop.
//!
//! A task is a `#[task]` function in a guest crate (see `asyncer-guest`)
//! compiled to `wasm32-wasip1`. The [`Executor`] validates and precompiles the
//! module once ([`Executor::load`]), queues tasks ([`Executor::submit`]),
//! keeps at most `max_processes` workers alive, runs each task in a fresh
//! `asyncer-worker` process, and resolves its [`TaskHandle`] to the typed
//! output or a typed [`Error`]. Every task, failed or not, sends a
//! [`TaskEvent`] to each [`EventStream`].
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), asyncer::Error> {
//! use asyncer::Executor;
//!
//! let exec = Executor::builder().max_processes(4).build()?;
//! let module = exec.load("tasks.wasm").await?; // exports task:add
//! let mut events = exec.events();
//! let handle = exec.submit::<_, u64>(&module, "add", &(1u64, 2u64))?;
//! println!("{}", handle.await?);
//! let event = events.recv().await.expect("one event per task");
//! assert!(event.is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! The worker program is found by [`Executor::builder`]'s documented lookup;
//! the one line a user needs is `cargo build -p asyncer-worker` (or
//! `cargo install asyncer-worker`).
//!
//! Tasks run in a fresh process each by default; see
//! [`ExecutorBuilder::prestart`] and [`ExecutorBuilder::warm`] for faster
//! modes, [`Limits`] and [`Capabilities`] for the sandbox, and
//! [`TaskHandle::cancel`], [`Executor::shutdown`] and [`Executor::abort`] for
//! the lifecycle. Dropping every clone of an executor without shutting it
//! down lets queued and running tasks finish; idle workers are killed.
//!
//! # How a task flows through the crate
//! [`Executor::submit`] (`executor.rs`) checks the task and resolves its
//! limits; the runner (`runner.rs`) queues it with the scheduler
//! (`schedule.rs`: tenants, priorities, bounds) and starts its owner
//! (`owner.rs`), one tokio task holding all of the task's state, which waits
//! for a slot, hands the task to a [`dispatch::Backend`] (the local worker
//! pool, `local.rs` and `pool.rs`), relays its progress, and delivers its
//! result to the [`TaskHandle`] (`handle.rs`) and its one [`TaskEvent`]
//! (`event.rs`).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod builder;
mod cache;
mod capabilities;
mod command;
pub mod dispatch;
mod error;
mod event;
mod executor;
mod handle;
mod json;
mod limits;
mod local;
mod locate;
mod measure;
mod module;
mod owner;
mod pool;
mod retry;
mod runner;
mod schedule;
#[cfg(target_os = "linux")]
mod template;
mod trace;

/// Type descriptions of tasks (see [`Module::task_types`]).
pub use asyncer_protocol::schema;
pub use asyncer_protocol::{
    GuestMessage, LayerState, LogLevel, LogRecord, Progress, SandboxLayer, SandboxSettings,
    SandboxStatus, TaskRef,
};
pub use builder::{ExecutorBuilder, Priority, TaskOptions};
pub use cache::{ArtifactCache, CacheEntry, Cleared};
pub use capabilities::{Capabilities, DirGrant};
pub use command::{CommandInput, CommandOutput};
pub use error::{Error, ErrorKind};
pub use event::{EventStream, LogEvent, ProgressEvent, TaskEvent, TaskUpdate, UpdateStream};
pub use executor::Executor;
pub use handle::{ProgressWatch, TaskHandle};
pub use limits::Limits;
pub use locate::{WORKER_ENV, WORKER_PROGRAM};
pub use module::Module;
pub use pool::{Launch, WarmOptions};
pub use retry::RetryPolicy;
pub use schedule::TenantSettings;
pub use serde_json;
