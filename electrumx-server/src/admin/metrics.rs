//! Request metrics and the Prometheus text exposition.
//!
//! Sessions record each request here (a counter, an error counter and a latency histogram
//! per method, under a fixed set of labels so a client cannot grow the label space); the
//! metrics service renders these together with gauges read at scrape time (sync, sessions,
//! mempool, caches, DB, node RPC).

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

pub use electrumx_core::stats::Histogram;

/// The label under which requests for methods not served are counted (a method served is
/// counted under its name): the label set stays fixed whatever clients send.
pub const UNKNOWN_METHOD_LABEL: &str = "unknown";

#[derive(Default)]
struct MethodStats {
    errors: u64,
    latency: Histogram,
}

/// Per-method request counters and latencies.
#[derive(Default)]
pub struct RequestMetrics {
    methods: Mutex<BTreeMap<&'static str, MethodStats>>,
}

impl RequestMetrics {
    /// Records one answered request.
    pub fn record(&self, method: &'static str, elapsed: Duration, error: bool) {
        let mut m = self.methods.lock();
        let s = m.entry(method).or_default();
        s.latency.observe(elapsed);
        if error {
            s.errors += 1;
        }
    }

    /// Requests answered per method since start.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.methods
            .lock()
            .iter()
            .map(|(m, s)| (*m, s.latency.count()))
            .collect()
    }

    /// Writes `electrumx_requests_total`, `electrumx_request_errors_total` and
    /// `electrumx_request_duration_seconds`.
    pub fn render(&self, out: &mut String) {
        let m = self.methods.lock();
        out.push_str("# HELP electrumx_requests_total Requests answered, by method.\n");
        out.push_str("# TYPE electrumx_requests_total counter\n");
        for (method, s) in m.iter() {
            let _ = writeln!(
                out,
                "electrumx_requests_total{{method=\"{method}\"}} {}",
                s.latency.count()
            );
        }
        out.push_str(
            "# HELP electrumx_request_errors_total Requests answered with an error, by method.\n",
        );
        out.push_str("# TYPE electrumx_request_errors_total counter\n");
        for (method, s) in m.iter() {
            let _ = writeln!(
                out,
                "electrumx_request_errors_total{{method=\"{method}\"}} {}",
                s.errors
            );
        }
        out.push_str(
            "# HELP electrumx_request_duration_seconds Time to answer a request, by method.\n",
        );
        out.push_str("# TYPE electrumx_request_duration_seconds histogram\n");
        for (method, s) in m.iter() {
            s.latency.render(
                out,
                "electrumx_request_duration_seconds",
                &format!("method=\"{method}\""),
            );
        }
    }
}

/// Appends one gauge or counter with its HELP and TYPE lines.
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// Appends a labelled family: HELP and TYPE once, then one line per `(labels, value)`.
pub fn metric_family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    series: impl IntoIterator<Item = (String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}
