//! Unit tests of the manager's record keeping: candidates, `server.add_peer`, answers,
//! status transitions and forgetting.

use super::*;

fn config(discovery: Discovery, allow_private: bool) -> PeerConfig {
    let coin = electrumx_core::CoinParams::from_names("Bitcoin", "mainnet").unwrap();
    PeerConfig {
        discovery,
        announce: true,
        allow_private,
        force_proxy: false,
        proxy_host: "localhost".into(),
        proxy_port: None,
        blacklist_url: None,
        genesis_hash: coin.genesis_hash.to_display_hex(),
        default_tcp_port: 50001,
        default_ssl_port: 50002,
        seeds: Vec::new(),
        our_features: crate::protocol::features::features_of(
            &["tcp://me.example.com:50001".to_string()],
            &coin,
        ),
        local_addr: None,
        state_file: None,
        schedule: ELECTRUMX_SCHEDULE,
    }
}

fn named(n: &str) -> Peer {
    Peer::from_real_name(n, "test", 50001, 50002)
}

fn hosts(m: &PeerManager) -> Vec<String> {
    m.inner
        .lock()
        .entries
        .values()
        .map(|e| e.peer.host.clone())
        .collect()
}

/// Marks `host` verified just now at `ip`.
fn make_good(m: &PeerManager, host: &str, ip: &str) {
    let mut inner = m.inner.lock();
    let e = inner
        .entries
        .values_mut()
        .find(|e| e.peer.host == host)
        .unwrap();
    e.peer.last_good = unix_now() - 1.0;
    e.peer.ip_addr = Some(ip.parse().unwrap());
}

#[test]
fn candidates_are_limited_per_source_and_must_be_public() {
    let m = PeerManager::new(config(Discovery::On, false));
    let list: Vec<Peer> = (0..5)
        .map(|i| named(&format!("h{i}.example.com t")))
        .collect();
    assert_eq!(
        m.note_peers(list.clone(), Some(MAX_NEW_PER_SOURCE), false, "x"),
        2
    );
    // Known ones are not added twice; the rest may be.
    assert_eq!(m.note_peers(list, None, false, "y"), 3);
    assert_eq!(
        m.note_peers(
            vec![named("10.0.0.1 t"), named("localhost t")],
            None,
            false,
            "z"
        ),
        0
    );
    assert_eq!(
        m.note_peers(vec![named("abc.onion t")], None, false, "z"),
        0,
        "no proxy"
    );
    assert_eq!(m.info()["never"], 5);
    assert_eq!(m.info()["total"], 5);
    let private = PeerManager::new(config(Discovery::On, true));
    assert_eq!(
        private.note_peers(vec![named("10.0.0.1 t")], None, false, "z"),
        1
    );
}

#[tokio::test]
async fn local_rpc_and_irc_peers() {
    let off = PeerManager::new(config(Discovery::Off, false));
    assert!(off.add_local_rpc_peer("8.8.8.8 t").await.is_err());
    let m = PeerManager::new(config(Discovery::On, false));
    assert!(m.add_local_rpc_peer("").await.is_err());
    assert!(
        m.add_local_rpc_peer("127.0.0.1 t")
            .await
            .unwrap_err()
            .contains("PEER_ALLOW_PRIVATE")
    );
    assert!(m.add_local_rpc_peer("bad_-.host- t").await.is_err());
    assert!(
        m.add_local_rpc_peer("8.8.8.8 v1.4").await.is_err(),
        "no port"
    );
    m.add_local_rpc_peer("8.8.8.8 v1.4 s50002 t50001")
        .await
        .unwrap();
    m.add_irc_peer("E_abc", "irc.example.com v1.1 s t");
    let data = m.rpc_data();
    let sources: Vec<&str> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&"RPC") && sources.contains(&"E_abc"),
        "{data}"
    );
    let rpc = data
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source"] == "RPC")
        .unwrap();
    assert_eq!(rpc["features"]["hosts"]["8.8.8.8"]["tcp_port"], 50001);
    assert_eq!(rpc["features"]["protocol_max"], "1.4");
    assert_eq!(rpc["status"], "never");
    assert_eq!(rpc["last_good"], 0.0);
    // Other ports for a known peer: retried with them.
    m.add_local_rpc_peer("8.8.8.8 t60001").await.unwrap();
    let inner = m.inner.lock();
    let e = inner
        .entries
        .values()
        .find(|e| e.peer.host == "8.8.8.8")
        .unwrap();
    assert_eq!(e.peer.other_ports, vec![(Transport::Tcp, 60001)]);
}

