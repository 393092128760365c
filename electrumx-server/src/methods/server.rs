//! The `server.*` methods: version negotiation, banner, donation address, features, peers,
//! ping.

use super::{After, Answer, SessionCtx};
use crate::protocol::features::features_of;
use crate::protocol::jsonrpc::RpcError;
use crate::protocol::version::{self, Version, server_version};
use crate::state::ServerState;
use serde_json::{Value, json};

/// `server.version`: negotiates the protocol version (once per session); clients named by
/// `DROP_CLIENT`, and versions out of range, are answered with an error and disconnected.
pub fn version(
    state: &ServerState,
    ctx: &mut SessionCtx,
    client_name: Option<String>,
    protocol_version: Option<Value>,
) -> (Answer, After) {
    if ctx.version.is_some() {
        let e = RpcError::bad_request("server.version already sent");
        return (Err(e), After::Continue);
    }
    if let Some(name) = client_name {
        ctx.client_name = name;
    }
    if let Some(re) = &state.drop_client
        && re.is_match(&ctx.client_name)
    {
        let msg = format!("unsupported client: {}", ctx.client_name);
        return (Err(RpcError::bad_request(msg)), After::Disconnect);
    }
    match version::negotiate(protocol_version.as_ref()) {
        Some(v) => {
            ctx.version = Some(v);
            let answer = json!([server_version(), v.to_string()]);
            (Ok(answer.into()), After::Continue)
        }
        None => {
            let asked = protocol_version.map(|v| v.to_string()).unwrap_or_default();
            let e = RpcError::bad_request(format!("unsupported protocol version: {asked}"));
            (Err(e), After::Disconnect)
        }
    }
}

/// `server.banner`.
pub fn banner(state: &ServerState) -> Answer {
    Ok(json!(state.identity.banner()).into())
}

/// `server.donation_address`.
pub fn donation_address(state: &ServerState) -> Answer {
    Ok(json!(state.identity.donation_address).into())
}

/// `server.features` (1.7 drops `hash_function`).
pub fn features(state: &ServerState, v: Version) -> Answer {
    let mut f = features_of(&state.identity.report_services, &state.coin);
    if v >= Version(1, 7, 0)
        && let Some(o) = f.as_object_mut()
    {
        o.remove("hash_function");
    }
    Ok(f.into())
}

/// `server.peers.subscribe`: the peers known good.
pub fn peers_subscribe(state: &ServerState, ctx: &SessionCtx) -> Answer {
    Ok(state.peers.subscribe_result(ctx.remote).into())
}

/// `server.add_peer`: a peer announcing itself (checked before it is believed).
pub async fn add_peer(state: &ServerState, ctx: &SessionCtx, features: Value) -> Answer {
    Ok(json!(state.peers.add_peer(&features, ctx.remote).await).into())
}

/// `server.ping`: `null`, or in 1.7 a pong of `pong_len` zeros (at most `MAX_SEND`).
pub fn ping(state: &ServerState, pong_len: Option<usize>) -> Answer {
    match pong_len {
        None => Ok(Value::Null.into()),
        Some(n) if n > state.limits.max_send => {
            Err(RpcError::bad_request("pong_len value too high"))
        }
        Some(n) => Ok(json!({"data": "0".repeat(n)}).into()),
    }
}
