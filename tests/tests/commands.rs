//! Existing WASI programs (command modules with `_start`) as tasks: standard
//! input in, exit code and streams out, arguments, environment and
//! directory grants, limits and typed errors, events; through the library
//! and through `asyncer run --command`.

mod common;

use std::time::Duration;

use asyncer::{
    Capabilities, CommandInput, Error, ErrorKind, Executor, Limits, TaskOptions, TaskUpdate,
    WarmOptions,
};

#[tokio::test]
async fn a_command_reads_stdin_and_gives_back_its_exit_code_and_streams() {
    let exec = common::executor(2);
    let upcase = exec.load(asyncer_tests::command("upcase")).await.unwrap();
    assert!(upcase.is_command());
    assert!(upcase.tasks().is_empty());
    let mut updates = exec.updates();

    let handle = exec
        .submit_command(&upcase, CommandInput::new().stdin("make it loud\n"))
        .unwrap();
    let uid = handle.uid().to_owned();
    let out = handle.await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(out.success());
    assert_eq!(out.stdout_text(), "MAKE IT LOUD\n");
    assert_eq!(out.stderr_text(), "read 13 bytes\n");
    // Its event, like any task's: named `_start`, with the same streams.
    let seen = common::updates_of(&mut updates, &uid).await;
    let event = common::finished(&seen);
    assert!(event.is_ok());
    assert_eq!(event.task, "_start");
    assert_eq!(event.stdout, b"MAKE IT LOUD\n");
    assert_eq!(event.bytes_in, 13);
    assert!(event.pid.is_some());

    // A non-zero exit is an outcome, not an error.
    let exit = exec.load(asyncer_tests::command("exit")).await.unwrap();
    for code in [0, 1, 7, 125] {
        let out = exec
            .submit_command(&exit, CommandInput::new().arg(code.to_string()))
            .unwrap()
            .await
            .unwrap();
        assert_eq!(out.exit_code, code);
        assert_eq!(out.stdout_text(), "leaving\n");
        assert_eq!(out.stderr_text(), format!("with code {code}\n"));
    }
}

#[tokio::test]
async fn arguments_environment_and_a_granted_root_reach_the_program() {
    let exec = common::executor(1);
    let args = exec.load(asyncer_tests::command("args")).await.unwrap();
    let out = exec
        .submit_command(&args, CommandInput::new().args(["-x", "two words", ""]))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "-x\ntwo words\n\n");

    // The task's environment, and the command's own on top (it wins).
    let env = exec.load(asyncer_tests::command("env")).await.unwrap();
    let options =
        TaskOptions::new().capabilities(Capabilities::none().env("A", "task").env("B", "task"));
    let out = exec
        .submit_command_with(&env, CommandInput::new().env("B", "command"), options)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "A=task\nB=command\n");
    // Nothing by default.
    let out = exec
        .submit_command(&env, CommandInput::new())
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.stdout_text(), "");

    // A directory granted read-write as `/`: the program changes it.
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("input.txt"), "abc\n").unwrap();
    let files = exec.load(asyncer_tests::command("files")).await.unwrap();
    let granted =
        TaskOptions::new().capabilities(Capabilities::none().read_write_dir(root.path(), "/"));
    let out = exec
        .submit_command_with(&files, CommandInput::new(), granted)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout_text().as_str()),
        (0, "cba\ninput.txt out\n")
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("out/reversed.txt")).unwrap(),
        "cba"
    );
    // Read-only: it can read but not write, and says so with its exit code.
    let read_only =
        TaskOptions::new().capabilities(Capabilities::none().read_only_dir(root.path(), "/"));
    std::fs::remove_dir_all(root.path().join("out")).unwrap();
    let out = exec
        .submit_command_with(&files, CommandInput::new(), read_only)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3, "{}", out.stderr_text());
    assert!(
        out.stderr_text().starts_with("mkdir /out"),
        "{}",
        out.stderr_text()
    );
    assert!(!root.path().join("out").exists());
    // Without a grant there is no file system at all.
    let out = exec
        .submit_command(&files, CommandInput::new())
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
}

#[tokio::test]
async fn traps_limits_and_wrong_uses_are_typed_errors() {
    let exec = common::executor(2);
    let abort = exec.load(asyncer_tests::command("abort")).await.unwrap();
    let error = exec
        .submit_command(&abort, CommandInput::new())
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Trap, "{error}");

    let spin = exec.load(asyncer_tests::command("spin")).await.unwrap();
    let quick =
        TaskOptions::new().limits(Limits::default().with_timeout(Duration::from_millis(300)));
    let error = exec
        .submit_command_with(&spin, CommandInput::new(), quick)
        .unwrap()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");

    let upcase = exec.load(asyncer_tests::command("upcase")).await.unwrap();
    let small = TaskOptions::new().limits(Limits::default().with_max_input_bytes(4));
    assert!(matches!(
        exec.submit_command_with(&upcase, CommandInput::new().stdin("too long"), small),
        Err(Error::InputTooLarge { size: 8, limit: 4 })
    ));
    // The stdout cap holds for commands too.
    let capped = TaskOptions::new().limits(Limits::default().with_max_log_bytes(5));
    let out = exec
        .submit_command_with(&upcase, CommandInput::new().stdin("abcdefgh"), capped)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        (out.stdout_text().as_str(), out.stdout_dropped),
        ("ABCDE", 3)
    );

    // A task module is no command, and a command has no tasks.
    let heavy = common::heavy(&exec).await;
    assert!(!heavy.is_command());
    match exec.submit_command(&heavy, CommandInput::new()) {
        Err(Error::NoSuchTask { task, .. }) => assert_eq!(task, "_start"),
        other => panic!("expected no_such_task, got {other:?}"),
    }
    assert!(matches!(
        exec.submit::<_, u64>(&upcase, "upcase", &()),
        Err(Error::NoSuchTask { .. })
    ));
    // A `_start` of the wrong type is refused at load.
    let wrong = wat::parse_str(r#"(module (func (export "_start") (param i32)))"#).unwrap();
    let error = exec.load_bytes(wrong).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("`_start` must have type () -> ()"),
        "{error}"
    );
}

