//! A real regtest node for tests: the binary comes from `tools/regtest-node.sh path`
//! (downloaded once and cached); the node runs on free loopback ports with its own data
//! directory and is killed when the handle drops, so a failed test leaves nothing behind.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of the node binary, fetched on first use.
pub fn bitcoind_path() -> Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("ELECTRUMX_BITCOIND") {
            return Ok(PathBuf::from(p));
        }
        let script = crate::workspace_root()
            .join("tools")
            .join("regtest-node.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("path")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "{} path failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// A free TCP port on 127.0.0.1, for a server a test starts.
///
/// Taken below the kernel's ephemeral range (32768 and up): a port from that range, free
/// when asked, can be given to some client's outgoing connection before the server binds
/// it (tests that open thousands of connections made this happen).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Start from a spot that differs per process, so parallel test binaries rarely probe
    // the same ports; each probe binds to check.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let spread = (std::process::id() % 97) as u16 * 100;
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (spread + n) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running (or stopped) regtest node.
pub struct RegtestNode {
    child: Option<Child>,
    datadir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    rpc_port: u16,
    p2p_port: u16,
    extra_args: Vec<String>,
    http: reqwest::Client,
}

impl RegtestNode {
    /// Starts a node on a fresh temporary data directory.
    pub async fn start() -> Result<RegtestNode> {
        let tmp = tempfile::Builder::new()
            .prefix("electrumx-node-")
            .tempdir()?;
        let datadir = tmp.path().to_path_buf();
        Self::start_in(datadir, Some(tmp), &[]).await
    }

    /// Starts a node on `datadir` (kept after the node stops), with extra arguments.
    pub async fn start_in(
        datadir: PathBuf,
        tmp: Option<tempfile::TempDir>,
        extra: &[&str],
    ) -> Result<RegtestNode> {
        std::fs::create_dir_all(&datadir)?;
        let mut node = RegtestNode {
            child: None,
            datadir,
            _tmp: tmp,
            rpc_port: free_port(),
            p2p_port: free_port(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            http: reqwest::Client::new(),
        };
        node.launch().await?;
        Ok(node)
    }

    async fn launch(&mut self) -> Result<()> {
        let bin = bitcoind_path()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.datadir.join("bitcoind.stdout"))?;
        let child = Command::new(bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .args([
                "-server=1",
                "-txindex=1",
                "-listen=1",
                "-bind=127.0.0.1",
                "-discover=0",
                "-dnsseed=0",
            ])
            .args([
                "-upnp=0",
                "-listenonion=0",
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
            ])
            .arg(format!("-port={}", self.p2p_port))
            .arg(format!("-rpcport={}", self.rpc_port))
            .args([
                "-rpcthreads=8",
                "-rpcworkqueue=256",
                "-minminingtxfee=0.00000500",
            ])
            .args([
                "-excessiveblocksize=1000000000",
                "-maxstackmemoryusageconsensus=0",
            ])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning bitcoind")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let tail = std::fs::read_to_string(self.datadir.join("bitcoind.stdout"))
                    .unwrap_or_default();
                bail!(
                    "bitcoind exited ({status}) during start: {}",
                    tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                );
            }
            if self.cookie_path().exists() && self.rpc("getblockcount", json!([])).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("bitcoind did not answer RPC within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The data directory.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The cookie file (rewritten at every start).
    pub fn cookie_path(&self) -> PathBuf {
        self.datadir.join("regtest").join(".cookie")
    }

    /// RPC URL without credentials.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.rpc_port)
    }

    /// RPC URL with the current cookie credentials embedded.
    pub fn rpc_url_with_auth(&self) -> Result<String> {
        let cookie = std::fs::read_to_string(self.cookie_path())?;
        Ok(format!(
            "http://{}@127.0.0.1:{}/",
            cookie.trim(),
            self.rpc_port
        ))
    }

    /// The RPC port.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// One JSON-RPC call; errors carry the node's message.
    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value> {
        let cookie = std::fs::read_to_string(self.cookie_path()).context("reading cookie")?;
        let (user, pass) = cookie
            .trim()
            .split_once(':')
            .ok_or_else(|| anyhow!("bad cookie"))?;
        let body = json!({"jsonrpc": "1.0", "id": 1, "method": method, "params": params});
        let resp = self
            .http
            .post(self.rpc_url())
            .basic_auth(user, Some(pass))
            .json(&body)
            .timeout(Duration::from_secs(300))
            .send()
            .await?;
        let v: Value = resp
            .json()
            .await
            .with_context(|| format!("{method}: reply"))?;
        if !v["error"].is_null() {
            bail!("{method}: {}", v["error"]);
        }
        Ok(v["result"].clone())
    }

    /// Several calls of one method in one batch request, in order.
    pub async fn rpc_batch(&self, method: &str, params: Vec<Value>) -> Result<Vec<Value>> {
        let cookie = std::fs::read_to_string(self.cookie_path())?;
        let (user, pass) = cookie
            .trim()
            .split_once(':')
            .ok_or_else(|| anyhow!("bad cookie"))?;
        let body: Vec<Value> = params
            .into_iter()
            .enumerate()
            .map(|(i, p)| json!({"jsonrpc": "1.0", "id": i, "method": method, "params": p}))
            .collect();
        let n = body.len();
        let resp = self
            .http
            .post(self.rpc_url())
            .basic_auth(user, Some(pass))
            .json(&body)
            .timeout(Duration::from_secs(600))
            .send()
            .await?;
        let replies: Vec<Value> = resp.json().await?;
        let mut out = vec![Value::Null; n];
        for r in replies {
            let id = r["id"]
                .as_u64()
                .ok_or_else(|| anyhow!("reply without id"))? as usize;
            if !r["error"].is_null() {
                bail!("{method}[{id}]: {}", r["error"]);
            }
            *out.get_mut(id).ok_or_else(|| anyhow!("bad id"))? = r["result"].clone();
        }
        Ok(out)
    }

    /// Height of the node's best chain.
    pub async fn height(&self) -> Result<u32> {
        Ok(self
            .rpc("getblockcount", json!([]))
            .await?
            .as_u64()
            .ok_or_else(|| anyhow!("height"))? as u32)
    }

    /// Stops the node cleanly and waits for the process to exit.
    pub async fn stop(&mut self) -> Result<()> {
        let _ = self.rpc("stop", json!([])).await;
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Starts a stopped node again on the same data directory and ports.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop().await?;
        }
        self.launch().await
    }

    /// True while the node process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for RegtestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
