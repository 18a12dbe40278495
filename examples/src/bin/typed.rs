//! Typed bindings: the host depends on the guest crates natively, so each
//! `#[task] fn name` gives it a `NAME: TaskRef<In, Out>` constant, and
//! `Executor::submit_task` takes the task's name and both types from it.
//!
//! A wrong input type, a wrong output type or a misspelt task name is a
//! compile error here instead of a `decode` or `no_such_task` error at run
//! time; for example `exec.submit_task(&module, digest_task::SHA256, &42u64)`
//! does not compile (SHA256 takes `Vec<u8>`). `make typed` runs it.

use std::time::Duration;

use anyhow::{ensure, Context};
use asyncer::Executor;
use heavy::HeavyInput;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let exec = Executor::builder()
        .max_processes(2)
        .build()
        .context("starting the executor")?;
    let digest = exec
        .load(asyncer_tests::DIGEST)
        .await
        .context("loading the digest module")?;
    let heavy_module = exec
        .load(asyncer_tests::HEAVY)
        .await
        .context("loading the heavy module")?;

    // `sha256: Vec<u8> -> String`, a guest using the sha2 crate.
    let hash = exec.submit_task(&digest, digest_task::SHA256, &b"abc".to_vec())?;
    // `hash_chain: (Vec<u8>, u32) -> Result<String, String>`.
    let chain = exec.submit_task(&digest, digest_task::HASH_CHAIN, &(b"seed".to_vec(), 1000))?;
    let refused = exec.submit_task(&digest, digest_task::HASH_CHAIN, &(Vec::new(), 0))?;
    // `heavy: HeavyInput -> HeavyOutput`.
    let sum = exec.submit_task(
        &heavy_module,
        heavy::HEAVY,
        &HeavyInput {
            uid: "typed".into(),
            n: 10_000_000,
        },
    )?;

    let hash: String = hash.await?;
    println!("sha256(\"abc\") = {hash}");
    ensure!(
        hash == digest_task::sha256(b"abc".to_vec()),
        "the sandbox and native disagree"
    );

    let chain: String = chain.await?;
    println!("sha256^1000(\"seed\") = {chain}");
    // The same function, run natively: the guest crate is an ordinary crate.
    let native = asyncer_guest::block_on(digest_task::hash_chain((b"seed".to_vec(), 1000)));
    ensure!(Ok(chain) == native, "the sandbox and native disagree");

    match refused.await {
        Err(asyncer::Error::Guest { message }) => println!("hash_chain with 0 rounds: {message}"),
        other => anyhow::bail!("expected the guest's error, got {other:?}"),
    }

    let sum = sum.await?;
    println!("heavy(n = 10000000) = {} (uid {})", sum.result, sum.uid);
    ensure!(sum.result == 333_333_283_333_335_000_000, "wrong sum");

    println!(
        "task names from the bindings: {}, {}, {}",
        digest_task::SHA256.name(),
        digest_task::HASH_CHAIN.name(),
        heavy::HEAVY.name()
    );
    exec.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
