//! Property tests of the request parser and dispatcher: arbitrary bytes, arbitrary JSON and
//! well-formed requests with arbitrary parameters, fed to a real server state (an index of
//! the real regtest blocks in `../shared/data`, served from block files), never panic and
//! always produce well-formed JSON-RPC replies. CI runs the default number of cases;
//! `PROPTEST_CASES=100000` runs a longer campaign.

use electrumx_core::daemon::BlockFileDaemon;
use electrumx_core::{CoinParams, Controller, Mempool};
use electrumx_server::methods::SessionCtx;
use electrumx_server::protocol::method::Method;
use electrumx_server::protocol::outgoing::Outgoing;
use electrumx_server::protocol::session::handle_message;
use electrumx_server::services::Protocol;
use electrumx_server::state::{Limits, ServerState};
use electrumx_testkit::shared_dir;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// `MAX_RECV` of the environment's server: small, so that oversized lines are cheap to make.
const MAX_RECV: usize = 4096;

struct Env {
    rt: tokio::runtime::Runtime,
    state: Arc<ServerState>,
    _controller: Controller,
    _db: tempfile::TempDir,
}

/// The shared environment, made by the first test that asks; the last test to finish shuts
/// it down ([`EnvUser`]), so that no RocksDB work is still running when the test process
/// exits (RocksDB's static destructors run at exit, and a compaction thread still at work
/// then crashed the process after every test had passed).
static ENV: Mutex<Option<Arc<Env>>> = Mutex::new(None);

/// Tests in this file; each holds an [`EnvUser`] while it runs.
const TESTS: usize = 4;

/// Counts a test as finished when dropped; the last one shuts the environment down.
struct EnvUser;

impl Drop for EnvUser {
    fn drop(&mut self) {
        static FINISHED: AtomicUsize = AtomicUsize::new(0);
        if FINISHED.fetch_add(1, Ordering::SeqCst) + 1 < TESTS {
            return;
        }
        let env = ENV.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(Ok(env)) = env.map(Arc::try_unwrap) {
            let Env {
                rt,
                state,
                _controller: controller,
                _db,
            } = env;
            let _ = rt.block_on(controller.stop());
            drop(state);
            drop(controller);
            drop(rt);
        }
    }
}

fn env() -> Arc<Env> {
    let mut slot = ENV.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(|| Arc::new(make_env())).clone()
}

fn make_env() -> Env {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = tempfile::tempdir().unwrap();
    let coin = CoinParams::from_names("Bitcoin", "regtest").unwrap();
    let (controller, state) = rt.block_on(async {
        let daemon = Arc::new(
            BlockFileDaemon::open(
                &shared_dir().join("data/regtest-blocks/run-0000000-0000150"),
                coin.genesis_hash,
            )
            .unwrap(),
        );
        let controller = Controller::builder()
            .coin(coin.clone())
            .db_dir(db.path())
            .daemon(daemon.clone())
            .build()
            .unwrap();
        controller.start().unwrap();
        controller.wait_caught_up().await.unwrap();
        let index = controller.index();
        let mempool = Arc::new(Mempool::new(
            daemon.clone(),
            Arc::new(index.clone()),
            coin.clone(),
        ));
        let mut state = ServerState::new(coin, index, mempool, daemon);
        state.limits = Limits {
            max_send: 350_000,
            max_recv: MAX_RECV,
            ..Limits::default()
        };
        state.script_cache = electrumx_server::cache::ScriptCache::new(100_000);
        let state = Arc::new(state);
        (controller, state)
    });
    Env {
        rt,
        state,
        _controller: controller,
        _db: db,
    }
}

/// Every method the server serves (from its method table), and one it does not.
fn methods() -> Vec<&'static str> {
    Method::ALL
        .iter()
        .map(|m| m.name())
        .chain(["no.such.method"])
        .collect()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[0-9a-f]{0,70}".prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(json!(
            "a57522c3785e61850120aa9b698d67cc660e7468fd01091552f7e34d773ea0df"
        )),
        Just(json!("1.4")),
        Just(json!(["1.4", "1.7"])),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Feeds one message to a fresh session (optionally after a handshake at `version`).
fn run(text: &str, version: Option<&str>) -> Option<String> {
    let e = env();
    e.rt.block_on(async {
        let mut ctx = SessionCtx::new(1, None);
        let peer = "127.0.0.1:1".parse().unwrap();
        let (outbox, _inbox) = electrumx_server::protocol::outgoing::queue(16, 1 << 20);
        let entry = e
            .state
            .sessions
            .open(1, Protocol::Tcp, peer, None, Default::default(), outbox);
        if let Some(v) = version {
            let hello = json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["fuzz", v]});
            handle_message(&e.state, &mut ctx, &hello.to_string(), &entry, f64::INFINITY).await;
        }
        let reply = handle_message(&e.state, &mut ctx, text, &entry, f64::INFINITY)
            .await
            .0
            .map(Outgoing::into_string);
        e.state.sessions.close(1);
        reply
    })
}

