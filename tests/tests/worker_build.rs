//! The worker a user gets is the lean one: built by the README's line
//! (`cargo install --path .../host/worker`, as `cargo install asyncer-worker`
//! builds it from the registry), it has no compiler in it. Inside a project
//! that depends on `asyncer`, `cargo build -p asyncer-worker` would unify the
//! host's cranelift feature into it; `cargo install` builds the worker
//! package on its own.

mod common;

use std::path::Path;
use std::process::Command;

/// `asyncer-worker --build-info` of the program at `path`.
fn build_info(path: &Path) -> String {
    let output = Command::new(path)
        .arg("--build-info")
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", path.display()));
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("text")
}

#[test]
fn the_worker_the_readme_installs_has_no_compiler() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let root = tmp.join("installed-worker");
    // Its own target dir: the outer cargo holds the workspace's; kept
    // between runs, so only the first build costs.
    let target = tmp.join("worker-install-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["install", "--locked", "--debug", "--force", "--path"])
        .arg(repo.join("host/worker"))
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo install failed: {status}");
    let info = build_info(&root.join("bin/asyncer-worker"));
    assert!(info.contains("compiler: no"), "{info}");
    assert!(
        info.contains(&format!("protocol: {}", asyncer_protocol::PROTOCOL_VERSION)),
        "{info}"
    );
}

#[test]
fn a_worker_built_beside_the_host_has_the_compiler_and_the_check_sees_it() {
    // The tests' worker is built inside the tests package, which links the
    // host: cargo unifies cranelift into it, the very thing the README's
    // line avoids. The check reports it, in the program and in this test.
    let info = build_info(Path::new(common::WORKER));
    assert!(info.contains("compiler: yes"), "{info}");
    assert!(asyncer_worker::build_info().contains("compiler: yes"));
}
