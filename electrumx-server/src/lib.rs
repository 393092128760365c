//! # electrumx-server
//!
//! The Electrum protocol on top of [`electrumx_core`]: JSON-RPC framing, sessions over TCP, TLS and WebSocket, the
//! methods of protocol 1.4–1.7, subscriptions and notifications. The binary
//! `electrumx-server` wires it to settings; embedders can run [`server::run`] themselves.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod config;
pub mod discovery;
pub mod methods;
pub mod protocol;
pub mod server;
pub mod services;
pub mod state;
