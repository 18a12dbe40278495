//! A cluster on this machine for the demo and the benchmark: a nats-server
//! with JetStream on a free loopback port (store in a temp dir) and worker
//! hosts (`asyncer serve`, the binary next to this one). Everything started
//! here is stopped by its pid when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A process started here; stopped on drop (SIGTERM, then SIGKILL).
pub(crate) struct Started {
    child: Child,
}

impl Started {
    /// Asks it to stop (SIGTERM) and waits up to `grace` before SIGKILL.
    pub(crate) fn stop(&mut self, grace: Duration) {
        // Stopped already (and reaped): its pid may be another's now.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// A nats-server and its worker hosts.
pub(crate) struct LocalCluster {
    pub(crate) url: String,
    hosts: Vec<Started>,
    server: Started,
    _store: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts the server and `hosts` worker hosts named `host-1`, … each
    /// running up to `max_processes` tasks.
    pub(crate) fn start(hosts: usize, max_processes: usize) -> Result<LocalCluster> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let store = tempfile::tempdir()?;
        let server = Command::new(nats_server())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "starting nats-server (Debian package nats-server; `make setup` installs it)",
            )?;
        let server = Started { child: server };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("nats-server did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let url = format!("nats://127.0.0.1:{port}");
        let asyncer = std::env::current_exe()?.with_file_name("asyncer");
        let mut started = Vec::new();
        for i in 1..=hosts {
            let child = Command::new(&asyncer)
                .args(["serve", "--nats", &url, "--name", &format!("host-{i}")])
                .args(["--max-processes", &max_processes.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} (build it with `cargo build --release -p asyncer-cli`)",
                        asyncer.display()
                    )
                })?;
            started.push(Started { child });
        }
        Ok(LocalCluster {
            url,
            hosts: started,
            server,
            _store: store,
        })
    }

    /// Stops the hosts (draining) and then the server.
    pub(crate) fn stop(mut self) {
        for host in &mut self.hosts {
            host.stop(Duration::from_secs(10));
        }
        self.server.stop(Duration::from_secs(5));
    }
}

fn nats_server() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| "nats-server".into())
}
