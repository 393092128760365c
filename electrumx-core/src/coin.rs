//! Coin and network parameters, named as ElectrumX names them (`COIN`, `NET`).

use crate::hash::BlockHash;
use std::fmt;

/// The coin family, as ElectrumX's `COIN` setting spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coin {
    /// Bitcoin (BTC): segwit and taproot.
    Bitcoin,
    /// Bitcoin SV: no segwit; the CI regtest node is of this kind.
    BitcoinSV,
}

/// The network, as ElectrumX's `NET` setting spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Main network.
    Mainnet,
    /// Testnet 3.
    Testnet,
    /// Testnet 4 (BIP94).
    Testnet4,
    /// Signet (the default signet).
    Signet,
    /// Local regression-test network.
    Regtest,
}

impl Network {
    /// The subdirectory of the node's data directory that holds this network's files
    /// (Bitcoin Core's layout: mainnet at the top, then `testnet3`, `testnet4`, `signet`,
    /// `regtest`).
    pub fn datadir_subdir(&self) -> &'static str {
        match self {
            Network::Mainnet => "",
            Network::Testnet => "testnet3",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }
}

/// Everything the index needs to know about a coin/network pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoinParams {
    /// Coin family.
    pub coin: Coin,
    /// Network.
    pub network: Network,
    /// Genesis block hash.
    pub genesis_hash: BlockHash,
    /// Default JSON-RPC port of the node.
    pub rpc_port: u16,
    /// Default depth of reorgs the index can undo (ElectrumX's `REORG_LIMIT`).
    pub reorg_limit: u32,
    /// Base58 version byte of P2PKH addresses.
    pub p2pkh_version: u8,
    /// Base58 version byte of P2SH addresses.
    pub p2sh_version: u8,
    /// Bech32 human-readable part, where the coin has segwit.
    pub bech32_hrp: Option<&'static str>,
    /// Whether blocks may carry witness data.
    pub segwit: bool,
    /// IRC nick prefix ElectrumX used for this coin (`IRC` advertising).
    pub irc_prefix: &'static str,
    /// IRC channel where servers of this coin advertise: `#electrum` for every Bitcoin
    /// network (the prefix tells networks apart), `#electrum-bsv` for BitcoinSV.
    pub irc_channel: &'static str,
    /// The coin's historical IRC server (ElectrumX's `IRC_SERVER` class attribute).
    pub irc_server: &'static str,
    /// Default Electrum TCP port.
    pub default_tcp_port: u16,
    /// Default Electrum SSL port.
    pub default_ssl_port: u16,
    /// Seed peers for peer discovery, as real names (`host [s[port]] [t[port]]`): ElectrumX's
    /// `PEERS` list for the network.
    pub peers: &'static [&'static str],
    /// Default `BLACKLIST_URL` (ElectrumX's, Bitcoin mainnet only).
    pub blacklist_url: Option<&'static str>,
}

/// ElectrumX 2.0.0's Bitcoin mainnet peers.
const BITCOIN_PEERS: &[&str] = &[
    "electrum.vom-stausee.de s t",
    "electrum.hsmiths.com s t",
    "helicarrier.bauerj.eu s t",
    "electrum.hodlister.co s",
    "electrum3.hodlister.co s",
    "btc.usebsv.com s50006",
    "fortress.qtornado.com s443 t",
    "ecdsa.net s110 t",
    "e2.keff.org s t",
    "currentlane.lovebitco.in s t",
    "electrum.jochen-hoenicke.de s50005 t50003",
    "vps5.hsmiths.com s",
    "electrum.emzy.de s",
    "electrum1.cipig.net t10000 s20000",
    "ulrichard.ch s",
    "hodlers.beer s",
    "5.9.83.108 s",
    "v7gtzf7nua6hdmb2wtqaqioqmesdb4xrlly4zwr7bvayxv2bpg665pqd.onion t",
    "qeqgdlw2ezf3uabook2ny3lztjxxzeyyoqw2k7cempzvqpknbmevhmyd.onion t",
    "kciybn4d4vuqvobdl2kdp3r2rudqbqvsymqwg4jomzft6m6gaibaf6yd.onion t",
    "explorerzydxu5ecjrkwceayqybizmpjjznk5izmitf2modhcusuqlid.onion t110",
    "v7o2hkemnt677k3jxcbosmjjxw3p5khjyu7jwv7orfy6rwtkizbshwqd.onion t57001",
    "nf365b5sbzk5j4jreimskffwnfpka7qtamyni5doohoom3g63o5tldad.onion t",
];

