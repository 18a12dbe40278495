//! JSON at the edges: `#[task]` records each task's input and output types
//! in the module (`asyncer.schema`), and callers without the guest's Rust
//! types speak JSON to it, through the library (`submit_json`) and the CLI
//! (`--input-json`, `"output"`), with decode errors that name the field,
//! before anything runs.

mod common;

use asyncer::{Error, ErrorKind};
use serde_json::json;

#[tokio::test]
async fn the_guests_tasks_speak_json() {
    let exec = common::executor(2);
    let heavy = common::heavy(&exec).await;
    let types = heavy.task_types("heavy").expect("described");
    assert_eq!(
        types.input.to_string(),
        "HeavyInput { uid: String, n: u64 }"
    );
    assert_eq!(
        types.output.to_string(),
        "HeavyOutput { uid: String, result: u128 }"
    );
    // The seed's task, from JSON to JSON; u128 as a decimal string.
    let out = exec
        .submit_json(&heavy, "heavy", json!({"uid": "a", "n": 10_000_000}))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out, json!({"uid": "a", "result": "333333283333335000000"}));
    assert_eq!(
        out.to_string(),
        r#"{"uid":"a","result":"333333283333335000000"}"#,
        "fields keep their order"
    );
    let out = exec
        .submit_json(&heavy, "sum_squares", json!(10))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(out, json!("285"));

    let faults = common::faults(&exec).await;
    let sum = exec
        .submit_json(&faults, "add", json!({"a": 2, "b": 3}))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(sum, json!(5));
    let echoed = exec
        .submit_json(&faults, "echo", json!([1, 2, 255]))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(echoed, json!([1, 2, 255]));
    // The guest's own error stays a typed error.
    match exec
        .submit_json(&faults, "divide", json!({"a": 7, "b": 0}))
        .unwrap()
        .await
    {
        Err(Error::Guest { message }) => assert_eq!(message, "cannot divide 7 by zero"),
        other => panic!("expected the guest's error, got {other:?}"),
    }
    // A unit input and a tuple output.
    let env = exec
        .submit_json(&faults, "environment", json!(null))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(env, json!([[], []]));

    let digest = exec.load(asyncer_tests::DIGEST).await.unwrap();
    let hash = exec
        .submit_json(&digest, "sha256", json!([]))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        hash,
        json!("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    let chained = exec
        .submit_json(&digest, "hash_chain", json!([[97], 1]))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        chained,
        json!("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
    );
}

#[tokio::test]
async fn values_that_do_not_fit_are_refused_before_anything_runs() {
    let exec = common::executor(1);
    let heavy = common::heavy(&exec).await;
    let mut events = exec.events();
    let refuse = |value: serde_json::Value| {
        let error = exec.submit_json(&heavy, "heavy", value).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Decode, "{error}");
        error.to_string()
    };
    assert!(refuse(json!({"uid": 5, "n": 1}))
        .contains("input at .uid: expected a string, found the number 5"));
    assert!(refuse(json!({"uid": "a"})).contains("input at .n: missing field"));
    assert!(refuse(json!({"uid": "a", "n": -1})).contains("out of range for u64"));
    assert!(refuse(json!({"uid": "a", "n": 1, "m": 2})).contains("unknown field `m`"));
    assert!(refuse(json!([1, 2])).contains("expected an object"));
    assert!(matches!(
        exec.submit_json(&heavy, "nope", json!(null)),
        Err(Error::NoSuchTask { .. })
    ));
    // Nothing was queued: the next event is this task's.
    let handle = exec.submit_json(&heavy, "sum_squares", json!(3)).unwrap();
    let uid = handle.uid().to_owned();
    handle.await.unwrap();
    assert_eq!(events.recv().await.unwrap().uid, uid);

    // A module without descriptions keeps working with bytes, and says why
    // it takes no JSON.
    let c = exec.load(asyncer_tests::C_TASKS).await.unwrap();
    assert!(c.task_types("add").is_none());
    let error = exec.submit_json(&c, "add", json!([2, 3])).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("does not describe the types of task `add`"),
        "{error}"
    );
    let sum: u64 = exec
        .submit(&c, "add", &(2u64, 3u64))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(sum, 5);
}

