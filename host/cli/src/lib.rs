//! The `asyncer` command: run and inspect guest modules from a shell, through
//! the same [`asyncer::Executor`] and worker processes as the library.
//!
//! ```text
//! asyncer run MODULE.wasm TASK [--input FILE | --input-hex HEX | --input-json JSON|@FILE]
//!             [--timeout 2s]
//!             [--fuel N] [--memory 64MiB] [--allow-dir HOST[:GUEST]]
//!             [--allow-dir-rw HOST[:GUEST]] [--env K=V] [--json]
//!             [--allow-module-hash HEX]... [--allow-module-hashes FILE]
//!             [--sandbox-off LAYER[,LAYER]]
//! asyncer run MODULE.wasm --command [--arg A]... [--env K=V]...
//!             [--allow-dir[-rw] HOST[:GUEST]]... [--input FILE] [--json]
//! asyncer inspect MODULE.wasm [--json]
//! asyncer cache ls|clear [--json] [--cache-dir DIR]
//! asyncer inspect --sandbox [--json]
//! ```
//!
//! With `--allow-module-hash` or `--allow-module-hashes` (a file of hex
//! SHA-256 hashes, one a line, `#` comments), a module not on the list is
//! refused before it is compiled: exit code 2, kind `module_not_allowed`.
//! `inspect --sandbox` prints each layer of the worker process's own sandbox
//! (`seccomp`, `landlock`, `namespaces`, `rlimits`) and whether it is active
//! on this machine; `--sandbox-off` turns layers off (debugging only).
//!
//! `run` prints the task's raw output bytes (the postcard output, without the
//! envelope byte), or with `--json` one JSON object
//! `{"uid", "status", "output_hex", "error": {"kind", "message"}, "wall_ms",
//! "fuel_consumed", "peak_memory_bytes"}`, plus the guest's `"stdout"` and
//! `"stderr"` (text) with `"stdout_dropped"` and `"stderr_dropped"` (bytes
//! past the cap), and for a guest error or panic the guest's own message in
//! `"error": {"guest_message"}`. Exit code 0: ok; 1: the task
//! failed; 2: bad usage or unreadable module.
//!
//! `--input-json` encodes a JSON input from the type description the module
//! carries (`#[task]` records one; a value that does not fit is a `decode`
//! error naming the field, exit code 2, before anything runs) and prints the
//! output as JSON; with `--json`, a described task's output is also in
//! `"output"` beside `"output_hex"` (`u128`/`i128` as decimal strings).
//! `inspect` prints each described task's input and output types (`"types"`
//! in its JSON).
//!
//! `run --command` runs a WASI command module (one that exports `_start`)
//! with those arguments, environment and grants, the input as its standard
//! input: its stdout and stderr are passed through, or with `--json` the
//! object adds `"exit_code"` (and `"stdout"`, `"stderr"` as above); exit
//! code 0 only when the command exited 0, else 1 (a trap or a limit is an
//! error as for a task).
//!
//! Compiled modules are kept in a cache (`--cache-dir`, `ASYNCER_CACHE_DIR`,
//! default the platform's cache directory), so a second run of a module
//! compiles nothing; `asyncer cache ls|clear` lists and empties it.
//!
//! The error kinds (`error.kind`): `invalid_module`, `no_such_task`,
//! `decode`, `guest_error`, `guest_panic`, `trap`, `timeout`, `out_of_fuel`,
//! `memory_limit`, `output_too_large`, `input_too_large`, `worker_crashed`,
//! `spawn_failed`, `cache_failed`, `engine_failed`, `link_failed`,
//! `invalid_config`, `cancelled`, `shut_down`, `worker_lost`,
//! `module_not_allowed`, `queue_full`, `expired` (see
//! `asyncer::ErrorKind`). Through a cluster (`--nats URL`) the JSON adds
//! `"host"` (the worker host that ran the task) and `"attempt"`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use asyncer::{
    ArtifactCache, CacheEntry, Capabilities, CommandInput, CommandOutput, Error, Executor,
    ExecutorBuilder, LayerState, Limits, Module, SandboxSettings, TaskOptions, TaskUpdate,
};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

