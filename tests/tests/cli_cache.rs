//! The CLI's persistent compile cache: a second run of a module compiles
//! nothing, many runs may share one cache at once, a damaged artifact costs
//! a compile and nothing else, the size bound evicts the least recently used
//! artifact, and `asyncer cache ls|clear` show and empty it.

mod common;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// What the executor logs when it compiles a module, and when it loads one
/// from the cache instead (`ASYNCER_LOG=asyncer=debug`).
const COMPILED: &str = " compiled module=";
const FROM_CACHE: &str = "loaded from the artifact cache";

/// Runs the heavy guest's `sum_squares(10)` with the cache in `dir` and
/// debug logs; checks its output.
fn run_heavy(dir: &Path, extra: &[&str]) -> Output {
    let output = common::cli_command()
        .args(common::RUN_SUM_SQUARES_10)
        .arg("--cache-dir")
        .arg(dir)
        .args(extra)
        .env("ASYNCER_LOG", "asyncer=debug")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // 1² + … + 9² = 285, a postcard varint.
    assert_eq!(output.stdout, [0x9d, 0x02]);
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn cache_ls(dir: &Path) -> Value {
    let output = common::cli_command()
        .args(["cache", "ls", "--json", "--cache-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    common::json_of(&output)
}

fn artifacts(dir: &Path) -> Vec<Value> {
    cache_ls(dir)["artifacts"].as_array().unwrap().clone()
}

fn hash_of(module: &str) -> String {
    common::sha256_hex(&std::fs::read(module).unwrap())
}

#[test]
fn a_second_run_loads_the_module_without_compiling() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    let first = run_heavy(&dir, &[]);
    assert!(stderr(&first).contains(COMPILED), "{}", stderr(&first));
    assert!(!stderr(&first).contains(FROM_CACHE), "{}", stderr(&first));

    let second = run_heavy(&dir, &[]);
    assert!(stderr(&second).contains(FROM_CACHE), "{}", stderr(&second));
    assert!(!stderr(&second).contains(COMPILED), "{}", stderr(&second));

    // `inspect` shares it.
    let inspect = common::cli_command()
        .args(["inspect", asyncer_tests::HEAVY, "--cache-dir"])
        .arg(&dir)
        .env("ASYNCER_LOG", "asyncer=debug")
        .output()
        .unwrap();
    assert_eq!(inspect.status.code(), Some(0));
    assert!(
        stderr(&inspect).contains(FROM_CACHE),
        "{}",
        stderr(&inspect)
    );

    let listed = artifacts(&dir);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["module_hash"], hash_of(asyncer_tests::HEAVY));
    assert!(listed[0]["bytes"].as_u64().unwrap() > 0);
    // The cache is private to its user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[test]
fn the_environment_names_the_cache_and_clear_empties_it() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("from-env");
    let output = common::cli_command()
        .args(["run", asyncer_tests::DIGEST, "sha256", "--input-hex", "00"])
        .env("ASYNCER_CACHE_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let listed = artifacts(&dir);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["module_hash"], hash_of(asyncer_tests::DIGEST));

    let text = common::cli_command()
        .args(["cache", "ls"])
        .env("ASYNCER_CACHE_DIR", &dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("1 artifacts"), "{text}");
    assert!(text.contains(&hash_of(asyncer_tests::DIGEST)), "{text}");

    let cleared = common::cli_command()
        .args(["cache", "clear", "--json"])
        .env("ASYNCER_CACHE_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(cleared.status.code(), Some(0));
    let cleared = common::json_of(&cleared);
    assert_eq!(cleared["removed_files"], 1, "{cleared}");
    assert!(cleared["removed_bytes"].as_u64().unwrap() > 0);
    assert!(artifacts(&dir).is_empty());

    // Listing a cache that does not exist shows it empty and makes nothing.
    let missing = scratch.path().join("never-made");
    assert!(artifacts(&missing).is_empty());
    assert!(!missing.exists());
}

#[test]
fn many_runs_at_once_share_one_cache() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    let runs: Vec<_> = (0..6)
        .map(|_| {
            common::cli_command()
                .args(common::RUN_SUM_SQUARES_10)
                .arg("--cache-dir")
                .arg(&dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let output = run.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(output.stdout, [0x9d, 0x02]);
    }
    // One complete artifact, no temporary file left behind.
    assert_eq!(artifacts(&dir).len(), 1);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // And the next run uses it.
    let next = run_heavy(&dir, &[]);
    assert!(stderr(&next).contains(FROM_CACHE), "{}", stderr(&next));
}

#[test]
fn a_damaged_artifact_costs_a_compile_and_nothing_else() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    run_heavy(&dir, &[]);
    let listed = artifacts(&dir);
    let path = listed[0]["path"].as_str().unwrap().to_owned();
    std::fs::write(&path, b"\x7fELF\x02\x01\x01 not an artifact at all").unwrap();

    let again = run_heavy(&dir, &[]);
    let text = stderr(&again);
    assert!(text.contains("cannot be loaded; compiling again"), "{text}");
    assert!(text.contains(COMPILED), "{text}");
    // The artifact was written anew, and is good again.
    assert!(std::fs::metadata(&path).unwrap().len() > 100);
    let third = run_heavy(&dir, &[]);
    assert!(stderr(&third).contains(FROM_CACHE), "{}", stderr(&third));
}

#[test]
fn past_its_bound_the_cache_keeps_the_most_recently_used() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    run_heavy(&dir, &["--cache-max-size", "1"]);
    let output = common::cli_command()
        .args(["run", asyncer_tests::DIGEST, "sha256", "--input-hex", "00"])
        .args(["--cache-max-size", "1", "--cache-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let listed = artifacts(&dir);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["module_hash"], hash_of(asyncer_tests::DIGEST));
}

#[test]
fn a_cache_other_users_may_write_is_refused_and_no_cache_keeps_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = common::cli_command()
        .args(common::RUN_SUM_SQUARES_10)
        .args(["--json", "--cache-dir"])
        .arg(&shared)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let json = common::json_of(&output);
    assert_eq!(json["error"]["kind"], "cache_failed", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("other users"),
        "{json}"
    );
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);

    // --no-cache wins over the environment: nothing is written there.
    let unused = scratch.path().join("unused");
    let output = common::cli_command()
        .args(common::RUN_SUM_SQUARES_10)
        .arg("--no-cache")
        .env("ASYNCER_CACHE_DIR", &unused)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!unused.exists());
}