/// A hand-written module with a description of its own (as another
/// toolchain would write one): task `answer`, `()` in, `u64` out.
fn described(section: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (data (i32.const 16) "\00\2a")
          (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
          (func (export "task:answer") (param i32 i32) (result i64)
            (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2)))
          (@custom "asyncer.schema" "{section}"))"#
    ))
    .unwrap()
}

#[tokio::test]
async fn other_toolchains_may_write_the_section_and_damaged_ones_are_refused() {
    let exec = common::executor(1);
    // Entry 0x01, name "answer", input unit (0x12), output u64 (0x09).
    let module = exec
        .load_bytes(described(r"\01\06answer\12\09"))
        .await
        .unwrap();
    let answer = exec
        .submit_json(&module, "answer", json!(null))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(answer, json!(42));

    for (section, why) in [
        (r"\02", "entry format"),
        (r"\01\06answer\12", "ends too early"),
        (r"\01\06answer\12\7e", "unknown type tag"),
        (
            r"\01\05other\12\09",
            "describes task `other`, which it does not export",
        ),
        (r"\01\06answer\12\09\01\06answer\12\09", "described twice"),
    ] {
        let error = exec.load_bytes(described(section)).await.unwrap_err();
        assert!(matches!(error, Error::InvalidModule { .. }), "{error}");
        assert!(error.to_string().contains(why), "{section}: {error}");
    }
}

#[test]
fn the_cli_takes_json_and_prints_json() {
    let run = |args: &[&str]| common::cli_command().args(args).output().unwrap();
    let stdout =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();

    // The seed's task from the shell.
    let output = run(&[
        "run",
        asyncer_tests::HEAVY,
        "heavy",
        "--input-json",
        r#"{"uid":"a","n":10000000}"#,
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stdout(&output),
        "{\"uid\":\"a\",\"result\":\"333333283333335000000\"}\n"
    );

    // From a file, and with --json: "output" beside "output_hex".
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("in.json");
    std::fs::write(&file, r#"{"a": 40, "b": 2}"#).unwrap();
    let at_file = format!("@{}", file.display());
    let output = run(&[
        "run",
        asyncer_tests::FAULTS,
        "add",
        "--input-json",
        &at_file,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let json = common::json_of(&output);
    assert_eq!(
        (json["output"].clone(), json["output_hex"].clone()),
        (json!(42), json!("2a"))
    );
    // Hex input still works, and --json adds the JSON output for a
    // described task.
    let output = run(&[
        "run",
        asyncer_tests::FAULTS,
        "add",
        "--input-hex",
        "0203",
        "--json",
    ]);
    assert_eq!(common::json_of(&output)["output"], json!(5));

    // A value that does not fit: exit 2, kind decode, the field named.
    let output = run(&[
        "run",
        asyncer_tests::HEAVY,
        "heavy",
        "--input-json",
        r#"{"uid":"a","n":"many"}"#,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let json = common::json_of(&output);
    assert_eq!(json["error"]["kind"], "decode");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("input at .n: expected an integer (u64), found the string \"many\""),
        "{json}"
    );
    // Not JSON at all, or a missing file.
    let output = run(&["run", asyncer_tests::HEAVY, "heavy", "--input-json", "{uid"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--input-json is not JSON"));
    let output = run(&[
        "run",
        asyncer_tests::HEAVY,
        "heavy",
        "--input-json",
        "@/nonexistent.json",
    ]);
    assert_eq!(output.status.code(), Some(2));

    // inspect prints each task's types.
    let output = run(&["inspect", asyncer_tests::HEAVY]);
    assert!(
        stdout(&output).contains(
            "heavy: HeavyInput { uid: String, n: u64 } -> HeavyOutput { uid: String, result: u128 }"
        ),
        "{}",
        stdout(&output)
    );
    let json = common::json_of(&run(&["inspect", asyncer_tests::DIGEST, "--json"]));
    assert_eq!(
        json["types"]["hash_chain"],
        json!({"input": "(Vec<u8>, u32)", "output": "String"})
    );
}
