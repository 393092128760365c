//! Scale-out with the real HAProxy (Debian's `haproxy`, started by the test): two servers
//! on one regtest node behind it, in TCP mode with `leastconn`, health checks on
//! `GET /health` and the PROXY protocol v2 (`send-proxy-v2`). Clients connect through
//! HAProxy from their own addresses; the servers see those addresses, not HAProxy's; a
//! server that stops is drained by the health check, and new clients are served by the
//! others with no failed connection; a third server started from a snapshot of the second,
//! taken while it served, resumes without a resync, joins the pool, and answers as the
//! second does.

use anyhow::{Context, Result, bail};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One server behind the balancer: its client, LocalRPC and metrics ports.
struct Backend {
    process: ServerProcess,
    tcp: u16,
    rpc: u16,
    metrics: u16,
}

fn start_backend(node: &RegtestNode, db: &Path, grace: &str) -> Result<Backend> {
    start_backend_on(node, db, grace, (free_port(), free_port(), free_port()))
}

/// [`start_backend`] on given (client, LocalRPC, metrics) ports.
fn start_backend_on(
    node: &RegtestNode,
    db: &Path,
    grace: &str,
    (tcp, rpc, metrics): (u16, u16, u16),
) -> Result<Backend> {
    let mut env = regtest_env(node, db);
    set_env(
        &mut env,
        "SERVICES",
        format!("tcp://127.0.0.1:{tcp},rpc://127.0.0.1:{rpc},metrics://127.0.0.1:{metrics}"),
    );
    set_env(&mut env, "TRUSTED_PROXIES", "127.0.0.1");
    set_env(&mut env, "DAEMON_POLL_INTERVAL_MEMPOOL", "200");
    set_env(&mut env, "SHUTDOWN_GRACE", grace);
    let mut process = ServerProcess::start(&env)?;
    process.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;
    Ok(Backend {
        process,
        tcp,
        rpc,
        metrics,
    })
}

/// HAProxy in the foreground, stopped when dropped.
struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `contrib/haproxy.cfg`'s shape, on test ports (each server's client and metrics port),
/// with quick checks.
fn start_haproxy(front: u16, backends: &[(u16, u16)]) -> Result<Haproxy> {
    let mut cfg = HAPROXY_HEAD.to_string();
    cfg.push_str(&format!(
        "frontend electrum\n    bind 127.0.0.1:{front}\n    default_backend electrumx\n\
         backend electrumx\n    balance leastconn\n    option httpchk GET /health\n    http-check expect status 200\n\
         \x20   default-server inter 300ms fall 2 rise 2 send-proxy-v2\n"
    ));
    for (i, (tcp, metrics)) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "    server s{i} 127.0.0.1:{tcp} check port {metrics}\n"
        ));
    }
    run_haproxy(&cfg)
}

/// The global and default sections of the tests' configurations.
const HAPROXY_HEAD: &str = "global\n    maxconn 4000\n    log stderr format raw local0\n\
defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n";

/// Checks and starts HAProxy on the configuration `cfg`.
fn run_haproxy(cfg: &str) -> Result<Haproxy> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()?;
    if !check.status.success() {
        bail!(
            "haproxy -c: {}",
            String::from_utf8_lossy(&check.stderr) + String::from_utf8_lossy(&check.stdout)
        );
    }
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("haproxy.log"))?)
        .spawn()
        .context("starting haproxy")?;
    Ok(Haproxy { child, _dir: dir })
}

/// `GET path` on a metrics port: the status code.
fn http_status(port: u16, path: &str) -> Result<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.split_whitespace().nth(1).context("no status")?;
    Ok(code.parse()?)
}

/// One LocalRPC call.
fn local_rpc(port: u16, method: &str) -> Result<Value> {
    local_rpc_with(port, method, json!([]))
}

fn local_rpc_with(port: u16, method: &str, params: Value) -> Result<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    writeln!(
        s,
        "{}",
        json!({"id": 1, "method": method, "params": params})
    )?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line)?;
    let v: Value = serde_json::from_str(&line)?;
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        bail!("{method}: {e}");
    }
    Ok(v["result"].clone())
}