mod cluster;

/// Exit code: the task failed.
const TASK_FAILED: u8 = 1;
/// Exit code: bad usage or an unreadable module.
const BAD_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "asyncer",
    version,
    about = "Run and inspect asyncer guest modules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one task of a module in a sandboxed worker process.
    Run(RunArgs),
    /// Serves tasks from a NATS JetStream cluster as a worker host, until
    /// SIGTERM or SIGINT (then drains: stops pulling, lets running tasks
    /// finish within --grace, hands back the rest, exits 0).
    Serve(cluster::ServeArgs),
    /// Lists or clears the compiled-module cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Lists a module's tasks and imports, and whether it is valid; or,
    /// with --sandbox, how the worker processes' own sandbox stands here.
    Inspect {
        /// The module (.wasm).
        #[arg(required_unless_present = "sandbox")]
        module: Option<PathBuf>,
        /// Report each layer of the worker processes' own sandbox (seccomp,
        /// landlock, namespaces, rlimits) and whether it is active here.
        #[arg(long, conflicts_with = "module")]
        sandbox: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        guard: GuardArgs,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Lists the cached artifacts, most recently used first.
    Ls {
        #[command(flatten)]
        cache: CacheArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Removes every cached artifact.
    Clear {
        #[command(flatten)]
        cache: CacheArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Where compiled modules are kept between runs.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct CacheArgs {
    /// Keeps compiled modules in DIR between runs (default: the platform's
    /// cache directory, `$XDG_CACHE_HOME/asyncer` or `~/.cache/asyncer`).
    #[arg(long, value_name = "DIR", env = "ASYNCER_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// The cache's size bound (default 1GiB): past it, the least recently
    /// used artifacts are removed.
    #[arg(long, value_name = "SIZE", env = "ASYNCER_CACHE_MAX_SIZE", value_parser = parse_size)]
    pub(crate) cache_max_size: Option<u64>,
    /// Compiles into a temporary cache removed at exit (nothing is kept).
    #[arg(long)]
    pub(crate) no_cache: bool,
}

impl CacheArgs {
    /// The cache directory to use, if any.
    fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(|| dirs::cache_dir().map(|dir| dir.join("asyncer")))
    }

    /// `builder` with the cache directory and bound applied. A directory
    /// given (flag or environment) must work, else the executor reports it;
    /// the default one is skipped, with a warning, when it cannot be made
    /// (a user without a home directory still runs tasks, compiling each
    /// time).
    pub(crate) fn apply(&self, mut builder: ExecutorBuilder) -> ExecutorBuilder {
        if let Some(max) = self.cache_max_size {
            builder = builder.cache_max_bytes(max);
        }
        match (self.dir(), &self.cache_dir) {
            (Some(dir), Some(_)) => builder.cache_dir(dir),
            (Some(dir), None) => match ArtifactCache::open(&dir) {
                Ok(_) => builder.cache_dir(dir),
                Err(e) => {
                    eprintln!(
                        "asyncer: warning: {e}; modules are compiled on every run \
                         (--cache-dir DIR or ASYNCER_CACHE_DIR to keep them, --no-cache to say so)"
                    );
                    builder
                }
            },
            (None, _) => builder,
        }
    }
}

/// Which code may run, and the worker processes' own sandbox.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct GuardArgs {
    /// Runs only modules with this hash (hex SHA-256 of the module bytes,
    /// as `inspect` shows it); repeatable.
    #[arg(long, value_name = "HEX")]
    pub(crate) allow_module_hash: Vec<String>,
    /// Runs only modules whose hash is listed in FILE (one hex hash a line;
    /// blank lines and `#` comments are skipped).
    #[arg(long, value_name = "FILE")]
    pub(crate) allow_module_hashes: Option<PathBuf>,
    /// Turns layers of the worker processes' own sandbox off (seccomp,
    /// landlock, namespaces, rlimits; comma-separated or repeated). For
    /// debugging only: every layer is on by default.
    #[arg(long, value_name = "LAYER", value_delimiter = ',')]
    pub(crate) sandbox_off: Vec<asyncer::SandboxLayer>,
}

impl GuardArgs {
    /// `builder` with the allow-list and sandbox settings applied.
    ///
    /// # Errors
    /// The allow-list file cannot be read.
    pub(crate) fn apply(&self, builder: ExecutorBuilder) -> Result<ExecutorBuilder, String> {
        let mut builder = builder.sandbox(
            self.sandbox_off
                .iter()
                .fold(SandboxSettings::default(), |settings, layer| {
                    settings.without(*layer)
                }),
        );
        if !self.allow_module_hash.is_empty() {
            builder = builder.allow_modules(&self.allow_module_hash);
        }
        if let Some(path) = &self.allow_module_hashes {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            builder = builder.allow_modules(hashes_in(&text));
        }
        Ok(builder)
    }
}

/// The hashes in an allow-list file: one a line, `#` starts a comment.
fn hashes_in(text: &str) -> Vec<&str> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .collect()
}

