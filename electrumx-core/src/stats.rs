//! Small counters shared by the library and the server's metrics: a latency histogram with
//! fixed buckets, and the node client's request statistics.

use std::fmt::Write;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// A latency histogram in Prometheus' sense (fixed buckets, sum and count).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last slot is `+Inf`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let secs = d.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot] += 1;
        self.sum += secs;
        self.count += 1;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observed durations, in seconds.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Writes the `_bucket`, `_sum` and `_count` series of `name` in the Prometheus text
    /// format, with `labels` (e.g. `method="server.ping"`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// What the node client did since start.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DaemonStats {
    /// HTTP exchanges with the node (a batch counts once).
    pub requests: u64,
    /// Exchanges that failed (connection, HTTP or JSON-RPC error, timeout).
    pub errors: u64,
    /// Time per exchange.
    pub latency: Histogram,
    /// The endpoint in use, without credentials.
    pub current_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x", "m=\"a\"");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.0001\"} 1\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.005\"} 2\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"30\"} 2\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count{m=\"a\"} 3\n"));
        let mut plain = String::new();
        h.render(&mut plain, "y", "");
        assert!(plain.contains("y_bucket{le=\"+Inf\"} 3\n"));
        assert!(plain.contains("y_count 3\n"));
    }
}
