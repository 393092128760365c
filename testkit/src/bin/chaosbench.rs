//! `chaosbench`: what a well-behaved client sees, and what the server spends, while hostile
//! clients attack an Electrum server on loopback (the attacks of `tests/chaos.rs`, bounded
//! in count and time). Used by `tools/bench-chaos.sh`, which runs it against our server and
//! ElectrumX 2.0.0, each freshly started for every attack.
//!
//! Usage: `chaosbench --tcp PORT --ws PORT --pid PID --attack NAME [--seconds S]
//! [--label TEXT] [--blocks N]`, NAME one of `baseline`, `slow-readers`, `flood`, `batch`,
//! `big-lines`, `ws-huge`, `slowloris`, `ws-silent`. Prints one Markdown table row.
//!
//! Throughout, a probe session (from 127.0.0.2) sends 20 light requests a second, one at a
//! time, alternating `blockchain.scripthash.get_balance` of a light script and
//! `blockchain.block.header`; every second a fresh connection (from 127.0.0.3) is opened,
//! asked `server.version` and a header, and closed. Attackers connect from other loopback
//! addresses (127.0.0.11 and up), so a per-address limit applies to them alone. The server's
//! `VmRSS` and open descriptors are sampled every 100 ms.

use anyhow::{Context, Result, bail};
use electrumx_core::ScriptHash;
use electrumx_testkit::chaingen::ScriptKind;
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};

/// Seconds the probe runs before the attack starts (not measured).
const WARMUP: Duration = Duration::from_secs(2);
/// How long a probe request may take before it counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Probe requests per second.
const PROBE_RATE: u32 = 20;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Connects to `127.0.0.1:port` from the loopback address `source`.
async fn connect_from(source: &str, port: u16) -> Result<TcpStream> {
    let src: SocketAddr = format!("{source}:0").parse()?;
    let s = TcpSocket::new_v4()?;
    s.bind(src)?;
    let stream = timeout(
        Duration::from_secs(2),
        s.connect(([127, 0, 0, 1], port).into()),
    )
    .await
    .context("connect timed out")??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A line-based JSON-RPC session.
struct Session {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    line: String,
}

impl Session {
    async fn open(source: &str, port: u16) -> Result<Session> {
        let (r, w) = connect_from(source, port).await?.into_split();
        let mut s = Session {
            reader: BufReader::new(r),
            writer: w,
            id: 0,
            line: String::new(),
        };
        s.call("server.version", json!(["chaosbench", "1.4"]))
            .await?;
        Ok(s)
    }

    /// One request and its reply (an error reply is an error), within `PROBE_TIMEOUT`.
    async fn call(&mut self, method: &str, params: Value) -> Result<()> {
        self.id += 1;
        let id = self.id;
        let mut req =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        req.push('\n');
        timeout(PROBE_TIMEOUT, async {
            self.writer.write_all(req.as_bytes()).await?;
            loop {
                self.line.clear();
                if self.reader.read_line(&mut self.line).await? == 0 {
                    bail!("connection closed");
                }
                let v: Value = serde_json::from_str(&self.line)?;
                if v.get("id") == Some(&json!(id)) {
                    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
                        bail!("{method}: {e}");
                    }
                    return Ok(());
                }
            }
        })
        .await
        .context("no answer within the probe timeout")?
    }
}

#[derive(Default)]
struct ProbeStats {
    latencies_ms: Vec<f64>,
    errors: u64,
    fresh_tried: u64,
    fresh_ok: u64,
}