#[derive(clap::Args)]
struct RunArgs {
    /// The module (.wasm).
    module: PathBuf,
    /// The task name (the export is `task:NAME`).
    #[arg(required_unless_present = "command", conflicts_with = "command")]
    task: Option<String>,
    /// Runs the module as a WASI command (its `_start`): the input is its
    /// standard input, and it gets --arg arguments, --env variables and
    /// --allow-dir grants. Exit code 0 only when the command exited 0.
    #[arg(long)]
    command: bool,
    /// An argument of the command (repeatable; needs --command).
    #[arg(
        long = "arg",
        value_name = "A",
        allow_hyphen_values = true,
        requires = "command"
    )]
    args: Vec<String>,
    /// A file holding the postcard-encoded input.
    #[arg(long, conflicts_with = "input_hex")]
    input: Option<PathBuf>,
    /// The postcard-encoded input, in hex.
    #[arg(long)]
    input_hex: Option<String>,
    /// The input as JSON (or `@FILE` to read it from a file), for modules
    /// that describe their task types: encoded to postcard before anything
    /// runs, and the output printed as JSON.
    #[arg(long, value_name = "JSON|@FILE", conflicts_with_all = ["input", "input_hex", "command"])]
    input_json: Option<String>,
    /// Wall-clock limit, e.g. `2s`, `500ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Fuel budget (turns metering on).
    #[arg(long)]
    fuel: Option<u64>,
    /// Largest linear memory, e.g. `64MiB`.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Lets the guest read HOST, seen as GUEST (default: the same path).
    #[arg(long, value_name = "HOST[:GUEST]")]
    allow_dir: Vec<String>,
    /// Lets the guest read and change HOST, seen as GUEST.
    #[arg(long, value_name = "HOST[:GUEST]")]
    allow_dir_rw: Vec<String>,
    /// Sets an environment variable for the guest.
    #[arg(long, value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Print one JSON object instead of the raw output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: cluster::NatsArgs,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>().map(|size| size.as_u64())
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not K=V"))?;
    if key.is_empty() {
        return Err(format!("`{text}` has an empty name"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn split_dir(spec: &str) -> (PathBuf, String) {
    match spec.split_once(':') {
        Some((host, guest)) if !guest.is_empty() => (host.into(), guest.to_owned()),
        _ => (spec.into(), spec.trim_end_matches(':').to_owned()),
    }
}

/// The JSON value of `--input-json`: the text itself, or `@FILE`'s.
fn json_input(text: &str) -> Result<Value, String> {
    let (text, source) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?,
            path,
        ),
        None => (text.to_owned(), "--input-json"),
    };
    serde_json::from_str(&text).map_err(|e| format!("{source} is not JSON: {e}"))
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err("hex input has an odd number of digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| format!("`{}` is not hex", &text[i..i + 2]))
        })
        .collect()
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the command line; the exit code follows the CLI contract.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ASYNCER_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("asyncer: cannot start the runtime: {e}");
            return ExitCode::from(BAD_USAGE);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Serve(args) => cluster::serve(args).await,
            Command::Cache { action } => cache(action),
            Command::Inspect {
                sandbox: true,
                json,
                guard,
                cache,
                ..
            } => inspect_sandbox(&guard, &cache, json).await,
            Command::Inspect {
                module: Some(module),
                json,
                guard,
                cache,
                ..
            } => inspect(module, &guard, &cache, json).await,
            Command::Inspect { json, .. } => {
                usage_error(json, "invalid_config", "inspect needs MODULE or --sandbox")
            }
        }
    })
}

