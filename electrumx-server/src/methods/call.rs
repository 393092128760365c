//! A request's arguments, parsed once into typed values: [`Call`] has one variant per
//! method (the script methods share theirs between the 1.4 `scripthash` and the 1.7
//! `scriptpubkey` flavours), and [`Call::parse`] is the only place that reads `params`.

use crate::protocol::jsonrpc::{Params, RpcError, code};
use crate::protocol::method::Method;
use crate::protocol::subscriptions::{Outpoint, ScriptMethod};
use crate::protocol::version::Version;
use electrumx_core::{Hash32, ScriptHash, Txid};
use serde_json::Value;

/// The script a script method is about, and the flavour it was asked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptArg {
    /// The script's hash (given, or computed from the script).
    pub script: ScriptHash,
    /// `scripthash` (up to 1.6) or `scriptpubkey` (1.7): 1.7 wraps lists in objects.
    pub flavour: ScriptMethod,
}

/// A request for one method, with its arguments checked and typed.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `blockchain.block.header`.
    BlockHeader {
        /// The header's height.
        height: u32,
        /// Checkpoint height for a proof; 0 for none.
        cp_height: u32,
    },
    /// `blockchain.block.headers`.
    BlockHeaders {
        /// First header's height.
        start: u32,
        /// Headers asked for (at most a chunk's worth).
        count: u32,
        /// Checkpoint height for a proof of the last one; 0 for none.
        cp_height: u32,
    },
    /// `blockchain.headers.subscribe`.
    HeadersSubscribe,
    /// `blockchain.estimatefee`.
    EstimateFee {
        /// Confirmation target in blocks.
        blocks: u32,
    },
    /// `blockchain.relayfee`.
    RelayFee,
    /// `blockchain.scripthash.get_balance` and `blockchain.scriptpubkey.get_balance`.
    GetBalance(ScriptArg),
    /// `….get_history`.
    GetHistory(ScriptArg),
    /// `….get_mempool`.
    GetMempool(ScriptArg),
    /// `….listunspent`.
    ListUnspent(ScriptArg),
    /// `….subscribe`.
    Subscribe(ScriptArg),
    /// `….unsubscribe`.
    Unsubscribe(ScriptArg),
    /// `blockchain.transaction.get`.
    TransactionGet {
        /// The transaction.
        txid: Txid,
        /// Whether the node's decoded form is asked for.
        verbose: bool,
    },
    /// `blockchain.transaction.broadcast`.
    Broadcast {
        /// The raw transaction.
        raw: Vec<u8>,
    },
    /// `blockchain.transaction.broadcast_package`.
    BroadcastPackage {
        /// The raw transactions, in hex.
        txs: Vec<Value>,
        /// Whether the node's full answer is asked for.
        verbose: bool,
    },
    /// `blockchain.transaction.get_merkle`.
    GetMerkle {
        /// The transaction.
        txid: Txid,
        /// Height of its block.
        height: u32,
    },
    /// `blockchain.transaction.id_from_pos`.
    IdFromPos {
        /// Height of the block.
        height: u32,
        /// Position in the block.
        pos: usize,
        /// Whether a merkle branch is asked for.
        merkle: bool,
    },
    /// `blockchain.transaction.testmempoolaccept`.
    TestMempoolAccept {
        /// The raw transactions, in hex.
        txs: Vec<Value>,
    },
    /// `blockchain.outpoint.get_status` (`subscribe` false) and `.subscribe` (true).
    OutpointStatus {
        /// The output.
        outpoint: Outpoint,
        /// Whether to keep the session informed of changes.
        subscribe: bool,
    },
    /// `blockchain.outpoint.unsubscribe`.
    OutpointUnsubscribe {
        /// The output.
        outpoint: Outpoint,
    },
    /// `mempool.get_fee_histogram`.
    FeeHistogram,
    /// `mempool.get_info`.
    MempoolInfo,
    /// `mempool.recent`.
    MempoolRecent,
    /// `server.add_peer`.
    AddPeer {
        /// The peer's `server.features`.
        features: Value,
    },
    /// `server.banner`.
    Banner,
    /// `server.donation_address`.
    DonationAddress,
    /// `server.features`.
    Features,
    /// `server.peers.subscribe`.
    PeersSubscribe,
    /// `server.ping`; 1.7 may ask for a pong of `pong_len` bytes.
    Ping {
        /// Length of the `data` answered (1.7); `None` before 1.7.
        pong_len: Option<usize>,
    },
    /// `server.version`.
    Version {
        /// The client's name (at most 100 characters kept).
        client_name: Option<String>,
        /// The versions the client speaks, as sent (a string or `[min, max]`).
        protocol_version: Option<Value>,
    },
}

