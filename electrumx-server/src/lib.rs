//! # electrumx-server
//!
//! The Electrum protocol on top of [`electrumx_core`]: JSON-RPC framing, sessions over TCP, TLS and WebSocket, the
//! methods of protocol 1.4–1.7, subscriptions and notifications. The binary
//! `electrumx-server` wires it to settings; embedders can run [`server::run`] themselves.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod accept;
pub mod cache;
pub mod config;
pub mod cost;
pub mod header_chunks;
pub mod irc;
pub mod jsonrpc;
pub mod local_rpc;
pub mod merkle;
pub mod method;
pub mod methods;
pub mod metrics;
pub mod metrics_service;
pub mod netmask;
pub mod node_calls;
pub mod outgoing;
pub mod peers;
pub mod progress;
pub mod registry;
pub mod server;
pub mod services;
pub mod session;
pub mod state;
pub mod subscriptions;
pub mod transport;
pub mod version;