fn usage_error(json: bool, kind: &str, message: &str) -> ExitCode {
    if json {
        print_json(&json!({
            "uid": Value::Null,
            "status": "error",
            "output_hex": Value::Null,
            "error": {"kind": kind, "message": message},
            "wall_ms": Value::Null,
            "fuel_consumed": Value::Null,
            "peak_memory_bytes": Value::Null,
        }));
    } else {
        eprintln!("asyncer: {message}");
    }
    ExitCode::from(BAD_USAGE)
}

fn print_json(value: &Value) {
    println!("{value}");
}

async fn run(args: RunArgs) -> ExitCode {
    let input = match (&args.input, &args.input_hex) {
        (Some(path), _) => match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                return usage_error(
                    args.json,
                    "decode",
                    &format!("cannot read {}: {e}", path.display()),
                )
            }
        },
        (None, Some(hex)) => match decode_hex(hex) {
            Ok(bytes) => bytes,
            Err(e) => return usage_error(args.json, "decode", &e),
        },
        (None, None) => Vec::new(),
    };
    let mut limits = Limits::default();
    if let Some(timeout) = args.timeout {
        limits = limits.with_timeout(timeout);
    }
    if let Some(fuel) = args.fuel {
        limits = limits.with_fuel(fuel);
    }
    if let Some(memory) = args.memory {
        limits = limits.with_max_memory_bytes(memory);
    }
    let mut capabilities = Capabilities::none();
    for spec in &args.allow_dir {
        let (host, guest) = split_dir(spec);
        capabilities = capabilities.read_only_dir(host, guest);
    }
    for spec in &args.allow_dir_rw {
        let (host, guest) = split_dir(spec);
        capabilities = capabilities.read_write_dir(host, guest);
    }
    for (key, value) in &args.env {
        capabilities = capabilities.env(key, value);
    }

    let builder = Executor::builder().max_processes(1).limits(limits.clone());
    let mut builder = match args.guard.apply(args.cache.apply(builder)) {
        Ok(builder) => builder,
        Err(e) => return usage_error(args.json, "invalid_config", &e),
    };
    if let Some(url) = &args.cluster.nats {
        match asyncer_cluster::Connection::connect(args.cluster.options(url)).await {
            Ok(connection) => {
                builder = builder.backend(asyncer_cluster::ClusterBackend::new(connection));
            }
            Err(e) => return usage_error(args.json, "spawn_failed", &e.to_string()),
        }
    }
    let exec = match builder.build() {
        Ok(exec) => exec,
        Err(e) => return usage_error(args.json, e.kind().as_str(), &e.to_string()),
    };
    let module = match exec.load(&args.module).await {
        Ok(module) => module,
        Err(e) => return usage_error(args.json, e.kind().as_str(), &e.to_string()),
    };
    // JSON input: checked against the task's described type before anything
    // runs.
    let input = match (&args.input_json, &args.task) {
        (Some(text), Some(task)) => {
            match json_input(text)
                .and_then(|value| module.encode_json(task, &value).map_err(|e| e.to_string()))
            {
                Ok(bytes) => bytes,
                Err(e) => return usage_error(args.json, "decode", &e),
            }
        }
        _ => input,
    };
    let mut updates = exec.updates();
    let options = TaskOptions::new().limits(limits).capabilities(capabilities);
    let submitted = match &args.task {
        Some(task) => exec
            .submit_bytes_with(&module, task, input, options)
            .map(Submitted::Task),
        None => exec
            .submit_command_with(
                &module,
                CommandInput::new().args(&args.args).stdin(input),
                options,
            )
            .map(Submitted::Command),
    };
    let handle = match submitted {
        Ok(handle) => handle,
        // An unknown task name (or a module that is no command) or an
        // oversized input is bad usage.
        Err(e) => return usage_error(args.json, e.kind().as_str(), &e.to_string()),
    };
    let uid = handle.uid().to_owned();
    // The guest's log records (and, without --json, its progress) go to
    // stderr as they come; the completion is the task's last update.
    let event = loop {
        match updates.recv().await {
            Some(TaskUpdate::Finished(event)) if event.uid == uid => break Some(event),
            Some(TaskUpdate::Log(log)) if log.uid == uid => {
                eprintln!("[{}] {}", log.level, log.message);
            }
            Some(TaskUpdate::Progress(p)) if p.uid == uid && !args.json => {
                let p = &p.progress;
                eprintln!("[progress {}/{}] {}", p.done, p.total, p.message);
            }
            Some(_) => continue,
            None => break None,
        }
    };
    let result = handle.outcome().await;
    // The `--json` object of the contract, with what the event tells.
    let report = |status: &str, output_hex: Value, error: Value| {
        let mut value = json!({
            "uid": uid,
            "status": status,
            "output_hex": output_hex,
            "error": error,
            "wall_ms": event.as_ref().map(|e| e.wall_time.as_secs_f64() * 1000.0),
            "fuel_consumed": event.as_ref().and_then(|e| e.fuel_consumed),
            "peak_memory_bytes": event.as_ref().map(|e| e.peak_memory_bytes),
            "host": event.as_ref().and_then(|e| e.host.clone()),
            "attempt": event.as_ref().map(|e| e.attempt),
        });
        add_guest_streams(&mut value, event.as_deref());
        value
    };
    if let Some(event) = &event {
        if !args.json && args.task.is_some() {
            // The guest's own output goes to stderr, so stdout stays the result.
            let _ = std::io::stderr().write_all(&event.stdout);
            let _ = std::io::stderr().write_all(&event.stderr);
        }
    }
    match result {
        Ok(Outcome::Exited(out)) => {
            if args.json {
                let mut value = report("ok", Value::Null, Value::Null);
                value["exit_code"] = json!(out.exit_code);
                print_json(&value);
            } else {
                // A command's own streams are its result.
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&out.stdout).and_then(|()| stdout.flush());
                let _ = std::io::stderr().write_all(&out.stderr);
            }
            if out.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(TASK_FAILED)
            }
        }
        Ok(Outcome::Output(output)) => {
            // The output as JSON, when the module describes the task.
            let task = args.task.as_deref().unwrap_or_default();
            let as_json = module
                .task_types(task)
                .map(|_| module.decode_json(task, &output));
            if args.json {
                let mut value = report("ok", json!(encode_hex(&output)), Value::Null);
                match as_json {
                    Some(Ok(output)) => value["output"] = output,
                    Some(Err(e)) => value["output_error"] = json!(e.to_string()),
                    None => {}
                }
                print_json(&value);
            } else if args.input_json.is_some() {
                match as_json {
                    Some(Ok(output)) => print_json(&output),
                    Some(Err(e)) => {
                        eprintln!("asyncer: {e} ({})", e.kind());
                        return ExitCode::from(TASK_FAILED);
                    }
                    None => unreachable!("the input was encoded from the same description"),
                }
            } else {
                let mut stdout = std::io::stdout().lock();
                if stdout
                    .write_all(&output)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return ExitCode::from(TASK_FAILED);
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            if args.json {
                let kind = json!({"kind": error.kind().as_str(), "message": error.to_string()});
                let mut value = report("error", Value::Null, kind);
                // The guest's own words, beside the human message.
                if let Error::Guest { message } | Error::GuestPanic { message } = &error {
                    value["error"]["guest_message"] = json!(message);
                }
                print_json(&value);
            } else {
                eprintln!("asyncer: {} ({})", error, error.kind());
            }
            ExitCode::from(TASK_FAILED)
        }
    }
}