#[tokio::test]
async fn add_peer_rules() {
    let features = |host: &str| json!({"hosts": {host: {"tcp_port": 50001}}, "genesis_hash": "00"});
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let off = PeerManager::new(config(Discovery::Off, true));
    assert!(!off.add_peer(&features("127.0.0.1"), ip("127.0.0.1")).await);
    let m = PeerManager::new(config(Discovery::On, true));
    assert!(!m.add_peer(&features("127.0.0.1"), None).await, "no source");
    assert!(
        !m.add_peer(&json!({"hosts": {}}), ip("127.0.0.1")).await,
        "no hosts"
    );
    assert!(
        !m.add_peer(&features("127.7.0.1"), ip("127.8.0.1")).await,
        "source mismatch"
    );
    assert!(m.add_peer(&features("127.9.0.1"), ip("127.9.0.1")).await);
    assert!(
        !m.add_peer(&features("127.9.0.2"), ip("127.9.0.2")).await,
        "same /16 within 600 s"
    );
    assert!(
        m.add_peer(&features("127.10.0.1"), ip("127.10.0.1")).await,
        "another /16"
    );
    assert!(
        !m.add_peer(&features("nonexistent.invalid"), ip("127.11.0.1"))
            .await
    );
    assert_eq!(hosts(&m), vec!["127.9.0.1", "127.10.0.1"]);
    assert_eq!(m.rpc_data()[0]["source"], "127.9.0.1");
    let public_only = PeerManager::new(config(Discovery::On, false));
    assert!(
        !public_only
            .add_peer(&features("127.0.0.1"), ip("127.0.0.1"))
            .await
    );
}

#[test]
fn subscribe_answers_by_mode() {
    for mode in [Discovery::On, Discovery::SelfOnly, Discovery::Off] {
        let m = PeerManager::new(config(mode, false));
        m.import();
        m.note_peers(
            vec![named("a.example.com t"), named("b.example.com s")],
            None,
            false,
            "x",
        );
        make_good(&m, "me.example.com", "1.1.1.1");
        make_good(&m, "a.example.com", "2.2.2.2");
        let answer = m.subscribe_result(None);
        let listed: Vec<&str> = answer
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t[1].as_str().unwrap())
            .collect();
        match mode {
            Discovery::On => {
                assert_eq!(listed.len(), 2, "{answer}");
                assert!(listed.contains(&"me.example.com") && listed.contains(&"a.example.com"));
                let a = answer
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t[1] == "a.example.com")
                    .unwrap();
                assert_eq!(a, &json!(["2.2.2.2", "a.example.com", ["v0.0", "t50001"]]));
            }
            Discovery::SelfOnly => assert_eq!(listed, vec!["me.example.com"]),
            Discovery::Off => assert!(listed.is_empty()),
        }
    }
}

#[test]
fn rpc_data_is_sorted_bad_last_then_recent_first() {
    let m = PeerManager::new(config(Discovery::On, false));
    m.note_peers(
        vec![
            named("a.example.com t"),
            named("b.example.com t"),
            named("c.example.com t"),
            named("d.example.com t"),
        ],
        None,
        false,
        "x",
    );
    {
        let mut inner = m.inner.lock();
        let now = unix_now();
        for e in inner.entries.values_mut() {
            match e.peer.host.as_str() {
                "a.example.com" => e.peer.bad = true,
                "b.example.com" => e.peer.last_good = now - 100.0,
                "c.example.com" => e.peer.last_good = now - 20_000.0,
                _ => {}
            }
        }
    }
    let data = m.rpc_data();
    let order: Vec<(&str, &str)> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["host"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("b.example.com", "good"),
            ("c.example.com", "stale"),
            ("d.example.com", "never"),
            ("a.example.com", "bad")
        ]
    );
    assert_eq!(
        m.info(),
        json!({"bad": 1, "good": 1, "never": 1, "stale": 1, "total": 4})
    );
    for key in [
        "host",
        "features",
        "last_good",
        "last_try",
        "try_count",
        "source",
        "ip_addr",
        "status",
    ] {
        assert!(data[0].get(key).is_some(), "{key}");
    }
}

