//! The Electrum methods served, in one table: each method's wire name, its base price in
//! the cost model, and the protocol versions that have it. The metrics' labels, the cost
//! model, the version checks before dispatch and the property tests all read it.

use crate::version::Version;

/// A method of the Electrum protocol that the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // Each variant is its wire name, in `Method::spec`.
pub enum Method {
    BlockHeader,
    BlockHeaders,
    EstimateFee,
    HeadersSubscribe,
    OutpointGetStatus,
    OutpointSubscribe,
    OutpointUnsubscribe,
    RelayFee,
    ScriptHashGetBalance,
    ScriptHashGetHistory,
    ScriptHashGetMempool,
    ScriptHashListUnspent,
    ScriptHashSubscribe,
    ScriptHashUnsubscribe,
    ScriptPubKeyGetBalance,
    ScriptPubKeyGetHistory,
    ScriptPubKeyGetMempool,
    ScriptPubKeyListUnspent,
    ScriptPubKeySubscribe,
    ScriptPubKeyUnsubscribe,
    TransactionBroadcast,
    TransactionBroadcastPackage,
    TransactionGet,
    TransactionGetMerkle,
    TransactionIdFromPos,
    TransactionTestMempoolAccept,
    MempoolGetFeeHistogram,
    MempoolGetInfo,
    MempoolRecent,
    ServerAddPeer,
    ServerBanner,
    ServerDonationAddress,
    ServerFeatures,
    ServerPeersSubscribe,
    ServerPing,
    ServerVersion,
}

/// What the table says of a method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spec {
    /// The JSON-RPC method name.
    pub name: &'static str,
    /// Base price in the cost model (ElectrumX 2.0's; what depends on the size of the
    /// work or the answer is charged on top).
    pub cost: f64,
    /// First protocol version that has it.
    pub since: Version,
    /// First protocol version that no longer has it.
    pub until: Option<Version>,
}

const V14: Version = Version(1, 4, 0);
const V142: Version = Version(1, 4, 2);
const V16: Version = Version(1, 6, 0);
const V17: Version = Version(1, 7, 0);

const fn spec(name: &'static str, cost: f64, since: Version, until: Option<Version>) -> Spec {
    Spec {
        name,
        cost,
        since,
        until,
    }
}

impl Method {
    /// Every method, in the table's order.
    pub const ALL: [Method; 36] = [
        Method::BlockHeader,
        Method::BlockHeaders,
        Method::EstimateFee,
        Method::HeadersSubscribe,
        Method::OutpointGetStatus,
        Method::OutpointSubscribe,
        Method::OutpointUnsubscribe,
        Method::RelayFee,
        Method::ScriptHashGetBalance,
        Method::ScriptHashGetHistory,
        Method::ScriptHashGetMempool,
        Method::ScriptHashListUnspent,
        Method::ScriptHashSubscribe,
        Method::ScriptHashUnsubscribe,
        Method::ScriptPubKeyGetBalance,
        Method::ScriptPubKeyGetHistory,
        Method::ScriptPubKeyGetMempool,
        Method::ScriptPubKeyListUnspent,
        Method::ScriptPubKeySubscribe,
        Method::ScriptPubKeyUnsubscribe,
        Method::TransactionBroadcast,
        Method::TransactionBroadcastPackage,
        Method::TransactionGet,
        Method::TransactionGetMerkle,
        Method::TransactionIdFromPos,
        Method::TransactionTestMempoolAccept,
        Method::MempoolGetFeeHistogram,
        Method::MempoolGetInfo,
        Method::MempoolRecent,
        Method::ServerAddPeer,
        Method::ServerBanner,
        Method::ServerDonationAddress,
        Method::ServerFeatures,
        Method::ServerPeersSubscribe,
        Method::ServerPing,
        Method::ServerVersion,
    ];