/// Waits until a server's `GET /health` answers `code`.
async fn wait_health(metrics: u16, code: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while http_status(metrics, "/health").unwrap_or(0) != code {
        if Instant::now() > deadline {
            bail!("/health never answered {code}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The client addresses (without ports) of a server's sessions.
fn session_addresses(rpc: u16) -> Result<Vec<String>> {
    let rows = local_rpc(rpc, "sessions")?;
    Ok(rows
        .as_array()
        .context("sessions is a list")?
        .iter()
        .filter_map(|r| r[2].as_str())
        .map(|a| a.parse::<SocketAddr>().map(|a| a.ip().to_string()))
        .collect::<Result<_, _>>()?)
}

/// A client session from `source` through the balancer.
struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    tx: tokio::net::tcp::OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    async fn connect(front: u16, source: &str) -> Result<Client> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse()?)?;
        let stream = socket.connect(([127, 0, 0, 1], front).into()).await?;
        let (rx, tx) = stream.into_split();
        let mut c = Client {
            lines: BufReader::new(rx).lines(),
            tx,
            next_id: 0,
        };
        let v = c
            .call("server.version", json!(["haproxy-test", "1.4"]))
            .await?;
        if v[1] != "1.4" {
            bail!("server.version: {v}");
        }
        Ok(c)
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let req = json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params});
        self.tx.write_all(format!("{req}\n").as_bytes()).await?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .with_context(|| format!("{method}: no answer"))??
                .with_context(|| format!("{method}: connection closed"))?;
            let v: Value = serde_json::from_str(&line)?;
            if v["id"] == json!(self.next_id) {
                if let Some(e) = v.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(v["result"].clone());
            }
        }
    }
}