/// The handle of what `run` submitted: a task or a WASI command.
enum Submitted {
    Task(asyncer::TaskHandle<Vec<u8>>),
    Command(asyncer::TaskHandle<CommandOutput>),
}

/// What a task or a command gave back.
enum Outcome {
    Output(Vec<u8>),
    Exited(CommandOutput),
}

impl Submitted {
    fn uid(&self) -> &str {
        match self {
            Submitted::Task(handle) => handle.uid(),
            Submitted::Command(handle) => handle.uid(),
        }
    }

    async fn outcome(self) -> Result<Outcome, Error> {
        match self {
            Submitted::Task(handle) => handle.await.map(Outcome::Output),
            Submitted::Command(handle) => handle.await.map(Outcome::Exited),
        }
    }
}

/// An executor of one process with `guard` applied, or the usage error.
fn one_process(guard: &GuardArgs, cache: &CacheArgs, json: bool) -> Result<Executor, ExitCode> {
    guard
        .apply(cache.apply(Executor::builder().max_processes(1)))
        .map_err(|e| usage_error(json, "invalid_config", &e))?
        .build()
        .map_err(|e| usage_error(json, e.kind().as_str(), &e.to_string()))
}

async fn inspect_sandbox(guard: &GuardArgs, cache: &CacheArgs, json: bool) -> ExitCode {
    let exec = match one_process(guard, cache, json) {
        Ok(exec) => exec,
        Err(code) => return code,
    };
    let status = match exec.sandbox_status().await {
        Ok(status) => status,
        Err(e) => return usage_error(json, e.kind().as_str(), &e.to_string()),
    };
    if json {
        let layers: serde_json::Map<String, Value> = status
            .layers()
            .map(|(layer, state)| {
                let (name, detail) = match state {
                    LayerState::Active => ("active", None),
                    LayerState::Partial(why) => ("partial", Some(why)),
                    LayerState::Off => ("off", None),
                    LayerState::Unavailable(why) => ("unavailable", Some(why)),
                };
                (
                    layer.to_string(),
                    json!({"active": state.is_active(), "state": name, "detail": detail}),
                )
            })
            .collect();
        print_json(&json!({ "sandbox": layers }));
    } else {
        print!("{status}");
    }
    ExitCode::SUCCESS
}

