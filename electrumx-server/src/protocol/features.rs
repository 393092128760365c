//! What the server announces of itself in `server.features` (and to peers).

use crate::protocol::version::{self, server_version};
use serde_json::{Value, json};

/// `server.features` for services reported as `proto://host:port` on `coin`.
pub fn features_of(report_services: &[String], coin: &electrumx_core::CoinParams) -> Value {
    let mut hosts = serde_json::Map::new();
    for svc in report_services {
        if let Some((proto, rest)) = svc.split_once("://")
            && let Some((host, port)) = rest.rsplit_once(':')
            && let Ok(port) = port.parse::<u16>()
        {
            let key = match proto {
                "tcp" => "tcp_port",
                "ssl" => "ssl_port",
                "ws" => "ws_port",
                "wss" => "wss_port",
                _ => continue,
            };
            let entry = hosts
                .entry(host.to_string())
                .or_insert_with(|| json!({"tcp_port": null, "ssl_port": null}));
            entry[key] = json!(port);
        }
    }
    json!({
        "hosts": hosts,
        "genesis_hash": coin.genesis_hash.to_display_hex(),
        "hash_function": "sha256",
        "server_version": server_version(),
        "protocol_min": version::MIN.to_string(),
        "protocol_max": version::MAX.to_string(),
        "pruning": null,
        "services": report_services,
    })
}
