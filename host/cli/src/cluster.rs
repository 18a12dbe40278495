//! The cluster side of the CLI: `asyncer serve` (a worker host) and the
//! connection options `asyncer run --nats` shares with it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use asyncer::{Executor, TenantSettings, WarmOptions};
use asyncer_cluster::{ClusterOptions, Connection, HostOptions};
use tokio_util::sync::CancellationToken;

/// How to reach a NATS JetStream server.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NatsArgs {
    /// The NATS server, e.g. `nats://127.0.0.1:4222` (runs the task on the
    /// cluster's worker hosts).
    #[arg(long, value_name = "URL")]
    pub(crate) nats: Option<String>,
    /// The tenant tasks are submitted and served under.
    #[arg(long, default_value = "default")]
    pub(crate) tenant: String,
    /// A NATS credentials file.
    #[arg(long, value_name = "FILE")]
    pub(crate) nats_creds: Option<PathBuf>,
    /// NATS user (with --nats-password).
    #[arg(long, requires = "nats_password")]
    pub(crate) nats_user: Option<String>,
    /// NATS password.
    #[arg(long, requires = "nats_user")]
    pub(crate) nats_password: Option<String>,
    /// NATS authentication token.
    #[arg(long)]
    pub(crate) nats_token: Option<String>,
    /// Require TLS; trust this CA file (PEM) besides the system's.
    #[arg(long, value_name = "CA_FILE")]
    pub(crate) nats_tls: Option<Option<PathBuf>>,
    /// How long connecting may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) connect_timeout: Duration,
    /// A host's lease on a task: renewed while it runs, and the task is
    /// delivered again when it lapses (host dead or cut off).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) ack_wait: Duration,
    /// Deliveries of a task before it ends in `worker_lost`.
    #[arg(long, default_value_t = 5)]
    pub(crate) max_deliver: i64,
    /// Replicas of the stream, bucket and store when this process creates
    /// them (a JetStream cluster of at least that many servers).
    #[arg(long, default_value_t = 1)]
    pub(crate) replicas: usize,
}

impl NatsArgs {
    pub(crate) fn options(&self, url: &str) -> ClusterOptions {
        let mut options = ClusterOptions::new(url)
            .tenant(self.tenant.clone())
            .connect_timeout(self.connect_timeout)
            .ack_wait(self.ack_wait)
            .max_deliver(self.max_deliver)
            .replicas(self.replicas);
        if let Some(path) = &self.nats_creds {
            options = options.credentials_file(path);
        }
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_password(user, password);
        }
        if let Some(token) = &self.nats_token {
            options = options.token(token);
        }
        if let Some(roots) = &self.nats_tls {
            options = options.tls(roots.clone());
        }
        options
    }
}

/// `asyncer serve`: a worker host.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
    /// Tasks run at once (worker processes); default: the number of CPUs.
    #[arg(long)]
    pub(crate) max_processes: Option<usize>,
    /// Warm workers: each serves many tasks, each in a fresh instance.
    #[arg(long)]
    pub(crate) warm: bool,
    /// This host's name, reported with every task it runs (default: the
    /// machine's host name and this process's id).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// On SIGTERM or SIGINT, how long running tasks may finish before they
    /// are handed back to the queue.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) grace: Duration,
    /// Lets remote tasks be granted directories under DIR (repeatable);
    /// grants anywhere else are refused.
    #[arg(long, value_name = "DIR")]
    pub(crate) allow_remote_dir: Vec<PathBuf>,
    /// Lets remote tasks set environment variables for their guest.
    #[arg(long)]
    pub(crate) allow_remote_env: bool,
    /// This host runs only approved modules (`--allow-module-hashes FILE`,
    /// `--allow-module-hash HEX`): a task with any other ends in
    /// `module_not_allowed`, and its module is not even fetched.
    #[command(flatten)]
    pub(crate) guard: crate::GuardArgs,
    #[command(flatten)]
    pub(crate) cache: crate::CacheArgs,
    /// Serves this host's metrics (tasks by outcome and tenant, queue wait,
    /// run time, fuel, memory, attempts, queued tasks, live workers) in
    /// Prometheus' text format at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// A tenant's share of this host's slots (default 1 for every tenant),
    /// as NAME=WEIGHT; repeat for more tenants.
    #[arg(long, value_name = "NAME=WEIGHT", value_parser = tenant_number::<u32>)]
    pub(crate) tenant_weight: Vec<(String, u32)>,
    /// A tenant's cap of running tasks on this host, as NAME=N; repeat for
    /// more tenants.
    #[arg(long, value_name = "NAME=N", value_parser = tenant_number::<usize>)]
    pub(crate) tenant_max_running: Vec<(String, usize)>,
    /// A waiting queue gains a priority level per this much time it is
    /// passed over, so low priorities are never starved; `off`: strict
    /// priorities.
    #[arg(long, value_name = "DURATION|off", default_value = "1s", value_parser = aging)]
    pub(crate) priority_aging: Aging,
}

