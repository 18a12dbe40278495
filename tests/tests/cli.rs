//! The `asyncer` CLI contract: JSON shape, error kinds and exit codes, for
//! well-behaved and hostile modules alike.

mod common;

use common::json_of;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn cli(args: &[&str]) -> Output {
    common::cli_command()
        .args(args)
        .output()
        .expect("the CLI runs")
}

/// Runs with `--json`, checks the contract's keys, returns (exit code, JSON).
fn run_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = cli(&all);
    let value = json_of(&output);
    for key in [
        "uid",
        "status",
        "output_hex",
        "error",
        "wall_ms",
        "fuel_consumed",
        "peak_memory_bytes",
    ] {
        assert!(value.get(key).is_some(), "missing {key}: {value}");
    }
    (output.status.code().expect("exit code"), value)
}

fn error_kind(value: &Value) -> &str {
    value["error"]["kind"].as_str().unwrap_or("<none>")
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("asyncer-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn wat(&self, name: &str, body: &str) -> String {
        let text = format!(
            r#"(module (memory (export "memory") 1)
                 (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
                 {body})"#
        );
        self.file(name, &wat::parse_str(text).unwrap())
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn run_prints_raw_output_and_json_with_exit_zero() {
    // add(Pair { a: 2, b: 40 }): postcard varints 02 28 → 42 = 0x2a.
    let output = cli(&["run", asyncer_tests::FAULTS, "add", "--input-hex", "0228"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout, [0x2a]);

    let (code, value) = run_json(&[asyncer_tests::FAULTS, "add", "--input-hex", "0228"]);
    assert_eq!(code, 0);
    assert_eq!(value["status"], "ok");
    assert_eq!(value["output_hex"], "2a");
    assert!(value["error"].is_null());
    assert_eq!(value["uid"].as_str().unwrap().len(), 36);
    assert!(value["wall_ms"].as_f64().unwrap() > 0.0);
    assert!(value["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(value["fuel_consumed"].is_null(), "not metered by default");
}

#[test]
fn run_prints_the_guests_logs_and_progress_to_stderr() {
    // heavy_reporting(HeavyInput { uid: "x", n: 1000 }): 01 78 | e8 07.
    let output = cli(&[
        "run",
        asyncer_tests::HEAVY,
        "heavy_reporting",
        "--input-hex",
        "0178e807",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let info = stderr
        .find("[info] x: summing 1000 squares")
        .unwrap_or_else(|| panic!("{stderr}"));
    let last = stderr
        .find("[progress 20/20] 1000 of 1000 terms")
        .unwrap_or_else(|| panic!("{stderr}"));
    let debug = stderr
        .find("[debug] x: done")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        info < last && last < debug,
        "in the guest's order: {stderr}"
    );

    // With --json, stdout is still exactly one JSON object; the log records
    // still go to stderr, progress does not.
    let (code, value) = run_json(&[
        asyncer_tests::HEAVY,
        "heavy_reporting",
        "--input-hex",
        "0178e807",
    ]);
    assert_eq!(code, 0);
    assert_eq!(value["status"], "ok");
}

#[test]
fn input_files_fuel_and_memory_flags_work() {
    let scratch = Scratch::new("flags");
    let input = scratch.file("input.bin", &[0x02, 0x28]);
    let (code, value) = run_json(&[
        asyncer_tests::FAULTS,
        "add",
        "--input",
        &input,
        "--fuel",
        "100000000",
        "--memory",
        "64MiB",
        "--timeout",
        "5s",
    ]);
    assert_eq!(code, 0, "{value}");
    assert_eq!(value["output_hex"], "2a");
    assert!(value["fuel_consumed"].as_u64().unwrap() > 0);
}

#[test]
fn json_carries_the_guests_stdout_and_stderr() {
    // chatter("hi"): postcard string 02 68 69.
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "chatter", "--input-hex", "026869"]);
    assert_eq!(code, 0, "{value}");
    assert_eq!(value["stdout"], "out: hi\n");
    assert_eq!(value["stderr"], "err: hi\n");
    assert_eq!(value["stdout_dropped"], 0);
    assert_eq!(value["stderr_dropped"], 0);
    // A panicking guest's message and stderr are both there.
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "panic", "--input-hex", "0178"]);
    assert_eq!(code, 1, "{value}");
    assert!(
        value["error"]["guest_message"]
            .as_str()
            .is_some_and(|m| m.contains("guest says: x")),
        "{value}"
    );
    assert!(
        value["stderr"].as_str().unwrap().contains("guest says: x"),
        "{value}"
    );
}

#[test]
fn task_failures_exit_one_with_their_kind() {
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "divide", "--input-hex", "0700"]);
    assert_eq!((code, error_kind(&value)), (1, "guest_error"), "{value}");
    assert_eq!(value["status"], "error");
    assert!(value["output_hex"].is_null());
    assert!(value["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot divide 7 by zero"));
    // The guest's own words, in a field of their own.
    assert_eq!(value["error"]["guest_message"], "cannot divide 7 by zero");

    // panic("x"): postcard string 01 78.
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "panic", "--input-hex", "0178"]);
    assert_eq!((code, error_kind(&value)), (1, "guest_panic"), "{value}");
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "add", "--input-hex", "05"]);
    assert_eq!((code, error_kind(&value)), (1, "decode"), "{value}");
}