/// Adds the guest's captured stdout and stderr (text; invalid UTF-8 replaced)
/// and the bytes dropped past the cap to a `run --json` object.
fn add_guest_streams(value: &mut Value, event: Option<&asyncer::TaskEvent>) {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    value["stdout"] = json!(event.map(|e| text(&e.stdout)));
    value["stderr"] = json!(event.map(|e| text(&e.stderr)));
    value["stdout_dropped"] = json!(event.map(|e| e.stdout_dropped));
    value["stderr_dropped"] = json!(event.map(|e| e.stderr_dropped));
}

async fn inspect(path: PathBuf, guard: &GuardArgs, cache: &CacheArgs, json: bool) -> ExitCode {
    let exec = match one_process(guard, cache, json) {
        Ok(exec) => exec,
        Err(code) => return code,
    };
    match exec.load(&path).await {
        Ok(module) => {
            print_module(&module, json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                print_json(&json!({
                    "module": path.display().to_string(),
                    "valid": false,
                    "error": {"kind": e.kind().as_str(), "message": e.to_string()},
                }));
            } else {
                println!("module: {}", path.display());
                println!("valid: no: {e}");
            }
            ExitCode::from(BAD_USAGE)
        }
    }
}

/// `asyncer cache ls|clear`.
fn cache(action: CacheAction) -> ExitCode {
    let (CacheAction::Ls { cache, json } | CacheAction::Clear { cache, json }) = &action;
    let Some(dir) = cache.dir() else {
        return usage_error(
            *json,
            "invalid_config",
            "no cache directory (--no-cache, or no home directory)",
        );
    };
    // Listing a cache that was never made shows it empty, without making it.
    if matches!(action, CacheAction::Ls { .. }) && !dir.exists() {
        return print_cache(&dir, &[], *json);
    }
    let opened = ArtifactCache::open(&dir);
    let result = opened.and_then(|store| match action {
        CacheAction::Ls { .. } => store
            .entries()
            .map(|entries| print_cache(&dir, &entries, *json)),
        CacheAction::Clear { .. } => store.clear().map(|cleared| {
            if *json {
                print_json(&json!({
                    "dir": dir.display().to_string(),
                    "removed_files": cleared.files,
                    "removed_bytes": cleared.bytes,
                }));
            } else {
                println!(
                    "removed {} artifacts ({}) from {}",
                    cleared.files,
                    bytesize::ByteSize::b(cleared.bytes),
                    dir.display()
                );
            }
            ExitCode::SUCCESS
        }),
    });
    result.unwrap_or_else(|e| usage_error(*json, e.kind().as_str(), &e.to_string()))
}