impl Call {
    /// Parses `p` as the arguments of `method` in protocol version `v` (`None` before
    /// `server.version`). Every argument is checked here: names and counts against the
    /// method's, then each value's type and form.
    pub fn parse(method: Method, v: Option<Version>, p: &Params) -> Result<Call, RpcError> {
        use Method::*;
        let name = method.name();
        let script = |flavour| -> Result<ScriptArg, RpcError> {
            Ok(ScriptArg {
                script: match flavour {
                    ScriptMethod::ScriptHash => {
                        p.check(name, &["scripthash"])?;
                        scripthash(p)?
                    }
                    ScriptMethod::ScriptPubKey => {
                        p.check(name, &["spk"])?;
                        ScriptHash::of_script(&hex(p, 0, "spk")?)
                    }
                },
                flavour,
            })
        };
        let (sh, spk) = (ScriptMethod::ScriptHash, ScriptMethod::ScriptPubKey);
        let no_args = |call: Call| p.check(name, &[]).map(|()| call);
        Ok(match method {
            BlockHeader => {
                p.check(name, &["height", "cp_height"])?;
                Call::BlockHeader {
                    height: uint(p, 0, "height", None)?,
                    cp_height: uint(p, 1, "cp_height", Some(0))?,
                }
            }
            BlockHeaders => {
                p.check(name, &["start_height", "count", "cp_height"])?;
                Call::BlockHeaders {
                    start: uint(p, 0, "start_height", None)?,
                    count: uint(p, 1, "count", None)?,
                    cp_height: uint(p, 2, "cp_height", Some(0))?,
                }
            }
            HeadersSubscribe => no_args(Call::HeadersSubscribe)?,
            EstimateFee => {
                p.check(name, &["number", "mode"])?;
                let blocks = uint(p, 0, "number", None)?;
                if let Some(mode) = p.get(1, "mode") {
                    let m = mode.as_str().unwrap_or("").to_ascii_uppercase();
                    if m != "CONSERVATIVE" && m != "ECONOMICAL" {
                        return Err(RpcError::bad_request(format!(
                            "unknown estimatefee mode: {mode}"
                        )));
                    }
                }
                Call::EstimateFee { blocks }
            }
            RelayFee => no_args(Call::RelayFee)?,
            ScriptHashGetBalance => Call::GetBalance(script(sh)?),
            ScriptHashGetHistory => Call::GetHistory(script(sh)?),
            ScriptHashGetMempool => Call::GetMempool(script(sh)?),
            ScriptHashListUnspent => Call::ListUnspent(script(sh)?),
            ScriptHashSubscribe => Call::Subscribe(script(sh)?),
            ScriptHashUnsubscribe => Call::Unsubscribe(script(sh)?),
            ScriptPubKeyGetBalance => Call::GetBalance(script(spk)?),
            ScriptPubKeyGetHistory => Call::GetHistory(script(spk)?),
            ScriptPubKeyGetMempool => Call::GetMempool(script(spk)?),
            ScriptPubKeyListUnspent => Call::ListUnspent(script(spk)?),
            ScriptPubKeySubscribe => Call::Subscribe(script(spk)?),
            ScriptPubKeyUnsubscribe => Call::Unsubscribe(script(spk)?),
            TransactionGet => {
                p.check(name, &["tx_hash", "verbose"])?;
                Call::TransactionGet {
                    txid: txid(p, 0, "tx_hash")?,
                    verbose: boolean(p, 1, "verbose")?,
                }
            }
            TransactionBroadcast => {
                p.check(name, &["raw_tx"])?;
                Call::Broadcast {
                    raw: hex(p, 0, "raw_tx")?,
                }
            }
            TransactionBroadcastPackage => {
                p.check(name, &["raw_txs", "verbose"])?;
                Call::BroadcastPackage {
                    txs: hex_list(p, 0, "raw_txs")?,
                    verbose: boolean(p, 1, "verbose")?,
                }
            }
            TransactionGetMerkle => {
                p.check(name, &["tx_hash", "height"])?;
                Call::GetMerkle {
                    txid: txid(p, 0, "tx_hash")?,
                    height: uint(p, 1, "height", None)?,
                }
            }
            TransactionIdFromPos => {
                p.check(name, &["height", "tx_pos", "merkle"])?;
                Call::IdFromPos {
                    height: uint(p, 0, "height", None)?,
                    pos: uint(p, 1, "tx_pos", None)? as usize,
                    merkle: boolean(p, 2, "merkle")?,
                }
            }
            TransactionTestMempoolAccept => {
                p.check(name, &["raw_txs"])?;
                Call::TestMempoolAccept {
                    txs: hex_list(p, 0, "raw_txs")?,
                }
            }
            OutpointGetStatus | OutpointSubscribe => {
                p.check(name, &["tx_hash", "txout_idx", "spk_hint"])?;
                let outpoint = (txid(p, 0, "tx_hash")?, uint(p, 1, "txout_idx", None)?);
                match p.get(2, "spk_hint") {
                    Some(Value::String(h)) if const_hex::decode(h).is_ok() => {}
                    Some(_) => return Err(RpcError::bad_request("spk_hint must be hex")),
                    None => return Err(missing("spk_hint")),
                }
                Call::OutpointStatus {
                    outpoint,
                    subscribe: method == OutpointSubscribe,
                }
            }
            OutpointUnsubscribe => {
                p.check(name, &["tx_hash", "txout_idx"])?;
                Call::OutpointUnsubscribe {
                    outpoint: (txid(p, 0, "tx_hash")?, uint(p, 1, "txout_idx", None)?),
                }
            }
            MempoolGetFeeHistogram => no_args(Call::FeeHistogram)?,
            MempoolGetInfo => no_args(Call::MempoolInfo)?,
            MempoolRecent => no_args(Call::MempoolRecent)?,
            ServerAddPeer => {
                p.check(name, &["features"])?;
                Call::AddPeer {
                    features: p.get(0, "features").cloned().unwrap_or(Value::Null),
                }
            }
            ServerBanner => no_args(Call::Banner)?,
            ServerDonationAddress => no_args(Call::DonationAddress)?,
            ServerFeatures => no_args(Call::Features)?,
            ServerPeersSubscribe => no_args(Call::PeersSubscribe)?,
            ServerPing if v.is_some_and(|v| v >= Version(1, 7, 0)) => {
                p.check(name, &["pong_len", "data"])?;
                let pong_len = uint(p, 0, "pong_len", Some(0))? as usize;
                if let Some(d) = p.get(1, "data")
                    && !d.is_string()
                {
                    return Err(RpcError::bad_request("data must be a hex string"));
                }
                Call::Ping {
                    pong_len: Some(pong_len),
                }
            }
            ServerPing => no_args(Call::Ping { pong_len: None })?,
            ServerVersion => Call::Version {
                client_name: match p.get(0, "client_name") {
                    Some(Value::String(name)) => Some(name.chars().take(100).collect()),
                    _ => None,
                },
                protocol_version: p.get(1, "protocol_version").cloned(),
            },
        })
    }
}

