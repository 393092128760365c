//! Hostile clients against the real binary on loopback, each attack bounded in count and
//! time: a well-behaved session must keep getting answers throughout, the attacker must be
//! cut off, and the server's memory and descriptors must stay bounded.
//!
//! Covered: clients that pipeline large answers and never read; silent WebSocket clients
//! past `SESSION_TIMEOUT`; 60 MB WebSocket messages; 1 MB batch lines; a flood of
//! connections from one address; slowloris (a line trickled byte by byte); twenty sessions
//! hammering the heaviest script; an HTTP request smuggled into LocalRPC.

use anyhow::{Context, Result, bail};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

struct Fixture {
    _node: RegtestNode,
    /// The script hash (hex) with the longest history in the chain.
    busiest: String,
    server: ServerProcess,
    tcp: u16,
    ws: u16,
    rpc: u16,
    _db: tempfile::TempDir,
}

/// A node with a short chain and a server on TCP, WebSocket and LocalRPC ports, with
/// `extra` settings.
async fn start(extra: &[(&'static str, &str)]) -> Result<Fixture> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 5,
        txs_per_block: 10,
        wallets: 20,
        ..GenParams::default()
    });
    chain.mine(&node, 105).await?;
    let busiest = chain
        .ledger()
        .history
        .iter()
        .max_by_key(|(_, h)| h.len())
        .map(|(sh, _)| sh.to_hex())
        .context("a script with history")?;
    let db = tempfile::tempdir()?;
    let (tcp, ws, rpc) = (free_port(), free_port(), free_port());
    let mut env = regtest_env(&node, db.path());
    set_env(
        &mut env,
        "SERVICES",
        format!("tcp://127.0.0.1:{tcp},ws://127.0.0.1:{ws},rpc://127.0.0.1:{rpc}"),
    );
    for (k, v) in extra {
        set_env(&mut env, k, *v);
    }
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("listening for clients", 2, Duration::from_secs(120))?;
    Ok(Fixture {
        _node: node,
        busiest,
        server,
        tcp,
        ws,
        rpc,
        _db: db,
    })
}

/// The server's resident memory in MB.
fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb / 1024.0)
}

/// The server's open file descriptors.
fn fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// A well-behaved session, from `source` (a loopback address of its own).
struct Probe {
    conn: RawConn,
}

impl Probe {
    fn connect(port: u16) -> Result<Probe> {
        let mut conn = RawConn::connect(port)?;
        conn.result("server.version", json!(["probe", "1.4"]))?;
        Ok(Probe { conn })
    }

    /// Asks for the tip and checks the answer (the connection's read timeout bounds the
    /// wait; how long it takes under each attack is for the benchmarks).
    fn check(&mut self) -> Result<()> {
        let tip = self
            .conn
            .result("blockchain.headers.subscribe", json!([]))?;
        if tip["height"].as_u64().is_none() {
            bail!("bad tip answer {tip}");
        }
        Ok(())
    }
}

/// Connects from a given loopback source address (call within `block_in_place`).
fn connect_from(source: &str, port: u16) -> Result<TcpStream> {
    let src: SocketAddr = format!("{source}:0").parse()?;
    let dst: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let stream = tokio::runtime::Handle::current().block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind(src)?;
        s.connect(dst).await
    })?;
    let std = stream.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}

