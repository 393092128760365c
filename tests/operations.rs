//! Operating the real binary: LocalRPC driven by ElectrumX's own `electrumx_rpc` client
//! (PyPI `e-x` 2.0.0) and by our `electrumx-rpc`, the Prometheus `/metrics` service scraped
//! before and after catch-up, and shutdown by LocalRPC `stop` and by signals while serving,
//! each followed by a clean restart.

use anyhow::{Context, Result, bail};
use electrumx_core::ScriptHash;
use electrumx_testkit::chaingen::{ChainGen, GenParams, Ledger};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn chain_params() -> GenParams {
    GenParams {
        seed: 77,
        txs_per_block: 12,
        wallets: 30,
        ..GenParams::default()
    }
}

/// `regtest_env` with another node URL (`daemon_url`), `services`, 100 ms mempool polls.
fn server_env(
    node: &RegtestNode,
    db: &Path,
    daemon_url: String,
    services: String,
) -> Vec<(&'static str, String)> {
    let mut env = regtest_env(node, db);
    set_env(&mut env, "DAEMON_URL", daemon_url);
    set_env(&mut env, "SERVICES", services);
    set_env(&mut env, "DAEMON_POLL_INTERVAL_MEMPOOL", "100");
    env
}

/// Runs ElectrumX's `electrumx_rpc` against `port`; returns stdout (fails on a non-zero exit).
fn electrumx_rpc(port: u16, args: &[&str]) -> Result<String> {
    let venv = electrumx_testkit::electrumx_venv()?;
    let out = Command::new(venv.join("bin/electrumx_rpc"))
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .context("running electrumx_rpc")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "electrumx_rpc {args:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Runs our `electrumx-rpc` against `port`.
fn our_rpc(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new(electrumx_testkit::workspace_binary("electrumx-rpc"))
        .env_remove("RPC_PORT")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("electrumx-rpc {args:?}: {}\n{stdout}", out.status);
    }
    Ok(stdout)
}

fn json_of(text: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("not JSON: {text}"))
}

