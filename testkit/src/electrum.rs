//! The real Electrum wallet for tests: Debian's `electrum` package (4.3.4, installed by
//! `tools/setup.sh`) run as a daemon in the foreground against one server, with its own data
//! directory, a standard (P2PKH) wallet restored from a fixed seed, and its verbose log kept.
//!
//! Commands go either through the `electrum` command line ([`ElectrumWallet::cli`], as a
//! user types them) or straight to the daemon's JSON-RPC socket ([`ElectrumWallet::call`]:
//! the same handler the command line talks to, without starting Python for each call, so a
//! test can poll every few hundred milliseconds). Everything here blocks; the daemon is
//! killed when the handle drops.
//!
//! Electrum 4.3.4 on `--regtest` speaks protocol 1.4 and uses testnet-style addresses
//! (`m…`/`n…`), which the Bitcoin SV regtest node understands. It cannot sign for that node
//! (no SIGHASH_FORKID), so tests spend the wallet's coins with the node's
//! `signrawtransaction` and a key from [`ElectrumWallet::private_key`].

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A fixed Electrum seed (seed type "standard": P2PKH addresses), made once with
/// `electrum make_seed --seed_type standard`. Test coins only.
pub const TEST_SEED: &str =
    "cabbage current benefit romance truth vessel peace check business accident balcony head";

/// The line Electrum's synchronizer logs when the history it fetched for an address does not
/// hash to the status the server announced.
pub const STATUS_MISMATCH: &str = "status mismatch";

/// Path of the `electrum` program: `$ELECTRUM_BIN`, else `electrum` on `PATH`.
pub fn electrum_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ELECTRUM_BIN") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("electrum"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("`electrum` not found: install Debian's electrum package (tools/setup.sh does)")
        })
}

/// A wallet balance in satoshis, as Electrum's `getbalance` splits it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// Confirmed coins, plus unconfirmed ones paid from the wallet's own confirmed coins.
    pub confirmed: u64,
    /// The rest of the unconfirmed coins.
    pub unconfirmed: u64,
    /// Coinbase outputs not yet mature.
    pub unmatured: u64,
}

/// Parses an amount as Electrum prints it (`"4.5"`, `"5."`, `"0.0001"`) into satoshis.
pub fn parse_btc(s: &str) -> Result<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    ensure!(
        frac.len() <= 8
            && !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "not an amount: {s:?}"
    );
    let frac_sats: u64 = format!("{frac:0<8}").parse()?;
    Ok(whole.parse::<u64>()? * 100_000_000 + frac_sats)
}