/// The well-behaved session: light requests at `PROBE_RATE`, measured while `measuring`.
async fn probe(
    port: u16,
    tip: u32,
    measuring: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> ProbeStats {
    let light = ScriptHash::of_script(&ScriptKind::Wallet(1500).script()).to_hex();
    let mut stats = ProbeStats::default();
    let mut session: Option<Session> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / PROBE_RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let measured = measuring.load(Ordering::Relaxed);
        let s = match session.as_mut() {
            Some(s) => s,
            None => match Session::open("127.0.0.2", port).await {
                Ok(s) => session.insert(s),
                Err(_) => {
                    if measured {
                        stats.errors += 1;
                    }
                    continue;
                }
            },
        };
        let (method, params) = if n.is_multiple_of(2) {
            ("blockchain.scripthash.get_balance", json!([light]))
        } else {
            ("blockchain.block.header", json!([n % (tip as u64 + 1)]))
        };
        let started = Instant::now();
        let r = s.call(method, params).await;
        if measured {
            match r {
                Ok(()) => stats
                    .latencies_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0),
                Err(_) => stats.errors += 1,
            }
        }
        if r.is_err() {
            session = None;
        }
    }
    stats
}

/// Every second, a new connection asks for the version and a header, and closes.
async fn fresh_connections(
    port: u16,
    measuring: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut tried, mut ok) = (0, 0);
    while !done.load(Ordering::Relaxed) {
        let next = Instant::now() + Duration::from_secs(1);
        let measured = measuring.load(Ordering::Relaxed);
        let r = async {
            let mut s = Session::open("127.0.0.3", port).await?;
            s.call("blockchain.block.header", json!([0])).await
        }
        .await;
        if measured {
            tried += 1;
            ok += r.is_ok() as u64;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    (tried, ok)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Whether the server closed `s` within `within`, reading and dropping what it sent.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// How many of `conns` the server has closed (checked all at once, 500 ms each).
async fn count_closed(conns: &mut [TcpStream]) -> usize {
    join_all(
        conns
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(500))),
    )
    .await
    .into_iter()
    .filter(|c| *c)
    .count()
}

fn line(v: Value) -> Vec<u8> {
    let mut l = v.to_string().into_bytes();
    l.push(b'\n');
    l
}

/// Eight clients pipeline `blockchain.block.headers` (up to 2,016 headers each) 400 times
/// and never read.
async fn slow_readers(port: u16, until: Instant) -> Result<String> {
    let req = line(
        json!({"jsonrpc": "2.0", "id": 1, "method": "blockchain.block.headers", "params": [0, 2016]}),
    );
    let mut conns = Vec::new();
    let mut sent = 0;
    for _ in 0..8 {
        let mut s = connect_from("127.0.0.11", port).await?;
        s.write_all(&line(json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["slow", "1.4"]})))
            .await?;
        for _ in 0..400 {
            match timeout(Duration::from_millis(200), s.write_all(&req)).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        conns.push(s);
    }
    tokio::time::sleep_until(until.into()).await;
    let closed = count_closed(&mut conns).await;
    Ok(format!(
        "8 readers sent {sent} requests before their sends blocked; {closed} of 8 closed by the server"
    ))
}

/// Up to 2,000 connections from one address, held open.
async fn flood(port: u16, until: Instant) -> Result<String> {
    let mut conns = Vec::new();
    let mut refused = 0;
    let mut failed_in_a_row = 0;
    while conns.len() + refused < 2000 && Instant::now() < until && failed_in_a_row < 50 {
        match connect_from("127.0.0.12", port).await {
            Ok(s) => {
                conns.push(s);
                failed_in_a_row = 0;
            }
            Err(_) => {
                refused += 1;
                failed_in_a_row += 1;
            }
        }
    }
    let made = conns.len();
    tokio::time::sleep_until(until.into()).await;
    let closed = count_closed(&mut conns).await;
    Ok(format!(
        "{made} connected, {refused} refused or timed out; {closed} of {made} closed by the server"
    ))
}

