//! The embedded backend: tasks run in worker processes on this machine, and
//! (for comparisons and debugging) in this very process.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use asyncer_protocol::{EngineFlavor, GuestMessage, Reply, Request};

use crate::dispatch::{Assignment, Backend, BoxFuture, Run, RunContext, RunReport};
use crate::error::FailureContext;
use crate::module::{Artifact, Compiler};
use crate::pool::{Pool, WorkerRun};
use crate::{trace, Capabilities, Error, Limits, Module};

/// Runs each task in a local worker process from the [`Pool`], with the
/// module's artifact from the [`Compiler`].
pub(crate) struct LocalBackend {
    pool: Arc<Pool>,
    /// Also keeps the private cache and work directories alive.
    compiler: Arc<Compiler>,
}

impl LocalBackend {
    pub(crate) fn new(pool: Arc<Pool>, compiler: Arc<Compiler>) -> Self {
        LocalBackend { pool, compiler }
    }
}

impl Backend for LocalBackend {
    fn run(&self, task: Assignment, context: RunContext) -> BoxFuture<'static, Run> {
        let (pool, compiler) = (self.pool.clone(), self.compiler.clone());
        Box::pin(async move {
            let flavor = task.limits.flavor();
            let artifact = match artifact(&compiler, &task.module, flavor).await {
                Ok(artifact) => artifact,
                Err(error) => return Run::new(Err(error), SystemTime::now()),
            };
            let Assignment {
                uid,
                task: name,
                module,
                input,
                limits,
                capabilities,
                command,
                ..
            } = task;
            let request = Request {
                uid,
                artifact: artifact.path.display().to_string(),
                flavor,
                task: name,
                limits: limits.to_wire(),
                capabilities: capabilities.to_wire(),
                command,
                input,
            };
            let run = pool.run(request, limits.timeout(), &context).await;
            into_run(run, &limits, &module, &artifact.path)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.drain())
    }
}

/// Turns a worker's run into the backend's answer: the worker's failure
/// completed with the module's task list, the crash report and the timeout.
fn into_run(run: WorkerRun, limits: &Limits, module: &Module, artifact: &Path) -> Run {
    let WorkerRun {
        pid,
        exit_status,
        started_at,
        reply,
        exiting,
    } = run;
    let mut report = RunReport::new(started_at);
    report.pid = pid;
    report.exit_status = exit_status;
    let outcome = match reply {
        Ok(reply) => {
            let Reply {
                outcome,
                usage,
                stdout,
                stderr,
                stdout_dropped,
                stderr_dropped,
                log_dropped,
                // The pool has looked at it (a missing layer is logged once).
                sandbox: _,
            } = reply;
            let outcome = outcome.map_err(|failure| {
                Error::from_failure(
                    failure,
                    &FailureContext {
                        timeout: limits.timeout(),
                        pid: pid.unwrap_or(0),
                        stderr: &stderr,
                        tasks: module.tasks(),
                        artifact,
                    },
                )
            });
            report.fuel_consumed = usage.fuel_consumed;
            report.peak_memory_bytes = usage.peak_memory_bytes;
            report.worker_rss_bytes = usage.worker_rss_bytes;
            report.stdout = stdout;
            report.stderr = stderr;
            report.stdout_dropped = stdout_dropped;
            report.stderr_dropped = stderr_dropped;
            report.log_dropped = log_dropped;
            outcome
        }
        Err(error) => Err(error),
    };
    Run {
        outcome,
        report,
        cleanup: exiting
            .map(|worker| -> BoxFuture<'static, Option<String>> { Box::pin(worker.reap()) }),
    }
}

/// The module's artifact for `flavor`, compiled off the event loop if new.
pub(crate) async fn artifact(
    compiler: &Arc<Compiler>,
    module: &Module,
    flavor: EngineFlavor,
) -> Result<Artifact, Error> {
    if let Some(artifact) = compiler.cached_artifact(module, flavor) {
        return Ok(artifact);
    }
    let (compiler, module) = (compiler.clone(), module.clone());
    blocking(move || compiler.artifact(&module, flavor)).await
}

/// Runs CPU-bound `f` (compiling) on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::InvalidModule {
            message: format!("module compilation panicked: {e}"),
        })
    })
}

/// Runs `task` of `module` on the calling thread, with no worker process:
/// see [`crate::Executor::run_in_process`].
pub(crate) async fn run_in_process(
    compiler: &Arc<Compiler>,
    module: &Module,
    task: &str,
    input: &[u8],
    limits: &Limits,
    capabilities: &Capabilities,
) -> Result<Vec<u8>, Error> {
    let flavor = limits.flavor();
    let artifact = artifact(compiler, module, flavor).await?;
    let linker = asyncer_worker::new_linker(&artifact.engine).map_err(Error::link)?;
    let wire_limits = limits.to_wire();
    let sink_task = task.to_owned();
    let sink: asyncer_worker::GuestSink = Arc::new(move |message| match message {
        GuestMessage::Log(record) => trace::guest_record("in-process", &sink_task, &record),
        GuestMessage::Progress(p) => trace::guest_progress("in-process", &sink_task, &p),
    });
    let reply = asyncer_worker::run_loaded(asyncer_worker::LoadedTask {
        engine: &artifact.engine,
        linker: &linker,
        module: &artifact.compiled,
        flavor,
        task,
        input,
        limits: &wire_limits,
        capabilities: &capabilities.to_wire(),
        sink: Some(sink),
        command: None,
        pre: None,
    })
    .await;
    reply.outcome.map_err(|failure| {
        Error::from_failure(
            failure,
            &FailureContext {
                timeout: limits.timeout(),
                pid: std::process::id(),
                stderr: &reply.stderr,
                tasks: module.tasks(),
                artifact: &artifact.path,
            },
        )
    })
}