/// Whether the server closed `s` (EOF or reset) within `within`, reading and dropping
/// whatever it sent meanwhile.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Clients that pipeline requests for large answers and never read are dropped once their
/// queue passes its byte bound or a write stalls; the server's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_dropped_and_memory_stays_bounded() -> Result<()> {
    let fx = start(&[("MAX_SEND", "400000")]).await?;
    let pid = fx.server.pid();
    tokio::task::block_in_place(|| -> Result<()> {
        let mut probe = Probe::connect(fx.tcp)?;
        probe.check()?;
        let before = rss_mb(pid)?;
        // Each asks for 2,016 headers (about 325 KB of JSON each) 400 times, reading nothing.
        let line = format!(
            "{}\n",
            json!({"jsonrpc": "2.0", "id": 1, "method": "blockchain.block.headers", "params": [0, 2016]})
        );
        let mut readers = Vec::new();
        for _ in 0..8 {
            let mut s = TcpStream::connect(("127.0.0.1", fx.tcp))?;
            s.write_all(
                format!(
                    "{}\n",
                    json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["slow", "1.4"]})
                )
                .as_bytes(),
            )?;
            s.set_write_timeout(Some(Duration::from_millis(200)))?;
            // The kernel's buffers fill; then writes time out (the server stops reading).
            for _ in 0..400 {
                if s.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
            readers.push(s);
        }
        probe.check()?;
        // Dropped once their queues pass the bound, or within the write timeout (30 s).
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            probe.check()?;
            let grown = rss_mb(pid)? - before;
            if grown > 200.0 {
                bail!("server memory grew by {grown:.0} MB under slow readers");
            }
            // The sessions the server still has: the probe's alone once all are dropped.
            let mut admin = RawConn::connect(fx.rpc)?;
            let sessions = admin.result("sessions", json!([]))?;
            if sessions.as_array().is_some_and(|a| a.len() <= 1) {
                break;
            }
            if Instant::now() > deadline {
                bail!("slow readers were not dropped within 45 s: {sessions}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        probe.check()?;
        drop(readers);
        Ok(())
    })
}

