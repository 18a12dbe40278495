//! The cluster through real processes: a `nats-server` with JetStream on a
//! free loopback port (store in a temp dir), worker hosts (`asyncer serve`
//! from the test CLI binary), and clients with a `ClusterBackend`. Every
//! process a test starts is stopped by its pid, also when the test fails.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use asyncer::{Error, ErrorKind, Executor, Limits, Module, TaskOptions, TaskUpdate};
use asyncer_cluster::{ClusterBackend, ClusterError, ClusterOptions, Connection};
use common::WORKER;
use faults::Pair;

/// A host's lease in these tests: short, so that a dead host costs little.
const ACK_WAIT: &str = "2s";
/// Deliveries before `worker_lost`.
const MAX_DELIVER: i64 = 3;

/// Only one cluster test at a time: they start many processes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A process this test started; killed (SIGKILL) and reaped on drop.
struct Process {
    child: Child,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit by itself, up to `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A nats-server with JetStream on loopback.
struct Server {
    process: Process,
    port: u16,
    store: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let store = tempfile::tempdir().expect("a store dir");
        Server::start_on(free_port(), store)
    }

    fn start_on(port: u16, store: tempfile::TempDir) -> Server {
        let program = nats_server();
        let child = Command::new(program)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (make test installs it)");
        let server = Server {
            process: Process { child },
            port,
            store,
        };
        wait_listening(port);
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) and starts it again on the same port and
    /// store.
    fn restart(self) -> Server {
        let Server {
            mut process,
            port,
            store,
        } = self;
        process.kill();
        Server::start_on(port, store)
    }
}

fn nats_server() -> PathBuf {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    "nats-server".into()
}

/// Waits (bounded) until something listens on the port.
fn wait_listening(port: u16) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nats-server did not listen on {port} within 10 s");
}

/// A worker host: `asyncer serve`, two tasks at a time.
fn host(server: &Server, name: &str) -> Process {
    host_at(
        &server.url(),
        name,
        &["--max-processes", "2", "--grace", "5s"],
    )
}

/// A worker host of the servers at `urls`, with the tests' lease and
/// deliveries, and `settings`.
fn host_at(urls: &str, name: &str, settings: &[&str]) -> Process {
    // Its stderr goes to a file a failing test can show.
    let log = host_log(name);
    let child = common::cli_command()
        .args(["serve", "--nats", urls, "--name", name])
        .args([
            "--ack-wait",
            ACK_WAIT,
            "--max-deliver",
            &MAX_DELIVER.to_string(),
        ])
        .args(settings)
        .env("ASYNCER_WORKER", WORKER)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from))
        .spawn()
        .expect("the host starts");
    Process { child }
}

/// Where host `name`'s stderr goes.
fn host_log(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("host-{name}-{}.log", std::process::id()))
}

fn options(server: &Server) -> ClusterOptions {
    ClusterOptions::new(server.url())
        .connect_timeout(Duration::from_secs(5))
        .ack_wait(Duration::from_secs(2))
        .max_deliver(MAX_DELIVER)
}

async fn client(server: &Server) -> (Executor, Connection) {
    client_with(options(server)).await
}

/// A client connected with `options`, 64 tasks in flight.
async fn client_with(options: ClusterOptions) -> (Executor, Connection) {
    let connection = Connection::connect(options)
        .await
        .expect("the client connects");
    let exec = Executor::builder()
        .backend(ClusterBackend::new(connection.clone()))
        .max_processes(64)
        .build()
        .expect("the client's executor");
    (exec, connection)
}

async fn faults(exec: &Executor) -> Module {
    exec.load(asyncer_tests::FAULTS)
        .await
        .expect("faults loads")
}

async fn within<F: std::future::Future>(limit: u64, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(limit), future)
        .await
        .unwrap_or_else(|_| panic!("did not happen within {limit} s"))
}

/// Workers started by the host with process id `host`, still alive (its
/// template, which runs no task, left out).
fn workers_of(host: u32) -> Vec<u32> {
    let needle = format!("--parent-pid\0{host}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmd| String::from_utf8_lossy(&cmd).contains(&needle))
                .unwrap_or(false)
        })
        .filter(|pid| !common::is_template(*pid))
        .collect()
}

/// Waits (bounded by `secs`) until `done`, failing with `what` after.
async fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the queue is empty.
async fn assert_queue_drains(connection: &Connection) {
    wait_for_stream(connection, "tasks left in the stream", |pending| {
        pending == 0
    })
    .await;
}

/// Waits (15 s at most) until the number of tasks in the stream is `done`,
/// failing with it and `what` after.
async fn wait_for_stream(connection: &Connection, what: &str, done: impl Fn(u64) -> bool) {
    let start = Instant::now();
    loop {
        let pending = connection.pending_tasks().await.expect("stream state");
        if done(pending) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{pending} {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_tasks_through_three_hosts_each_resolve_once_with_the_right_outcome() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let hosts: Vec<_> = ["h1", "h2", "h3"]
        .iter()
        .map(|n| host(&server, n))
        .collect();
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let mut events = exec.events();
    let timeout =
        TaskOptions::new().limits(Limits::default().with_timeout(Duration::from_millis(300)));
    let mut handles = Vec::new();
    for i in 0..60u64 {
        let handle = match i % 5 {
            0 => exec.submit_bytes(
                &module,
                "add",
                postcard::to_allocvec(&Pair { a: i, b: 1 }).unwrap(),
            ),
            1 => exec.submit_bytes(
                &module,
                "divide",
                postcard::to_allocvec(&Pair { a: i, b: 0 }).unwrap(),
            ),
            2 => exec.submit_bytes(&module, "trap", vec![]),
            3 => exec.submit_bytes_with(&module, "spin", vec![], timeout.clone()),
            _ => exec.submit_bytes(
                &module,
                "panic",
                postcard::to_allocvec(&format!("p{i}")).unwrap(),
            ),
        }
        .unwrap();
        handles.push((i, handle));
    }
    for (i, handle) in handles {
        let result = within(60, handle).await;
        match i % 5 {
            0 => assert_eq!(
                postcard::from_bytes::<u64>(&result.unwrap()).unwrap(),
                i + 1
            ),
            1 => assert!(matches!(result, Err(Error::Guest { .. })), "{result:?}"),
            2 => assert!(matches!(result, Err(Error::Trap { .. })), "{result:?}"),
            3 => assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}"),
            _ => assert!(
                matches!(&result, Err(Error::GuestPanic { message }) if message.contains(&format!("p{i}"))),
                "{result:?}"
            ),
        }
    }
    let mut uids = HashSet::new();
    let mut ran_on = HashSet::new();
    for _ in 0..60 {
        let event = within(10, events.recv()).await.expect("an event");
        assert!(
            uids.insert(event.uid.clone()),
            "two events for {}",
            event.uid
        );
        ran_on.insert(event.host.clone().expect("a host name"));
        assert_eq!(event.attempt, 1);
    }
    assert!(ran_on.len() >= 2, "tasks ran on {ran_on:?}");
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_costs_a_retry_never_a_lost_or_doubled_result() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let mut doomed = host(&server, "doomed");
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let mut events = exec.events();
    // The doomed host alone: it takes two tasks and starts them.
    let handles: Vec<_> = (0..6u64)
        .map(|i| {
            exec.submit_bytes(&module, "slow", postcard::to_allocvec(&(1500 + i)).unwrap())
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    let doomed_pid = doomed.pid();
    while workers_of(doomed_pid).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the host never ran a task"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill();
    // Its workers die with it.
    wait_until("workers outlived their host", 5, || {
        workers_of(doomed_pid).is_empty()
    })
    .await;
    let survivors = [host(&server, "s1"), host(&server, "s2")];
    for (i, handle) in handles.into_iter().enumerate() {
        let output = within(60, handle).await.expect("every task completes");
        assert_eq!(
            postcard::from_bytes::<u64>(&output).unwrap(),
            1500 + i as u64
        );
    }
    let mut uids = HashSet::new();
    let mut retried = 0;
    for _ in 0..6 {
        let event = within(10, events.recv()).await.expect("an event");
        assert!(
            uids.insert(event.uid.clone()),
            "two results for {}",
            event.uid
        );
        assert_ne!(event.host.as_deref(), Some("doomed"));
        if event.attempt >= 2 {
            retried += 1;
        }
    }
    assert!(retried >= 1, "no task shows a second attempt");
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
    drop(survivors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_kills_its_worker_every_time_ends_in_worker_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let hosts = [host(&server, "a"), host(&server, "b")];
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let err = within(
        60,
        exec.submit_bytes(&module, "exit", postcard::to_allocvec(&3i32).unwrap())
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerLost, "{err}");
    assert!(
        matches!(err, Error::WorkerLost { attempts } if attempts == MAX_DELIVER as u64),
        "{err:?}"
    );
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_progress_and_logs_reach_the_submitter_and_cancel_stops_a_running_task() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let hosts = [host(&server, "a")];
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let mut updates = exec.updates();
    let reporting = exec
        .submit_bytes_with(
            &module,
            "report_then_compute",
            postcard::to_allocvec(&300u64).unwrap(),
            TaskOptions::new().uid("reporting"),
        )
        .unwrap();
    let mut progress = reporting.progress();
    let spins = postcard::from_bytes::<u64>(&within(30, reporting).await.unwrap()).unwrap();
    assert!(spins > 0);
    let mut seen = Vec::new();
    while let Some(p) = within(5, progress.next()).await {
        seen.push((p.done, p.total));
    }
    assert_eq!(seen.last(), Some(&(2, 2)), "{seen:?}");
    let mine = common::updates_of(&mut updates, "reporting").await;
    assert!(
        mine.iter()
            .any(|u| matches!(u, TaskUpdate::Progress(p) if p.progress.done == 1)),
        "{mine:?}"
    );

    // Cancel a running task: the host kills its worker.
    let spinning = exec
        .submit_bytes_with(&module, "spin", vec![], TaskOptions::new().uid("spinning"))
        .unwrap();
    wait_until("the task never started", 20, || {
        !workers_of(hosts[0].pid()).is_empty()
    })
    .await;
    spinning.cancel();
    assert!(matches!(within(10, spinning).await, Err(Error::Cancelled)));
    wait_until("the cancelled task's worker lives on", 10, || {
        workers_of(hosts[0].pid()).is_empty()
    })
    .await;
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_uid_submitted_twice_runs_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let hosts = [host(&server, "a"), host(&server, "b")];
    let (first, connection) = client(&server).await;
    let (second, _) = client(&server).await;
    let module_a = faults(&first).await;
    let module_b = faults(&second).await;
    let mut events_a = first.events();
    let mut events_b = second.events();
    let input = postcard::to_allocvec(&200u64).unwrap();
    let same = || TaskOptions::new().uid("once");
    let a = first
        .submit_bytes_with(&module_a, "slow", input.clone(), same())
        .unwrap();
    let b = second
        .submit_bytes_with(&module_b, "slow", input, same())
        .unwrap();
    assert_eq!(within(30, a).await.unwrap(), within(30, b).await.unwrap());
    let (ea, eb) = (
        within(10, events_a.recv()).await.unwrap(),
        within(10, events_b.recv()).await.unwrap(),
    );
    assert_eq!(
        (&ea.host, ea.pid, ea.started_at),
        (&eb.host, eb.pid, eb.started_at),
        "one run, seen twice"
    );
    assert_queue_drains(&connection).await;
    first.shutdown(Duration::from_secs(5)).await;
    second.shutdown(Duration::from_secs(5)).await;
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let hosts = [host(&server, "a"), host(&server, "b")];
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            exec.submit_bytes(&module, "slow", postcard::to_allocvec(&(300 + i)).unwrap())
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = server.restart();
    for (i, handle) in handles.into_iter().enumerate() {
        let output = within(60, handle)
            .await
            .expect("completes after the restart");
        assert_eq!(
            postcard::from_bytes::<u64>(&output).unwrap(),
            300 + i as u64
        );
    }
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
    drop(hosts);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_host_and_it_exits_zero() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let mut draining = host(&server, "draining");
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let handle = exec
        .submit_bytes(&module, "slow", postcard::to_allocvec(&500u64).unwrap())
        .unwrap();
    wait_until("the task never started", 20, || {
        !workers_of(draining.pid()).is_empty()
    })
    .await;
    draining.signal(15);
    // The running task finishes within the grace; the host exits 0.
    assert_eq!(
        postcard::from_bytes::<u64>(&within(30, handle).await.unwrap()).unwrap(),
        500
    );
    let status = draining
        .wait_exit(Duration::from_secs(15))
        .expect("the host exits");
    assert!(status.success(), "{status:?}");
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_servers_are_typed_errors_within_the_connect_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Nobody listens.
    let start = Instant::now();
    let err = Connection::connect(
        ClusterOptions::new(format!("nats://127.0.0.1:{}", free_port()))
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClusterError::Connect { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // A server without JetStream.
    let port = free_port();
    let plain = Process {
        child: Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    wait_listening(port);
    let start = Instant::now();
    let err = Connection::connect(
        ClusterOptions::new(format!("nats://127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClusterError::NoJetStream { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(plain);
    // A server that wants credentials the client does not have.
    let port = free_port();
    let guarded = Process {
        child: Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["--user", "asyncer", "--pass", "s3cret"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    wait_listening(port);
    let url = format!("nats://127.0.0.1:{port}");
    let start = Instant::now();
    let err = Connection::connect(
        ClusterOptions::new(url.clone())
            .user_password("asyncer", "wrong")
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClusterError::Connect { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // With the right ones it works.
    Connection::connect(ClusterOptions::new(url).user_password("asyncer", "s3cret"))
        .await
        .expect("the right credentials are accepted");
    drop(guarded);
}

/// A three-server JetStream cluster on loopback; each server's name is
/// `n1`..`n3`.
struct ThreeServers {
    servers: Vec<(String, Process)>,
    urls: String,
    _stores: Vec<tempfile::TempDir>,
}

impl ThreeServers {
    fn start() -> ThreeServers {
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        let mut stores = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let store = tempfile::tempdir().unwrap();
            let name = format!("n{}", i + 1);
            let child = Command::new(nats_server())
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-n",
                    &name,
                ])
                .args(["--cluster_name", "asyncer-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{route}"),
                    "--routes",
                    &routes,
                ])
                .arg("-sd")
                .arg(store.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            servers.push((name, Process { child }));
            stores.push(store);
        }
        for (port, _) in &ports {
            wait_listening(*port);
        }
        let urls = ports
            .iter()
            .map(|(port, _)| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        ThreeServers {
            servers,
            urls,
            _stores: stores,
        }
    }

    fn kill(&mut self, name: &str) {
        let (_, process) = self
            .servers
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("a server of this cluster");
        process.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_of_a_three_server_cluster_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut servers = ThreeServers::start();
    // The JetStream cluster elects its leaders first: connect (and make the
    // replicated stream, bucket and store) once it answers.
    let start = Instant::now();
    let connection = loop {
        match Connection::connect(
            ClusterOptions::new(servers.urls.clone())
                .replicas(3)
                .ack_wait(Duration::from_secs(2))
                .max_deliver(MAX_DELIVER),
        )
        .await
        {
            Ok(connection) => break connection,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no JetStream cluster: {e}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let hosts: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            host_at(
                &servers.urls,
                name,
                &["--max-processes", "2", "--grace", "5s"],
            )
        })
        .collect();
    let exec = Executor::builder()
        .backend(ClusterBackend::new(connection.clone()))
        .max_processes(64)
        .build()
        .unwrap();
    let module = faults(&exec).await;
    let mut events = exec.events();
    let handles: Vec<_> = (0..12u64)
        .map(|i| {
            exec.submit_bytes(&module, "slow", postcard::to_allocvec(&(400 + i)).unwrap())
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader = connection
        .stream_leader()
        .await
        .expect("the stream has a leader");
    servers.kill(&leader);
    for (i, handle) in handles.into_iter().enumerate() {
        let output = within(90, handle).await.expect("every task completes");
        assert_eq!(
            postcard::from_bytes::<u64>(&output).unwrap(),
            400 + i as u64
        );
    }
    let mut uids = HashSet::new();
    for _ in 0..12 {
        let event = within(10, events.recv()).await.expect("an event");
        assert!(
            uids.insert(event.uid.clone()),
            "two results for {}",
            event.uid
        );
    }
    exec.shutdown(Duration::from_secs(5)).await;
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_task_through_the_cluster_with_the_same_json_plus_host_and_attempt() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let mut hosts = [host(&server, "cli-host")];
    let mut cli = tokio::process::Command::from(common::cli_command())
        .args(["run", "--nats", &server.url(), asyncer_tests::FAULTS, "add"])
        .args(["--input-hex", "0203", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the CLI runs");
    let stdout = cli.stdout.take().expect("piped");
    let read = tokio::spawn(async move {
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::BufReader::new(stdout), &mut bytes)
            .await
            .map(|_| bytes)
    });
    // Bounded: a host that is gone must fail the test, not hang it.
    let Ok(status) = tokio::time::timeout(Duration::from_secs(60), cli.wait()).await else {
        let host_alive = hosts[0]
            .child
            .try_wait()
            .map(|s| s.is_none())
            .unwrap_or(false);
        let log = std::fs::read_to_string(host_log("cli-host")).unwrap_or_default();
        panic!(
            "the CLI did not finish within 60 s (host alive: {host_alive}); host stderr:\n{log}"
        );
    };
    let output = std::process::Output {
        status: status.unwrap(),
        stdout: read.await.unwrap().unwrap(),
        stderr: Vec::new(),
    };
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(json["status"], "ok");
    assert_eq!(json["output_hex"], "05");
    assert_eq!(json["host"], "cli-host");
    assert_eq!(json["attempt"], 1);
    drop(hosts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_host_hands_back_what_outlives_its_grace_and_a_queued_task_can_be_cancelled() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let mut draining = host_at(
        &server.url(),
        "short-grace",
        &["--max-processes", "1", "--grace", "300ms"],
    );
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let mut events = exec.events();
    let long = exec
        .submit_bytes(&module, "slow", postcard::to_allocvec(&2000u64).unwrap())
        .unwrap();
    wait_until("the task never started", 20, || {
        !workers_of(draining.pid()).is_empty()
    })
    .await;
    // The only slot is taken: this one waits in the queue, and is cancelled
    // there.
    let queued = exec
        .submit_bytes_with(
            &module,
            "slow",
            postcard::to_allocvec(&10u64).unwrap(),
            TaskOptions::new().uid("queued"),
        )
        .unwrap();
    // It is in the stream (the running one is too, until acknowledged).
    let start = Instant::now();
    while connection.pending_tasks().await.unwrap() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    queued.cancel();
    assert!(matches!(within(10, queued).await, Err(Error::Cancelled)));
    draining.signal(15);
    let status = draining
        .wait_exit(Duration::from_secs(15))
        .expect("the host exits");
    assert!(status.success(), "{status:?}");
    // Handed back: another host finishes it.
    let other = host(&server, "other");
    let output = within(60, long).await.expect("finished elsewhere");
    assert_eq!(postcard::from_bytes::<u64>(&output).unwrap(), 2000);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = within(10, events.recv()).await.unwrap();
        seen.push((
            event.uid.clone(),
            event.outcome(),
            event.host.clone(),
            event.attempt,
        ));
    }
    assert!(
        seen.iter()
            .any(|(uid, outcome, _, _)| uid == "queued" && *outcome == "cancelled"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(_, outcome, host, attempt)| *outcome == "ok"
                && host.as_deref() == Some("other")
                && *attempt >= 2),
        "{seen:?}"
    );
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
    drop(other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_runs_only_the_modules_its_operator_approved() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    let heavy = exec.load(asyncer_tests::HEAVY).await.expect("heavy loads");
    let approved = tempfile::tempdir().unwrap();
    let list = approved.path().join("approved.txt");
    std::fs::write(&list, format!("{}\n", heavy.hash())).unwrap();
    let _host = host_at(
        &server.url(),
        "strict",
        &["--allow-module-hashes", list.to_str().unwrap()],
    );
    // The submitter may run faults; this host may not.
    let err = within(
        30,
        exec.submit::<_, u64>(&module, "add", &Pair { a: 1, b: 2 })
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::ModuleNotAllowed { hash } if hash == module.hash()),
        "{err}"
    );
    let sum: u128 = within(30, exec.submit(&heavy, "sum_squares", &10u64).unwrap())
        .await
        .unwrap();
    assert_eq!(sum, 285);
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
}

/// `GET /metrics` from `port` on loopback: the body.
fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The value of the metric line that starts with `prefix`.
fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_serves_its_metrics_to_prometheus() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _host = host_at(
        &server.url(),
        "metered",
        &["--max-processes", "2", "--metrics-addr", &addr],
    );
    let (exec, connection) = client(&server).await;
    let module = faults(&exec).await;
    for (a, b) in [(1, 2), (3, 4)] {
        let sum: u64 = within(30, exec.submit(&module, "add", &Pair { a, b }).unwrap())
            .await
            .unwrap();
        assert_eq!(sum, a + b);
    }
    let refused = within(
        30,
        exec.submit::<_, u64>(&module, "divide", &Pair { a: 1, b: 0 })
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.kind(), asyncer::ErrorKind::GuestError);
    // The host records each task as it publishes its event, just before the
    // submitter gets the result: look until the figures are there.
    let mut body = String::new();
    for _ in 0..50 {
        body = scrape(port).unwrap_or_default();
        if metric(&body, "asyncer_tasks_total{outcome=\"guest_error\"") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tenant = connection.tenant();
    assert_eq!(
        metric(
            &body,
            &format!("asyncer_tasks_total{{outcome=\"ok\",tenant=\"{tenant}\"}}")
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            &format!("asyncer_tasks_total{{outcome=\"guest_error\",tenant=\"{tenant}\"}}")
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            &format!("asyncer_run_seconds_count{{tenant=\"{tenant}\"}}")
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            &format!("asyncer_queue_wait_seconds_count{{tenant=\"{tenant}\"}}")
        ),
        Some(3.0),
        "{body}"
    );
    assert!(
        metric(&body, "asyncer_peak_memory_bytes").is_some(),
        "{body}"
    );
    assert_eq!(metric(&body, "asyncer_queued_tasks"), Some(0.0), "{body}");
    assert_eq!(metric(&body, "asyncer_running_tasks"), Some(0.0), "{body}");
    assert!(metric(&body, "asyncer_live_workers").is_some(), "{body}");
    assert!(
        body.contains("# TYPE asyncer_tasks_total counter"),
        "{body}"
    );
    assert_queue_drains(&connection).await;
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_submitters_starting_together_all_set_up_the_cluster() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A fresh server: the first connections all make the stream and
    // buckets at once, and those that lose the race use the winner's.
    let server = Server::start();
    let connects: Vec<_> = (0..32)
        .map(|_| tokio::spawn(Connection::connect(options(&server))))
        .collect();
    for connect in connects {
        within(30, connect)
            .await
            .unwrap()
            .expect("every connection sets up");
    }
}

/// A client of `server` submitting as `tenant`.
async fn tenant_client(server: &Server, tenant: &str) -> (Executor, Connection) {
    client_with(options(server).tenant(tenant)).await
}

/// Waits (bounded) until `n` tasks are in the stream.
async fn wait_queued(connection: &Connection, n: u64) {
    let what = format!("of {n} tasks reached the stream");
    wait_for_stream(connection, &what, |queued| queued >= n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_reorder_the_cluster_queue_across_submitters() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    // Two submitters of one tenant: the batch one first, 12 low-priority
    // tasks; then the other, 4 urgent ones. No host yet.
    let (batch, connection) = client(&server).await;
    let (urgent, _) = client(&server).await;
    let module = faults(&batch).await;
    let urgent_module = faults(&urgent).await;
    let slow = |millis: u64| postcard::to_allocvec(&millis).unwrap();
    let mut handles = Vec::new();
    for i in 0..12 {
        let options = TaskOptions::new()
            .uid(format!("low-{i}"))
            .priority(asyncer::Priority::LOW);
        handles.push(
            batch
                .submit_bytes_with(&module, "slow", slow(30), options)
                .unwrap(),
        );
    }
    wait_queued(&connection, 12).await;
    for i in 0..4 {
        let options = TaskOptions::new()
            .uid(format!("high-{i}"))
            .priority(asyncer::Priority::HIGH);
        handles.push(
            urgent
                .submit_bytes_with(&urgent_module, "slow", slow(30), options)
                .unwrap(),
        );
    }
    wait_queued(&connection, 16).await;
    let queues = connection.queues().await.unwrap();
    let waiting: Vec<_> = queues.iter().map(|q| (q.priority, q.waiting)).collect();
    assert_eq!(waiting, [(10, 4), (-10, 12)], "{queues:?}");
    let (mut batch_events, mut urgent_events) = (batch.events(), urgent.events());
    // One host, one slot: it runs them one by one, the urgent first.
    let _host = host_at(&server.url(), "solo", &["--max-processes", "1"]);
    for handle in handles {
        within(60, handle).await.expect("every task runs");
    }
    let mut started = Vec::new();
    for _ in 0..12 {
        let event = within(10, batch_events.recv()).await.unwrap();
        started.push((event.started_at.expect("it ran"), event.uid));
    }
    for _ in 0..4 {
        let event = within(10, urgent_events.recv()).await.unwrap();
        assert_eq!(event.priority, asyncer::Priority::HIGH);
        started.push((event.started_at.expect("it ran"), event.uid));
    }
    started.sort();
    let order: Vec<_> = started.iter().map(|(_, uid)| uid.as_str()).collect();
    assert!(
        order[..4].iter().all(|uid| uid.starts_with("high-")),
        "the urgent tasks ran first: {order:?}"
    );
    assert_queue_drains(&connection).await;
    batch.shutdown(Duration::from_secs(5)).await;
    urgent.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenant_is_not_held_back_by_a_big_one_across_hosts() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let (big, connection) = tenant_client(&server, "big").await;
    let (small, _) = tenant_client(&server, "small").await;
    let module = faults(&big).await;
    let small_module = faults(&small).await;
    let input = postcard::to_allocvec(&40u64).unwrap();
    // The big tenant queues 40 tasks first, then the small one its 4.
    let done_big = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let big_handles: Vec<_> = (0..40)
        .map(|_| {
            let handle = big.submit_bytes(&module, "slow", input.clone()).unwrap();
            let done = done_big.clone();
            tokio::spawn(async move {
                handle.await.expect("a big task runs");
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    wait_queued(&connection, 40).await;
    let small_handles: Vec<_> = (0..4)
        .map(|_| {
            small
                .submit_bytes(&small_module, "slow", input.clone())
                .unwrap()
        })
        .collect();
    wait_queued(&connection, 44).await;
    // Two hosts, one slot each: each shares its slot between the tenants.
    let _hosts = [
        host_at(&server.url(), "one", &["--max-processes", "1"]),
        host_at(&server.url(), "two", &["--max-processes", "1"]),
    ];
    for handle in small_handles {
        within(60, handle).await.expect("a small task runs");
    }
    let big_done = done_big.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        big_done <= 10,
        "{big_done} of the big tenant's 40 tasks ran before the small one's 4"
    );
    for handle in big_handles {
        within(60, handle).await.unwrap();
    }
    assert_queue_drains(&connection).await;
    big.shutdown(Duration::from_secs(5)).await;
    small.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_tenant_cap_leaves_its_other_slots_to_other_tenants() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let (capped, connection) = tenant_client(&server, "capped").await;
    let (other, _) = tenant_client(&server, "other").await;
    let module = faults(&capped).await;
    let other_module = faults(&other).await;
    let _host = host_at(
        &server.url(),
        "shared",
        &["--max-processes", "2", "--tenant-max-running", "capped=1"],
    );
    let long = postcard::to_allocvec(&4000u64).unwrap();
    let capped_handles: Vec<_> = (0..2)
        .map(|_| capped.submit_bytes(&module, "slow", long.clone()).unwrap())
        .collect();
    // The host takes one of them and leaves the other waiting, though it has
    // a free slot.
    let start = Instant::now();
    loop {
        let queues = connection.queues().await.unwrap();
        if queues
            .iter()
            .any(|q| q.tenant == "capped" && q.taken == 1 && q.waiting == 1)
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the host never took one capped task: {queues:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another tenant's task gets the free slot meanwhile.
    let sum: u64 = within(
        30,
        other
            .submit(&other_module, "add", &Pair { a: 2, b: 3 })
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(sum, 5);
    let queues = connection.queues().await.unwrap();
    let capped_queue = queues.iter().find(|q| q.tenant == "capped").unwrap();
    assert_eq!(
        (capped_queue.taken, capped_queue.waiting),
        (1, 1),
        "the cap held while the other tenant ran: {queues:?}"
    );
    for handle in capped_handles {
        within(60, handle).await.unwrap();
    }
    assert_queue_drains(&connection).await;
    capped.shutdown(Duration::from_secs(5)).await;
    other.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn a_hosts_scheduling_options_are_checked_before_it_connects() {
    for bad in [
        ["--tenant-weight", "big"],
        ["--tenant-weight", "big=heavy"],
        ["--tenant-max-running", "big=-1"],
        ["--priority-aging", "soon"],
    ] {
        let output = common::cli_command()
            .args(["serve", "--nats", "nats://127.0.0.1:1"])
            .args(bad)
            .output()
            .expect("the CLI runs");
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
    }
}