fn assert_wellformed(reply: Option<String>) {
    if let Some(r) = reply {
        let v: Value = serde_json::from_str(&r).expect("replies are JSON");
        let items = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        for item in items {
            assert!(item.get("id").is_some(), "reply has an id: {item}");
            assert!(
                item.get("result").is_some() || item.get("error").is_some(),
                "{item}"
            );
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let _user = EnvUser;
    proptest!(|(bytes in prop::collection::vec(any::<u8>(), 0..300))| {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert_wellformed(run(&text, None));
        assert_wellformed(run(&text, Some("1.7")));
    });
}

#[test]
fn arbitrary_json_never_panics() {
    let _user = EnvUser;
    proptest!(|(v in json_value())| {
        assert_wellformed(run(&v.to_string(), Some("1.4")));
    });
}

#[test]
fn every_method_with_arbitrary_params_answers() {
    let _user = EnvUser;
    proptest!(|(
        method in prop::sample::select(methods()),
        params in json_value(),
        version in prop::sample::select(&["1.4", "1.4.2", "1.6", "1.7"][..]),
        batch in any::<bool>(),
    )| {
        let req = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        let text = if batch { json!([req, req]).to_string() } else { req.to_string() };
        let reply = run(&text, Some(version));
        prop_assert!(reply.is_some());
        assert_wellformed(reply);
    });
}

/// A line a client may send in a session.
#[derive(Clone, Debug)]
enum Item {
    /// A request with an id: answered once, with that id.
    Request(&'static str, Value),
    /// A request without an id: not answered.
    Notification,
    /// A batch of requests: one array reply, one element each.
    Batch(usize),
    /// Not JSON, or JSON that is not a request: an error reply (id null).
    Garbage(String),
    /// Whitespace only: ignored.
    Blank,
    /// Longer than `MAX_RECV`: skipped, not answered.
    Oversized(usize),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => prop::sample::select(vec![
            ("server.ping", json!([])),
            ("blockchain.block.header", json!([1])),
            ("blockchain.headers.subscribe", json!([])),
            ("blockchain.scripthash.get_balance", json!(["00".repeat(32)])),
            ("blockchain.transaction.get", json!(["zz"])),
            ("no.such.method", json!([])),
        ]).prop_map(|(m, p)| Item::Request(m, p)),
        1 => Just(Item::Notification),
        1 => (1usize..5).prop_map(Item::Batch),
        1 => "[a-z{]{1,20}".prop_map(Item::Garbage),
        1 => prop::sample::select(vec!["{}", "true", "3", "\"x\""]).prop_map(|g| Item::Garbage(g.into())),
        1 => " {0,5}".prop_map(|_| Item::Blank),
        1 => (MAX_RECV + 1..3 * MAX_RECV).prop_map(Item::Oversized),
    ]
}

/// A whole session over a socket-like stream, written in arbitrary chunks: every request
/// with an id is answered exactly once (in any order), batches with one array each,
/// garbage with a parse error, notifications, blank and oversized lines not at all; when
/// the client has sent everything, the session answers what it asked and ends, leaving
/// nothing registered.
#[test]
fn a_session_answers_each_request_once_and_ends() {
    let _user = EnvUser;
    let e = env();
    let config = ProptestConfig {
        cases: 16,
        ..ProptestConfig::default()
    };
    proptest!(config, |(items in prop::collection::vec(item(), 0..30), chunk in 1usize..5000)| {
        let mut input = String::new();
        input.push_str(&json!({"id": "hello", "method": "server.version", "params": ["fuzz", "1.4"]}).to_string());
        input.push('\n');
        let mut want_ids = vec![json!("hello")];
        let (mut want_garbage, mut want_batches) = (0, Vec::new());
        for (i, item) in items.iter().enumerate() {
            match item {
                Item::Request(m, p) => {
                    input.push_str(&json!({"jsonrpc": "2.0", "id": i, "method": m, "params": p}).to_string());
                    want_ids.push(json!(i));
                }
                Item::Notification => input.push_str(r#"{"jsonrpc": "2.0", "method": "server.ping"}"#),
                Item::Batch(n) => {
                    let reqs: Vec<Value> = (0..*n).map(|k| json!({"jsonrpc": "2.0", "id": k, "method": "server.ping"})).collect();
                    input.push_str(&Value::from(reqs).to_string());
                    want_batches.push(*n);
                }
                Item::Garbage(g) => {
                    input.push_str(g);
                    want_garbage += 1;
                }
                Item::Blank => input.push_str("  "),
                Item::Oversized(n) => input.push_str(&"x".repeat(*n)),
            }
            input.push('\n');
        }
        let state = e.state.clone();
        let (mut got_ids, mut got_garbage, mut got_batches) = (Vec::new(), 0, Vec::new());
        e.rt.block_on(async {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
            let (client, server) = tokio::io::duplex(64 * 1024);
            let peer = "127.0.0.1:9".parse().unwrap();
            let session = tokio::spawn(electrumx_server::protocol::session::serve(
                state.clone(),
                server,
                peer,
                Protocol::Tcp,
                99,
                Default::default(),
            ));
            let (rx, mut tx) = tokio::io::split(client);
            let writer = tokio::spawn(async move {
                for part in input.as_bytes().chunks(chunk) {
                    tx.write_all(part).await.unwrap();
                }
                tx.shutdown().await.unwrap();
                tx
            });
            let mut lines = tokio::io::BufReader::new(rx).lines();
            let read = async {
                while let Some(line) = lines.next_line().await.unwrap() {
                    let v: Value = serde_json::from_str(&line).expect("replies are JSON");
                    match v {
                        Value::Array(a) => got_batches.push(a.len()),
                        v if v["id"].is_null() => {
                            // Not JSON, or JSON but not a request.
                            let code = v["error"]["code"].as_i64();
                            assert!(matches!(code, Some(-32700 | -32600)), "{v}");
                            got_garbage += 1;
                        }
                        v => got_ids.push(v["id"].clone()),
                    }
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(60), read)
                .await
                .expect("the session ends once the client is done");
            let _tx = writer.await.unwrap();
            session.await.unwrap();
        });
        prop_assert!(state.sessions.get(99).is_none());
        let key = |v: &Value| v.to_string();
        got_ids.sort_by_key(key);
        want_ids.sort_by_key(key);
        prop_assert_eq!(got_ids, want_ids);
        prop_assert_eq!(got_garbage, want_garbage);
        got_batches.sort();
        want_batches.sort();
        prop_assert_eq!(got_batches, want_batches);
    });
}