/// `GET path` over plain HTTP; returns (status line, body).
fn http_get(port: u16, path: &str) -> Result<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// The value of an unlabelled (or exactly labelled) series in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ok()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The script with the longest history in the ledger, and that history's length.
fn busiest_script(chain: &ChainGen, ledger: &Ledger) -> (Vec<u8>, usize) {
    let mut best = (Vec::new(), 0);
    for b in &chain.blocks {
        for tx in &b.txs {
            for (_, kind) in &tx.outputs {
                let script = kind.script();
                let n = ledger
                    .history
                    .get(&ScriptHash::of_script(&script))
                    .map_or(0, Vec::len);
                if n > best.1 {
                    best = (script, n);
                }
            }
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rpc_with_electrumx_rpc_and_ours_then_metrics_then_stop() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(chain_params());
    chain.mine(&node, 40).await?;
    let db = tempfile::tempdir()?;
    let (tcp, rpc, metrics) = (free_port(), free_port(), free_port());
    let services =
        format!("tcp://127.0.0.1:{tcp},rpc://127.0.0.1:{rpc},metrics://127.0.0.1:{metrics}");
    // Start against a node URL where nothing listens: LocalRPC must answer anyway.
    let dead = format!("http://127.0.0.1:{}/", free_port());
    let mut env = server_env(&node, db.path(), dead, services);
    set_env(&mut env, "ANON_LOGS", "1");
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("rpc service listening", 1, Duration::from_secs(60))?;
    server.wait_for_line("metrics service listening", 1, Duration::from_secs(60))?;

    let info = json_of(&electrumx_rpc(rpc, &["getinfo"])?)?;
    assert_eq!(info["coin"], "BitcoinSVRegtest");
    assert!(info["db height"].is_null(), "{info}");
    assert_eq!(info["pid"], server.pid());
    assert!(
        info["version"]
            .as_str()
            .unwrap()
            .starts_with("electrumx-rs ")
    );
    let sync = json_of(&our_rpc(rpc, &["sync"])?)?;
    assert_eq!(sync["caught up"], false);

    // Before catch-up the scrape says so, and the failing node shows in the RPC errors.
    wait_until("node errors in /metrics", Duration::from_secs(30), || {
        let (status, body) = http_get(metrics, "/metrics")?;
        assert!(status.contains("200"), "{status}");
        Ok(sample(&body, "electrumx_daemon_errors_total").unwrap_or(0.0) > 0.0)
    })?;
    let (_, body) = http_get(metrics, "/metrics")?;
    assert_eq!(sample(&body, "electrumx_caught_up"), Some(0.0));
    assert_eq!(sample(&body, "electrumx_db_height"), Some(-1.0));
    assert!(http_get(metrics, "/nothing")?.0.contains("404"));

    // Point the server at the real node over LocalRPC; it syncs and starts serving.
    let answer = electrumx_rpc(rpc, &["daemon_url", &node.rpc_url()])?;
    assert!(
        answer.contains(&format!(
            "now using daemon at 127.0.0.1:{}",
            node.rpc_port()
        )),
        "{answer}"
    );
    server.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;
    let again = our_rpc(rpc, &["daemon_url", &node.rpc_url()])?;
    assert!(again.contains("now using daemon at 127.0.0.1:"), "{again}");
    let again = our_rpc(rpc, &["daemon-url", &node.rpc_url()])?;
    assert!(again.contains("now using daemon at 127.0.0.1:"), "{again}");
    let info = json_of(&electrumx_rpc(rpc, &["getinfo"])?)?;
    assert_eq!(info["db height"], 40);
    assert_eq!(info["daemon height"], 40);
    assert_eq!(info["sync"]["caught up"], true);

    // A client session shows up in `sessions` with its name, can be logged and disconnected.
    let mut client = RawConn::connect(tcp)?;
    client.call("server.version", serde_json::json!(["ops-test/1.0", "1.4"]))?;
    client.call("blockchain.headers.subscribe", serde_json::json!([]))?;
    let table = electrumx_rpc(rpc, &["sessions"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID     Flags"), "{table}");
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[1].contains("ops-test/1.0") && lines[1].contains("1.4"),
        "{table}"
    );
    let id = lines[1].split_whitespace().next().unwrap().to_string();
    let ours = our_rpc(rpc, &["sessions"])?;
    assert!(
        ours.lines().nth(1).unwrap_or("").contains("ops-test/1.0"),
        "{ours}"
    );
    assert!(electrumx_rpc(rpc, &["groups"])?.starts_with("Name "));
    let logged = electrumx_rpc(rpc, &["log", &id])?;
    assert!(
        logged.contains(&format!("logging session {id}")),
        "{logged}"
    );
    client.call("server.ping", serde_json::json!([]))?;
    let logged_line = server.wait_for_line("request: ", 1, Duration::from_secs(10))?;
    assert!(
        logged_line.contains("xx.xx.xx.xx:xx") && !logged_line.contains("127.0.0.1:"),
        "ANON_LOGS: {logged_line}"
    );
    let inspect = json_of(&electrumx_rpc(rpc, &["inspect_session", &id])?)?;
    assert_eq!(inspect["client_name"], "ops-test/1.0");
    assert_eq!(inspect["is_logged"], true);
    assert!(inspect["request total"].as_u64().unwrap() >= 3);
    let info = json_of(&electrumx_rpc(rpc, &["getinfo"])?)?;
    assert_eq!(info["sessions"]["count"], 1);
    assert!(info["request counts"]["server.version"].as_u64() >= Some(1));
    let unknown = electrumx_rpc(rpc, &["disconnect", "999999", "nosuchgroup"])?;
    assert!(unknown.contains("unknown: 999999") && unknown.contains("unknown: nosuchgroup"));
    assert!(our_rpc(rpc, &["disconnect", "999999"])?.contains("unknown: 999999"));
    let gone = electrumx_rpc(rpc, &["disconnect", &id])?;
    assert!(
        gone.contains(&format!("disconnecting session {id}")),
        "{gone}"
    );
    assert!(
        client.call("server.ping", serde_json::json!([])).is_err(),
        "session closed"
    );
    wait_until("session gone", Duration::from_secs(10), || {
        Ok(electrumx_rpc(rpc, &["sessions"])?.lines().count() == 1)
    })?;

    // `query` by script agrees with the chain's own ledger.
    let ledger = Ledger::from_blocks(&chain.blocks);
    let (script, history_len) = busiest_script(&chain, &ledger);
    let hex = const_hex::encode(&script);
    let lines = electrumx_rpc(rpc, &["query", &hex])?;
    assert!(lines.starts_with(&format!("Script: {hex}")), "{lines}");
    assert_eq!(lines.matches("History #").count(), history_len, "{lines}");
    let balance = ledger.balance(&ScriptHash::of_script(&script));
    let expected = electrumx_server::admin::local_rpc::coin_amount(balance);
    assert!(
        lines.contains(&format!("Balance: {expected} BSV")),
        "{lines}"
    );
    let limited = electrumx_rpc(rpc, &["query", "--limit", "2", &hex])?;
    assert_eq!(limited.matches("History #").count(), 2.min(history_len));
    assert_eq!(our_rpc(rpc, &["query", "-l", "2", &hex])?, limited);

    // Our own extras: database statistics, JSON mode.
    let dbstats = json_of(&our_rpc(rpc, &["db"])?)?;
    assert!(dbstats["size bytes"].as_u64().unwrap() > 0);
    assert!(
        dbstats["column families"]["history"].is_object(),
        "{dbstats}"
    );
    let info = json_of(&our_rpc(rpc, &["--json", "getinfo"])?)?;
    assert_eq!(info["db height"], 40);

    // A reorg over LocalRPC takes blocks back and syncs them again.
    assert!(electrumx_rpc(rpc, &["reorg", "2"])?.contains("scheduled a reorg of 2 blocks"));
    server.wait_for_line(
        "reorg requested: backing up 2 blocks",
        1,
        Duration::from_secs(30),
    )?;
    wait_until("tip back at 40", Duration::from_secs(30), || {
        Ok(json_of(&electrumx_rpc(rpc, &["getinfo"])?)?["db height"] == 40)
    })?;
    let too_deep = electrumx_rpc(rpc, &["reorg", "100000"]);
    assert!(
        format!("{too_deep:?}").contains("REORG_LIMIT"),
        "{too_deep:?}"
    );

    // After catch-up the scrape shows the index, sessions, requests and the node client.
    let (_, body) = http_get(metrics, "/metrics")?;
    assert_eq!(sample(&body, "electrumx_caught_up"), Some(1.0));
    assert_eq!(sample(&body, "electrumx_db_height"), Some(40.0));
    assert_eq!(sample(&body, "electrumx_sync_lag_blocks"), Some(0.0));
    assert!(sample(&body, "electrumx_indexed_blocks_total").unwrap() >= 40.0);
    assert_eq!(sample(&body, "electrumx_reorgs_total"), Some(1.0));
    assert!(sample(&body, "electrumx_requests_total{method=\"server.version\"}").unwrap() >= 1.0);
    assert!(
        body.contains(
            "electrumx_request_duration_seconds_bucket{method=\"server.ping\",le=\"+Inf\"}"
        )
    );
    assert!(sample(&body, "electrumx_sessions_accepted_total").unwrap() >= 1.0);
    assert!(sample(&body, "electrumx_db_size_bytes").unwrap() > 0.0);
    assert!(sample(&body, "electrumx_daemon_requests_total").unwrap() > 0.0);
    assert!(body.contains("electrumx_sessions{transport=\"tcp\"}"));
    assert!(body.contains("electrumx_mempool_txs "));

    // `stop` shuts down cleanly; the next start resumes without resyncing, and `notify` (for
    // the node's -blocknotify) makes a new block known at once although it polls every 10 min.
    assert!(electrumx_rpc(rpc, &["stop"])?.contains("stopping"));
    let status = server.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "{status}: {:?}", server.tail(10));
    let mut env = server_env(
        &node,
        db.path(),
        node.rpc_url(),
        format!("rpc://127.0.0.1:{rpc}"),
    );
    set_env(&mut env, "DAEMON_POLL_INTERVAL_BLOCKS", "600000");
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("caught up with the node", 1, Duration::from_secs(60))?;
    let info = json_of(&electrumx_rpc(rpc, &["getinfo"])?)?;
    assert_eq!(info["db height"], 40);
    assert_eq!(info["sync"]["blocks this run"], 0, "nothing was re-indexed");
    chain.mine(&node, 1).await?;
    let hash = chain.blocks.last().unwrap().hash.to_display_hex();
    assert!(our_rpc(rpc, &["notify", &hash])?.contains("polling"));
    wait_until("block 41 after notify", Duration::from_secs(10), || {
        Ok(json_of(&our_rpc(rpc, &["--json", "getinfo"])?)?["db height"] == 41)
    })?;
    our_rpc(rpc, &["stop"])?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());

    // A closed port gives ElectrumX's message and a failure exit.
    let closed = Command::new(electrumx_testkit::workspace_binary("electrumx-rpc"))
        .args(["-p", &rpc.to_string(), "getinfo"])
        .output()?;
    assert!(!closed.status.success());
    assert!(String::from_utf8_lossy(&closed.stdout).contains("cannot connect"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_while_serving_and_a_second_signal_during_sync() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 5,
        txs_per_block: 40,
        wallets: 200,
        ..GenParams::default()
    });
    chain.mine(&node, 300).await?;
    let db = tempfile::tempdir()?;
    let tcp = free_port();
    let mut env = server_env(
        &node,
        db.path(),
        node.rpc_url(),
        format!("tcp://127.0.0.1:{tcp}"),
    );
    set_env(&mut env, "CACHE_MB", "1");
    set_env(&mut env, "PREFETCH_MB", "1");
    set_env(&mut env, "PROGRESS_INTERVAL", "1");
    // No DAEMON_COOKIE_FILE: the cookie is found in the node's data directory.
    env.retain(|(k, _)| *k != "DAEMON_COOKIE_FILE");
    set_env(
        &mut env,
        "DAEMON_DATADIR",
        node.datadir().display().to_string(),
    );

    // Two signals during sync: the first starts a clean stop, the second (if the stop has
    // not finished yet) exits at once with 130. Either way the database stays usable.
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("flush to disk", 1, Duration::from_secs(120))?;
    server.signal("TERM")?;
    server.wait_for_line(
        "SIGTERM received: flushing and stopping",
        1,
        Duration::from_secs(10),
    )?;
    let _ = server.signal("TERM"); // the process may already be gone
    let status = server.wait_exit(Duration::from_secs(30))?;
    let log = server.tail(20).join("\n");
    match status.code() {
        Some(0) => assert!(log.contains("stopped cleanly"), "{log}"),
        Some(130) => assert!(log.contains("second SIGTERM: exiting at once"), "{log}"),
        _ => panic!("{status}: {log}"),
    }

    // The next start is clean and catches up, scraped by Prometheus all along; a client is
    // connected when SIGTERM arrives.
    let metrics = free_port();
    let mut scraped_env = env.clone();
    set_env(
        &mut scraped_env,
        "SERVICES",
        format!("tcp://127.0.0.1:{tcp},metrics://127.0.0.1:{metrics}"),
    );
    let mut server = ServerProcess::start(&scraped_env)?;
    let scraper = std::thread::spawn(move || -> Vec<String> {
        let mut scrapes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok((_, body)) = http_get(metrics, "/metrics") {
                let done = sample(&body, "electrumx_caught_up") == Some(1.0);
                scrapes.push(body);
                if done {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        scrapes
    });
    server.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;
    let scrapes = scraper.join().expect("scraper");
    let mid_sync = scrapes.iter().filter(|b| {
        sample(b, "electrumx_caught_up") == Some(0.0)
            && sample(b, "electrumx_daemon_height") == Some(300.0)
            && sample(b, "electrumx_indexed_blocks_total").unwrap_or(0.0) > 0.0
            && sample(b, "electrumx_processed_height").unwrap_or(300.0) < 300.0
    });
    assert!(
        mid_sync.count() > 0,
        "no scrape caught the sync in progress ({} scrapes)",
        scrapes.len()
    );
    let last = scrapes.last().unwrap();
    assert_eq!(sample(last, "electrumx_db_height"), Some(300.0));
    assert_eq!(sample(last, "electrumx_sync_lag_blocks"), Some(0.0));
    let mut client = RawConn::connect(tcp)?;
    client.call("server.version", serde_json::json!(["sig-test", "1.4"]))?;
    let header = client.result("blockchain.headers.subscribe", serde_json::json!([]))?;
    assert_eq!(header["height"], 300);
    let asked = Instant::now();
    server.signal("TERM")?;
    let status = server.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "{status}: {:?}", server.tail(10));
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "bounded shutdown"
    );
    assert!(
        server
            .tail(20)
            .iter()
            .any(|l| l.contains("stopped cleanly"))
    );
    assert!(client.call("server.ping", serde_json::json!([])).is_err());

    // And once more: restart, serve, SIGINT.
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("listening for clients", 1, Duration::from_secs(60))?;
    let mut client = RawConn::connect(tcp)?;
    client.call("server.version", serde_json::json!(["sig-test", "1.4"]))?;
    assert_eq!(
        client.result("blockchain.headers.subscribe", serde_json::json!([]))?["height"],
        300
    );
    server.signal("INT")?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[test]
fn config_file_then_environment_then_flags() -> Result<()> {
    let db = tempfile::tempdir()?;
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = db.path().join("electrumx.toml");
    std::fs::write(
        &config,
        format!(
            "# settings an operator keeps in a file\nDAEMON_URL = \"http://u:p@127.0.0.1:{}/\"\nCOIN = \"BitcoinSV\"\nnet = \"regtest\"\nservices = [\"rpc://127.0.0.1:{file_port}\"]\nLOG_SESSIONS = 0\n",
            free_port()
        ),
    )?;
    let base = vec![("DB_DIRECTORY", db.path().display().to_string())];
    let args = vec!["--config".to_string(), config.display().to_string()];
    let listening = |server: &mut ServerProcess, port: u16| -> Result<()> {
        server.wait_for_line(
            &format!("rpc service listening on rpc://127.0.0.1:{port}"),
            1,
            Duration::from_secs(30),
        )?;
        Ok(())
    };
    // The file alone.
    let mut server = ServerProcess::start_with_args(&base, &args)?;
    listening(&mut server, file_port)?;
    our_rpc(file_port, &["stop"])?;
    let status = server.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "{status}: {:?}", server.tail(10));
    // The environment beats the file.
    let mut env = base.clone();
    env.push(("SERVICES", format!("rpc://127.0.0.1:{env_port}")));
    let mut server = ServerProcess::start_with_args(&env, &args)?;
    listening(&mut server, env_port)?;
    our_rpc(env_port, &["stop"])?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());
    // A flag beats both.
    let mut flagged = args.clone();
    flagged.extend([
        "--services".to_string(),
        format!("rpc://127.0.0.1:{flag_port}"),
    ]);
    let mut server = ServerProcess::start_with_args(&env, &flagged)?;
    listening(&mut server, flag_port)?;
    our_rpc(flag_port, &["stop"])?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());

    // Mistakes fail at start, naming the setting.
    let fails = |env: &[(&str, String)], args: &[String], needle: &str| -> Result<()> {
        let mut server = ServerProcess::start_with_args(env, args)?;
        let status = server.wait_exit(Duration::from_secs(20))?;
        assert!(!status.success(), "{needle}: must fail");
        let log = server.tail(30).join("\n");
        assert!(log.contains(needle), "{needle}: {log}");
        Ok(())
    };
    std::fs::write(db.path().join("typo.toml"), "DAEMON_URLL = \"x\"\n")?;
    let typo = vec![
        "--config".to_string(),
        db.path().join("typo.toml").display().to_string(),
    ];
    fails(&base, &typo, "DAEMON_URLL")?;
    let mut obsolete = env.clone();
    obsolete.push(("TCP_PORT", "50001".into()));
    fails(&obsolete, &args, "TCP_PORT")?;
    let mut engine = env.clone();
    engine.push(("DB_ENGINE", "leveldb".into()));
    fails(&engine, &args, "DB_ENGINE")?;
    fails(&base, &["--no-such-flag".to_string()], "--no-such-flag")?;

    // --help lists every setting with its environment name and default.
    let help = Command::new(electrumx_testkit::workspace_binary("electrumx-server"))
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "[env: DAEMON_URL=",
        "[env: CACHE_MB=",
        "[default: 1200]",
        "[env: ELECTRUMX_CONFIG=",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    Ok(())
}
