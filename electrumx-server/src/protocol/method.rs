//! The Electrum methods served, in one table: each method's wire name, its base price in
//! the cost model, and the protocol versions that have it. A request's method is looked up
//! here once; its cost, its metrics label, the version check before dispatch and the
//! property tests all read the same entry. Typed arguments are `methods::Call`'s.

use crate::protocol::version::Version;

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

/// Declares [`Method`] from the table: its variants, [`Method::ALL`], [`Method::spec`] and
/// [`Method::from_name`] (a `match` on the name, compiled to a decision tree) all come from
/// the one list below.
macro_rules! method_table {
    ($($variant:ident => $name:literal, $cost:expr, $since:expr, $until:expr;)*) => {
        /// A method of the Electrum protocol that the server answers.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Method {
            /// Every method, in the table's order.
            pub const ALL: &'static [Method] = &[$(Method::$variant),*];

            /// The method's name, price and versions.
            pub const fn spec(self) -> Spec {
                match self {
                    $(Method::$variant => Spec { name: $name, cost: $cost, since: $since, until: $until },)*
                }
            }

            /// The method named `name`, if served at all.
            pub fn from_name(name: &str) -> Option<Method> {
                match name {
                    $($name => Some(Method::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

method_table! {
    BlockHeader => "blockchain.block.header", 0.25, V14, None;
    BlockHeaders => "blockchain.block.headers", 1.0, V14, None;
    EstimateFee => "blockchain.estimatefee", 0.1, V14, None;
    HeadersSubscribe => "blockchain.headers.subscribe", 0.25, V14, None;
    OutpointGetStatus => "blockchain.outpoint.get_status", 0.2, V17, None;
    OutpointSubscribe => "blockchain.outpoint.subscribe", 0.2, V17, None;
    OutpointUnsubscribe => "blockchain.outpoint.unsubscribe", 0.1, V17, None;
    RelayFee => "blockchain.relayfee", 1.0, V14, Some(V16);
    ScriptHashGetBalance => "blockchain.scripthash.get_balance", 1.0, V14, Some(V17);
    ScriptHashGetHistory => "blockchain.scripthash.get_history", 0.2, V14, Some(V17);
    ScriptHashGetMempool => "blockchain.scripthash.get_mempool", 0.25, V14, Some(V17);
    ScriptHashListUnspent => "blockchain.scripthash.listunspent", 1.0, V14, Some(V17);
    ScriptHashSubscribe => "blockchain.scripthash.subscribe", 1.0, V14, Some(V17);
    ScriptHashUnsubscribe => "blockchain.scripthash.unsubscribe", 0.1, V142, Some(V17);
    ScriptPubKeyGetBalance => "blockchain.scriptpubkey.get_balance", 1.0, V17, None;
    ScriptPubKeyGetHistory => "blockchain.scriptpubkey.get_history", 0.2, V17, None;
    ScriptPubKeyGetMempool => "blockchain.scriptpubkey.get_mempool", 0.25, V17, None;
    ScriptPubKeyListUnspent => "blockchain.scriptpubkey.listunspent", 1.0, V17, None;
    ScriptPubKeySubscribe => "blockchain.scriptpubkey.subscribe", 1.0, V17, None;
    ScriptPubKeyUnsubscribe => "blockchain.scriptpubkey.unsubscribe", 0.1, V17, None;
    TransactionBroadcast => "blockchain.transaction.broadcast", 0.25, V14, None;
    TransactionBroadcastPackage => "blockchain.transaction.broadcast_package", 1.0, V16, None;
    TransactionGet => "blockchain.transaction.get", 1.0, V14, None;
    TransactionGetMerkle => "blockchain.transaction.get_merkle", 0.25, V14, None;
    TransactionIdFromPos => "blockchain.transaction.id_from_pos", 0.25, V14, None;
    TransactionTestMempoolAccept => "blockchain.transaction.testmempoolaccept", 1.0, V17, None;
    MempoolGetFeeHistogram => "mempool.get_fee_histogram", 1.0, V14, None;
    MempoolGetInfo => "mempool.get_info", 1.0, V16, None;
    MempoolRecent => "mempool.recent", 1.0, V17, None;
    ServerAddPeer => "server.add_peer", 100.0, V14, None;
    ServerBanner => "server.banner", 0.5, V14, None;
    ServerDonationAddress => "server.donation_address", 0.1, V14, None;
    ServerFeatures => "server.features", 0.2, V14, None;
    ServerPeersSubscribe => "server.peers.subscribe", 1.0, V14, None;
    ServerPing => "server.ping", 0.1, V14, None;
    ServerVersion => "server.version", 0.5, V14, None;
}

impl Method {
    /// Its wire name (also its label in metrics).
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
        for &m in Method::ALL {
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
