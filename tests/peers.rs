//! Peer discovery between real server processes on one regtest node: two instances of
//! ours find each other (B is told of A by `server.add_peer`, verifies it, announces itself
//! to A, and A verifies B), a peer on another chain is marked bad and never listed, known
//! peers survive a restart, and ElectrumX 2.0.0 and we verify each other.
//!
//! Every server listens on its own loopback address in its own /16 (127.0.0.1, 127.1.0.2,
//! …): the one-peer-per-address rule would otherwise collapse them, and the answer of
//! `server.peers.subscribe` carries at most two peers per /16. `PEER_ALLOW_PRIVATE` lets
//! loopback addresses count as public.

use anyhow::{Context, Result, bail};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::node::RegtestNode;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const A_IP: &str = "127.0.0.1";
const B_IP: &str = "127.1.0.2";
const EX_IP: &str = "127.2.0.3";
const FAKE_IP: &str = "127.3.0.4";
/// Longest wait for a verification to show.
const WAIT: Duration = Duration::from_secs(90);

fn free_port_on(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

async fn node_with_chain() -> Result<RegtestNode> {
    let node = RegtestNode::start().await.context("starting the node")?;
    let mut chain = ChainGen::new(GenParams {
        seed: 7,
        txs_per_block: 3,
        wallets: 10,
        ..GenParams::default()
    });
    chain.mine(&node, 40).await.context("mining")?;
    Ok(node)
}

/// Starts our server on `ip:port`, reporting that address, with peer discovery on.
/// With `tls` (port, directory), an `ssl://` service too, with a self-signed certificate.
fn start_ours(
    node: &RegtestNode,
    ip: &str,
    port: u16,
    db: &Path,
    tls: Option<(u16, &Path)>,
) -> Result<ServerProcess> {
    start_ours_with_rpc(node, ip, port, db, tls, None)
}

/// `start_ours`, with LocalRPC on `127.0.0.1:rpc` when given.
fn start_ours_with_rpc(
    node: &RegtestNode,
    ip: &str,
    port: u16,
    db: &Path,
    tls: Option<(u16, &Path)>,
    rpc: Option<u16>,
) -> Result<ServerProcess> {
    let mut services = format!("tcp://{ip}:{port}");
    let mut extra = Vec::new();
    if let Some((ssl, dir)) = tls {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let (cert, key) = (dir.join("peer.crt"), dir.join("peer.key"));
        std::fs::write(&key, generated.signing_key.serialize_pem())?;
        std::fs::write(&cert, generated.cert.pem())?;
        services.push_str(&format!(",ssl://{ip}:{ssl}"));
        extra.push(("SSL_CERTFILE", cert.display().to_string()));
        extra.push(("SSL_KEYFILE", key.display().to_string()));
    }
    let mut env = regtest_env(node, db);
    let all = match rpc {
        Some(r) => format!("{services},rpc://127.0.0.1:{r}"),
        None => services.clone(),
    };
    set_env(&mut env, "SERVICES", all);
    set_env(&mut env, "REPORT_SERVICES", services);
    set_env(&mut env, "PEER_DISCOVERY", "on");
    set_env(&mut env, "PEER_ALLOW_PRIVATE", "1");
    set_env(&mut env, "DAEMON_POLL_INTERVAL_BLOCKS", "200");
    for (k, v) in extra {
        set_env(&mut env, k, v);
    }
    let mut server = ServerProcess::start(&env).context("starting electrumx-server")?;
    server.wait_for_line("beginning peer discovery", 1, Duration::from_secs(120))?;
    Ok(server)
}

/// Opens a session to `to` (from `from` when given), sends `server.version`, then each
/// call in turn; returns their results.
async fn calls(to: SocketAddr, from: Option<&str>, list: &[(&str, Value)]) -> Result<Vec<Value>> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(addr(ip, 0))?;
    }
    let stream: TcpStream = tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .context("connect timeout")??;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut out = Vec::new();
    let all = std::iter::once(("server.version", json!(["peers-test", "1.4"])))
        .chain(list.iter().cloned());
    for (id, (method, params)) in all.enumerate() {
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        w.write_all(format!("{req}\n").as_bytes()).await?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .context("reply timeout")??
                .context("connection closed")?;
            let v: Value = serde_json::from_str(&line)?;
            if v.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
                bail!("{method}: {e}");
            }
            if id > 0 {
                out.push(v["result"].clone());
            }
            break;
        }
    }
    Ok(out)
}