/// A running Electrum daemon with one loaded wallet.
pub struct ElectrumWallet {
    child: Option<Child>,
    dir: tempfile::TempDir,
    wallet_path: PathBuf,
    auth: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl ElectrumWallet {
    /// Starts a daemon on a fresh data directory, connected only to the Electrum server at
    /// `server` (`host:port`, plain TCP), with a standard wallet restored from `seed` and
    /// loaded. Returns once the wallet is loaded (not yet synchronized).
    pub fn start(server: &str, seed: &str) -> Result<ElectrumWallet> {
        let bin = electrum_binary()?;
        let dir = tempfile::Builder::new().prefix("electrum-").tempdir()?;
        let net_dir = dir.path().join("regtest");
        std::fs::create_dir_all(&net_dir)?;
        let password = const_hex::encode(rand::random::<[u8; 16]>());
        // No outside network: one server, no exchange rates, no update checks. The RPC
        // credentials are ours so that `call` can talk to the daemon's socket.
        let config = json!({
            "config_version": 3,
            "auto_connect": false,
            "oneserver": true,
            "server": format!("{server}:t"),
            "check_updates": false,
            "use_exchange_rate": false,
            "dont_show_testnet_warning": true,
            "rpcuser": "test",
            "rpcpassword": password,
        });
        std::fs::write(net_dir.join("config"), serde_json::to_vec_pretty(&config)?)?;
        let mut wallet = ElectrumWallet {
            child: None,
            dir,
            wallet_path: PathBuf::new(),
            auth: base64::engine::general_purpose::STANDARD.encode(format!("test:{password}")),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        let restored = wallet
            .cli(&["--offline", "restore", seed])
            .context("electrum restore")?;
        wallet.wallet_path = restored["path"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("restore answered {restored}"))?;

        let mut child = Command::new(&bin)
            .arg("daemon")
            .arg("--regtest")
            .arg("-D")
            .arg(wallet.dir.path())
            .args(["-v", "--oneserver", "--server"])
            .arg(format!("{server}:t"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let log = wallet.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        wallet.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(60);
        while wallet.call("ping", json!([])).is_err() {
            if let Some(status) = wallet
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "electrum daemon exited ({status}) during start: {:?}",
                    wallet.log_tail(10)
                );
            }
            ensure!(
                Instant::now() < deadline,
                "electrum daemon did not answer within 60 s: {:?}",
                wallet.log_tail(10)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let loaded = wallet
            .cli(&["load_wallet"])
            .context("electrum load_wallet")?;
        ensure!(loaded == json!(true), "load_wallet answered {loaded}");
        Ok(wallet)
    }

    /// The data directory (`-D`).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The wallet file.
    pub fn wallet_path(&self) -> &Path {
        &self.wallet_path
    }

    /// Runs `electrum --regtest -D <dir> <args>` (through the daemon when one runs) and
    /// returns its output as JSON (a bare string when it is not JSON). Fails on a non-zero
    /// exit or after 60 s.
    pub fn cli(&self, args: &[&str]) -> Result<Value> {
        let mut child = Command::new(electrum_binary()?)
            .arg("--regtest")
            .arg("-D")
            .arg(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut pipes = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipes.1.read_to_string(&mut s);
            s
        });
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipes.0.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("electrum {args:?} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = reader.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        ensure!(
            status.success(),
            "electrum {args:?} failed ({status}): {} {}",
            out.trim(),
            err.trim()
        );
        let out = out.trim();
        Ok(serde_json::from_str(out).unwrap_or_else(|_| Value::String(out.to_string())))
    }

    /// Calls a command on the daemon's JSON-RPC socket (what the command line does):
    /// `params` is an object of the command's options (the loaded wallet is the default) or
    /// an array. Returns the result; a command's error is an `Err`.
    pub fn call(&self, method: &str, params: Value) -> Result<Value> {
        let socket = self.dir.path().join("regtest").join("daemon_rpc_socket");
        let mut stream = UnixStream::connect(&socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let body = serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "id": 1, "method": method, "params": params,
        }))?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.auth,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        // Read the head, then exactly Content-Length bytes (or to the end of the stream).
        let (body_start, length) = loop {
            let n = stream.read(&mut chunk)?;
            ensure!(n > 0, "{method}: connection closed before a reply");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                ensure!(
                    head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"),
                    "{method}: {}",
                    head.lines().next().unwrap_or("")
                );
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                break (i + 4, length);
            }
        };
        loop {
            if length.is_some_and(|len| buf.len() >= body_start + len) {
                break;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let end = length.map_or(buf.len(), |len| (body_start + len).min(buf.len()));
        let reply: Value = serde_json::from_slice(&buf[body_start..end])
            .with_context(|| format!("{method}: reply is not JSON"))?;
        if !reply["error"].is_null() {
            bail!("{method}: {}", reply["error"]);
        }
        Ok(reply["result"].clone())
    }

    /// True once the wallet has every history, transaction and merkle proof it asked for.
    pub fn is_synchronized(&self) -> Result<bool> {
        self.call("is_synchronized", json!({}))?
            .as_bool()
            .ok_or_else(|| anyhow!("is_synchronized: not a boolean"))
    }

    /// Waits until the wallet reports itself synchronized; returns how long that took.
    pub fn wait_synchronized(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.is_synchronized()? {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < timeout,
                "wallet not synchronized within {timeout:?}; log tail: {:?}",
                self.log_tail(15)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Height of the wallet's header chain (`getinfo`'s `blockchain_height`).
    pub fn local_height(&self) -> Result<i64> {
        self.call("getinfo", json!({}))?["blockchain_height"]
            .as_i64()
            .ok_or_else(|| anyhow!("getinfo: no blockchain_height"))
    }

    /// The wallet's on-chain history (`onchain_history`): (txid, height), heights as the
    /// server reported them (0: unconfirmed, -1: unconfirmed with an unconfirmed parent).
    pub fn history(&self) -> Result<Vec<(String, i64)>> {
        let h = self.call("onchain_history", json!({}))?;
        let txs = h["transactions"]
            .as_array()
            .ok_or_else(|| anyhow!("onchain_history: no transactions in {h}"))?;
        txs.iter()
            .map(|t| match (t["txid"].as_str(), t["height"].as_i64()) {
                (Some(txid), Some(height)) => Ok((txid.to_string(), height)),
                _ => bail!("onchain_history: bad entry {t}"),
            })
            .collect()
    }

    /// The wallet's balance (`getbalance`).
    pub fn balance(&self) -> Result<Balance> {
        let b = self.call("getbalance", json!({}))?;
        let part = |key: &str| b[key].as_str().map_or(Ok(0), parse_btc);
        Ok(Balance {
            confirmed: part("confirmed")?,
            unconfirmed: part("unconfirmed")?,
            unmatured: part("unmatured")?,
        })
    }

    /// The wallet's addresses (`listaddresses`): receiving ones, change ones, or all.
    pub fn addresses(&self, receiving: bool, change: bool) -> Result<Vec<String>> {
        let a = self.call(
            "listaddresses",
            json!({"receiving": receiving, "change": change}),
        )?;
        a.as_array()
            .ok_or_else(|| anyhow!("listaddresses: {a}"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("listaddresses: {v}"))
            })
            .collect()
    }

    /// The private key (WIF) of one of the wallet's addresses.
    pub fn private_key(&self, address: &str) -> Result<String> {
        let k = self.call("getprivatekeys", json!({"address": address}))?;
        let k = k.as_str().ok_or_else(|| anyhow!("getprivatekeys: {k}"))?;
        Ok(k.strip_prefix("p2pkh:").unwrap_or(k).to_string())
    }

    /// Every line the daemon has logged so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The logged lines containing `needle`.
    pub fn log_matching(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().expect("log lock");
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// The last `n` log lines that are not traceback or profiler noise.
    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let log = self.log.lock().expect("log lock");
        let mut tail: Vec<String> = log
            .iter()
            .rev()
            .filter(|l| l.contains(" | ") && !l.contains("util.profiler"))
            .take(n)
            .cloned()
            .collect();
        tail.reverse();
        tail
    }

    /// Stops the daemon (`stop`) and waits for it to exit (killed after 10 s).
    pub fn stop(&mut self) -> Result<()> {
        let _ = self.call("stop", json!({}));
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for ElectrumWallet {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_btc;

    #[test]
    fn amounts_parse_as_electrum_prints_them() {
        assert_eq!(parse_btc("4.5").unwrap(), 450_000_000);
        assert_eq!(parse_btc("5.").unwrap(), 500_000_000);
        assert_eq!(parse_btc("0.").unwrap(), 0);
        assert_eq!(parse_btc("0.6999").unwrap(), 69_990_000);
        assert_eq!(
            parse_btc("21000000.00000001").unwrap(),
            2_100_000_000_000_001
        );
        assert!(parse_btc("-0.1").is_err());
        assert!(parse_btc("1.123456789").is_err());
    }
}