/// ElectrumX 2.0.0's Bitcoin testnet3 peers.
const TESTNET_PEERS: &[&str] = &[
    "testnet.qtornado.com s t",
    "blackie.c3-soft.com s57006 t57005",
    "electrum.blockstream.info t60001 s60002",
    "testnet.aranguren.org s t",
    "v22019051929289916.bestsrv.de s50002 t50001",
    "explorerzydxu5ecjrkwceayqybizmpjjznk5izmitf2modhcusuqlid.onion t143",
    "gsw6sn27quwf6u3swgra6o7lrp5qau6kt3ymuyoxgkth6wntzm2bjwyd.onion s51002 t51001",
    "3tc6nefii2fwoc66dqvrwcyj64dd3r35ihgxvp4u37itsopns5fjtead.onion s50002 t50001",
];

/// ElectrumX 2.0.0's Bitcoin testnet4 peers.
const TESTNET4_PEERS: &[&str] = &[
    "blackie.c3-soft.com s57010 t57009",
    "testnet4-electrumx.wakiyamap.dev",
    "13.212.194.61 s60002 t50001",
    "v22019051929289916.bestsrv.de s60002 t60001",
    "fulcrum.theuplink.net s60002",
    "134.199.227.217 s50002 t50001",
    "bitcoin.stagemole.eu s5010 t5000",
    "testnet4.qtornado.com s51012 t51011",
    "gsw6sn27quwf6u3swgra6o7lrp5qau6kt3ymuyoxgkth6wntzm2bjwyd.onion s52002 t52001",
];

/// ElectrumX 2.0.0's Bitcoin SV mainnet peers.
const BITCOINSV_PEERS: &[&str] = &[
    "electrumx.bitcoinsv.io s",
    "satoshi.vision.cash s",
    "sv.usebsv.com s t",
    "sv.jochen-hoenicke.de s t",
    "sv.satoshi.io s t",
];

const MAINNET_GENESIS: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
const TESTNET_GENESIS: &str = "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943";
const TESTNET4_GENESIS: &str = "00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043";
const SIGNET_GENESIS: &str = "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6";
const REGTEST_GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";

impl Coin {
    /// Parses ElectrumX's `COIN` value (case-insensitive; `BitcoinSegwit` is an old alias).
    pub fn from_name(name: &str) -> Option<Coin> {
        match name.to_ascii_lowercase().as_str() {
            "bitcoin" | "btc" | "bitcoinsegwit" => Some(Coin::Bitcoin),
            "bitcoinsv" | "bsv" => Some(Coin::BitcoinSV),
            _ => None,
        }
    }

    /// The coin's ticker (ElectrumX's `SHORTNAME`): `BTC`, `BSV`.
    pub fn ticker(&self) -> &'static str {
        match self {
            Coin::Bitcoin => "BTC",
            Coin::BitcoinSV => "BSV",
        }
    }

    /// ElectrumX's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Coin::Bitcoin => "Bitcoin",
            Coin::BitcoinSV => "BitcoinSV",
        }
    }
}

impl Network {
    /// Parses ElectrumX's `NET` value (case-insensitive; `testnet3` accepted too).
    pub fn from_name(name: &str) -> Option<Network> {
        match name.to_ascii_lowercase().as_str() {
            "mainnet" | "main" => Some(Network::Mainnet),
            "testnet" | "testnet3" | "test" => Some(Network::Testnet),
            "testnet4" => Some(Network::Testnet4),
            "signet" => Some(Network::Signet),
            "regtest" => Some(Network::Regtest),
            _ => None,
        }
    }

    /// ElectrumX's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Testnet4 => "testnet4",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }
}

impl fmt::Display for CoinParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.coin.name(), self.network.name())
    }
}