    /// The method's name, price and versions.
    pub const fn spec(self) -> Spec {
        use Method::*;
        match self {
            BlockHeader => spec("blockchain.block.header", 0.25, V14, None),
            BlockHeaders => spec("blockchain.block.headers", 1.0, V14, None),
            EstimateFee => spec("blockchain.estimatefee", 0.1, V14, None),
            HeadersSubscribe => spec("blockchain.headers.subscribe", 0.25, V14, None),
            OutpointGetStatus => spec("blockchain.outpoint.get_status", 0.2, V17, None),
            OutpointSubscribe => spec("blockchain.outpoint.subscribe", 0.2, V17, None),
            OutpointUnsubscribe => spec("blockchain.outpoint.unsubscribe", 0.1, V17, None),
            RelayFee => spec("blockchain.relayfee", 1.0, V14, Some(V16)),
            ScriptHashGetBalance => spec("blockchain.scripthash.get_balance", 1.0, V14, Some(V17)),
            ScriptHashGetHistory => spec("blockchain.scripthash.get_history", 0.2, V14, Some(V17)),
            ScriptHashGetMempool => spec("blockchain.scripthash.get_mempool", 0.25, V14, Some(V17)),
            ScriptHashListUnspent => spec("blockchain.scripthash.listunspent", 1.0, V14, Some(V17)),
            ScriptHashSubscribe => spec("blockchain.scripthash.subscribe", 1.0, V14, Some(V17)),
            ScriptHashUnsubscribe => {
                spec("blockchain.scripthash.unsubscribe", 0.1, V142, Some(V17))
            }
            ScriptPubKeyGetBalance => spec("blockchain.scriptpubkey.get_balance", 1.0, V17, None),
            ScriptPubKeyGetHistory => spec("blockchain.scriptpubkey.get_history", 0.2, V17, None),
            ScriptPubKeyGetMempool => spec("blockchain.scriptpubkey.get_mempool", 0.25, V17, None),
            ScriptPubKeyListUnspent => spec("blockchain.scriptpubkey.listunspent", 1.0, V17, None),
            ScriptPubKeySubscribe => spec("blockchain.scriptpubkey.subscribe", 1.0, V17, None),
            ScriptPubKeyUnsubscribe => spec("blockchain.scriptpubkey.unsubscribe", 0.1, V17, None),
            TransactionBroadcast => spec("blockchain.transaction.broadcast", 0.25, V14, None),
            TransactionBroadcastPackage => {
                spec("blockchain.transaction.broadcast_package", 1.0, V16, None)
            }
            TransactionGet => spec("blockchain.transaction.get", 1.0, V14, None),
            TransactionGetMerkle => spec("blockchain.transaction.get_merkle", 0.25, V14, None),
            TransactionIdFromPos => spec("blockchain.transaction.id_from_pos", 0.25, V14, None),
            TransactionTestMempoolAccept => {
                spec("blockchain.transaction.testmempoolaccept", 1.0, V17, None)
            }
            MempoolGetFeeHistogram => spec("mempool.get_fee_histogram", 1.0, V14, None),
            MempoolGetInfo => spec("mempool.get_info", 1.0, V16, None),
            MempoolRecent => spec("mempool.recent", 1.0, V17, None),
            ServerAddPeer => spec("server.add_peer", 100.0, V14, None),
            ServerBanner => spec("server.banner", 0.5, V14, None),
            ServerDonationAddress => spec("server.donation_address", 0.1, V14, None),
            ServerFeatures => spec("server.features", 0.2, V14, None),
            ServerPeersSubscribe => spec("server.peers.subscribe", 1.0, V14, None),
            ServerPing => spec("server.ping", 0.1, V14, None),
            ServerVersion => spec("server.version", 0.5, V14, None),
        }
    }

    /// The method named `name`, if served at all.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.spec().name == name)
    }

    /// Its wire name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Its base price in the cost model.
    pub fn cost(self) -> f64 {
        self.spec().cost
    }

    /// Whether protocol version `v` has it.
    pub fn available_in(self, v: Version) -> bool {
        let s = self.spec();
        v >= s.since && s.until.is_none_or(|u| v < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
        }
        let mut names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Method::ALL.len());
        assert_eq!(Method::from_name("no.such.method"), None);
    }

    #[test]
    fn versions_follow_the_protocol() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(Method::RelayFee.available_in(v("1.4")));
        assert!(!Method::RelayFee.available_in(v("1.6")));
        assert!(Method::MempoolGetInfo.available_in(v("1.6")));
        assert!(!Method::MempoolGetInfo.available_in(v("1.4")));
        assert!(!Method::ScriptHashUnsubscribe.available_in(v("1.4.1")));
        assert!(Method::ScriptHashUnsubscribe.available_in(v("1.4.2")));
        assert!(!Method::ScriptHashSubscribe.available_in(v("1.7")));
        assert!(Method::ScriptPubKeySubscribe.available_in(v("1.7")));
        assert!(Method::OutpointSubscribe.available_in(v("1.7")));
        assert!(!Method::OutpointSubscribe.available_in(v("1.6")));
    }
}