/// A 1 MB line `[0,0,…]` (just under `MAX_RECV`, 1,000,000), sent again after each answer;
/// reconnects when dropped.
async fn batch(port: u16, until: Instant) -> Result<String> {
    let mut text = String::with_capacity(1_000_000);
    text.push('[');
    for _ in 0..499_989 {
        text.push_str("0,");
    }
    text.push_str("0]\n");
    let (mut sent, mut answered, mut dropped, mut biggest) = (0, 0, 0, 0);
    let mut sample = String::new();
    'outer: while Instant::now() < until {
        let Ok(s) = connect_from("127.0.0.13", port).await else {
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut reply = String::new();
        while Instant::now() < until {
            if w.write_all(text.as_bytes()).await.is_err() {
                dropped += 1;
                continue 'outer;
            }
            sent += 1;
            reply.clear();
            let left = until.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
            match timeout(left, r.read_line(&mut reply)).await {
                Ok(Ok(n)) if n > 0 => {
                    answered += 1;
                    biggest = biggest.max(n);
                    if sample.is_empty() {
                        sample = reply.chars().take(90).collect();
                    }
                }
                Ok(_) => {
                    dropped += 1;
                    continue 'outer;
                }
                Err(_) => break 'outer,
            }
        }
        break;
    }
    Ok(format!(
        "{sent} lines sent, {answered} answered (largest answer {biggest} bytes), {dropped} connections dropped; first answer `{}`",
        sample.trim().replace('|', "\\|")
    ))
}

/// 2 MB request lines (twice `MAX_RECV`), ten a second on one connection, another one
/// whenever the server closes it; what the server answers is read and counted.
async fn big_lines(port: u16, until: Instant) -> Result<String> {
    let mut text = String::from(r#"{"jsonrpc":"2.0","id":1,"method":"server.ping","params":[""#);
    text.push_str(&"x".repeat(2_000_000));
    text.push_str("\"]}\n");
    let replies = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sample = Arc::new(std::sync::Mutex::new(String::new()));
    let (mut sent, mut conns, mut closed) = (0, 0, 0);
    while Instant::now() < until {
        let Ok(s) = connect_from("127.0.0.14", port).await else {
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        conns += 1;
        let (r, mut w) = s.into_split();
        let reader = tokio::spawn({
            let (replies, sample) = (replies.clone(), sample.clone());
            async move {
                let mut r = BufReader::new(r);
                let mut l = String::new();
                loop {
                    l.clear();
                    match r.read_line(&mut l).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            replies.fetch_add(1, Ordering::Relaxed);
                            let mut first = sample.lock().expect("sample");
                            if first.is_empty() {
                                *first = l.trim().chars().take(90).collect();
                            }
                        }
                    }
                }
            }
        });
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < until && !reader.is_finished() {
            tick.tick().await;
            match timeout(Duration::from_secs(2), w.write_all(text.as_bytes())).await {
                Ok(Ok(())) => sent += 1,
                _ => break,
            }
        }
        // Closed by the server, or still open when the window ends (the write half stays
        // open meanwhile: closing it would end the session from our side).
        let grace =
            tokio::time::Instant::from_std(until.max(Instant::now())) + Duration::from_secs(1);
        let mut reader = reader;
        if tokio::time::timeout_at(grace, &mut reader).await.is_ok() {
            closed += 1;
        } else {
            reader.abort();
        }
        drop(w);
    }
    let first = sample.lock().expect("sample").replace('|', "\\|");
    Ok(format!(
        "{sent} lines of 2 MB sent on {conns} connections, {} answers, {closed} connections closed by the server; first answer `{first}`",
        replies.load(Ordering::Relaxed)
    ))
}

/// Opens a WebSocket connection from `source` (the handshake only).
async fn ws_connect(source: &str, port: u16) -> Result<TcpStream> {
    let mut s = connect_from(source, port).await?;
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if timeout(Duration::from_secs(5), s.read(&mut byte)).await?? == 0 {
            bail!("closed during the handshake");
        }
        head.push(byte[0]);
        if head.len() > 8192 {
            bail!("handshake reply too long");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("handshake refused: {}", String::from_utf8_lossy(&head));
    }
    Ok(s)
}