async fn call(to: SocketAddr, from: Option<&str>, method: &str, params: Value) -> Result<Value> {
    Ok(calls(to, from, &[(method, params)]).await?.remove(0))
}

/// Hosts in a server's `server.peers.subscribe` answer.
async fn listed(to: SocketAddr) -> Result<Vec<String>> {
    let list = call(to, None, "server.peers.subscribe", json!([])).await?;
    Ok(list
        .as_array()
        .context("a list")?
        .iter()
        .filter_map(|t| t[1].as_str().map(String::from))
        .collect())
}

/// Waits until `to` lists `host`.
async fn wait_listed(to: SocketAddr, host: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let hosts = listed(to).await?;
        if hosts.iter().any(|h| h == host) {
            return Ok(hosts);
        }
        if Instant::now() > deadline {
            bail!("{to} does not list {host} within {WAIT:?}: {hosts:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the server logged a line containing `needle`.
fn logged(server: &mut ServerProcess, needle: &str) -> bool {
    server.tail(0);
    server.log.iter().any(|l| l.contains(needle))
}

async fn wait_logged(server: &mut ServerProcess, needle: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !logged(server, needle) {
        if Instant::now() > deadline {
            bail!("no log line {needle:?}; tail: {:?}", server.tail(15));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A peer that forwards everything to `upstream` (a real server of our chain) but claims
/// another genesis hash in `server.features`.
async fn lying_peer(ip: &str, upstream: SocketAddr) -> Result<u16> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let me = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let up = TcpStream::connect(upstream).await.ok()?;
                let (ur, mut uw) = up.into_split();
                let mut up_lines = BufReader::new(ur).lines();
                let (cr, mut cw) = client.into_split();
                let mut lines = BufReader::new(cr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let req: Value = serde_json::from_str(&line).ok()?;
                    let reply = if req["method"] == "server.features" {
                        let result = json!({
                            "hosts": {me.ip().to_string(): {"tcp_port": me.port(), "ssl_port": null}},
                            "genesis_hash": "000000000000000000000000000000000000000000000000000000000000beef",
                            "hash_function": "sha256", "server_version": "liar 1.0",
                            "protocol_min": "1.4", "protocol_max": "1.4", "pruning": null,
                        });
                        json!({"jsonrpc": "2.0", "id": req["id"], "result": result})
                    } else {
                        uw.write_all(format!("{line}\n").as_bytes()).await.ok()?;
                        loop {
                            let l = up_lines.next_line().await.ok()??;
                            let v: Value = serde_json::from_str(&l).ok()?;
                            if v.get("id") == Some(&req["id"]) {
                                break v;
                            }
                        }
                    };
                    cw.write_all(format!("{reply}\n").as_bytes()).await.ok()?;
                }
                Some(())
            });
        }
    });
    Ok(me.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_verify_and_list_each_other_and_a_wrong_chain_is_never_listed() -> Result<()> {
    let node = node_with_chain().await?;
    let (db_a, db_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let certs = tempfile::tempdir()?;
    let (port_a, port_b, ssl_b) = {
        // Held together so that B's two ports differ.
        let l1 = std::net::TcpListener::bind((B_IP, 0))?;
        let l2 = std::net::TcpListener::bind((B_IP, 0))?;
        (
            free_port_on(A_IP),
            l1.local_addr()?.port(),
            l2.local_addr()?.port(),
        )
    };
    let (a, b) = (addr(A_IP, port_a), addr(B_IP, port_b));
    let rpc_a = free_port_on("127.0.0.1");
    let mut server_a = tokio::task::block_in_place(|| {
        start_ours_with_rpc(&node, A_IP, port_a, db_a.path(), None, Some(rpc_a))
    })?;
    let mut server_b = tokio::task::block_in_place(|| {
        start_ours(
            &node,
            B_IP,
            port_b,
            db_b.path(),
            Some((ssl_b, certs.path())),
        )
    })?;

    // Each verifies itself first, and then lists itself.
    wait_listed(a, A_IP).await?;
    wait_listed(b, B_IP).await?;

    // Tell B about A, as A's operator would: A's own features, sent from A's address.
    let features_a = call(a, None, "server.features", json!([])).await?;
    assert_eq!(features_a["hosts"][A_IP]["tcp_port"], json!(port_a));
    let accepted = call(b, Some(A_IP), "server.add_peer", json!([features_a])).await?;
    assert_eq!(accepted, json!(true));
    // Not accepted when the host is not the caller's address.
    let elsewhere = json!({"hosts": {"127.9.0.9": {"tcp_port": 1}}});
    assert_eq!(
        call(a, Some("127.8.0.8"), "server.add_peer", json!([elsewhere])).await?,
        json!(false)
    );

    // B verifies A, finds itself missing from A's list, announces itself; A verifies B.
    let on_b = wait_listed(b, A_IP).await?;
    let on_a = wait_listed(a, B_IP).await?;
    assert!(on_b.contains(&B_IP.to_string()) && on_a.contains(&A_IP.to_string()));
    wait_logged(&mut server_b, &format!("[{A_IP}:{port_a} TCP] verified in")).await?;
    assert!(logged(
        &mut server_b,
        &format!("registering ourself with {A_IP}")
    ));
    assert!(logged(
        &mut server_a,
        &format!("accepted add_peer request from {B_IP} for \"{B_IP}\"")
    ));
    // B offers TLS too (self-signed): tried first, and certificates are not checked.
    wait_logged(&mut server_a, &format!("[{B_IP}:{ssl_b} SSL] verified in")).await?;
    // The answer's entries: [address, host, [version, ports]].
    let raw = call(a, None, "server.peers.subscribe", json!([])).await?;
    let entry = raw
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t[1] == B_IP)
        .unwrap()
        .clone();
    assert_eq!(
        entry,
        json!([
            B_IP,
            B_IP,
            ["v1.7", format!("s{ssl_b}"), format!("t{port_b}")]
        ])
    );

    // ElectrumX's own admin client shows B as a good peer of A.
    let venv = electrumx_testkit::electrumx_venv()?;
    let admin = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(venv.join("bin/electrumx_rpc"))
            .arg("-p")
            .arg(rpc_a.to_string())
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "electrumx_rpc {args:?}: {}",
            out.status
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let table = admin(&["peers"])?;
    let row = table
        .lines()
        .find(|l| l.starts_with(B_IP))
        .unwrap_or_else(|| panic!("B missing from {table}"));
    assert!(
        row.contains("good") && row.contains(&port_b.to_string()),
        "{row}"
    );
    let info: Value = serde_json::from_str(&admin(&["getinfo"])?)?;
    assert!(info["peers"]["good"].as_u64() >= Some(2), "{info}");
    let added = admin(&["add_peer", "peer.invalid t50001"])?;
    assert!(
        added.contains("peer 'peer.invalid t50001' added"),
        "{added}"
    );

    // A peer on another chain: told to A from its own address, verified, marked bad, never listed.
    let fake_port = lying_peer(FAKE_IP, a).await?;
    let fake_features = json!({"hosts": {FAKE_IP: {"tcp_port": fake_port}}});
    assert_eq!(
        call(a, Some(FAKE_IP), "server.add_peer", json!([fake_features])).await?,
        json!(true)
    );
    wait_logged(
        &mut server_a,
        &format!("[{FAKE_IP}:{fake_port} TCP] marking bad: (incorrect genesis hash)"),
    )
    .await?;
    let hosts = listed(a).await?;
    assert!(!hosts.contains(&FAKE_IP.to_string()), "{hosts:?}");
    assert!(!listed(b).await?.contains(&FAKE_IP.to_string()));

    // Known peers survive a restart: A saves them at exit and restores them at start.
    server_a.signal("TERM")?;
    assert!(tokio::task::block_in_place(|| server_a.wait_exit(Duration::from_secs(30)))?.success());
    let saved = std::fs::read_to_string(db_a.path().join("peers.json"))?;
    assert!(saved.contains(B_IP) && !saved.contains(FAKE_IP), "{saved}");
    let mut server_a =
        tokio::task::block_in_place(|| start_ours(&node, A_IP, port_a, db_a.path(), None))?;
    assert!(logged(&mut server_a, "1 of 1 saved peers restored"));
    wait_listed(a, B_IP).await?;

    for s in [&mut server_a, &mut server_b] {
        s.signal("TERM")?;
        assert!(tokio::task::block_in_place(|| s.wait_exit(Duration::from_secs(30)))?.success());
    }
    Ok(())
}

/// ElectrumX 2.0.0 on the same node, its log in a file.
struct ElectrumX {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl ElectrumX {
    /// Starts ElectrumX on `ip:port`. `Peer.is_public` is patched to accept private
    /// addresses: ElectrumX has no setting for that, and without it it accepts our
    /// `server.add_peer` (answers true) but then drops us as not public.
    fn start(node: &RegtestNode, ip: &str, port: u16, dir: &Path) -> Result<ElectrumX> {
        let venv = electrumx_testkit::electrumx_venv()?;
        let log = dir.join("electrumx.log");
        let out = std::fs::File::create(&log)?;
        let db = dir.join("db");
        std::fs::create_dir_all(&db)?;
        let patch = "import electrumx.lib.peer as p; \
                     p.Peer.is_public = property(lambda self: self.is_valid); \
                     from electrumx.cli.electrumx_server import main; main()";
        let child = std::process::Command::new(venv.join("bin/python3"))
            .arg("-c")
            .arg(patch)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DB_DIRECTORY", &db)
            .env("DAEMON_URL", node.rpc_url_with_auth()?)
            .env("COIN", "BitcoinSV")
            .env("NET", "regtest")
            .env("DB_ENGINE", "leveldb")
            .env("ALLOW_ROOT", "1")
            .env("SERVICES", format!("tcp://{ip}:{port}"))
            .env("REPORT_SERVICES", format!("tcp://{ip}:{port}"))
            .env("PEER_DISCOVERY", "on")
            // A private REPORT_SERVICES address is refused with PEER_ANNOUNCE on.
            .env("PEER_ANNOUNCE", "")
            .env("LOG_LEVEL", "info")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut ex = ElectrumX { child, log };
        ex.wait_logged("TCP server listening", Duration::from_secs(120))?;
        Ok(ex)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_logged(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.text().contains(needle) {
            if let Some(status) = self.child.try_wait()? {
                bail!("ElectrumX exited ({status}): {}", self.text());
            }
            if Instant::now() > deadline {
                bail!("ElectrumX logged no {needle:?}: {}", self.text());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Drop for ElectrumX {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn electrumx_and_we_verify_each_other() -> Result<()> {
    let node = node_with_chain().await?;
    let dir = tempfile::tempdir()?;
    let db_a = tempfile::tempdir()?;
    let (port_a, port_x) = (free_port_on(A_IP), free_port_on(EX_IP));
    let (a, x) = (addr(A_IP, port_a), addr(EX_IP, port_x));
    let mut ex =
        tokio::task::block_in_place(|| ElectrumX::start(&node, EX_IP, port_x, dir.path()))?;
    let mut server_a =
        tokio::task::block_in_place(|| start_ours(&node, A_IP, port_a, db_a.path(), None))?;

    // Tell us about ElectrumX (its own features, from its address).
    let features_x = call(x, None, "server.features", json!([])).await?;
    assert!(
        features_x["server_version"]
            .as_str()
            .unwrap()
            .starts_with("ElectrumX")
    );
    assert_eq!(
        call(a, Some(EX_IP), "server.add_peer", json!([features_x])).await?,
        json!(true)
    );

    // We verify ElectrumX and list it; it does not list us, so we announce ourselves.
    wait_listed(a, EX_IP).await?;
    wait_logged(
        &mut server_a,
        &format!("[{EX_IP}:{port_x} TCP] verified in"),
    )
    .await?;
    wait_logged(&mut server_a, &format!("registering ourself with {EX_IP}")).await?;

    // ElectrumX accepts the announcement, verifies us and lists us.
    tokio::task::block_in_place(|| -> Result<()> {
        ex.wait_logged(
            &format!("accepted add_peer request from {A_IP} for {A_IP}"),
            WAIT,
        )?;
        ex.wait_logged(&format!("[{A_IP}:{port_a} TCP] verified in"), WAIT)
    })?;
    let on_x = wait_listed(x, A_IP).await?;
    assert!(on_x.contains(&A_IP.to_string()), "{on_x:?}");
    let raw = call(x, None, "server.peers.subscribe", json!([])).await?;
    let entry = raw
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t[1] == A_IP)
        .unwrap()
        .clone();
    assert_eq!(entry[0], json!(A_IP));

    server_a.signal("TERM")?;
    assert!(tokio::task::block_in_place(|| server_a.wait_exit(Duration::from_secs(30)))?.success());
    Ok(())
}