/// Runs one failed verification of the only peer.
fn fail_once(m: &PeerManager, bad: bool) {
    {
        let mut inner = m.inner.lock();
        for e in inner.entries.values_mut() {
            e.next_try = Instant::now();
        }
    }
    let (jobs, _) = m.take_due(1);
    assert_eq!(jobs.len(), 1);
    m.finish(jobs[0].id, if bad { Outcome::Bad } else { Outcome::Failed });
}

#[test]
fn failures_back_off_and_peers_are_forgotten() {
    let m = PeerManager::new(config(Discovery::On, false));
    m.note_peers(vec![named("a.example.com t")], None, false, "x");
    fail_once(&m, false);
    fail_once(&m, false);
    {
        let inner = m.inner.lock();
        let e = inner.entries.values().next().unwrap();
        assert_eq!(e.peer.try_count, 2);
        let wait = e.next_try.saturating_duration_since(Instant::now());
        assert!(
            wait > Duration::from_secs(1150) && wait <= Duration::from_secs(1200),
            "{wait:?}"
        );
    }
    fail_once(&m, false);
    assert!(hosts(&m).is_empty(), "never good: forgotten after 3 tries");

    m.note_peers(vec![named("b.example.com t")], None, false, "x");
    make_good(&m, "b.example.com", "3.3.3.3");
    for _ in 0..9 {
        fail_once(&m, false);
    }
    assert_eq!(hosts(&m).len(), 1, "once good: kept for 9 failures");
    assert_eq!(
        m.info()["good"],
        1,
        "still good within 3 h of its last success"
    );
    fail_once(&m, false);
    assert!(hosts(&m).is_empty(), "forgotten after 10");

    m.note_peers(vec![named("c.example.com t")], None, false, "x");
    make_good(&m, "c.example.com", "4.4.4.4");
    fail_once(&m, true);
    assert_eq!(m.info()["bad"], 1);
    fail_once(&m, true);
    fail_once(&m, true);
    assert!(hosts(&m).is_empty(), "bad: forgotten after 3");

    // Our own identity is never forgotten.
    m.import();
    for _ in 0..5 {
        fail_once(&m, false);
    }
    assert_eq!(hosts(&m), vec!["me.example.com"]);
}

#[test]
fn a_verified_host_name_replaces_its_address() {
    let m = PeerManager::new(config(Discovery::On, false));
    m.note_peers(
        vec![named("5.5.5.5 t"), named("five.example.com t")],
        None,
        false,
        "x",
    );
    let id = {
        let mut inner = m.inner.lock();
        let (id, e) = inner
            .entries
            .iter_mut()
            .find(|(_, e)| e.peer.host == "five.example.com")
            .unwrap();
        e.peer.ip_addr = Some("5.5.5.5".parse().unwrap());
        *id
    };
    PeerManager::merge_matches(&mut m.inner.lock(), id);
    assert_eq!(hosts(&m), vec!["five.example.com"]);
}

#[test]
fn announcing_only_when_not_listed() {
    let m = PeerManager::new(config(Discovery::On, false));
    m.import();
    assert!(m.features_to_register(false, &[]).is_some());
    assert!(
        m.features_to_register(true, &[]).is_none(),
        "not to ourselves"
    );
    assert!(
        m.features_to_register(false, &[named("me.example.com t50001")])
            .is_none()
    );
    assert!(
        m.features_to_register(false, &[named("me.example.com t50009")])
            .is_some(),
        "listed with other ports"
    );
    let mut quiet = config(Discovery::On, false);
    quiet.announce = false;
    assert!(
        PeerManager::new(quiet)
            .features_to_register(false, &[])
            .is_none()
    );
    let mut private = config(Discovery::On, false);
    private.our_features = json!({"hosts": {"10.0.0.1": {"tcp_port": 1}}});
    assert!(
        PeerManager::new(private)
            .features_to_register(false, &[])
            .is_none()
    );
}

