//! The `metrics://` service: Prometheus' text format on `GET /metrics` over plain HTTP/1.1.
//!
//! Everything is read at scrape time from the controller, the server state and the node
//! client; nothing here keeps its own copy. One request per connection, answered and closed.

use crate::admin::local_rpc::AdminContext;
use crate::admin::metrics::{metric, metric_family};
use crate::services::Protocol;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Longest request head accepted.
const MAX_HEAD: usize = 8192;

/// Serves scrapes on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, ctx: Arc<AdminContext>, shutdown: CancellationToken) {
    crate::protocol::accept::accept_each(listener, "metrics", shutdown, move |stream, _| {
        let ctx = ctx.clone();
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &ctx)).await;
        }
    })
    .await;
}

async fn answer(mut stream: TcpStream, ctx: &AdminContext) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head_complete(&head) {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
    }
    match route(&head) {
        Route::Metrics { head_only } => {
            let body = if head_only {
                String::new()
            } else {
                render(ctx).await
            };
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        Route::Health { head_only } => {
            let report = ctx.state.health.report(&ctx.controller.status().borrow());
            let status = if report.ready {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let mut body = report.body.to_string();
            body.push('\n');
            let body = if head_only { String::new() } else { body };
            respond(&mut stream, status, "application/json", &body).await
        }
        Route::Live { head_only } => {
            let body = if head_only {
                ""
            } else {
                "{\"state\":\"alive\"}\n"
            };
            respond(&mut stream, "200 OK", "application/json", body).await
        }
        Route::Index => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain",
                "electrumx-rs: /metrics, /health (readiness), /health/live (liveness)\n",
            )
            .await
        }
        Route::MethodNotAllowed => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
            )
            .await
        }
        Route::NotFound => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
}

/// Whether `head` holds a whole request head (a blank line ends it).
fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// What an HTTP request asks of the metrics service.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (`HEAD`: the headers only).
    Metrics { head_only: bool },
    /// `GET /health`: readiness (200 ready, 503 not, a JSON body saying why).
    Health { head_only: bool },
    /// `GET /health/live`: liveness (200 while the process answers).
    Live { head_only: bool },
    /// `GET /`.
    Index,
    /// Any method but `GET` and `HEAD`.
    MethodNotAllowed,
    /// Any other path.
    NotFound,
}

