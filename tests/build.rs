//! Builds the guest task crates for wasm32-wasip1 with a nested cargo
//! invocation (its own target directory under OUT_DIR) and exposes the
//! `.wasm` paths as constants. Nothing built is ever committed.

use std::collections::BTreeSet;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package of WASI command programs (binaries, no task ABI).
const COMMANDS_PACKAGE: &str = "wasi-commands";

/// Guest packages to build, and the constant naming each one's `.wasm`.
const GUESTS: &[(&str, &str)] = &[
    ("heavy", "HEAVY"),
    ("faults", "FAULTS"),
    ("digest-task", "DIGEST"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("tests/ lives in the workspace");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("guests");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    // Everything the guests compile against: the workspace manifest and
    // lock file, and the directory of every local crate the guests depend
    // on, directly or not (their own crates, the SDK, its macros, the
    // protocol crate...), found from `cargo metadata` so that the list
    // cannot go stale.
    for input in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    for dir in local_crates_of_guests(&cargo, workspace) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", "wasm32-wasip1"])
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    cmd.args(["-p", COMMANDS_PACKAGE]);
    // The outer build's settings are for the host, not for the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // Guests may use the wide-arithmetic proposal (128-bit add/sub/multiply
    // as single instructions; the engine enables it): without it, `u128`
    // sums compile to carry chains of 64-bit compares, about 1.5x slower.
    // rustc calls the feature unstable and says so in a warning.
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-Ctarget-feature=+wide-arithmetic",
    )
    .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
    .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let status = cmd.status().expect("cannot run cargo to build the guests");
    assert!(
        status.success(),
        "building the guest tasks failed ({status}); is the target installed? \
         run `rustup target add wasm32-wasip1` (make test does)"
    );

    let mut consts = String::new();
    for (package, name) in GUESTS {
        let wasm = target_dir
            .join("wasm32-wasip1/release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            wasm.is_file(),
            "guest {package} was not built at {}",
            wasm.display()
        );
        consts.push_str(&format!(
            "/// Path of the `{package}` guest module.\npub const {name}: &str = {:?};\n",
            wasm.display().to_string()
        ));
    }
    let commands = commands(workspace, &target_dir, &out_dir);
    consts.push_str(&format!(
        "/// The directory of the WASI command programs (`NAME.wasm`, one a \
         `guest-tasks/commands/src/bin` file).\npub const COMMANDS: &str = {:?};\n",
        commands.display().to_string()
    ));
    consts.push_str(&format!(
        "/// The command programs that have specs in `tests/wasi-suite`, with \
         them, in wasi-testsuite's layout.\npub const WASI_SUITE: &str = {:?};\n",
        wasi_suite(workspace, &commands, &out_dir)
            .display()
            .to_string()
    ));
    consts.push_str(&format!(
        "/// Path of the C guest (`guest-tasks/c/tasks.c`).\npub const C_TASKS: &str = {:?};\n",
        build_c_guest(workspace, &out_dir).display().to_string()
    ));
    std::fs::write(out_dir.join("guests.rs"), consts).expect("cannot write guests.rs");
}

/// The command programs built from `guest-tasks/commands` (one `NAME.wasm`
/// a `src/bin` file), in a directory of their own.
fn commands(workspace: &Path, target_dir: &Path, out_dir: &Path) -> PathBuf {
    let dir = out_dir.join("commands");
    std::fs::create_dir_all(&dir).expect("cannot make the commands directory");
    let bins = workspace.join("guest-tasks/commands/src/bin");
    for entry in std::fs::read_dir(&bins).expect("the command programs") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        let wasm = target_dir
            .join("wasm32-wasip1/release")
            .join(format!("{name}.wasm"));
        std::fs::copy(&wasm, dir.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("command {name} was not built at {}: {e}", wasm.display()));
    }
    dir
}

/// A directory in wasi-testsuite's layout: the specs and directories of
/// `tests/wasi-suite`, copied fresh each build, beside the command program
/// each spec is for.
fn wasi_suite(workspace: &Path, commands: &Path, out_dir: &Path) -> PathBuf {
    let specs = workspace.join("tests/wasi-suite");
    println!("cargo:rerun-if-changed={}", specs.display());
    let suite = out_dir.join("wasi-suite");
    if suite.exists() {
        std::fs::remove_dir_all(&suite).expect("cannot clear the old suite");
    }
    copy_tree(&specs, &suite);
    for entry in std::fs::read_dir(&specs).expect("the suite's specs") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.extension().is_some_and(|e| e == "json") && name != "manifest" {
            let wasm = format!("{name}.wasm");
            std::fs::copy(commands.join(&wasm), suite.join(&wasm))
                .unwrap_or_else(|e| panic!("spec {name}.json has no command program: {e}"));
        }
    }
    suite
}

/// Copies the directory `from` to `to`, files and directories.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("cannot make a suite directory");
    for entry in std::fs::read_dir(from).expect("cannot read a suite directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("cannot copy a suite file");
        }
    }
}

/// Builds the C guest with clang and wasi-libc (Debian's `clang`, `lld`,
/// `wasi-libc` and `libclang-rt-dev-wasm32`, which `make test` installs), the
/// command ABI.md gives; `CLANG` names another clang.
fn build_c_guest(workspace: &Path, out_dir: &Path) -> PathBuf {
    let dir = workspace.join("guest-tasks/c");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let wasm = out_dir.join("c_tasks.wasm");
    let status = Command::new(&clang)
        .args([
            "--target=wasm32-wasi",
            "-O2",
            "-mexec-model=reactor",
            "-s",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
        ])
        .arg(&wasm)
        .arg(dir.join("tasks.c"))
        .status();
    match status {
        Ok(status) if status.success() => wasm,
        outcome => panic!(
            "building the C guest with {} failed ({outcome:?}); the tests need clang, lld and \
             wasi-libc for wasm32: run `make setup` (or `apt-get install clang lld wasi-libc \
             libclang-rt-dev-wasm32`)",
            clang.to_string_lossy()
        ),
    }
}

/// The directories of the guest packages and of every path dependency they
/// reach, transitively.
fn local_crates_of_guests(cargo: &std::ffi::OsStr, workspace: &Path) -> BTreeSet<PathBuf> {
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .expect("cannot run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("a package list");
    let dir_of = |package: &serde_json::Value| {
        Path::new(package["manifest_path"].as_str().expect("a manifest path"))
            .parent()
            .expect("a manifest lives in a directory")
            .to_owned()
    };
    let mut todo: Vec<PathBuf> = packages
        .iter()
        .filter(|p| {
            GUESTS.iter().any(|(name, _)| p["name"] == *name) || p["name"] == COMMANDS_PACKAGE
        })
        .map(dir_of)
        .collect();
    assert_eq!(
        todo.len(),
        GUESTS.len() + 1,
        "every guest is a workspace member"
    );
    let mut seen = BTreeSet::new();
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let package = packages
            .iter()
            .find(|p| dir_of(p) == dir)
            .expect("a path dependency is a workspace member");
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            if let Some(path) = dependency["path"].as_str() {
                todo.push(PathBuf::from(path));
            }
        }
    }
    seen
}