/// 60 MB WebSocket text messages, one per connection, up to 10.
async fn ws_huge(port: u16, until: Instant) -> Result<String> {
    const SIZE: u64 = 60 << 20;
    let prefix = br#"{"jsonrpc":"2.0","id":1,"method":"server.ping","params":[""#;
    let suffix = br#""]}"#;
    let chunk = vec![b'x'; 1 << 18];
    let (mut tried, mut refused, mut sent_mb, mut closed) = (0, 0, 0.0, 0);
    while tried < 10 && Instant::now() < until {
        tried += 1;
        let Ok(mut s) = ws_connect("127.0.0.15", port).await else {
            refused += 1;
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        // One frame, FIN and text, 64-bit length, an all-zero mask (payload as is).
        let mut head = vec![0x81, 0x80 | 127];
        head.extend_from_slice(&SIZE.to_be_bytes());
        head.extend_from_slice(&[0, 0, 0, 0]);
        let mut written: u64 = 0;
        let r = timeout(Duration::from_secs(10), async {
            s.write_all(&head).await?;
            s.write_all(prefix).await?;
            written += prefix.len() as u64;
            while written + (suffix.len() as u64) < SIZE {
                let n = chunk
                    .len()
                    .min((SIZE - written - suffix.len() as u64) as usize);
                s.write_all(&chunk[..n]).await?;
                written += n as u64;
            }
            s.write_all(suffix).await?;
            written += suffix.len() as u64;
            std::io::Result::Ok(())
        })
        .await;
        sent_mb += written as f64 / 1048576.0;
        if !matches!(r, Ok(Ok(()))) || closed_within(&mut s, Duration::from_secs(2)).await {
            closed += 1;
        }
    }
    Ok(format!(
        "{tried} messages of 60 MB on new connections ({refused} handshakes refused), {:.0} MB sent in all; {closed} connections closed by the server",
        sent_mb
    ))
}

/// 512 connections (16 from each of 32 addresses) trickle one byte every 500 ms: half the
/// bytes of a request that never ends, half blank lines.
async fn slowloris(port: u16, until: Instant) -> Result<String> {
    let mut conns = Vec::new();
    for a in 0..32 {
        for _ in 0..16 {
            if let Ok(s) = connect_from(&format!("127.0.0.{}", 20 + a), port).await {
                conns.push(s);
            }
        }
    }
    let made = conns.len();
    let text = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.ping\",\"params\":[";
    let mut dead = vec![false; conns.len()];
    let mut k = 0;
    while Instant::now() < until {
        let byte = text[k % text.len()];
        k += 1;
        let writes = conns.iter_mut().enumerate().map(|(i, s)| async move {
            let b = if i % 2 == 0 { [byte] } else { [b'\n'] };
            matches!(
                timeout(Duration::from_millis(100), s.write_all(&b)).await,
                Ok(Ok(()))
            )
        });
        for (i, ok) in join_all(writes).await.into_iter().enumerate() {
            dead[i] |= !ok;
        }
        sleep(Duration::from_millis(500)).await;
    }
    let closed = count_closed(&mut conns).await;
    Ok(format!(
        "{made} of 512 connected; {closed} closed by the server ({} writes failed)",
        dead.iter().filter(|d| **d).count()
    ))
}

/// 512 WebSocket connections (16 from each of 32 addresses) that complete the handshake
/// and say nothing.
async fn ws_silent(port: u16, until: Instant) -> Result<String> {
    let mut conns = Vec::new();
    let mut refused = 0;
    for a in 0..32 {
        for _ in 0..16 {
            match ws_connect(&format!("127.0.0.{}", 60 + a), port).await {
                Ok(s) => conns.push(s),
                Err(_) => refused += 1,
            }
        }
    }
    let made = conns.len();
    tokio::time::sleep_until(until.into()).await;
    let closed = count_closed(&mut conns).await;
    Ok(format!(
        "{made} of 512 upgraded ({refused} refused); {closed} closed by the server"
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |n: &str| -> Result<u64> {
        arg(&args, n)
            .with_context(|| format!("{n} is required"))?
            .parse()
            .with_context(|| n.to_string())
    };
    let tcp = num("--tcp")? as u16;
    let ws = num("--ws")? as u16;
    let pid = num("--pid")? as u32;
    let attack = arg(&args, "--attack").context("--attack is required")?;
    let seconds = arg(&args, "--seconds").map_or(Ok(20), |s| s.parse())?;
    let label = arg(&args, "--label").unwrap_or_default();
    let tip = arg(&args, "--blocks").map_or(Ok(100), |s| s.parse())?;

    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let probe_task = tokio::spawn(probe(tcp, tip, measuring.clone(), done.clone()));
    let fresh_task = tokio::spawn(fresh_connections(tcp, measuring.clone(), done.clone()));
    sleep(WARMUP).await;

    let (rss0, fds0) = (rss_mb(pid).context("VmRSS")?, fds(pid).context("fds")?);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let (mut rss, mut fd) = (0.0f64, 0usize);
            while sampling.load(Ordering::Relaxed) {
                rss = rss.max(rss_mb(pid).unwrap_or(0.0));
                fd = fd.max(fds(pid).unwrap_or(0));
                sleep(Duration::from_millis(100)).await;
            }
            (rss, fd)
        })
    };
    measuring.store(true, Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs(seconds);
    let attack_task = tokio::spawn({
        let attack = attack.clone();
        async move {
            match attack.as_str() {
                "baseline" => {
                    tokio::time::sleep_until(until.into()).await;
                    Ok("no attack".to_string())
                }
                "slow-readers" => slow_readers(tcp, until).await,
                "flood" => flood(tcp, until).await,
                "batch" => batch(tcp, until).await,
                "big-lines" => big_lines(tcp, until).await,
                "ws-huge" => ws_huge(ws, until).await,
                "slowloris" => slowloris(tcp, until).await,
                "ws-silent" => ws_silent(ws, until).await,
                other => bail!("unknown attack {other}"),
            }
        }
    });
    tokio::time::sleep_until(until.into()).await;
    // The figures of the attack's window: the probe stops counting, descriptors as the
    // attack ends (before the attackers close theirs).
    measuring.store(false, Ordering::Relaxed);
    let fds_end = fds(pid).unwrap_or(0);
    let alive_at_end = rss_mb(pid).is_some();
    let note = match timeout(Duration::from_secs(60), attack_task).await {
        Ok(Ok(Ok(note))) => note,
        Ok(Ok(Err(e))) => format!("attack failed: {e:#}"),
        Ok(Err(e)) => format!("attack task: {e}"),
        Err(_) => "attack did not end within 60 s of its window".into(),
    };
    sampling.store(false, Ordering::Relaxed);
    let (rss_peak, fds_peak) = sampler.await?;
    done.store(true, Ordering::Relaxed);
    let mut stats = timeout(Duration::from_secs(15), probe_task)
        .await
        .context("probe did not stop")??;
    let (fresh_tried, fresh_ok) = timeout(Duration::from_secs(15), fresh_task)
        .await
        .context("fresh-connection check did not stop")??;
    stats.fresh_tried = fresh_tried;
    stats.fresh_ok = fresh_ok;
    // Descriptors once the attackers have gone.
    sleep(Duration::from_secs(3)).await;
    let fds_after = fds(pid).map_or("gone".to_string(), |n| n.to_string());

    stats.latencies_ms.sort_by(f64::total_cmp);
    let l = &stats.latencies_ms;
    let answered = l.len() as u64;
    println!(
        "| {attack} | {label} | {} / {} / {} | {} of {} | {} of {} | {:.0} → {:.0} | {fds0} / {fds_peak} / {fds_end} / {fds_after} | {}{note} |",
        fmt_ms(percentile(l, 50.0)),
        fmt_ms(percentile(l, 99.0)),
        fmt_ms(l.last().copied().unwrap_or(f64::NAN)),
        stats.errors,
        answered + stats.errors,
        stats.fresh_ok,
        stats.fresh_tried,
        rss0,
        rss_peak.max(rss0),
        if alive_at_end {
            ""
        } else {
            "**server exited**; "
        },
    );
    Ok(())
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