/// Routes a request by its head (the request line and headers; any bytes).
fn route(head: &[u8]) -> Route {
    let text = String::from_utf8_lossy(head);
    let mut parts = text.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return Route::MethodNotAllowed;
    }
    match target.split('?').next().unwrap_or("") {
        "/metrics" => Route::Metrics {
            head_only: method == "HEAD",
        },
        "/health" | "/health/ready" => Route::Health {
            head_only: method == "HEAD",
        },
        "/health/live" => Route::Live {
            head_only: method == "HEAD",
        },
        "/" => Route::Index,
        _ => Route::NotFound,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The whole exposition.
pub async fn render(ctx: &AdminContext) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let st = &ctx.state;
    let status = ctx.controller.status().borrow().clone();
    let p = ctx.controller.progress();

    let _ = writeln!(
        out,
        "# HELP electrumx_build_info Version and coin of this server.\n# TYPE electrumx_build_info gauge\nelectrumx_build_info{{version=\"{}\",coin=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        st.coin
    );
    metric(
        &mut out,
        "electrumx_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        st.sessions.uptime().as_secs(),
    );
    if let Some(rss) = resident_bytes() {
        metric(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process.",
            rss,
        );
    }

    // Sync.
    let processed = p.blocks.saturating_sub(1);
    metric(
        &mut out,
        "electrumx_db_height",
        "gauge",
        "Height of the committed index tip.",
        status.height.map_or(-1, i64::from),
    );
    metric(
        &mut out,
        "electrumx_processed_height",
        "gauge",
        "Height the block processor has applied (possibly not yet flushed).",
        processed,
    );
    metric(
        &mut out,
        "electrumx_daemon_height",
        "gauge",
        "The node's height as last seen.",
        status.daemon_height.map_or(-1, i64::from),
    );
    metric(
        &mut out,
        "electrumx_sync_lag_blocks",
        "gauge",
        "Blocks the index is behind the node.",
        p.daemon_height.saturating_sub(processed),
    );
    metric(
        &mut out,
        "electrumx_caught_up",
        "gauge",
        "1 once the index has caught up with the node.",
        u8::from(status.caught_up),
    );
    metric(
        &mut out,
        "electrumx_indexed_blocks_total",
        "counter",
        "Blocks indexed since start.",
        p.blocks_this_run,
    );
    metric(
        &mut out,
        "electrumx_indexed_txs_total",
        "counter",
        "Transactions indexed since start.",
        p.txs_this_run,
    );
    metric(
        &mut out,
        "electrumx_db_txs",
        "gauge",
        "Transactions in the index.",
        p.txs,
    );
    metric(
        &mut out,
        "electrumx_sync_cache_bytes",
        "gauge",
        "Bytes held in the sync caches.",
        p.cache_bytes,
    );
    metric(
        &mut out,
        "electrumx_flushes_total",
        "counter",
        "Flushes of the sync caches since start.",
        p.flushes,
    );
    metric(
        &mut out,
        "electrumx_reorgs_total",
        "counter",
        "Chain reorganisations handled since start.",
        p.reorgs,
    );

    // Database.
    let controller = ctx.controller.clone();
    if let Ok(stats) = tokio::task::spawn_blocking(move || controller.db_stats()).await {
        let (size, cfs) = (stats.disk_bytes, stats.column_families);
        metric(
            &mut out,
            "electrumx_db_size_bytes",
            "gauge",
            "Size of the database directory.",
            size,
        );
        metric_family(
            &mut out,
            "electrumx_db_sst_bytes",
            "gauge",
            "SST bytes by column family.",
            cfs.iter()
                .map(|c| (format!("cf=\"{}\"", c.name), c.sst_bytes)),
        );
    }

    // Sessions and requests.
    let sessions = st.sessions.list();
    let by_transport = [Protocol::Tcp, Protocol::Ssl, Protocol::Ws, Protocol::Wss].map(|proto| {
        let n = sessions.iter().filter(|s| s.protocol == proto).count();
        (format!("transport=\"{}\"", proto.name()), n)
    });
    metric_family(
        &mut out,
        "electrumx_sessions",
        "gauge",
        "Connected client sessions by transport.",
        by_transport,
    );
    metric(
        &mut out,
        "electrumx_sessions_accepted_total",
        "counter",
        "Client sessions accepted since start.",
        st.sessions.accepted(),
    );
    let (mut sh, mut txo) = (0, 0);
    for s in &sessions {
        let (a, b) = s.counters.subscription_counts();
        sh += a;
        txo += b;
    }
    metric_family(
        &mut out,
        "electrumx_subscriptions",
        "gauge",
        "Subscriptions by kind.",
        [
            ("kind=\"script\"".to_string(), sh),
            ("kind=\"outpoint\"".to_string(), txo),
        ],
    );
    let pending: u64 = sessions
        .iter()
        .map(|s| s.counters.pending.load(Ordering::Relaxed))
        .sum();
    metric(
        &mut out,
        "electrumx_requests_in_flight",
        "gauge",
        "Requests being answered.",
        pending,
    );
    metric(
        &mut out,
        "electrumx_txs_sent_total",
        "counter",
        "Transactions broadcast for clients.",
        st.sessions.txs_sent(),
    );
    st.requests.render(&mut out);

    // Mempool.
    let mp = st.mempool.info();
    metric(
        &mut out,
        "electrumx_mempool_txs",
        "gauge",
        "Transactions in the mempool mirror.",
        mp.count,
    );
    metric(
        &mut out,
        "electrumx_mempool_vsize_bytes",
        "gauge",
        "Virtual size of the mempool mirror.",
        mp.vsize,
    );
    metric(
        &mut out,
        "electrumx_mempool_fees_sats",
        "gauge",
        "Fees of the mempool mirror, in satoshis.",
        mp.fees,
    );

    // Caches.
    let caches = [
        ("history", st.script_cache.stats()),
        ("utxos", st.script_cache.utxo_stats()),
        ("balance", st.script_cache.balance_stats()),
        ("merkle", st.merkle_cache.stats()),
        ("headers", st.header_chunks.stats()),
        ("tx", st.tx_cache.stats()),
    ];
    let per_cache = |f: fn(&crate::cache::CacheStats) -> f64| {
        caches
            .iter()
            .map(move |(n, c)| (format!("cache=\"{n}\""), f(c)))
    };
    metric_family(
        &mut out,
        "electrumx_cache_lookups_total",
        "counter",
        "Cache lookups.",
        per_cache(|c| c.lookups as f64),
    );
    metric_family(
        &mut out,
        "electrumx_cache_hits_total",
        "counter",
        "Cache hits.",
        per_cache(|c| c.hits as f64),
    );
    metric_family(
        &mut out,
        "electrumx_cache_entries",
        "gauge",
        "Entries held by a cache.",
        per_cache(|c| c.entries as f64),
    );
    metric_family(
        &mut out,
        "electrumx_cache_hit_ratio",
        "gauge",
        "Hits over lookups since start.",
        per_cache(|c| c.hits as f64 / c.lookups.max(1) as f64),
    );

    // Node RPC.
    if let Some(d) = st.daemon.stats() {
        metric(
            &mut out,
            "electrumx_daemon_requests_total",
            "counter",
            "HTTP exchanges with the node.",
            d.requests,
        );
        metric(
            &mut out,
            "electrumx_daemon_errors_total",
            "counter",
            "Failed exchanges with the node.",
            d.errors,
        );
        out.push_str(
            "# HELP electrumx_daemon_request_duration_seconds Time per exchange with the node.\n",
        );
        out.push_str("# TYPE electrumx_daemon_request_duration_seconds histogram\n");
        d.latency
            .render(&mut out, "electrumx_daemon_request_duration_seconds", "");
    }
    out
}

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn routes_by_method_and_path() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route(b"HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::Index);
        assert_eq!(
            route(b"GET /health HTTP/1.1\r\n\r\n"),
            Route::Health { head_only: false }
        );
        assert_eq!(
            route(b"GET /health/live HTTP/1.1\r\n\r\n"),
            Route::Live { head_only: false }
        );
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /other HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b""), Route::MethodNotAllowed);
    }

    proptest! {
        /// Any bytes: a route, never a panic; only GET and HEAD reach a page.
        #[test]
        fn any_head_is_routed(head in proptest::collection::vec(any::<u8>(), 0..300)) {
            let r = route(&head);
            let text = String::from_utf8_lossy(&head);
            let method = text.split_whitespace().next().unwrap_or("");
            if method != "GET" && method != "HEAD" {
                prop_assert_eq!(r, Route::MethodNotAllowed);
            }
            let _ = head_complete(&head);
        }

        /// A head is complete once a blank line (CR LF or LF) has come, and not before.
        #[test]
        fn head_ends_at_the_blank_line(lines in proptest::collection::vec("[ -~]{1,30}", 0..6), crlf in any::<bool>()) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut head = String::new();
            for l in &lines {
                head.push_str(l);
                head.push_str(eol);
            }
            prop_assert!(!head_complete(head.as_bytes()));
            head.push_str(eol);
            prop_assert!(head_complete(head.as_bytes()) || lines.is_empty());
        }
    }
}