impl CoinParams {
    /// The output script an address of this coin pays to: base58 P2PKH/P2SH with this
    /// network's version bytes, or bech32/bech32m segwit with its human-readable part.
    /// `None` if `address` is not a valid address of this network.
    pub fn address_script(&self, address: &str) -> Option<Vec<u8>> {
        if let Ok(data) = bitcoin::base58::decode_check(address)
            && data.len() == 21
        {
            let hash = &data[1..];
            return if data[0] == self.p2pkh_version {
                let mut s = vec![0x76, 0xa9, 0x14];
                s.extend_from_slice(hash);
                s.extend_from_slice(&[0x88, 0xac]);
                Some(s)
            } else if data[0] == self.p2sh_version {
                let mut s = vec![0xa9, 0x14];
                s.extend_from_slice(hash);
                s.push(0x87);
                Some(s)
            } else {
                None
            };
        }
        let hrp = self.bech32_hrp?;
        let (got_hrp, version, program) = bitcoin::bech32::segwit::decode(address).ok()?;
        if !got_hrp.as_str().eq_ignore_ascii_case(hrp) {
            return None;
        }
        let v = version.to_u8();
        let mut s = Vec::with_capacity(program.len() + 2);
        s.push(if v == 0 { 0 } else { 0x50 + v });
        s.push(program.len() as u8);
        s.extend_from_slice(&program);
        Some(s)
    }

    /// Parameters for a `COIN`/`NET` pair given by name; `None` names the unsupported part.
    pub fn from_names(coin: &str, net: &str) -> Result<CoinParams, crate::SettingError> {
        use crate::SettingError;
        let c = Coin::from_name(coin).ok_or_else(|| SettingError::UnknownCoin(coin.into()))?;
        let n = Network::from_name(net).ok_or_else(|| SettingError::UnknownNetwork(net.into()))?;
        CoinParams::new(c, n).ok_or(SettingError::NoSuchNetwork {
            coin: c.name(),
            network: n.name(),
        })
    }

    /// Parameters for a coin/network pair, if that pair exists.
    pub fn new(coin: Coin, network: Network) -> Option<CoinParams> {
        let hash = |s: &str| BlockHash::from_display_hex(s).expect("valid genesis constant");
        let p = match (coin, network) {
            (Coin::Bitcoin, Network::Mainnet) => CoinParams {
                coin,
                network,
                genesis_hash: hash(MAINNET_GENESIS),
                rpc_port: 8332,
                reorg_limit: 200,
                p2pkh_version: 0x00,
                p2sh_version: 0x05,
                bech32_hrp: Some("bc"),
                segwit: true,
                irc_prefix: "E_",
                irc_channel: "#electrum",
                irc_server: "irc.freenode.net",
                default_tcp_port: 50001,
                default_ssl_port: 50002,
                peers: BITCOIN_PEERS,
                blacklist_url: Some("https://electrum.org/blacklist.json"),
            },
            (Coin::Bitcoin, Network::Testnet) => CoinParams {
                genesis_hash: hash(TESTNET_GENESIS),
                rpc_port: 18332,
                reorg_limit: 8000,
                p2pkh_version: 0x6f,
                p2sh_version: 0xc4,
                bech32_hrp: Some("tb"),
                irc_prefix: "ET_",
                default_tcp_port: 51001,
                default_ssl_port: 51002,
                peers: TESTNET_PEERS,
                blacklist_url: None,
                ..CoinParams::new(Coin::Bitcoin, Network::Mainnet)?
            }
            .with(coin, network),
            (Coin::Bitcoin, Network::Testnet4) => CoinParams {
                genesis_hash: hash(TESTNET4_GENESIS),
                rpc_port: 48332,
                peers: TESTNET4_PEERS,
                ..CoinParams::new(Coin::Bitcoin, Network::Testnet)?
            }
            .with(coin, network),
            (Coin::Bitcoin, Network::Signet) => CoinParams {
                genesis_hash: hash(SIGNET_GENESIS),
                rpc_port: 38332,
                peers: &[],
                ..CoinParams::new(Coin::Bitcoin, Network::Testnet)?
            }
            .with(coin, network),
            (Coin::Bitcoin, Network::Regtest) => CoinParams {
                genesis_hash: hash(REGTEST_GENESIS),
                rpc_port: 18443,
                bech32_hrp: Some("bcrt"),
                irc_prefix: "ER_",
                default_tcp_port: 51001,
                default_ssl_port: 51002,
                peers: &[],
                ..CoinParams::new(Coin::Bitcoin, Network::Testnet)?
            }
            .with(coin, network),
            (Coin::BitcoinSV, Network::Mainnet) => CoinParams {
                bech32_hrp: None,
                segwit: false,
                irc_prefix: "EB_",
                irc_channel: "#electrum-bsv",
                peers: BITCOINSV_PEERS,
                blacklist_url: None,
                ..CoinParams::new(Coin::Bitcoin, Network::Mainnet)?
            }
            .with(coin, network),
            (Coin::BitcoinSV, Network::Regtest) => CoinParams {
                bech32_hrp: None,
                segwit: false,
                rpc_port: 18332,
                irc_channel: "#electrum-bsv",
                ..CoinParams::new(Coin::Bitcoin, Network::Regtest)?
            }
            .with(coin, network),
            (Coin::BitcoinSV, _) => return None,
        };
        Some(p)
    }