struct FakeChain;

impl OurChain for FakeChain {
    fn height(&self) -> Option<u32> {
        Some(100)
    }
    fn header_hex(&self, height: u32) -> Option<String> {
        Some(format!("{height:0160x}"))
    }
}

/// An Electrum server on our (fake) chain whose features name `host`.
async fn fake_electrum(host: &'static str, genesis: String) -> SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let genesis = genesis.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let req: Value = serde_json::from_str(&line).unwrap();
                    let result = match req["method"].as_str().unwrap() {
                        "server.version" => json!(["Fake 1.0", "1.4"]),
                        "blockchain.headers.subscribe" => json!({"height": 101, "hex": ""}),
                        "blockchain.block.header" => {
                            json!(format!("{:0160x}", req["params"][0].as_u64().unwrap()))
                        }
                        "server.features" => json!({
                            "hosts": {host: {"tcp_port": 50001, "ssl_port": null}},
                            "genesis_hash": genesis, "server_version": "Fake 1.0",
                            "protocol_min": "1.4", "protocol_max": "1.7"}),
                        "server.peers.subscribe" => json!([]),
                        "server.add_peer" => json!(true),
                        _ => Value::Null,
                    };
                    let reply = json!({"jsonrpc": "2.0", "id": req["id"], "result": result});
                    if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Verifies every due peer once.
async fn verify_due(m: &PeerManager) {
    let genesis = m.cfg.as_ref().unwrap().genesis_hash.clone();
    let dialer = Dialer::new(None, true);
    let (jobs, _) = m.take_due(MAX_CONCURRENT);
    assert!(!jobs.is_empty());
    for job in jobs {
        let args = (json!(["test", ["1.4", "1.7"]]), genesis.clone());
        m.check(job, &FakeChain, &dialer, args).await;
    }
}

#[tokio::test]
async fn onion_peers_and_forced_proxy_go_through_socks() {
    let genesis = config(Discovery::On, false).genesis_hash;
    let onion = "abcdefghijklmnop.onion";
    let server = fake_electrum(onion, genesis.clone()).await;
    let (proxy, mut seen) = socks::tests::fake_proxy(server).await;
    let m = PeerManager::new(config(Discovery::On, false));
    m.inner.lock().proxy = Some(proxy);
    assert_eq!(
        m.note_peers(vec![named(&format!("{onion} t"))], None, false, "x"),
        1
    );
    verify_due(&m).await;
    assert_eq!(seen.recv().await.unwrap(), format!("{onion}:50001"));
    let data = m.rpc_data();
    assert_eq!(data[0]["status"], "good", "{data}");
    assert_eq!(data[0]["ip_addr"], Value::Null);
    assert_eq!(data[0]["features"]["server_version"], "Fake 1.0");
    assert_eq!(
        m.subscribe_result(None),
        json!([[onion, onion, ["v1.7", "t50001"]]])
    );

    // FORCE_PROXY: a clearnet peer too, by address.
    let server = fake_electrum("9.9.9.9", genesis).await;
    let (proxy, mut seen) = socks::tests::fake_proxy(server).await;
    let mut cfg = config(Discovery::On, false);
    cfg.force_proxy = true;
    let m = PeerManager::new(cfg);
    m.inner.lock().proxy = Some(proxy);
    m.note_peers(vec![named("9.9.9.9 t")], None, false, "x");
    verify_due(&m).await;
    assert_eq!(seen.recv().await.unwrap(), "9.9.9.9:50001");
    assert_eq!(m.rpc_data()[0]["status"], "good");
    assert_eq!(m.rpc_data()[0]["ip_addr"], "9.9.9.9");

    // Without a proxy, FORCE_PROXY tries nothing: still never verified, not forgotten.
    m.inner.lock().proxy = None;
    m.note_peers(vec![named("8.8.8.8 t")], None, false, "x");
    for _ in 0..4 {
        for e in m.inner.lock().entries.values_mut() {
            e.next_try = Instant::now();
        }
        verify_due(&m).await;
    }
    let data = m.rpc_data();
    let never = data
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["host"] == "8.8.8.8")
        .unwrap();
    assert_eq!(never["status"], "never");
}
