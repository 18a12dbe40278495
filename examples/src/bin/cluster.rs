//! `make cluster`: the seed example through a cluster on this machine. It
//! starts a nats-server and two worker hosts on loopback, runs `seed --nats
//! URL` (the `[MP]` half on the hosts, results checked, each task's host
//! printed; the `[No MP]` half in-process as always), then stops everything
//! it started.

#[path = "../local_cluster.rs"]
mod local_cluster;

use anyhow::{ensure, Context, Result};

fn main() -> Result<()> {
    let cluster = local_cluster::LocalCluster::start(2, 2)?;
    println!(
        "cluster: nats-server at {} with 2 worker hosts",
        cluster.url
    );
    let seed = std::env::current_exe()?.with_file_name("seed");
    let status = std::process::Command::new(&seed)
        .arg("--nats")
        .arg(&cluster.url)
        .args(std::env::args_os().skip(1))
        .status()
        .with_context(|| format!("running {}", seed.display()))?;
    cluster.stop();
    ensure!(status.success(), "the seed example failed: {status}");
    println!("cluster: stopped the hosts and the server");
    Ok(())
}