fn print_cache(dir: &std::path::Path, entries: &[CacheEntry], json: bool) -> ExitCode {
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    let when = |e: &CacheEntry| humantime::format_rfc3339_seconds(e.last_used).to_string();
    if json {
        let artifacts: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "module_hash": e.module_hash,
                    "flavor": e.flavor,
                    "engine": e.engine,
                    "bytes": e.bytes,
                    "last_used": when(e),
                    "path": e.path.display().to_string(),
                })
            })
            .collect();
        print_json(&json!({
            "dir": dir.display().to_string(),
            "total_bytes": total,
            "artifacts": artifacts,
        }));
    } else {
        println!(
            "{}: {} artifacts, {}",
            dir.display(),
            entries.len(),
            bytesize::ByteSize::b(total)
        );
        for e in entries {
            println!(
                "{}  {:<10}  {:>10}  {}",
                e.module_hash,
                e.flavor,
                bytesize::ByteSize::b(e.bytes).to_string(),
                when(e)
            );
        }
    }
    ExitCode::SUCCESS
}

fn print_module(module: &Module, json: bool) {
    let described = module
        .tasks()
        .iter()
        .filter_map(|task| module.task_types(task));
    if json {
        let types: serde_json::Map<String, Value> = described
            .map(|t| {
                let signature =
                    json!({"input": t.input.to_string(), "output": t.output.to_string()});
                (t.task.clone(), signature)
            })
            .collect();
        print_json(&json!({
            "module": module.name(),
            "sha256": module.hash(),
            "valid": true,
            "tasks": module.tasks(),
            "types": types,
            "command": module.is_command(),
            "imports": module.imports(),
        }));
    } else {
        println!("module: {}", module.name());
        println!("sha256: {}", module.hash());
        println!("valid: yes (guest ABI v1)");
        println!("tasks: {}", module.tasks().join(", "));
        for types in described {
            println!("  {}: {} -> {}", types.task, types.input, types.output);
        }
        if module.is_command() {
            println!("command: yes (WASI `_start`: run it with `asyncer run MODULE --command`)");
        }
        println!("imports: {}", module.imports().join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(decode_hex("00ff2a").unwrap(), vec![0, 255, 42]);
        assert_eq!(encode_hex(&[0, 255, 42]), "00ff2a");
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }

    #[test]
    fn allow_list_files_skip_comments_and_blank_lines() {
        let text = "# approved\n\n  ab12  # the digest task\nCD34\n";
        assert_eq!(hashes_in(text), vec!["ab12", "CD34"]);
    }

    #[test]
    fn sizes_envs_and_dirs_parse() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("novalue").is_err());
        assert_eq!(
            split_dir("/srv/x:/data"),
            (PathBuf::from("/srv/x"), "/data".to_string())
        );
        assert_eq!(
            split_dir("/srv/x"),
            (PathBuf::from("/srv/x"), "/srv/x".to_string())
        );
    }
}
