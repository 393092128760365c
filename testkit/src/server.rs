//! Runs the real `electrumx-server` binary as a child process for tests: environment in,
//! log lines out, and signals (SIGTERM, SIGKILL) to stop it. Killed when dropped.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The settings every test server on a regtest node starts from: the node (cookie auth),
/// `db`, BitcoinSV regtest, 100 ms block polls, info logs. Adjust with [`set_env`].
pub fn regtest_env(
    node: &crate::node::RegtestNode,
    db: &std::path::Path,
) -> Vec<(&'static str, String)> {
    vec![
        ("DAEMON_URL", node.rpc_url()),
        (
            "DAEMON_COOKIE_FILE",
            node.cookie_path().display().to_string(),
        ),
        ("DB_DIRECTORY", db.display().to_string()),
        ("COIN", "BitcoinSV".into()),
        ("NET", "regtest".into()),
        ("DAEMON_POLL_INTERVAL_BLOCKS", "100".into()),
        ("LOG_LEVEL", "info".into()),
    ]
}

/// Sets `key` to `value` in `env`, replacing an earlier value.
pub fn set_env(env: &mut Vec<(&'static str, String)>, key: &'static str, value: impl Into<String>) {
    env.retain(|(k, _)| *k != key);
    env.push((key, value.into()));
}

/// A running `electrumx-server` process.
pub struct ServerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl ServerProcess {
    /// Starts the binary with `env` (ElectrumX-style variables).
    pub fn start(env: &[(&str, String)]) -> Result<ServerProcess> {
        Self::start_with_args(env, &[])
    }

    /// Starts the binary with `env` and command-line `args`.
    pub fn start_with_args(env: &[(&str, String)], args: &[String]) -> Result<ServerProcess> {
        let bin = crate::workspace_binary("electrumx-server");
        let mut cmd = Command::new(bin);
        cmd.args(args);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // Tests stop servers at once unless they test the drain (their env says so).
            .env("SHUTDOWN_GRACE", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(ServerProcess {
            child,
            lines: rx,
            log: Vec::new(),
        })
    }

    /// Waits for the `n`-th log line (counted from now) containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        seen += 1;
                        if seen >= n {
                            return Ok(line);
                        }
                    }
                }
                Err(_) => bail!(
                    "no line {needle:?} (#{n}) within {timeout:?}; log tail: {:?}",
                    self.tail(8)
                ),
            }
        }
    }

    /// The last lines of the log.
    pub fn tail(&mut self, n: usize) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
        self.log.iter().rev().take(n).rev().cloned().collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{name} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit, and for the rest of its output.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().context("waiting")? {
                // The reader threads end when the pipes close; collect what they read.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.log.push(line);
                }
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "process did not exit within {timeout:?}; log tail: {:?}",
                    self.tail(8)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
