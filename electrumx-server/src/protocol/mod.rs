//! The wire: JSON-RPC framing and messages, protocol versions and the method table,
//! sessions and their transports (TCP, TLS, WebSocket), the outgoing queue, subscriptions,
//! the PROXY protocol's client addresses,
//! and the cost model and per-address limits that keep a session's demands paid for.

pub mod accept;
pub mod cost;
pub mod features;
pub mod framing;
pub mod jsonrpc;
pub mod method;
pub mod netmask;
pub mod outgoing;
pub mod proxy;
pub mod registry;
pub mod session;
pub mod subscriptions;
pub mod transport;
pub mod version;
