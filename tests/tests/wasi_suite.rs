//! WASI command programs against specs in wasi-testsuite's format
//! (`{"args", "env", "root", "exit_code", "stdout", "stderr"}` beside each
//! `NAME.wasm`): our own programs always, and WebAssembly's own
//! wasi-testsuite when `ASYNCER_WASI_TESTSUITE` names its prebuilt
//! `wasm32-wasip1` directories (colon-separated), e.g. `tests/rust/testsuite/wasm32-wasip1`
//! of its `prod/testsuite-base` branch. Each program runs as a task
//! (`Executor::submit_command`): its own worker process, the sandbox, a
//! timeout, with a fresh copy of the spec's root directory granted as `/`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use asyncer::{Capabilities, CommandInput, Executor, Limits, TaskOptions};
use serde_json::Value;

/// What one program must do, read from `NAME.json` (defaults: no arguments,
/// no environment, no root, exit code 0, streams not checked).
struct Spec {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    root: Option<PathBuf>,
    exit_code: i32,
    stdout: Option<String>,
    stderr: Option<String>,
}

fn spec_of(wasm: &Path) -> Spec {
    let json = wasm.with_extension("json");
    let value: Value = match std::fs::read_to_string(&json) {
        Ok(text) => {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json.display()))
        }
        Err(_) => Value::Null,
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    Spec {
        args: strings(&value["args"]),
        env: value["env"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        root: value["root"]
            .as_str()
            .map(|root| wasm.parent().unwrap().join(root)),
        exit_code: value["exit_code"].as_i64().map_or(0, |c| c as i32),
        stdout: value["stdout"].as_str().map(str::to_owned),
        stderr: value["stderr"].as_str().map(str::to_owned),
    }
}

/// Copies `from` to `to`: directories, files and symbolic links as such.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs every `.wasm` in `dir`; returns the names that passed and, for the
/// others, why not.
async fn run_suite(exec: &Executor, dir: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let mut programs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    programs.sort();
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    for wasm in programs {
        let name = wasm.file_stem().unwrap().to_string_lossy().into_owned();
        match run_one(exec, &wasm).await {
            Ok(()) => passed.push(name),
            Err(why) => failed.push((name, why)),
        }
    }
    (passed, failed)
}

async fn run_one(exec: &Executor, wasm: &Path) -> Result<(), String> {
    let spec = spec_of(wasm);
    let module = exec.load(wasm).await.map_err(|e| format!("load: {e}"))?;
    let scratch = tempfile::tempdir().unwrap();
    let mut capabilities = Capabilities::none();
    if let Some(root) = &spec.root {
        let copy = scratch.path().join("root");
        copy_tree(root, &copy);
        capabilities = capabilities.read_write_dir(copy, "/");
    }
    let mut input = CommandInput::new().args(&spec.args);
    for (key, value) in &spec.env {
        input = input.env(key, value);
    }
    let options = TaskOptions::new()
        .capabilities(capabilities)
        .limits(Limits::default().with_timeout(Duration::from_secs(20)));
    let out = exec
        .submit_command_with(&module, input, options)
        .map_err(|e| format!("submit: {e}"))?
        .await
        .map_err(|e| format!("{} ({})", e, e.kind()))?;
    if out.exit_code != spec.exit_code {
        return Err(format!(
            "exit code {} instead of {}; stderr: {}",
            out.exit_code,
            spec.exit_code,
            out.stderr_text()
        ));
    }
    for (stream, got, want) in [
        ("stdout", out.stdout_text(), &spec.stdout),
        ("stderr", out.stderr_text(), &spec.stderr),
    ] {
        if let Some(want) = want {
            if &got != want {
                return Err(format!("{stream} {got:?} instead of {want:?}"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_command_programs_meet_their_specs() {
    let exec = common::executor(2);
    let (passed, failed) = run_suite(&exec, Path::new(asyncer_tests::WASI_SUITE)).await;
    assert!(failed.is_empty(), "failed: {failed:#?}");
    // Every spec ran: args, env, exit, files, upcase.
    assert_eq!(passed, ["args", "env", "exit", "files", "upcase"]);
}

/// WebAssembly's wasi-testsuite, where the machine has it (see the module
/// documentation); every test must pass but those listed here, with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_testsuite_passes_where_it_is_present() {
    let Ok(dirs) = std::env::var("ASYNCER_WASI_TESTSUITE") else {
        eprintln!(
            "skipped: set ASYNCER_WASI_TESTSUITE to wasi-testsuite's wasm32-wasip1 directories"
        );
        return;
    };
    let exec = common::executor(2);
    let (mut passed, mut failed) = (0, Vec::new());
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let (ok, not) = run_suite(&exec, Path::new(dir)).await;
        eprintln!("{dir}: {} passed, {} failed", ok.len(), not.len());
        passed += ok.len();
        failed.extend(not);
    }
    eprintln!("wasi-testsuite: {passed} passed, {} failed", failed.len());
    for (name, why) in &failed {
        eprintln!("  {name}: {why}");
    }
    let expected_failures: &[&str] = &[];
    let unexpected: Vec<_> = failed
        .iter()
        .filter(|(name, _)| !expected_failures.contains(&name.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
}