/// A new client through the balancer asks for a header; the answer must be the node's.
async fn served(front: u16, source: &str, header1: &str) -> Result<()> {
    let mut c = Client::connect(front, source).await?;
    let h = c.call("blockchain.block.header", json!([1])).await?;
    if h != json!(header1) {
        bail!("header 1: {h}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_behind_haproxy_real_addresses_and_a_drain() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 21,
        txs_per_block: 5,
        wallets: 20,
        ..GenParams::default()
    });
    chain.mine(&node, 30).await?;
    let (db_a, db_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut a = start_backend(&node, db_a.path(), "4")?;
    let b = start_backend(&node, db_b.path(), "0")?;
    for s in [&a, &b] {
        wait_health(s.metrics, 200, Duration::from_secs(30)).await?;
    }
    // A third server joins later, from a snapshot of `b`: down until it is started.
    let c_ports = (free_port(), free_port(), free_port());
    let front = free_port();
    let _haproxy = start_haproxy(
        front,
        &[
            (a.tcp, a.metrics),
            (b.tcp, b.metrics),
            (c_ports.0, c_ports.2),
        ],
    )?;
    // Both backends pass `rise 2` checks 300 ms apart.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A client of `b` directly (its own address, no PROXY header), kept open.
    let mut direct = Client::connect(b.tcp, "127.0.0.1").await?;
    let header1 = direct.call("blockchain.block.header", json!([1])).await?;
    let header1 = header1.as_str().context("hex header")?.to_string();

    // Clients from 127.0.0.5: spread over both servers, each of which sees 127.0.0.5.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut c = Client::connect(front, "127.0.0.5").await?;
        c.call("blockchain.headers.subscribe", json!([])).await?;
        clients.push(c);
    }
    let (on_a, on_b) = (session_addresses(a.rpc)?, session_addresses(b.rpc)?);
    assert_eq!(on_a.len() + on_b.len(), 7, "a: {on_a:?}, b: {on_b:?}");
    assert!(
        !on_a.is_empty() && on_b.len() >= 2,
        "leastconn spreads: {on_a:?} {on_b:?}"
    );
    assert!(on_a.iter().all(|ip| ip == "127.0.0.5"), "{on_a:?}");
    // `b` also has the direct client (from 127.0.0.1, without a PROXY header).
    assert_eq!(
        on_b.iter().filter(|ip| *ip == "127.0.0.1").count(),
        1,
        "{on_b:?}"
    );

    // A replica from a snapshot of `b`, taken while it serves: it resumes from the
    // snapshot's height (no resync), joins the pool once ready, and answers as `b` does.
    let snaps = tempfile::tempdir()?;
    let snap = snaps.path().join("snap");
    let meta = tokio::task::block_in_place(|| {
        local_rpc_with(b.rpc, "snapshot", json!([snap.to_str().unwrap()]))
    })?;
    let snap_height = meta["height"].as_u64().context("snapshot height")?;
    assert_eq!(snap_height, chain.height() as u64, "{meta}");
    chain.mine(&node, 2).await?;
    let replica = snaps.path().join("replica");
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&snap)
            .arg(&replica)
            .status()?
            .success()
    );
    let c = start_backend_on(&node, &replica, "0", c_ports)?;
    wait_health(c.metrics, 200, Duration::from_secs(30)).await?;
    let sync = local_rpc(c.rpc, "sync")?;
    assert_eq!(
        sync["blocks this run"],
        json!(2),
        "resumed, not resynced: {sync}"
    );
    let tip = chain.height() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while local_rpc(b.rpc, "getinfo")?["db height"] != json!(tip) {
        if Instant::now() > deadline {
            bail!("b never reached the new tip");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let mut on_b = Client::connect(b.tcp, "127.0.0.1").await?;
        let mut on_c = Client::connect(c.tcp, "127.0.0.1").await?;
        let ledger = chain.ledger();
        let scripts: Vec<_> = ledger.history.keys().take(15).collect();
        for sh in scripts {
            let sh = sh.to_hex();
            for m in [
                "blockchain.scripthash.get_history",
                "blockchain.scripthash.get_balance",
                "blockchain.scripthash.listunspent",
            ] {
                let (x, y) = (
                    on_b.call(m, json!([sh])).await?,
                    on_c.call(m, json!([sh])).await?,
                );
                assert_eq!(x, y, "{m} {sh}");
            }
        }
        for h in [0, 1, snap_height, tip] {
            let (x, y) = (
                on_b.call("blockchain.block.header", json!([h])).await?,
                on_c.call("blockchain.block.header", json!([h])).await?,
            );
            assert_eq!(x, y, "header {h}");
        }
    }
    // `rise 2` checks 300 ms apart bring it into rotation.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Stop `a`: it turns unready at once, the checks take it out of rotation, and every
    // new client is served by `b` or `c`, while `a` still serves its own until its grace
    // ends.
    a.process.signal("TERM")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while http_status(a.metrics, "/health")? != 503 {
        if Instant::now() > deadline {
            bail!("the stopping server still reports ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `fall 2` checks 300 ms apart.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut kept = Vec::new();
    for _ in 0..10 {
        let mut client = Client::connect(front, "127.0.0.6").await?;
        let h = client.call("blockchain.block.header", json!([1])).await?;
        assert_eq!(h, json!(header1));
        kept.push(client);
    }
    // `leastconn` sent the newcomers to the replica first, which had none.
    let on_c = session_addresses(c.rpc)?;
    assert!(
        on_c.iter().filter(|ip| *ip == "127.0.0.6").count() >= 4,
        "{on_c:?}"
    );
    // Established sessions on `a` are still served during its grace period.
    for c in clients.iter_mut() {
        if let Err(e) = c.call("server.ping", json!([])).await {
            for l in a.process.tail(40) {
                eprintln!("a: {l}");
            }
            return Err(e);
        }
    }
    let status = a.process.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "{status}");
    // Once `a` is gone, its clients reconnect through the balancer and are served.
    for _ in 0..5 {
        served(front, "127.0.0.7", &header1).await?;
    }
    Ok(())
}

/// A client from `source` through `front` over TLS (trusting `ca_pem`): the answer to
/// `blockchain.block.header` at height 1, and the client addresses of the server's
/// sessions (LocalRPC on `rpc`) while it is connected.
async fn header_over_tls(
    front: u16,
    source: &str,
    ca_pem: &str,
    rpc: u16,
) -> Result<(Value, Vec<String>)> {
    use tokio_rustls::rustls::pki_types::ServerName;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    let tcp = socket.connect(([127, 0, 0, 1], front).into()).await?;
    let name = ServerName::try_from("localhost".to_string())?;
    let tls = electrumx_testkit::tls::connector(ca_pem)?
        .connect(name, tcp)
        .await?;
    let (rx, mut tx) = tokio::io::split(tls);
    let mut lines = BufReader::new(rx).lines();
    for (id, method, params) in [
        (1, "server.version", json!(["haproxy-tls", "1.4"])),
        (2, "blockchain.block.header", json!([1])),
    ] {
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        tx.write_all(format!("{req}\n").as_bytes()).await?;
    }
    tx.flush().await?;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("no answer over TLS")??
            .context("TLS connection closed")?;
        let v: Value = serde_json::from_str(&line)?;
        if v["id"] == json!(2) {
            let sessions = tokio::task::block_in_place(|| session_addresses(rpc))?;
            return Ok((v["result"].clone(), sessions));
        }
    }
}

/// TLS either way through HAProxy: ended at HAProxy (plain TCP with a PROXY header to the
/// server) or passed through to the server's `ssl://` port (the PROXY header before the TLS
/// handshake). Both reach the server with the client's own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ended_at_haproxy_or_at_the_server() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 22,
        txs_per_block: 2,
        wallets: 10,
        ..GenParams::default()
    });
    chain.mine(&node, 5).await?;
    let dir = tempfile::tempdir()?;
    let tls = electrumx_testkit::tls::files(dir.path(), "localhost")?;
    let (tcp, ssl, rpc, metrics) = (free_port(), free_port(), free_port(), free_port());
    let mut env = regtest_env(&node, &dir.path().join("db"));
    set_env(
        &mut env,
        "SERVICES",
        format!(
            "tcp://127.0.0.1:{tcp},ssl://127.0.0.1:{ssl},rpc://127.0.0.1:{rpc},metrics://127.0.0.1:{metrics}"
        ),
    );
    set_env(&mut env, "SSL_CERTFILE", tls.cert.clone());
    set_env(&mut env, "SSL_KEYFILE", tls.key.clone());
    set_env(&mut env, "TRUSTED_PROXIES", "127.0.0.1");
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("listening for clients", 2, Duration::from_secs(120))?;
    wait_health(metrics, 200, Duration::from_secs(30)).await?;
    // HAProxy wants the certificate and its key in one file.
    let pem = dir.path().join("haproxy.pem");
    std::fs::write(
        &pem,
        std::fs::read_to_string(&tls.cert)? + &std::fs::read_to_string(&tls.key)?,
    )?;
    let (ended, passed) = (free_port(), free_port());
    let cfg = format!(
        "{HAPROXY_HEAD}\
         frontend tls_ended\n    bind 127.0.0.1:{ended} ssl crt {pem}\n    default_backend plain\n\
         frontend tls_passed\n    bind 127.0.0.1:{passed}\n    default_backend tls\n\
         backend plain\n    option httpchk GET /health\n    http-check expect status 200\n\
         \x20   server s 127.0.0.1:{tcp} check port {metrics} inter 300ms send-proxy-v2\n\
         backend tls\n    option httpchk GET /health\n    http-check expect status 200\n\
         \x20   server s 127.0.0.1:{ssl} check port {metrics} inter 300ms send-proxy-v2\n",
        pem = pem.display()
    );
    let _haproxy = run_haproxy(&cfg)?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A direct client, from an address of its own (HAProxy's is 127.0.0.1).
    let mut direct = Client::connect(tcp, "127.0.0.10").await?;
    let direct = direct.call("blockchain.block.header", json!([1])).await?;
    for (front, source) in [(ended, "127.0.0.8"), (passed, "127.0.0.9")] {
        let (header, sessions) = header_over_tls(front, source, &tls.ca_pem, rpc).await?;
        assert_eq!(header, direct);
        assert!(
            sessions.iter().any(|ip| ip == source),
            "{source}: {sessions:?}"
        );
        assert!(!sessions.iter().any(|ip| ip == "127.0.0.1"), "{sessions:?}");
    }
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}
