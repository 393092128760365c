//! Verifying a peer over an open connection, with ElectrumX's rules: `server.version`
//! first; then its tip within 5 blocks of ours and its header 10 blocks below the lower tip
//! equal to ours (`blockchain.headers.subscribe`, `blockchain.block.header`); its
//! `server.features` on our genesis and listing the host we dialed; its
//! `server.peers.subscribe` list, parsed into candidates.

use super::client::{CallError, RpcConn};
use super::peer::{Features, Peer};
use electrumx_core::ChainIndex;
use serde_json::{Value, json};

/// Largest tip height difference accepted.
pub const MAX_TIP_HEIGHT_DIFF: u64 = 5;
/// How far below the lower tip the headers must agree (chain splits shorter than this pass).
pub const MAX_CHAINSPLIT_LEN: u32 = 10;
/// Most entries read from one peer's `server.peers.subscribe` answer.
pub const MAX_LISTED: usize = 1000;

/// Our chain, as verification needs it.
pub trait OurChain: Send + Sync {
    /// Our tip height.
    fn height(&self) -> Option<u32>;
    /// Our header at `height`, hex.
    fn header_hex(&self, height: u32) -> Option<String>;
}

impl<T: ChainIndex> OurChain for T {
    fn height(&self) -> Option<u32> {
        self.tip().map(|(h, _)| h)
    }

    fn header_hex(&self, height: u32) -> Option<String> {
        self.header(height).map(const_hex::encode)
    }
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The peer is wrong for us (other chain, bad answers): it is marked bad.
    Bad(String),
    /// It answered with an error: the next port is tried.
    Rpc(String),
    /// The connection failed or timed out: the next port is tried.
    Net(String),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        match e {
            CallError::Net(m) => Failure::Net(m),
            e @ CallError::Rpc { .. } => Failure::Rpc(e.to_string()),
        }
    }
}

/// What we expect of the peer.
pub struct Expect<'a> {
    /// The host we dialed.
    pub host: &'a str,
    /// Our genesis hash (display hex).
    pub genesis: &'a str,
    /// Our `server.version` arguments.
    pub version_args: Value,
    /// The coin's default TCP and SSL ports (bare `t`/`s` in real names).
    pub default_ports: (u16, u16),
}