fn missing(name: &str) -> RpcError {
    RpcError::new(code::INVALID_PARAMS, format!("missing argument \"{name}\""))
}

/// A non-negative integer that fits `u32` (a number, or a decimal string as ElectrumX
/// accepts); `default` when absent, else "missing argument".
fn uint(p: &Params, i: usize, name: &str, default: Option<u32>) -> Result<u32, RpcError> {
    match p.get(i, name) {
        None => default.ok_or_else(|| missing(name)),
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                RpcError::bad_request(format!("{v} should be a non-negative integer"))
            })
        }
    }
}

/// A boolean; false when absent.
fn boolean(p: &Params, i: usize, name: &str) -> Result<bool, RpcError> {
    match p.get(i, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(RpcError::bad_request(format!(
            "\"{name}\" must be a boolean"
        ))),
    }
}

fn string<'a>(p: &'a Params, i: usize, name: &str) -> Result<&'a str, RpcError> {
    match p.get(i, name) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(RpcError::bad_request(format!("{v} should be a string"))),
        None => Err(missing(name)),
    }
}

fn scripthash(p: &Params) -> Result<ScriptHash, RpcError> {
    let s = string(p, 0, "scripthash")?;
    if s.len() != 64 {
        return Err(RpcError::bad_request(format!(
            "{s} is not a valid script hash"
        )));
    }
    ScriptHash::from_hex(s)
        .ok_or_else(|| RpcError::bad_request(format!("{s} is not a valid script hash")))
}

