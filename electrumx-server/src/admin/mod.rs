//! The operator's side: LocalRPC (`electrumx-rpc`), reporting from the session registry,
//! Prometheus metrics, readiness and liveness, and the `metrics://` service that serves
//! them; the sync progress line.

pub mod health;
pub mod local_rpc;
pub mod metrics;
pub mod metrics_service;
pub mod progress;