/// `--priority-aging`: a step, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Aging(Option<Duration>);

fn aging(text: &str) -> Result<Aging, String> {
    if text == "off" {
        return Ok(Aging(None));
    }
    humantime::parse_duration(text)
        .map(|step| Aging(Some(step)))
        .map_err(|e| e.to_string())
}

/// `NAME=N` for a tenant setting (split as `--env`'s `K=V`).
fn tenant_number<N: std::str::FromStr>(text: &str) -> Result<(String, N), String>
where
    N::Err: std::fmt::Display,
{
    let (name, number) = crate::parse_env(text)?;
    let number = number
        .parse()
        .map_err(|e| format!("{number:?} in {text:?}: {e}"))?;
    Ok((name, number))
}

pub(crate) async fn serve(args: ServeArgs) -> ExitCode {
    let Some(url) = args.nats.nats.clone() else {
        eprintln!("asyncer serve: --nats URL is required");
        return ExitCode::from(crate::BAD_USAGE);
    };
    if let Some(addr) = args.metrics_addr {
        let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install();
        if let Err(e) = installed {
            eprintln!("asyncer serve: cannot serve metrics on {addr}: {e}");
            return ExitCode::from(crate::BAD_USAGE);
        }
    }
    let mut builder = match args.guard.apply(args.cache.apply(Executor::builder())) {
        Ok(builder) => builder,
        Err(e) => {
            eprintln!("asyncer serve: {e}");
            return ExitCode::from(crate::BAD_USAGE);
        }
    };
    if let Some(n) = args.max_processes {
        builder = builder.max_processes(n);
    }
    if args.warm {
        builder = builder.warm(WarmOptions::default());
    }
    builder = builder.priority_aging(args.priority_aging.0);
    let mut tenants: std::collections::BTreeMap<&str, TenantSettings> = Default::default();
    for (name, weight) in &args.tenant_weight {
        let settings = tenants.remove(name.as_str()).unwrap_or_default();
        tenants.insert(name, settings.weight(*weight));
    }
    for (name, cap) in &args.tenant_max_running {
        let settings = tenants.remove(name.as_str()).unwrap_or_default();
        tenants.insert(name, settings.max_running(*cap));
    }
    for (name, settings) in tenants {
        builder = builder.tenant(name, settings);
    }
    let exec = match builder.build() {
        Ok(exec) => exec,
        Err(e) => {
            eprintln!("asyncer serve: {e}");
            return ExitCode::from(crate::BAD_USAGE);
        }
    };
    let connection = match Connection::connect(args.nats.options(&url)).await {
        Ok(connection) => connection,
        Err(e) => {
            eprintln!("asyncer serve: {e}");
            return ExitCode::from(crate::BAD_USAGE);
        }
    };
    let name = args.name.clone().unwrap_or_else(default_name);
    let mut options = HostOptions::new(name)
        .max_tasks(exec.max_processes())
        .grace(args.grace)
        .allow_env(args.allow_remote_env);
    for dir in &args.allow_remote_dir {
        options = options.allow_dir(dir);
    }
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    let served = asyncer_cluster::serve(connection, exec.clone(), options, stop).await;
    exec.shutdown(args.grace).await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asyncer serve: {e}");
            ExitCode::from(crate::BAD_USAGE)
        }
    }
}

/// Cancels `stop` at the first SIGTERM or SIGINT.
async fn stop_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop.cancel();
}

fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}