    fn with(mut self, coin: Coin, network: Network) -> Self {
        self.coin = coin;
        self.network = network;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_to_their_scripts() {
        let m = CoinParams::from_names("Bitcoin", "mainnet").unwrap();
        // The genesis coinbase's owner, as P2PKH.
        let p2pkh = m
            .address_script("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")
            .unwrap();
        assert_eq!(
            const_hex::encode(&p2pkh),
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"
        );
        let p2sh = m
            .address_script("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy")
            .unwrap();
        assert_eq!(p2sh.len(), 23);
        assert_eq!((p2sh[0], p2sh[22]), (0xa9, 0x87));
        // BIP-173 / BIP-350 vectors.
        let v0 = m
            .address_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
            .unwrap();
        assert_eq!(
            const_hex::encode(&v0),
            "0014751e76e8199196d454941c45d1b3a323f1433bd6"
        );
        let v1 = m
            .address_script("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0")
            .unwrap();
        assert_eq!(v1[0], 0x51);
        assert_eq!(v1.len(), 34);
        // Wrong network, wrong checksum, garbage.
        assert!(
            m.address_script("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn")
                .is_none()
        );
        assert!(
            m.address_script("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb")
                .is_none()
        );
        assert!(
            m.address_script("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx")
                .is_none()
        );
        assert!(m.address_script("not an address").is_none());
        let t = CoinParams::from_names("BitcoinSV", "regtest").unwrap();
        assert!(
            t.address_script("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn")
                .is_some()
        );
    }

    #[test]
    fn electrumx_names_resolve() {
        let p = CoinParams::from_names("BitcoinSV", "regtest").unwrap();
        assert_eq!(p.coin, Coin::BitcoinSV);
        assert_eq!(p.network, Network::Regtest);
        assert_eq!(p.genesis_hash.to_display_hex(), REGTEST_GENESIS);
        assert!(!p.segwit);
        assert_eq!((p.irc_prefix, p.irc_channel), ("ER_", "#electrum-bsv"));
        let m = CoinParams::from_names("bitcoin", "mainnet").unwrap();
        assert_eq!(m.rpc_port, 8332);
        assert_eq!(m.reorg_limit, 200);
        assert_eq!((m.irc_prefix, m.irc_channel), ("E_", "#electrum"));
        assert_eq!(m.irc_server, "irc.freenode.net");
        assert!(
            CoinParams::from_names("Dogecoin", "mainnet")
                .unwrap_err()
                .to_string()
                .contains("COIN")
        );
        assert!(
            CoinParams::from_names("Bitcoin", "moon")
                .unwrap_err()
                .to_string()
                .contains("NET")
        );
        assert!(CoinParams::from_names("BitcoinSV", "signet").is_err());
        assert!(m.peers.contains(&"ecdsa.net s110 t"));
        assert!(m.blacklist_url.is_some());
        assert!(p.peers.is_empty() && p.blacklist_url.is_none());
        let t = CoinParams::from_names("Bitcoin", "testnet").unwrap();
        assert!(!t.peers.is_empty() && t.blacklist_url.is_none());
        for net in ["mainnet", "testnet", "testnet4", "signet", "regtest"] {
            assert_eq!(
                CoinParams::from_names("Bitcoin", net)
                    .unwrap()
                    .network
                    .name(),
                net
            );
        }
    }
}