/// A WebSocket client that never sends anything loses its socket when its session times
/// out; descriptors do not pile up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_websocket_clients_are_closed_at_the_session_timeout() -> Result<()> {
    let fx = start(&[("SESSION_TIMEOUT", "2")]).await?;
    let pid = fx.server.pid();
    let baseline = fds(pid)?;
    let mut silent = Vec::new();
    for _ in 0..20 {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/", fx.ws)).await?;
        silent.push(ws);
    }
    // The server holds them (a margin for its own connections to the node coming and
    // going meanwhile).
    assert!(fds(pid)? >= baseline + 15, "the sockets are open");
    // After the timeout every one of them is closed by the server.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for ws in &mut silent {
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(m)) if m.is_close() => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(end.is_ok(), "a silent WebSocket client was not closed");
    }
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds(pid)? > baseline + 2 {
        if Instant::now() > deadline {
            bail!("descriptors: {} (baseline {baseline})", fds(pid)?);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A 60 MB WebSocket message ends that connection at `MAX_RECV`, before it is buffered;
/// a well-behaved WebSocket session is unaffected and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_websocket_messages_are_refused_at_max_recv() -> Result<()> {
    let fx = start(&[]).await?;
    let pid = fx.server.pid();
    let before = rss_mb(pid)?;
    let (mut good, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/", fx.ws)).await?;
    let ask = |id: u64| {
        tokio_tungstenite::tungstenite::Message::text(
            json!({"jsonrpc": "2.0", "id": id, "method": "server.version", "params": ["good", "1.4"]})
                .to_string(),
        )
    };
    good.send(ask(1)).await?;
    assert!(good.next().await.is_some_and(|m| m.is_ok()));
    let (mut bad, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/", fx.ws)).await?;
    let huge = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.ping\",\"params\":[\"{}\"]}}",
        "x".repeat(60 << 20)
    );
    // The server closes while the message is still on its way.
    let sent = bad
        .send(tokio_tungstenite::tungstenite::Message::text(huge))
        .await;
    let closed = match sent {
        Err(_) => true,
        Ok(()) => tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match bad.next().await {
                    None | Some(Err(_)) => return true,
                    Some(Ok(m)) if m.is_close() => return true,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .unwrap_or(false),
    };
    assert!(closed, "a 60 MB message did not end its connection");
    good.send(ask(2)).await?;
    let reply = tokio::time::timeout(Duration::from_secs(2), good.next()).await?;
    assert!(
        reply.is_some_and(|m| m.is_ok()),
        "the good session still answered"
    );
    let grown = rss_mb(pid)? - before;
    assert!(grown < 100.0, "memory grew by {grown:.0} MB");
    Ok(())
}

/// A 1 MB line `[0,0,…]` is refused as a batch over `MAX_BATCH` at once, without becoming
/// half a million requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_batch_lines_are_refused_whole() -> Result<()> {
    let fx = start(&[("MAX_RECV", "2000000")]).await?;
    let pid = fx.server.pid();
    let before = rss_mb(pid)?;
    tokio::task::block_in_place(|| -> Result<()> {
        let mut probe = Probe::connect(fx.tcp)?;
        let mut c = RawConn::connect(fx.tcp)?;
        c.result("server.version", json!(["batch", "1.4"]))?;
        for _ in 0..5 {
            let line = format!("[{}0]\n", "0,".repeat(500_000));
            c.send_raw(line.as_bytes())?;
            let reply = c.recv()?.context("an answer")?;
            assert_eq!(reply["error"]["code"], json!(-32600), "{reply}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("batch too large"),
                "{reply}"
            );
            probe.check()?;
        }
        Ok(())
    })?;
    let grown = rss_mb(pid)? - before;
    assert!(grown < 64.0, "memory grew by {grown:.0} MB");
    Ok(())
}

/// Thousands of connections from one address: beyond `MAX_SESSIONS_PER_IP` they are
/// closed at once; a client from another address is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_address_is_capped() -> Result<()> {
    let fx = start(&[("MAX_SESSIONS_PER_IP", "5"), ("SESSIONS_PER_IP_EXEMPT", "")]).await?;
    let pid = fx.server.pid();
    let baseline = fds(pid)?;
    tokio::task::block_in_place(|| -> Result<()> {
        let mut flood = Vec::new();
        for _ in 0..2000 {
            match connect_from("127.0.0.3", fx.tcp) {
                Ok(s) => flood.push(s),
                Err(_) => break,
            }
        }
        assert!(
            flood.len() >= 100,
            "only {} connections were made",
            flood.len()
        );
        // A client from another address is served meanwhile.
        let mut other = connect_from("127.0.0.2", fx.tcp)?;
        other.write_all(
            format!(
                "{}\n",
                json!({"jsonrpc": "2.0", "id": 1, "method": "server.version", "params": ["other", "1.4"]})
            )
            .as_bytes(),
        )?;
        other.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 256];
        let n = other.read(&mut buf)?;
        assert!(String::from_utf8_lossy(&buf[..n]).contains("\"result\""));
        // All but 5 of the flood were closed by the server.
        let mut still_open = 0;
        for s in &mut flood {
            if !closed_within(s, Duration::from_millis(50)) {
                still_open += 1;
            }
        }
        assert_eq!(still_open, 5, "sessions kept from one address");
        drop(flood);
        let deadline = Instant::now() + Duration::from_secs(10);
        while fds(pid)? > baseline + 3 {
            if Instant::now() > deadline {
                bail!("descriptors: {} (baseline {baseline})", fds(pid)?);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })
}

/// Slowloris: lines trickled a byte at a time never complete, blank lines are not
/// requests, and only requests keep a session alive: each such connection is closed at
/// `SESSION_TIMEOUT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_end_at_the_session_timeout() -> Result<()> {
    let fx = start(&[("SESSION_TIMEOUT", "3")]).await?;
    tokio::task::block_in_place(|| -> Result<()> {
        let mut probe = Probe::connect(fx.tcp)?;
        let mut slow: Vec<TcpStream> = (0..30)
            .map(|_| TcpStream::connect(("127.0.0.1", fx.tcp)))
            .collect::<std::io::Result<_>>()?;
        let started = Instant::now();
        let text = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.ping\",\"params\":[";
        let mut closed = 0;
        'trickle: for byte in text.iter().cycle() {
            // Half trickle a request's bytes, half send blank lines (which used to restart
            // the idle timer).
            for (i, s) in slow.iter_mut().enumerate() {
                let sent = if i % 2 == 0 { [*byte] } else { [b'\n'] };
                if s.write_all(&sent).is_err() {
                    closed += 1;
                }
            }
            if closed > 0 || started.elapsed() > Duration::from_secs(12) {
                break 'trickle;
            }
            // The well-behaved session, kept alive by its requests, is answered.
            probe.check()?;
            std::thread::sleep(Duration::from_millis(500));
        }
        let elapsed = started.elapsed();
        assert!(
            slow.iter_mut()
                .all(|s| closed_within(s, Duration::from_secs(3))),
            "slowloris connections still open after {elapsed:?}"
        );
        probe.check()?;
        Ok(())
    })
}

