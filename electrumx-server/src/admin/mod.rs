//! The operator's side: LocalRPC (`electrumx-rpc`), reporting from the session registry,
//! Prometheus metrics and the `metrics://` service, and the sync progress line.

pub mod local_rpc;
pub mod metrics;
pub mod metrics_service;
pub mod progress;