fn txid(p: &Params, i: usize, name: &str) -> Result<Txid, RpcError> {
    let s = string(p, i, name)?;
    if s.len() != 64 {
        return Err(RpcError::bad_request(format!(
            "{s} should be a transaction hash"
        )));
    }
    Hash32::from_display_hex(s)
        .ok_or_else(|| RpcError::bad_request(format!("{s} should be a transaction hash")))
}

fn hex(p: &Params, i: usize, name: &str) -> Result<Vec<u8>, RpcError> {
    let s = string(p, i, name)?;
    const_hex::decode(s).map_err(|_| RpcError::bad_request(format!("{name} is not valid hex")))
}

fn hex_list(p: &Params, i: usize, name: &str) -> Result<Vec<Value>, RpcError> {
    match p.get(i, name) {
        Some(Value::Array(a))
            if !a.is_empty()
                && a.iter()
                    .all(|v| v.as_str().is_some_and(|s| const_hex::decode(s).is_ok())) =>
        {
            Ok(a.clone())
        }
        _ => Err(RpcError::bad_request(format!(
            "{name} must be a non-empty list of hex strings"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(method: Method, params: Value) -> Result<Call, RpcError> {
        let p = match params {
            Value::Array(a) => Params::Positional(a),
            Value::Object(m) => Params::Named(m),
            _ => unreachable!(),
        };
        Call::parse(method, Some(Version(1, 7, 0)), &p)
    }

    #[test]
    fn arguments_are_typed_positional_or_named() {
        assert_eq!(
            parse(Method::BlockHeader, json!([5])).unwrap(),
            Call::BlockHeader {
                height: 5,
                cp_height: 0
            }
        );
        assert_eq!(
            parse(Method::BlockHeader, json!({"height": "7", "cp_height": 9})).unwrap(),
            Call::BlockHeader {
                height: 7,
                cp_height: 9
            }
        );
        let spk = parse(Method::ScriptPubKeyGetBalance, json!(["51"])).unwrap();
        assert_eq!(
            spk,
            Call::GetBalance(ScriptArg {
                script: ScriptHash::of_script(&[0x51]),
                flavour: ScriptMethod::ScriptPubKey
            })
        );
        assert_eq!(
            parse(Method::ServerPing, json!([3])).unwrap(),
            Call::Ping { pong_len: Some(3) }
        );
    }

    #[test]
    fn bad_arguments_are_refused_before_any_work() {
        let e = parse(Method::BlockHeader, json!([-1])).unwrap_err();
        assert_eq!(e.code, code::BAD_REQUEST);
        let e = parse(Method::BlockHeader, json!([])).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        let e = parse(Method::BlockHeader, json!([1, 2, 3])).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        let e = parse(Method::ServerBanner, json!({"x": 1})).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(parse(Method::ScriptHashGetBalance, json!(["00"])).is_err());
        assert!(parse(Method::TransactionGet, json!(["zz".repeat(32)])).is_err());
        assert!(parse(Method::TransactionBroadcastPackage, json!([[]])).is_err());
        assert!(parse(Method::OutpointSubscribe, json!(["00".repeat(32), 0])).is_err());
        assert!(parse(Method::EstimateFee, json!([2, "FAST"])).is_err());
    }
}