/// A web page in a browser on the host can make it POST to LocalRPC: the connection is
/// closed at the HTTP request line and the JSON body never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_smuggled_into_local_rpc_run_nothing() -> Result<()> {
    let mut fx = start(&[]).await?;
    tokio::task::block_in_place(|| -> Result<()> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "stop", "params": []}).to_string();
        let mut s = TcpStream::connect(("127.0.0.1", fx.rpc))?;
        s.write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}\n",
                body.len() + 1
            )
            .as_bytes(),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(
            out.is_empty(),
            "no answer at all: {:?}",
            String::from_utf8_lossy(&out)
        );
        // Garbage after nothing ends the connection too, after its error.
        let mut g = TcpStream::connect(("127.0.0.1", fx.rpc))?;
        g.write_all(b"hello there\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"stop\"}\n")?;
        g.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = String::new();
        let _ = g.read_to_string(&mut out);
        assert_eq!(out.lines().count(), 1, "one error, then closed: {out}");
        // The server is still running and serving.
        std::thread::sleep(Duration::from_millis(500));
        let mut probe = Probe::connect(fx.tcp)?;
        probe.check()?;
        let mut admin = RawConn::connect(fx.rpc)?;
        admin.result("getinfo", json!([]))?;
        Ok(())
    })?;
    assert!(fx.server.tail(50).iter().all(|l| !l.contains("stopping")));
    Ok(())
}

/// Twenty sessions, each from an address of its own, pipelining requests for the heaviest
/// script's history, UTXOs and status and reading the answers as fast as they come: the
/// cost model slows them (or, past its hard limit, disconnects them with -101), while a
/// well-behaved session keeps getting answers and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_hammering_the_heaviest_script_are_slowed() -> Result<()> {
    let fx = start(&[("COST_SOFT_LIMIT", "100"), ("COST_HARD_LIMIT", "1000")]).await?;
    let (pid, port, busiest) = (fx.server.pid(), fx.tcp, fx.busiest.clone());
    tokio::task::block_in_place(|| -> Result<()> {
        let mut probe = Probe::connect(port)?;
        probe.check()?;
        let before = rss_mb(pid)?;
        let until = Instant::now() + Duration::from_secs(12);
        let mut hammers = Vec::new();
        for i in 0..20 {
            let mut s = connect_from(&format!("127.0.0.{}", 40 + i), port)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let busiest = busiest.clone();
            hammers.push(std::thread::spawn(move || -> (u64, bool) {
                let mut batch = format!(
                    "{}\n",
                    json!({"id": "v", "method": "server.version", "params": ["hammer", "1.4"]})
                );
                for (k, m) in [
                    "blockchain.scripthash.get_history",
                    "blockchain.scripthash.listunspent",
                    "blockchain.scripthash.subscribe",
                    "blockchain.scripthash.get_balance",
                ]
                .iter()
                .cycle()
                .take(40)
                .enumerate()
                {
                    batch.push_str(&json!({"id": k, "method": m, "params": [busiest]}).to_string());
                    batch.push('\n');
                }
                let (mut answers, mut cut_off) = (0u64, false);
                let mut reader = std::io::BufReader::new(s.try_clone().expect("clone"));
                while Instant::now() < until && !cut_off {
                    if s.write_all(batch.as_bytes()).is_err() {
                        cut_off = true;
                        break;
                    }
                    for _ in 0..41 {
                        let mut line = String::new();
                        match std::io::BufRead::read_line(&mut reader, &mut line) {
                            Ok(0) | Err(_) => {
                                cut_off = true;
                                break;
                            }
                            Ok(_) if line.contains("-101") => cut_off = true,
                            Ok(_) => answers += 1,
                        }
                    }
                }
                (answers, cut_off)
            }));
        }
        while Instant::now() < until {
            probe.check()?;
            let grown = rss_mb(pid)? - before;
            if grown > 200.0 {
                bail!("server memory grew by {grown:.0} MB under the hammering");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let results: Vec<(u64, bool)> = hammers.into_iter().map(|h| h.join().unwrap()).collect();
        let answered: u64 = results.iter().map(|r| r.0).sum();
        assert!(answered > 0, "the hammering sessions were served at first");
        // Unthrottled, a round of 41 answers takes milliseconds: hundreds of rounds in 12 s.
        // The cost model lets each session have a few rounds, or cuts it off.
        for (answers, cut_off) in &results {
            assert!(
                *cut_off || *answers <= 41 * 6,
                "a hammering session was neither slowed nor cut off: {results:?}"
            );
        }
        probe.check()?;
        assert!(fds(pid)? < 200);
        Ok(())
    })
}