/// What a verified peer told us.
#[derive(Debug)]
pub struct Verified {
    /// Its `server.version` software name.
    pub server_version: String,
    /// Its features (listing the dialed host).
    pub features: Features,
    /// The peers it listed, as candidates (source: its host).
    pub peers: Vec<Peer>,
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

/// Runs the checks; the connection is left open (for `server.add_peer`).
pub async fn verify(
    conn: &mut RpcConn,
    expect: &Expect<'_>,
    chain: &dyn OurChain,
) -> Result<Verified, Failure> {
    let v = conn
        .call("server.version", expect.version_args.clone())
        .await?;
    let server_version = match v.as_array().map(Vec::as_slice) {
        Some([Value::String(name), Value::String(_)]) => name.chars().take(100).collect(),
        _ => {
            return Err(Failure::Bad(format!(
                "bad server.version result: {}",
                short(&v)
            )));
        }
    };
    check_headers(conn, chain).await?;
    let features = check_features(conn, expect).await?;
    let peers = listed_peers(conn, expect).await?;
    Ok(Verified {
        server_version,
        features,
        peers,
    })
}

async fn check_headers(conn: &mut RpcConn, chain: &dyn OurChain) -> Result<(), Failure> {
    let tip = conn.call("blockchain.headers.subscribe", json!([])).await?;
    if !tip.is_object() {
        return Err(Failure::Bad(
            "blockchain.headers.subscribe returned bad result type".into(),
        ));
    }
    let theirs = tip
        .get("height")
        .and_then(Value::as_u64)
        .filter(|h| *h <= u32::MAX as u64)
        .ok_or_else(|| Failure::Bad(format!("invalid height {}", short(&tip["height"]))))?;
    let ours = chain
        .height()
        .ok_or_else(|| Failure::Net("our index has no tip yet".into()))?;
    if theirs.abs_diff(ours as u64) > MAX_TIP_HEIGHT_DIFF {
        return Err(Failure::Bad(format!("bad height {theirs} (ours: {ours})")));
    }
    let check = (ours.min(theirs as u32)).saturating_sub(MAX_CHAINSPLIT_LEN);
    let our_header = chain
        .header_hex(check)
        .ok_or_else(|| Failure::Net(format!("our header {check} is missing")))?;
    let header = conn.call("blockchain.block.header", json!([check])).await?;
    let Some(their_header) = header.as_str() else {
        return Err(Failure::Bad(
            "blockchain.block.header returned bad result type".into(),
        ));
    };
    if !their_header.eq_ignore_ascii_case(&our_header) {
        return Err(Failure::Bad(format!(
            "our header {our_header} and theirs {} differ",
            short(&header)
        )));
    }
    Ok(())
}

async fn check_features(conn: &mut RpcConn, expect: &Expect<'_>) -> Result<Features, Failure> {
    let f = conn.call("server.features", json!([])).await?;
    if !f.is_object() {
        return Err(Failure::Bad(
            "server.features returned bad result type".into(),
        ));
    }
    let hosts: Vec<String> = match f.get("hosts") {
        None => Vec::new(),
        Some(Value::Object(h)) => h.keys().map(|k| k.to_ascii_lowercase()).collect(),
        Some(_) => {
            return Err(Failure::Bad(
                "server.features returned bad result type".into(),
            ));
        }
    };
    if f.get("genesis_hash").and_then(Value::as_str) != Some(expect.genesis) {
        return Err(Failure::Bad("incorrect genesis hash".into()));
    }
    if !hosts.contains(&expect.host.to_ascii_lowercase()) {
        let shown: Vec<&String> = hosts.iter().take(5).collect();
        return Err(Failure::Bad(format!(
            "not listed in own hosts list {shown:?}"
        )));
    }
    Features::from_json(&f, Some(expect.host))
        .ok_or_else(|| Failure::Bad("server.features returned bad result type".into()))
}

async fn listed_peers(conn: &mut RpcConn, expect: &Expect<'_>) -> Result<Vec<Peer>, Failure> {
    let list = conn.call("server.peers.subscribe", json!([])).await?;
    let bad = || Failure::Bad("bad server.peers.subscribe response".into());
    let items = list.as_array().ok_or_else(bad)?;
    let (tcp, ssl) = expect.default_ports;
    let mut peers = Vec::new();
    for item in items.iter().take(MAX_LISTED) {
        let host = item.get(1).and_then(Value::as_str).ok_or_else(bad)?;
        let details = item.get(2).and_then(Value::as_array).ok_or_else(bad)?;
        let mut name = host.to_string();
        for d in details {
            name.push(' ');
            name.push_str(d.as_str().ok_or_else(bad)?);
        }
        peers.push(Peer::from_real_name(&name, expect.host, tcp, ssl));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    struct Chain;
    impl OurChain for Chain {
        fn height(&self) -> Option<u32> {
            Some(100)
        }
        fn header_hex(&self, height: u32) -> Option<String> {
            Some(format!("{height:0160x}"))
        }
    }

    /// A fake peer answering from `answer(method, params)`.
    fn fake(answer: impl Fn(&str, &Value) -> Value + Send + 'static) -> RpcConn {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(theirs);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let req: Value = serde_json::from_str(&line).unwrap();
                let result = answer(req["method"].as_str().unwrap(), &req["params"]);
                // A notification first: it must be skipped.
                let note = json!({"jsonrpc": "2.0", "method": "server.ping", "params": []});
                let reply = json!({"jsonrpc": "2.0", "id": req["id"], "result": result});
                let text = format!("{note}\n{reply}\n");
                if w.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        RpcConn::new(Box::new(ours), std::time::Duration::from_secs(5))
    }

    fn honest(height: u64, genesis: &'static str) -> impl Fn(&str, &Value) -> Value + Send {
        move |method, params| match method {
            "server.version" => json!(["Fake 1.0", "1.4"]),
            "blockchain.headers.subscribe" => json!({"height": height, "hex": "00"}),
            "blockchain.block.header" => json!(format!("{:0160x}", params[0].as_u64().unwrap())),
            "server.features" => json!({"hosts": {"Peer.example.com": {"tcp_port": 50001}},
                "genesis_hash": genesis, "protocol_max": "1.7", "protocol_min": "1.4"}),
            "server.peers.subscribe" => {
                json!([["1.2.3.4", "other.example.com", ["v1.4", "s", "t"]]])
            }
            _ => Value::Null,
        }
    }

    fn expect() -> Expect<'static> {
        Expect {
            host: "peer.example.com",
            genesis: "ab",
            version_args: json!(["us", ["1.4", "1.7"]]),
            default_ports: (50001, 50002),
        }
    }

    #[tokio::test]
    async fn an_honest_peer_verifies() {
        let mut conn = fake(honest(103, "ab"));
        let v = verify(&mut conn, &expect(), &Chain).await.unwrap();
        assert_eq!(v.server_version, "Fake 1.0");
        assert_eq!(v.features.protocol_max, "1.7");
        assert_eq!(v.peers.len(), 1);
        assert_eq!(
            v.peers[0].real_name(),
            "other.example.com v1.4 s50002 t50001"
        );
        assert_eq!(v.peers[0].source, "peer.example.com");
    }

    #[tokio::test]
    async fn wrong_peers_are_bad() {
        type Answer = Box<dyn Fn(&str, &Value) -> Value + Send>;
        let cases: Vec<(Answer, &str)> = vec![
            (Box::new(honest(100, "cd")), "incorrect genesis hash"),
            (Box::new(honest(106, "ab")), "bad height 106 (ours: 100)"),
            (
                Box::new(|m: &str, p: &Value| match m {
                    "blockchain.block.header" => json!("ff"),
                    _ => honest(100, "ab")(m, p),
                }),
                "differ",
            ),
            (
                Box::new(|m: &str, p: &Value| match m {
                    "server.features" => {
                        json!({"hosts": {"else.example.com": {}}, "genesis_hash": "ab"})
                    }
                    _ => honest(100, "ab")(m, p),
                }),
                "not listed in own hosts list",
            ),
            (
                Box::new(|m: &str, p: &Value| match m {
                    "server.version" => json!("1.4"),
                    _ => honest(100, "ab")(m, p),
                }),
                "bad server.version result",
            ),
            (
                Box::new(|m: &str, p: &Value| match m {
                    "server.peers.subscribe" => json!([["1.2.3.4"]]),
                    _ => honest(100, "ab")(m, p),
                }),
                "bad server.peers.subscribe response",
            ),
        ];
        for (answer, want) in cases {
            let mut conn = fake(answer);
            match verify(&mut conn, &expect(), &Chain).await {
                Err(Failure::Bad(m)) => assert!(m.contains(want), "{m} should contain {want}"),
                other => panic!("expected Bad({want}), got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn errors_and_silence_are_not_bad() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut conn = RpcConn::new(Box::new(ours), std::time::Duration::from_millis(100));
        assert!(matches!(
            verify(&mut conn, &expect(), &Chain).await,
            Err(Failure::Net(_))
        ));
    }
}