#[test]
fn hostile_modules_get_their_kinds_through_the_cli() {
    let scratch = Scratch::new("hostile");
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "spin",
            r#"(func (export "task:spin") (param i32 i32) (result i64) (loop (br 0)) i64.const 0)"#,
            &["--timeout", "500ms"],
            "timeout",
        ),
        (
            "bomb",
            r#"(func (export "task:bomb") (param i32 i32) (result i64)
                 (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) i64.const 0)"#,
            &["--memory", "16MiB"],
            "memory_limit",
        ),
        (
            "rec",
            r#"(func $rec (export "task:rec") (param i32 i32) (result i64) (call $rec (local.get 0) (local.get 1)))"#,
            &[],
            "trap",
        ),
        (
            "div",
            r#"(func (export "task:div") (param i32 i32) (result i64) (drop (i32.div_u (i32.const 1) (local.get 1))) i64.const 0)"#,
            &[],
            "trap",
        ),
        (
            "burn",
            r#"(func (export "task:burn") (param i32 i32) (result i64) (loop (br 0)) i64.const 0)"#,
            &["--fuel", "100000"],
            "out_of_fuel",
        ),
        (
            "oob",
            r#"(func (export "task:oob") (param i32 i32) (result i64) (i64.const -1))"#,
            &[],
            "decode",
        ),
        (
            "tag",
            r#"(data (i32.const 8) "\09") (func (export "task:tag") (param i32 i32) (result i64)
                 (i64.or (i64.shl (i64.const 8) (i64.const 32)) (i64.const 1)))"#,
            &[],
            "decode",
        ),
    ];
    for (task, body, flags, kind) in cases {
        let module = scratch.wat(&format!("{task}.wasm"), body);
        let mut args = vec![module.as_str(), task];
        args.extend_from_slice(flags);
        let (code, value) = run_json(&args);
        assert_eq!((code, error_kind(&value)), (1, *kind), "{task}: {value}");
    }
    // exit(3): postcard i32 is a zigzag varint, 3 → 06.
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "exit", "--input-hex", "06"]);
    assert_eq!((code, error_kind(&value)), (1, "worker_crashed"), "{value}");
    let (code, value) = run_json(&[
        asyncer_tests::FAULTS,
        "slow",
        "--input-hex",
        "b0ea01",
        "--timeout",
        "1s",
    ]);
    assert_eq!((code, error_kind(&value)), (1, "timeout"), "{value}");
}

#[test]
fn unreadable_modules_and_bad_usage_exit_two() {
    let scratch = Scratch::new("usage");
    let junk = scratch.file("junk.wasm", b"\x00asm but not really");
    let (code, value) = run_json(&[&junk, "t"]);
    assert_eq!((code, error_kind(&value)), (2, "invalid_module"), "{value}");

    let import = scratch.file(
        "import.wasm",
        &wat::parse_str(
            r#"(module (import "env" "f" (func)) (memory (export "memory") 1)
                 (func (export "asyncer_alloc") (param i32) (result i32) i32.const 0)
                 (func (export "task:t") (param i32 i32) (result i64) i64.const 0))"#,
        )
        .unwrap(),
    );
    let (code, value) = run_json(&[&import, "t"]);
    assert_eq!((code, error_kind(&value)), (2, "invalid_module"), "{value}");

    let (code, value) = run_json(&["/no/such/file.wasm", "t"]);
    assert_eq!((code, error_kind(&value)), (2, "invalid_module"), "{value}");
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "no_such_task"]);
    assert_eq!((code, error_kind(&value)), (2, "no_such_task"), "{value}");

    assert_eq!(cli(&["run"]).status.code(), Some(2));
    assert_eq!(
        cli(&["run", asyncer_tests::FAULTS, "add", "--timeout", "soon"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(cli(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn allow_dir_and_env_grant_exactly_what_they_say() {
    let scratch = Scratch::new("caps");
    std::fs::write(scratch.0.join("note.txt"), "hi").unwrap();
    let dir = format!("{}:/in", scratch.0.display());
    // read_file("/in/note.txt"): postcard string.
    let mut hex = String::from("0c");
    hex.extend(b"/in/note.txt".iter().map(|b| format!("{b:02x}")));
    let (code, value) = run_json(&[
        asyncer_tests::FAULTS,
        "read_file",
        "--input-hex",
        &hex,
        "--allow-dir",
        &dir,
    ]);
    assert_eq!(code, 0, "{value}");
    assert_eq!(value["output_hex"], "026869");
    let (code, value) = run_json(&[asyncer_tests::FAULTS, "read_file", "--input-hex", &hex]);
    assert_eq!((code, error_kind(&value)), (1, "guest_error"), "{value}");

    let output = cli(&["run", asyncer_tests::FAULTS, "environment", "--env", "K=V"]);
    assert_eq!(output.status.code(), Some(0));
    // ([("K", "V")], []) in postcard.
    assert_eq!(output.stdout, [1, 1, b'K', 1, b'V', 0]);
}

#[test]
fn inspect_lists_tasks_and_imports() {
    let output = cli(&["inspect", asyncer_tests::FAULTS, "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let value = json_of(&output);
    assert_eq!(value["valid"], true);
    let tasks: Vec<&str> = value["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tasks.contains(&"add") && tasks.contains(&"panic"),
        "{tasks:?}"
    );
    let imports: Vec<&str> = value["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        imports
            .iter()
            .all(|i| i.starts_with("wasi_snapshot_preview1::") || i.starts_with("asyncer::")),
        "{imports:?}"
    );
    // The faults guest reports progress and logs.
    assert!(imports.contains(&"asyncer::progress"), "{imports:?}");
    assert!(imports.contains(&"asyncer::log"), "{imports:?}");

    let text = cli(&["inspect", asyncer_tests::HEAVY]);
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).contains("tasks: heavy"));

    let scratch = Scratch::new("inspect");
    let junk = scratch.file("junk.wasm", b"junk");
    let output = cli(&["inspect", &junk]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid: no"));
    assert!(Path::new(&junk).exists());
}