#[tokio::test]
async fn warm_workers_run_commands_each_in_a_fresh_instance() {
    let exec = Executor::builder()
        .max_processes(1)
        .worker_program(common::WORKER)
        .warm(WarmOptions::default())
        .build()
        .unwrap();
    let upcase = exec.load(asyncer_tests::command("upcase")).await.unwrap();
    let mut updates = exec.updates();
    let mut pids = Vec::new();
    for text in ["one", "two", "three"] {
        let handle = exec
            .submit_command(&upcase, CommandInput::new().stdin(text))
            .unwrap();
        let uid = handle.uid().to_owned();
        assert_eq!(handle.await.unwrap().stdout_text(), text.to_uppercase());
        let seen = common::updates_of(&mut updates, &uid).await;
        pids.push(common::finished(&seen).pid);
        assert!(!seen.iter().any(|u| matches!(u, TaskUpdate::Log(_))));
    }
    // One warm worker served all three.
    assert!(pids.windows(2).all(|w| w[0] == w[1]), "{pids:?}");
}

#[test]
fn the_cli_runs_commands_with_the_contracts_exit_codes() {
    let scratch = tempfile::tempdir().unwrap();
    let input = scratch.path().join("in.txt");
    std::fs::write(&input, "quiet\n").unwrap();
    let upcase = asyncer_tests::command("upcase");
    let run = |args: &[&str]| common::cli_command().args(args).output().unwrap();

    let output = run(&[
        "run",
        &upcase,
        "--command",
        "--input",
        input.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let json = common::json_of(&output);
    assert_eq!(json["status"], "ok", "{json}");
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["stdout"], "QUIET\n");
    assert_eq!(json["stderr"], "read 6 bytes\n");
    assert!(json["wall_ms"].as_f64().is_some());

    // Without --json the program's streams are passed through.
    let output = run(&[
        "run",
        &upcase,
        "--command",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, b"QUIET\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("read 6 bytes"));

    // A non-zero exit: exit code 1, the program's code in the JSON.
    let exit = asyncer_tests::command("exit");
    let output = run(&["run", &exit, "--command", "--arg", "7", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let json = common::json_of(&output);
    assert_eq!(
        (json["status"].as_str(), json["exit_code"].as_i64()),
        (Some("ok"), Some(7))
    );
    assert_eq!(json["stderr"], "with code 7\n");

    // Arguments that look like flags, and the environment.
    let args = asyncer_tests::command("args");
    let output = run(&["run", &args, "--command", "--arg", "-v", "--arg", "--x=1"]);
    assert_eq!(output.stdout, b"-v\n--x=1\n");
    let env = asyncer_tests::command("env");
    let output = run(&["run", &env, "--command", "--env", "K=v w"]);
    assert_eq!(output.stdout, b"K=v w\n");

    // A granted directory as `/`.
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("input.txt"), "xyz").unwrap();
    let files = asyncer_tests::command("files");
    let grant = format!("{}:/", root.display());
    let output = run(&[
        "run",
        &files,
        "--command",
        "--allow-dir-rw",
        &grant,
        "--json",
    ]);
    let json = common::json_of(&output);
    assert_eq!(json["exit_code"], 0, "{json}");
    assert_eq!(json["stdout"], "zyx\ninput.txt out\n");
    assert_eq!(
        std::fs::read_to_string(root.join("out/reversed.txt")).unwrap(),
        "zyx"
    );

    // A trap is a task failure with its kind; a module that is no command,
    // or a task name beside --command, is bad usage.
    let output = run(&[
        "run",
        &asyncer_tests::command("abort"),
        "--command",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(common::json_of(&output)["error"]["kind"], "trap");
    let output = run(&["run", asyncer_tests::HEAVY, "--command", "--json"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(common::json_of(&output)["error"]["kind"], "no_such_task");
    let output = run(&["run", &upcase, "upcase", "--command"]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["run", &upcase, "--arg", "x"]);
    assert_eq!(output.status.code(), Some(2));

    // inspect says what it is.
    let output = run(&["inspect", &upcase, "--json"]);
    let json = common::json_of(&output);
    assert_eq!(
        (json["valid"].as_bool(), json["command"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(json["tasks"], serde_json::json!([]));
}
