//! Cancellation, shutdown, crashed workers and fault injection.
//!
//! These tests count this process's children, so they run one at a time
//! (the tests in this file share one lock).

mod common;

use std::time::{Duration, Instant};

use asyncer::{Error, ErrorKind, Launch};
use common::{assert_no_children_left, children, collect_events, executor, faults, kill};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Waits until `n` children are alive.
async fn wait_for_children(n: usize) -> Vec<u32> {
    for _ in 0..200 {
        let kids = children();
        if kids.len() >= n {
            return kids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} workers, saw {:?}", children());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_kills_its_worker_and_frees_the_slot() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = executor(1);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let long = exec.submit::<_, u64>(&module, "slow", &60_000u64).unwrap();
    let queued = exec
        .submit::<_, u64>(&module, "add", &faults::Pair { a: 2, b: 3 })
        .unwrap();
    let worker = wait_for_children(1).await[0];
    let start = Instant::now();
    long.cancel();
    assert!(matches!(long.await, Err(Error::Cancelled)));
    // The only slot is free again: the queued task runs.
    assert_eq!(queued.await.unwrap(), 5);
    assert!(start.elapsed() < Duration::from_secs(10));
    let events = collect_events(&mut events, 2).await;
    let cancelled = events.iter().find(|e| e.task == "slow").unwrap();
    assert_eq!(cancelled.error, Some(ErrorKind::Cancelled));
    assert_eq!(cancelled.pid, Some(worker));
    assert!(cancelled
        .exit_status
        .as_deref()
        .unwrap()
        .contains("signal 9"));
    assert_no_children_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_task_resolves_it_at_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = executor(1);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let blocker = exec.submit::<_, u64>(&module, "slow", &1_000u64).unwrap();
    let head = exec
        .submit::<_, u64>(&module, "add", &faults::Pair { a: 1, b: 1 })
        .unwrap();
    let tail = exec
        .submit::<_, u64>(&module, "add", &faults::Pair { a: 1, b: 1 })
        .unwrap();
    wait_for_children(1).await;
    head.cancel();
    tail.cancel();
    // Both resolve while the blocker still holds the only slot.
    let (head, tail) = tokio::time::timeout(Duration::from_millis(500), async {
        (head.await, tail.await)
    })
    .await
    .expect("queued tasks resolve at once when cancelled");
    assert!(matches!(head, Err(Error::Cancelled)));
    assert!(matches!(tail, Err(Error::Cancelled)));
    assert_eq!(blocker.await.unwrap(), 1_000);
    let events = collect_events(&mut events, 3).await;
    let cancelled: Vec<_> = events
        .iter()
        .filter(|e| e.error == Some(ErrorKind::Cancelled))
        .collect();
    assert_eq!(cancelled.len(), 2);
    assert!(cancelled
        .iter()
        .all(|e| e.pid.is_none() && e.started_at.is_none()));
    assert_no_children_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_task_changes_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = executor(1);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let mut handle = exec
        .submit::<_, u64>(&module, "add", &faults::Pair { a: 4, b: 4 })
        .unwrap();
    collect_events(&mut events, 1).await;
    handle.cancel();
    assert_eq!((&mut handle).await.unwrap(), 8);
    assert!(events.try_recv().is_none(), "no second event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_then_stops_the_rest() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = executor(2);
    let module = faults(&exec).await;
    let quick = exec.submit::<_, u64>(&module, "slow", &100u64).unwrap();
    let stuck = exec.submit::<_, u64>(&module, "slow", &60_000u64).unwrap();
    let queued: Vec<_> = (0..3)
        .map(|_| exec.submit::<_, u64>(&module, "slow", &60_000u64).unwrap())
        .collect();
    let start = Instant::now();
    exec.shutdown(Duration::from_millis(800)).await;
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(quick.await.unwrap(), 100);
    assert!(matches!(stuck.await, Err(Error::ShutDown)));
    for handle in queued {
        assert!(matches!(handle.await, Err(Error::ShutDown)));
    }
    assert!(matches!(
        exec.submit::<_, u64>(&module, "slow", &1u64),
        Err(Error::ShutDown)
    ));
    assert!(
        children().is_empty(),
        "shutdown returned with workers alive: {:?}",
        children()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_everything_now() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = executor(2);
    let module = faults(&exec).await;
    let handles: Vec<_> = (0..5)
        .map(|_| exec.submit::<_, u64>(&module, "slow", &60_000u64).unwrap())
        .collect();
    wait_for_children(2).await;
    let start = Instant::now();
    exec.abort().await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        children().is_empty(),
        "abort returned with workers alive: {:?}",
        children()
    );
    for handle in handles {
        assert!(matches!(handle.await, Err(Error::ShutDown)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_a_crash_with_its_signal_and_the_slot_is_reused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = executor(1);
    let module = faults(&exec).await;
    let victim = exec.submit::<_, u64>(&module, "slow", &60_000u64).unwrap();
    let next = exec
        .submit::<_, u64>(&module, "add", &faults::Pair { a: 20, b: 22 })
        .unwrap();
    let pid = wait_for_children(1).await[0];
    kill(pid);
    match victim.await {
        Err(Error::WorkerCrashed {
            pid: crashed,
            status,
            ..
        }) => {
            assert_eq!(crashed, pid);
            assert!(status.contains("signal 9"), "{status}");
        }
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_eq!(next.await.unwrap(), 42);
    assert_no_children_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilling_random_workers_loses_no_task_and_leaves_no_process() {
    let _one = ONE_AT_A_TIME.lock().await;
    let exec = executor(4);
    let module = faults(&exec).await;
    let mut events = exec.events();
    let total = 300usize;
    let handles: Vec<_> = (0..total)
        .map(|i| {
            exec.submit::<_, u64>(&module, "slow", &(5 + (i % 4) as u64 * 5))
                .unwrap()
        })
        .collect();
    let killer = tokio::spawn(async {
        let mut killed = 0usize;
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..400 {
            tokio::time::sleep(Duration::from_millis(7)).await;
            let kids = children();
            if kids.is_empty() {
                continue;
            }
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            if seed.is_multiple_of(3) {
                kill(kids[seed as usize % kids.len()]);
                killed += 1;
            }
        }
        killed
    });
    let mut ok = 0;
    let mut crashed = 0;
    for handle in handles {
        match tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("every task resolves")
        {
            Ok(_) => ok += 1,
            Err(Error::WorkerCrashed { .. }) => crashed += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    let killed = killer.await.unwrap();
    assert_eq!(ok + crashed, total);
    assert!(
        crashed > 0 && killed > 0,
        "the test killed nothing ({killed} kills)"
    );
    assert!(crashed <= killed, "{crashed} crashes from {killed} kills");
    let events = collect_events(&mut events, total).await;
    assert_eq!(events.iter().filter(|e| e.is_ok()).count(), ok);
    assert_no_children_left().await;
}

/// A stand-in worker program (a shell script) that misbehaves as told.
fn fake_worker(name: &str, script: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::temp_dir().join(format!("asyncer-fake-{name}-{}", std::process::id()));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_abort_exit_early_or_reply_garbage_are_crashes() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The module is loaded by a real executor; the fakes only run tasks.
    let loader = executor(1);
    let module_bytes = std::fs::read(asyncer_tests::FAULTS).unwrap();
    let old_release = format!(
        "the worker speaks protocol version 1, this host {}",
        asyncer_protocol::PROTOCOL_VERSION
    );
    let cases = [
        (
            "abort",
            "echo 'fake worker: about to abort' >&2; kill -ABRT $$",
            "signal 6",
        ),
        (
            "exit",
            "echo 'fake worker: giving up' >&2; exit 7",
            "exit code 7",
        ),
        (
            "garbage",
            "head -c 10 >/dev/null; echo 'this is not a frame at all'",
            "unreadable reply",
        ),
        (
            // A worker from another release: a frame of protocol version 1.
            "old",
            r"head -c 10 >/dev/null; printf 'ASYN\001\000\000\000\000\000'",
            old_release.as_str(),
        ),
    ];
    for (name, script, status_part) in cases {
        let program = fake_worker(name, script);
        let exec = asyncer::Executor::builder()
            .max_processes(1)
            .worker_program(&program)
            .build()
            .unwrap();
        let module = exec.load_bytes(module_bytes.clone()).await.unwrap();
        match exec
            .submit::<_, u64>(&module, "add", &faults::Pair { a: 1, b: 1 })
            .unwrap()
            .await
        {
            Err(Error::WorkerCrashed {
                pid,
                status,
                stderr_tail,
            }) => {
                assert!(pid > 0);
                assert!(status.contains(status_part), "{name}: {status}");
                if name != "garbage" && name != "old" {
                    assert!(
                        stderr_tail.contains("fake worker"),
                        "{name}: {stderr_tail:?}"
                    );
                }
            }
            other => panic!("{name}: expected a crash, got {other:?}"),
        }
        std::fs::remove_file(program).unwrap();
    }
    drop(loader);
    assert_no_children_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_hardened_with_three_fds_and_no_core_dumps() {
    let _one = ONE_AT_A_TIME.lock().await;
    for launch in [Launch::Spawn, Launch::Fork] {
        hardened(launch).await;
    }
}

async fn hardened(launch: Launch) {
    let exec = asyncer::Executor::builder()
        .max_processes(1)
        .worker_program(common::WORKER)
        .launch(launch)
        .build()
        .unwrap();
    let module = faults(&exec).await;
    let handle = exec.submit::<_, u64>(&module, "slow", &2_000u64).unwrap();
    let pid = wait_for_children(1).await[0];
    // Give the worker time to start and harden itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let task_runner = common::children_of(pid);
    let checked = match launch {
        // The worker the host started, and the one it forked into a new
        // PID namespace to run the task (its sandbox), are both checked.
        Launch::Spawn => {
            assert_eq!(
                task_runner.len(),
                1,
                "the worker runs its task in one child"
            );
            vec![pid, task_runner[0]]
        }
        // Forked from the template into its PID namespace: one process.
        _ => {
            assert!(task_runner.is_empty(), "{task_runner:?}");
            assert_eq!(common::templates().len(), 1);
            vec![pid]
        }
    };
    for pid in checked {
        // Nothing inherited from the host: the three pipes, and what the
        // worker itself opened: its artifact, its `/proc/self/statm`.
        let fds = common::open_fds(pid);
        for (fd, target) in &fds {
            match fd {
                0..=2 => assert!(target.starts_with("pipe:"), "fd {fd} -> {target}"),
                _ => assert!(
                    target.ends_with(".cwasm") || target.ends_with("/statm"),
                    "unexpected fd {fd} -> {target}"
                ),
            }
        }
        assert!(fds.len() <= 5, "{fds:?}");
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(environ.is_empty(), "the worker's environment is empty");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let nice = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(16)
            .unwrap();
        assert_eq!(nice, "10", "workers run at niceness 10");
    }
    handle.cancel();
    let _ = handle.await;
    exec.shutdown(Duration::from_secs(5)).await;
    assert_no_children_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_die_with_their_host() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A host process of its own: the CLI running a 30 s task.
    let mut host = common::cli_command()
        .args([
            "run",
            asyncer_tests::FAULTS,
            "slow",
            "--input-hex",
            "b0ea01",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = host.id();
    let worker = {
        let mut found = None;
        for _ in 0..300 {
            found = common::children_of(host_pid).first().copied();
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        found.expect("the host started a worker")
    };
    kill(host_pid);
    let _ = host.wait();
    for _ in 0..200 {
        if !std::path::Path::new(&format!("/proc/{worker}")).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("worker {worker} outlived its host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_sent_before_a_worker_dies_is_delivered_then_the_crash() {
    let _one = ONE_AT_A_TIME.lock().await;
    // One progress frame (Guest(Progress { done: 1, total: 2, message: "" }),
    // postcard 00 00 01 02 00) of this protocol version, then the worker
    // exits without a reply.
    let program = fake_worker(
        "progress-then-exit",
        &format!(
            r"head -c 10 >/dev/null; printf 'ASYN\{:03o}\000\005\000\000\000\000\000\001\002\000'; exit 9",
            asyncer_protocol::PROTOCOL_VERSION
        ),
    );
    let exec = asyncer::Executor::builder()
        .max_processes(1)
        .worker_program(&program)
        .build()
        .unwrap();
    let module = exec
        .load(asyncer_tests::FAULTS)
        .await
        .expect("faults module loads");
    let mut updates = exec.updates();
    let handle = exec
        .submit::<_, u64>(&module, "add", &faults::Pair { a: 1, b: 1 })
        .unwrap();
    let mut progress = handle.progress();
    let uid = handle.uid().to_owned();
    let err = handle.await.unwrap_err();
    assert!(
        matches!(&err, Error::WorkerCrashed { status, .. } if status.contains("exit code 9")),
        "{err:?}"
    );
    let seen = progress
        .next()
        .await
        .expect("the progress sent before the crash");
    assert_eq!((seen.done, seen.total), (1, 2));
    assert!(progress.next().await.is_none());
    let mine = common::updates_of(&mut updates, &uid).await;
    assert!(
        matches!(&mine[0], asyncer::TaskUpdate::Progress(p) if p.progress.done == 1),
        "{mine:?}"
    );
    assert_eq!(
        common::finished(&mine).error,
        Some(ErrorKind::WorkerCrashed)
    );
    std::fs::remove_file(program).unwrap();
    drop(exec);
    assert_no_children_left().await;
}
