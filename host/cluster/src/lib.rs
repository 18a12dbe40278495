//! Run asyncer tasks on many worker hosts through NATS JetStream.
//!
//! The submitter keeps its [`asyncer::Executor`]; a [`ClusterBackend`]
//! behind [`ExecutorBuilder::backend`](asyncer::ExecutorBuilder::backend)
//! puts each task on a JetStream work-queue stream and waits for its result
//! in a key-value bucket. Worker hosts ([`serve`], `asyncer serve`) pull a
//! task when they have a free slot, run it in their own local sandboxed
//! workers, keep their lease with in-progress acknowledgements, store the
//! one result, and only then acknowledge the task. Modules travel once, by
//! hash, through a JetStream object store.
//!
//! Every tenant's tasks of each priority are a queue of their own; a host's
//! free slot takes a task from the tenant with the fewest running on that
//! host for its weight, then from its highest priority (with aging).
//!
//! Names on the server: stream `ASYNCER_TASKS` (work-queue retention,
//! subjects `asyncer.task.<tenant>.<priority>.<uid>`), a durable consumer
//! per queue `asyncer-q-<priority>-<tenant>`, ready notices on
//! `asyncer.ready.<tenant>.<priority>`, key-value bucket `ASYNCER_RESULTS` (key
//! `<tenant>.<uid>`), object store `ASYNCER_MODULES` (keys `sha256-<hex>`),
//! subjects `asyncer.evt.<tenant>.<uid>` (progress and logs) and
//! `asyncer.cancel.<tenant>.<uid>`; uids are hex-encoded in subjects and
//! keys.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod connect;
mod host;
mod lost;
mod queues;
mod wire;

pub use client::ClusterBackend;
pub use connect::{ClusterError, ClusterOptions, Connection};
pub use host::{serve, HostOptions};
pub use queues::QueueState;
