//! The second wall: each worker process is a sandbox of its own (seccomp,
//! Landlock, namespaces, rlimits), and only approved modules run.
//!
//! `sandbox-probe` applies the worker's own hardening and then tries what an
//! escaped guest would; `escaping-worker` is the worker program making a
//! forbidden system call once locked down. Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use asyncer::{
    Capabilities, Error, Executor, LayerState, Limits, SandboxLayer, SandboxSettings, TaskOptions,
};
use common::{children, faults, heavy, WORKER};

const PROBE: &str = env!("CARGO_BIN_EXE_sandbox-probe");
const ESCAPING_WORKER: &str = env!("CARGO_BIN_EXE_escaping-worker");
const CLI: &str = env!("CARGO_BIN_EXE_test-cli");

/// The tests that start `test-worker` processes run one at a time, so that
/// the live-worker test looks at its own worker.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the probe with `args`.
fn probe(args: &[&str]) -> Output {
    Command::new(PROBE)
        .args(args)
        .output()
        .expect("the probe runs")
}

/// How an attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// It worked.
    Worked,
    /// EPERM or EACCES.
    Refused,
    /// Another error (the text).
    Failed(String),
    /// Killed by SIGSYS: a forbidden system call.
    Killed,
}

fn ending(output: &Output) -> Ending {
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    match (output.status.code(), output.status.signal()) {
        (Some(0), _) => Ending::Worked,
        (Some(10), _) => Ending::Refused,
        (Some(11), _) => Ending::Failed(text),
        (_, Some(libc::SIGSYS)) => Ending::Killed,
        _ => panic!(
            "the probe ended unexpectedly ({}): {text} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The probe's attempt, with the layers not named in `only` turned off
/// (all layers when `only` is empty).
fn attempt(only: &[SandboxLayer], what: &[&str]) -> Ending {
    let mut settings = SandboxSettings::default();
    if !only.is_empty() {
        for layer in SandboxLayer::ALL {
            if !only.contains(&layer) {
                settings = settings.without(layer);
            }
        }
    }
    let mut args = settings.to_args();
    args.extend(what.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ending(&probe(&args))
}

fn stopped(ending: &Ending) -> bool {
    matches!(ending, Ending::Refused | Ending::Killed)
}

/// A loopback listener the test owns; says whether anyone connected.
struct Listener(TcpListener);

impl Listener {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Listener(listener)
    }

    fn port(&self) -> String {
        self.0.local_addr().unwrap().port().to_string()
    }

    fn was_reached(&self) -> bool {
        self.0.accept().is_ok()
    }
}

#[test]
fn the_probe_applies_every_layer_on_this_machine() {
    let output = probe(&["status"]);
    let text = String::from_utf8_lossy(&output.stdout);
    for layer in ["seccomp", "landlock", "namespaces", "rlimits"] {
        assert!(
            text.contains(&format!("{layer}: active")),
            "{layer} is not active: {text}"
        );
    }
}

#[test]
fn an_escaped_guest_finds_nothing_to_read_nowhere_to_connect_nothing_to_execute() {
    let scratch = tempfile::tempdir().unwrap();
    let listener = Listener::new();
    let beside = scratch.path().join("beside.txt");
    let tries: [&[&str]; 5] = [
        &["read", "/etc/passwd"],
        &["write", beside.to_str().unwrap()],
        &["connect", &listener.port()],
        &["exec", "/bin/true"],
        &["fork"],
    ];
    for what in tries {
        let ended = attempt(&[], what);
        assert!(stopped(&ended), "{what:?} was not stopped: {ended:?}");
    }
    assert!(!listener.was_reached(), "the probe reached the listener");
    assert!(!beside.exists(), "the probe wrote a file");
    // Without the sandbox the same attempts work: the probe tests something.
    let all_off = [
        SandboxSettings::none().to_args(),
        vec!["read".into(), "/etc/passwd".into()],
    ]
    .concat();
    let all_off: Vec<&str> = all_off.iter().map(String::as_str).collect();
    assert_eq!(ending(&probe(&all_off)), Ending::Worked);
}

#[test]
fn a_granted_read_write_directory_is_writable_and_its_neighbour_is_not() {
    let scratch = tempfile::tempdir().unwrap();
    let granted = scratch.path().join("granted");
    let neighbour = scratch.path().join("neighbour");
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::create_dir_all(&neighbour).unwrap();
    let inside = granted.join("out.txt");
    let beside = neighbour.join("out.txt");
    let grant = granted.to_str().unwrap();
    assert_eq!(
        attempt(
            &[],
            &["--grant-rw", grant, "write", inside.to_str().unwrap()]
        ),
        Ending::Worked
    );
    assert_eq!(std::fs::read(&inside).unwrap(), b"escaped");
    let ended = attempt(
        &[],
        &["--grant-rw", grant, "write", beside.to_str().unwrap()],
    );
    assert_eq!(ended, Ending::Refused);
    assert!(!beside.exists());
    // A grant that does not exist costs nothing but itself.
    let missing = scratch.path().join("missing");
    let ended = attempt(
        &[],
        &[
            "--grant-rw",
            missing.to_str().unwrap(),
            "read",
            "/etc/passwd",
        ],
    );
    assert_eq!(ended, Ending::Refused);
}

#[test]
fn each_layer_stops_an_escape_on_its_own() {
    let listener = Listener::new();
    let port = listener.port();
    // The network namespace: the host's loopback is not there.
    match attempt(&[SandboxLayer::Namespaces], &["connect", &port]) {
        Ending::Failed(_) => {}
        other => panic!("connect in a new network namespace: {other:?}"),
    }
    // Landlock: no TCP connect, no file outside the policy.
    assert_eq!(
        attempt(&[SandboxLayer::Landlock], &["connect", &port]),
        Ending::Refused
    );
    assert_eq!(
        attempt(&[SandboxLayer::Landlock], &["read", "/etc/passwd"]),
        Ending::Refused
    );
    // seccomp: no socket, no new process.
    for what in [
        &["connect", port.as_str()][..],
        &["exec", "/bin/true"],
        &["fork"],
    ] {
        assert_eq!(
            attempt(&[SandboxLayer::Seccomp], what),
            Ending::Killed,
            "{what:?}"
        );
    }
    assert!(!listener.was_reached());
    // With every layer off, the listener is reached: the test can tell.
    let listener = Listener::new();
    let all_off = [
        SandboxSettings::none().to_args(),
        vec!["connect".into(), listener.port()],
    ]
    .concat();
    let all_off: Vec<&str> = all_off.iter().map(String::as_str).collect();
    assert_eq!(ending(&probe(&all_off)), Ending::Worked);
    assert!(listener.was_reached());
}

#[test]
fn a_worker_never_joins_namespaces_that_are_not_new() {
    // Paths that name the probe's own namespaces (what a stale descriptor
    // number could name): refused, and the probe makes its own instead.
    let listener = Listener::new();
    let own: Vec<String> = ["user", "net", "ipc"]
        .iter()
        .map(|kind| format!("/proc/self/ns/{kind}"))
        .collect();
    let own = own.join(",");
    let args = [
        "--sandbox-off",
        "seccomp,landlock",
        "--join-namespaces",
        &own,
        "--max-tasks",
        "16",
        "connect",
        &listener.port(),
    ];
    match ending(&probe(&args)) {
        Ending::Failed(_) => {}
        other => panic!("connect after refusing the host's namespaces: {other:?}"),
    }
    assert!(!listener.was_reached());
}

fn status_line(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(key))
        .map(|line| line[key.len()..].trim().to_owned())
        .unwrap_or_default()
}

fn net_namespace(pid: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_runs_under_seccomp_without_new_privileges_in_its_own_network() {
    let _one = ONE_AT_A_TIME.lock().await;
    for launch in [asyncer::Launch::Spawn, asyncer::Launch::Fork] {
        live_worker_sandbox(launch).await;
    }
}

async fn live_worker_sandbox(launch: asyncer::Launch) {
    let exec = Executor::builder()
        .max_processes(1)
        .worker_program(WORKER)
        .launch(launch)
        .build()
        .unwrap();
    let module = faults(&exec).await;
    let handle = exec.submit::<_, u64>(&module, "slow", &3_000u64).unwrap();
    // The worker is locked down before the guest starts sleeping.
    let mut seen = None;
    let is_worker = |pid: &u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).starts_with(WORKER))
    };
    for _ in 0..200 {
        if let Some(pid) = children()
            .into_iter()
            .filter(is_worker)
            .find(|pid| status_line(*pid, "Seccomp:") == "2")
        {
            seen = Some(pid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = seen.expect("a worker under seccomp appears");
    assert_eq!(status_line(pid, "NoNewPrivs:"), "1");
    assert_ne!(net_namespace(&pid.to_string()), net_namespace("self"));
    // The task runs in PID 1 of a PID namespace of its own: a spawned
    // worker's child, or the worker forked from the template itself.
    let runner = match launch {
        asyncer::Launch::Spawn => common::children_of(pid)[0],
        _ => {
            assert!(common::children_of(pid).is_empty());
            pid
        }
    };
    assert_eq!(status_line(runner, "Seccomp:"), "2");
    assert_eq!(
        status_line(runner, "NSpid:").split_whitespace().last(),
        Some("1")
    );
    let pid_ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(pid_ns(&runner.to_string()), pid_ns("self"));
    handle.cancel();
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_system_call_ends_in_worker_crashed_naming_it() {
    for launch in [asyncer::Launch::Spawn, asyncer::Launch::Fork] {
        forbidden_calls(launch).await;
    }
}

async fn forbidden_calls(launch: asyncer::Launch) {
    let exec = Executor::builder()
        .max_processes(1)
        .worker_program(ESCAPING_WORKER)
        .launch(launch)
        .build()
        .unwrap();
    let module = faults(&exec).await;
    // The hook plays the escape on `trap` (socket), `exit` (execve) and
    // `spin` (clone, with the flags a template forks with).
    for (task, name) in [
        ("trap", "`socket`"),
        ("exit", "`execve`"),
        ("spin", "`clone`"),
    ] {
        let err = exec
            .submit::<_, u64>(&module, task, &())
            .unwrap()
            .await
            .unwrap_err();
        let Error::WorkerCrashed { status, .. } = &err else {
            panic!("{launch:?} {task}: {err}")
        };
        assert!(status.contains("SIGSYS"), "{status}");
        assert!(status.contains("sandbox violation"), "{status}");
        assert!(status.contains(name), "{status}");
    }
    // Other tasks run as always in the same executor.
    let sum: u64 = exec
        .submit(&module, "add", &(2u64, 3u64))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(sum, 5);
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_reports_each_layer_and_honours_layers_turned_off() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = common::executor(1);
    let status = exec.sandbox_status().await.unwrap();
    for (layer, state) in status.layers() {
        assert_eq!(state, &LayerState::Active, "{layer}");
    }
    let relaxed = Executor::builder()
        .max_processes(1)
        .worker_program(WORKER)
        .sandbox(SandboxSettings::default().without(SandboxLayer::Seccomp))
        .build()
        .unwrap();
    let status = relaxed.sandbox_status().await.unwrap();
    assert_eq!(status.get(SandboxLayer::Seccomp), &LayerState::Off);
    assert_eq!(status.get(SandboxLayer::Landlock), &LayerState::Active);
    // The CLI says the same.
    let output = common::cli_command()
        .args(["inspect", "--sandbox", "--json"])
        .output()
        .unwrap();
    let json = common::json_of(&output);
    for layer in SandboxLayer::ALL {
        assert_eq!(json["sandbox"][layer.as_str()]["state"], "active", "{json}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_workers_serve_only_tasks_with_the_grants_they_are_locked_to() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    let (one, two) = (scratch.path().join("one"), scratch.path().join("two"));
    for (dir, text) in [(&one, "first"), (&two, "second")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("note.txt"), text).unwrap();
    }
    let exec = Executor::builder()
        .max_processes(2)
        .worker_program(WORKER)
        .warm(asyncer::WarmOptions::default())
        .build()
        .unwrap();
    let module = faults(&exec).await;
    let mut events = exec.events();
    let read = |dir: &Path| {
        TaskOptions::new().capabilities(Capabilities::none().read_only_dir(dir, "/data"))
    };
    for round in 0..2 {
        for (dir, text) in [(&one, "first"), (&two, "second")] {
            let got: String = exec
                .submit_with(&module, "read_file", &"/data/note.txt", read(dir))
                .unwrap()
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(got, text);
        }
    }
    let events = common::collect_events(&mut events, 4).await;
    let pid = |i: usize| events[i].pid;
    // Each grant set kept its own warm worker.
    assert_eq!(pid(0), pid(2));
    assert_eq!(pid(1), pid(3));
    assert_ne!(pid(0), pid(1));
    exec.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_approved_modules_load_and_nothing_else_is_compiled() {
    let cache = tempfile::tempdir().unwrap();
    let scout = common::executor(1);
    let approved = heavy(&scout).await.hash().to_owned();
    let exec = Executor::builder()
        .max_processes(1)
        .worker_program(WORKER)
        .cache_dir(cache.path())
        .allow_modules([approved.to_uppercase()])
        .build()
        .unwrap();
    assert!(exec.allows_module(&approved));
    let module = heavy(&exec).await;
    assert_eq!(module.hash(), approved);
    let compiled = std::fs::read_dir(cache.path()).unwrap().count();
    let err = exec.load(asyncer_tests::FAULTS).await.unwrap_err();
    assert!(
        matches!(&err, Error::ModuleNotAllowed { hash } if hash.len() == 64),
        "{err}"
    );
    assert_eq!(err.kind().as_str(), "module_not_allowed");
    let bytes = std::fs::read(asyncer_tests::FAULTS).unwrap();
    assert!(matches!(
        exec.load_bytes(bytes).await,
        Err(Error::ModuleNotAllowed { .. })
    ));
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        compiled,
        "a refused module was compiled"
    );
    // A list that is not hashes is refused when the executor is built.
    let bad = Executor::builder()
        .worker_program(WORKER)
        .allow_modules(["not-a-hash"])
        .build();
    assert!(matches!(bad, Err(Error::InvalidConfig { .. })));
}

#[test]
fn the_cli_refuses_modules_off_its_allow_list_with_exit_code_2() {
    let scratch = tempfile::tempdir().unwrap();
    let list = scratch.path().join("approved.txt");
    let faults_hash = common::sha256_hex(&std::fs::read(asyncer_tests::FAULTS).unwrap());
    std::fs::write(
        &list,
        format!("# approved modules\n{faults_hash}  # faults\n"),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = common::RUN_SUM_SQUARES_10.to_vec();
        args.push("--json");
        args.extend_from_slice(extra);
        let output = common::cli_command().args(&args).output().unwrap();
        let json = common::json_of(&output);
        (output.status.code(), json)
    };
    let (code, json) = run(&["--allow-module-hashes", list.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{json}");
    assert_eq!(json["error"]["kind"], "module_not_allowed");
    let (code, json) = run(&["--allow-module-hash", &faults_hash]);
    assert_eq!(code, Some(2), "{json}");
    // Approved, it runs.
    let heavy_hash = common::sha256_hex(&std::fs::read(asyncer_tests::HEAVY).unwrap());
    let (code, json) = run(&[
        "--allow-module-hash",
        &faults_hash,
        "--allow-module-hash",
        &heavy_hash,
    ]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_under_every_layer_still_reads_its_grant_and_keeps_its_limits() {
    let _one = ONE_AT_A_TIME.lock().await;
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("key.txt"), "granted").unwrap();
    let exec = common::executor(1);
    let module = faults(&exec).await;
    let got: String = exec
        .submit_with(
            &module,
            "read_file",
            &"/data/key.txt",
            TaskOptions::new()
                .capabilities(Capabilities::none().read_only_dir(scratch.path(), "/data")),
        )
        .unwrap()
        .await
        .unwrap();
    assert_eq!(got, "granted");
    let err = exec
        .submit_with::<_, u64>(
            &module,
            "spin",
            &(),
            TaskOptions::new().limits(Limits::default().with_timeout(Duration::from_millis(200))),
        )
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    exec.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn every_layer_is_active_for_an_unprivileged_user_too() {
    // Most deployments are not root: run the CLI as `nobody` (when this
    // test runs as root, as CI does, and `setpriv` is there to drop it).
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Path::new("/usr/bin/setpriv");
    if !root || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv to become nobody");
        return;
    }
    let as_nobody = |args: &[&str]| {
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", CLI])
            .args(args)
            .env("ASYNCER_WORKER", WORKER)
            .env("TMPDIR", "/tmp")
            .output()
            .unwrap()
    };
    let output = as_nobody(&["inspect", "--sandbox", "--json"]);
    let json = common::json_of(&output);
    for layer in SandboxLayer::ALL {
        assert_eq!(json["sandbox"][layer.as_str()]["state"], "active", "{json}");
    }
    // A task runs through the shared namespaces and every limit.
    let output = as_nobody(&[&common::RUN_SUM_SQUARES_10[..], &["--json"]].concat());
    let json = common::json_of(&output);
    assert_eq!(json["status"], "ok", "{json}");
    assert_eq!(json["output_hex"], "9d02", "{json}");
}
