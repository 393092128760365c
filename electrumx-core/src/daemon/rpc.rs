//! JSON-RPC client for bitcoind-compatible nodes: batched calls, several requests in
//! flight (a pooled HTTP client), timeouts, retry with backoff on temporary failures,
//! cookie auth re-read after a node restart, and failover across several URLs
//! (ElectrumX's comma-separated `DAEMON_URL`).

use super::{Daemon, DaemonResult};
use crate::error::DaemonError;
use crate::hash::{BlockHash, Hash32, Txid};
use async_trait::async_trait;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One node endpoint parsed from `DAEMON_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct DaemonUrl {
    /// `http://host:port/path` without credentials.
    pub url: String,
    /// Credentials from the URL, if any.
    pub user_pass: Option<(String, String)>,
}

impl DaemonUrl {
    /// True if the host is `localhost` or a loopback address.
    pub fn is_loopback(&self) -> bool {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            authority.rsplit_once(':').map_or(authority, |(h, _)| h)
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Debug for DaemonUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.write_str(&self.url)
    }
}

impl DaemonUrl {
    /// Parses a comma-separated list as ElectrumX accepts it: `[http://][user:pass@]host[:port][/]`,
    /// with `default_port` where a URL gives none.
    pub fn parse_list(s: &str, default_port: u16) -> Result<Vec<DaemonUrl>, crate::SettingError> {
        let urls: Vec<DaemonUrl> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| DaemonUrl::parse(p, default_port))
            .collect::<Result<_, _>>()
            .map_err(crate::SettingError::DaemonUrl)?;
        if urls.is_empty() {
            return Err(crate::SettingError::DaemonUrl(
                "DAEMON_URL: no URL given".into(),
            ));
        }
        Ok(urls)
    }

    fn parse(s: &str, default_port: u16) -> Result<DaemonUrl, String> {
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("http://{s}")
        };
        let mut url = reqwest::Url::parse(&with_scheme)
            .map_err(|e| format!("DAEMON_URL: cannot parse {s:?}: {e}"))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("DAEMON_URL: unsupported scheme {:?}", url.scheme()));
        }
        if url.host_str().is_none() {
            return Err(format!("DAEMON_URL: no host in {s:?}"));
        }
        let user_pass = if url.username().is_empty() {
            None
        } else {
            let dec = |x: &str| {
                percent_decode(x)
                    .ok_or_else(|| "DAEMON_URL: bad percent-encoding in credentials".to_string())
            };
            Some((dec(url.username())?, dec(url.password().unwrap_or(""))?))
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if url.port().is_none() {
            let _ = url.set_port(Some(default_port));
        }
        Ok(DaemonUrl {
            url: url.to_string(),
            user_pass,
        })
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Settings of [`RpcDaemon`]: start from [`RpcDaemonConfig::new`] and change the fields
/// wanted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RpcDaemonConfig {
    /// Node endpoints, tried in order; on failure the client fails over to the next.
    pub urls: Vec<DaemonUrl>,
    /// Cookie file used when a URL carries no credentials (re-read on HTTP 401).
    pub cookie_file: Option<PathBuf>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Most calls in one batch request.
    pub max_batch: usize,
    /// First retry delay; doubles up to `max_retry_delay`.
    pub initial_retry_delay: Duration,
    /// Longest delay between retries.
    pub max_retry_delay: Duration,
    /// Give up a call after this long of temporary failures (`None`: retry until cancelled).
    pub retry_limit: Option<Duration>,
    /// Keep HTTP connections open between calls. `None` (the default): only when some URL
    /// is not on loopback. On loopback a connection costs tens of microseconds, while a
    /// kept-open one can stall 40 ms per reply when the node writes a reply in pieces (the
    /// last piece waits for a delayed ACK; Bitcoin SV's chunked replies do this).
    pub reuse_connections: Option<bool>,
    /// Most HTTP requests in flight to the node at once (ElectrumX: 10). Beyond its
    /// `-rpcthreads` and `-rpcworkqueue` the node answers "work queue depth exceeded".
    pub max_in_flight: usize,
}

impl RpcDaemonConfig {
    /// Defaults for the given endpoints.
    pub fn new(urls: Vec<DaemonUrl>) -> Self {
        RpcDaemonConfig {
            urls,
            cookie_file: None,
            request_timeout: Duration::from_secs(60),
            max_batch: 100,
            initial_retry_delay: Duration::from_millis(250),
            max_retry_delay: Duration::from_secs(5),
            retry_limit: None,
            reuse_connections: None,
            max_in_flight: 10,
        }
    }

    /// Whether connections are kept open between calls (see `reuse_connections`).
    pub fn reuses_connections(&self) -> bool {
        self.reuse_connections
            .unwrap_or_else(|| !self.urls.iter().all(|u| u.is_loopback()))
    }
}

/// JSON-RPC daemon client (see the module docs).
pub struct RpcDaemon {
    config: RpcDaemonConfig,
    /// The endpoints in use (replaceable at run time: LocalRPC `daemon_url`).
    urls: parking_lot::RwLock<Arc<Vec<DaemonUrl>>>,
    stats: Mutex<crate::stats::DaemonStats>,
    in_flight: tokio::sync::Semaphore,
    http: reqwest::Client,
    current: AtomicUsize,
    cookie: Mutex<Option<(String, String)>>,
    failing: AtomicBool,
    /// The last temporary failure logged, so that each kind is logged once per outage.
    last_problem: Mutex<Option<String>>,
    cancel: CancellationToken,
}

#[derive(Deserialize)]
struct RpcReply<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<RpcErrorObj>,
    id: Option<u64>,
}

#[derive(Deserialize)]
struct RpcErrorObj {
    code: i64,
    message: String,
}

/// What one HTTP attempt produced.
enum Attempt<T> {
    Done(T),
    /// A temporary failure ([`DaemonError::Unavailable`]), to retry.
    Temporary(DaemonError),
}

impl RpcDaemon {
    /// Builds a client; `cancel` stops retries on shutdown.
    pub fn new(config: RpcDaemonConfig, cancel: CancellationToken) -> Result<Self, DaemonError> {
        if config.urls.is_empty() {
            return Err(DaemonError::config("no daemon URL"));
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .pool_max_idle_per_host(if config.reuses_connections() { 16 } else { 0 })
            .tcp_nodelay(true)
            .build()
            .map_err(|e| DaemonError::config_from("cannot build the HTTP client", e))?;
        Ok(RpcDaemon {
            urls: parking_lot::RwLock::new(Arc::new(config.urls.clone())),
            stats: Mutex::new(Default::default()),
            in_flight: tokio::sync::Semaphore::new(config.max_in_flight.max(1)),
            config,
            http,
            current: AtomicUsize::new(0),
            cookie: Mutex::new(None),
            failing: AtomicBool::new(false),
            last_problem: Mutex::new(None),
            cancel,
        })
    }

    fn endpoint(&self) -> DaemonUrl {
        let urls = self.urls.read();
        let i = self.current.load(Ordering::Relaxed) % urls.len();
        urls[i].clone()
    }

    fn url_count(&self) -> usize {
        self.urls.read().len()
    }

    fn failover(&self) {
        let urls = self.urls.read().clone();
        if urls.len() > 1 {
            let next = (self.current.fetch_add(1, Ordering::Relaxed) + 1) % urls.len();
            tracing::warn!(url = ?urls[next], "failing over to the next daemon URL");
        }
    }

    /// Replaces the endpoints and switches to the first (ElectrumX's LocalRPC `daemon_url`).
    pub fn set_urls(&self, urls: Vec<DaemonUrl>) -> Result<(), DaemonError> {
        if urls.is_empty() {
            return Err(DaemonError::config("no daemon URL"));
        }
        tracing::info!(url = ?urls[0], "daemon URLs replaced; now using the first");
        *self.urls.write() = Arc::new(urls);
        self.current.store(0, Ordering::Relaxed);
        *self.cookie.lock() = None;
        Ok(())
    }

    /// The endpoint in use, without credentials (`host:port/` as ElectrumX logs it).
    pub fn logged_url(&self) -> String {
        let url = self.endpoint().url;
        url.split_once("://")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or(url)
    }

    fn record(&self, started: std::time::Instant, ok: bool) {
        let mut s = self.stats.lock();
        s.requests += 1;
        if !ok {
            s.errors += 1;
        }
        s.latency.observe(started.elapsed());
    }

    fn credentials(&self, reload: bool) -> Result<Option<(String, String)>, DaemonError> {
        if let Some(up) = &self.endpoint().user_pass {
            return Ok(Some(up.clone()));
        }
        let Some(path) = &self.config.cookie_file else {
            return Ok(None);
        };
        let mut cached = self.cookie.lock();
        if reload || cached.is_none() {
            let text = std::fs::read_to_string(path).map_err(|e| {
                DaemonError::unavailable_from(
                    format!("cannot read cookie file {}", path.display()),
                    e,
                )
            })?;
            let (u, p) = text.trim().split_once(':').ok_or_else(|| {
                DaemonError::Auth(format!("cookie file {} is malformed", path.display()))
            })?;
            *cached = Some((u.to_string(), p.to_string()));
        }
        Ok(cached.clone())
    }

    /// Sends one JSON-RPC body, returning the raw response body of a successful HTTP exchange.
    async fn post(
        &self,
        body: &[u8],
        reload_cookie: bool,
    ) -> Result<Attempt<(u16, bytes::Bytes)>, DaemonError> {
        // Never closed: acquiring only fails on a closed semaphore.
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| DaemonError::Cancelled)?;
        let creds = match self.credentials(reload_cookie) {
            Ok(c) => c,
            Err(e @ DaemonError::Unavailable { .. }) => return Ok(Attempt::Temporary(e)),
            Err(e) => return Err(e),
        };
        let ep = self.endpoint();
        let started = std::time::Instant::now();
        let mut req = self
            .http
            .post(&ep.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.record(started, false);
                return Ok(Attempt::Temporary(DaemonError::unavailable_from(
                    ep.url.clone(),
                    e,
                )));
            }
        };
        let status = resp.status().as_u16();
        let body = resp.bytes().await;
        self.record(started, body.is_ok() && status == 200);
        match body {
            Ok(b) => Ok(Attempt::Done((status, b))),
            Err(e) => Ok(Attempt::Temporary(DaemonError::unavailable_from(
                format!("{}: reading reply", ep.url),
                e,
            ))),
        }
    }

    /// Runs one call of `method` per entry of `params` in batch requests (chunks of
    /// `max_batch`), retrying temporary failures. Returns one result per call, in order.
    pub async fn batch(
        &self,
        method: &str,
        params: &[Value],
    ) -> DaemonResult<Vec<Result<Box<RawValue>, DaemonError>>> {
        self.batch_map(method, params, |r| Ok(r.to_owned())).await
    }

    /// Like [`RpcDaemon::batch`], converting each result with `convert` straight from the
    /// reply buffer (no intermediate copy: block hex is decoded in place).
    pub async fn batch_map<T>(
        &self,
        method: &str,
        params: &[Value],
        convert: impl Fn(&RawValue) -> Result<T, DaemonError>,
    ) -> DaemonResult<Vec<Result<T, DaemonError>>> {
        let mut out = Vec::with_capacity(params.len());
        for chunk in params.chunks(self.config.max_batch.max(1)) {
            let body: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"jsonrpc": "1.0", "id": i, "method": method, "params": p}))
                .collect();
            let body = serde_json::to_vec(&body)
                .map_err(|e| DaemonError::bad_response_from("encoding a request", e))?;
            let replies = self
                .send_with_retry(&body, |status, bytes| {
                    parse_batch(status, bytes, chunk.len(), &convert)
                })
                .await?;
            out.extend(replies);
        }
        Ok(out)
    }

    /// One JSON-RPC call, retrying temporary failures.
    pub async fn call(&self, method: &str, params: Value) -> DaemonResult<Box<RawValue>> {
        let body = serde_json::to_vec(
            &json!({"jsonrpc": "1.0", "id": 0, "method": method, "params": params}),
        )
        .map_err(|e| DaemonError::bad_response_from("encoding a request", e))?;
        self.send_with_retry(&body, parse_single).await?
    }

    /// Logs a temporary failure: once when an outage starts, then once more each time the
    /// failure changes (the node went from absent to refusing, say), never per retry.
    fn log_failure(&self, problem: &str) {
        let first = !self.failing.swap(true, Ordering::Relaxed);
        let mut last = self.last_problem.lock();
        if first {
            tracing::warn!("daemon unavailable, retrying until it answers: {problem}");
        } else if last.as_deref() != Some(problem) {
            tracing::warn!("daemon still unavailable, now: {problem}");
        } else {
            tracing::debug!("daemon still unavailable: {problem}");
        }
        *last = Some(problem.to_string());
    }

    async fn send_with_retry<T>(
        &self,
        body: &[u8],
        parse: impl Fn(u16, &[u8]) -> Result<T, DaemonError>,
    ) -> DaemonResult<T> {
        let mut delay = self.config.initial_retry_delay;
        let started = std::time::Instant::now();
        let mut reload_cookie = false;
        let mut failures_here = 0u32;
        loop {
            if self.cancel.is_cancelled() {
                return Err(DaemonError::Cancelled);
            }
            let problem = match self.post(body, reload_cookie).await? {
                Attempt::Done((401, _)) | Attempt::Done((403, _)) => {
                    if reload_cookie
                        || self.endpoint().user_pass.is_some()
                        || self.config.cookie_file.is_none()
                    {
                        // Credentials are wrong; the node may still be writing a new cookie.
                        DaemonError::unavailable(format!(
                            "{}: authentication rejected (HTTP 401)",
                            self.endpoint().url
                        ))
                    } else {
                        reload_cookie = true;
                        continue;
                    }
                }
                Attempt::Done((status, bytes)) => match parse(status, &bytes) {
                    Ok(v) => {
                        if self.failing.swap(false, Ordering::Relaxed) {
                            tracing::info!(url = ?self.endpoint(), "daemon connection restored");
                        }
                        return Ok(v);
                    }
                    Err(e) if e.is_temporary() => e,
                    Err(e) => return Err(e),
                },
                Attempt::Temporary(msg) => msg,
            };
            reload_cookie = false;
            self.log_failure(&crate::error::error_chain(&problem));
            if let Some(limit) = self.config.retry_limit
                && started.elapsed() >= limit
            {
                return Err(problem);
            }
            failures_here += 1;
            if failures_here >= 3 && self.url_count() > 1 {
                self.failover();
                failures_here = 0;
                delay = self.config.initial_retry_delay;
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(DaemonError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.config.max_retry_delay);
        }
    }

    async fn typed_call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> DaemonResult<T> {
        let raw = self.call(method, params).await?;
        serde_json::from_str(raw.get()).map_err(|e| DaemonError::bad_response_from(method, e))
    }
}

fn http_error(status: u16, bytes: &[u8]) -> DaemonError {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    if status >= 500 || status == 0 {
        DaemonError::unavailable(format!("HTTP {status}: {text}"))
    } else {
        DaemonError::bad_response(format!("HTTP {status}: {text}"))
    }
}

fn reply_result<'a>(reply: &RpcReply<'a>) -> Result<&'a RawValue, DaemonError> {
    if let Some(e) = &reply.error {
        let err = DaemonError::Rpc {
            code: e.code,
            message: e.message.clone(),
        };
        return Err(err);
    }
    Ok(reply.result.unwrap_or_else(|| {
        let null: &'static RawValue = serde_json::from_str("null").expect("null");
        null
    }))
}

fn parse_single(
    status: u16,
    bytes: &[u8],
) -> Result<Result<Box<RawValue>, DaemonError>, DaemonError> {
    // bitcoind answers RPC errors with HTTP 500 and a JSON body: prefer the body.
    match serde_json::from_slice::<RpcReply<'_>>(bytes) {
        Ok(reply) => {
            let r = reply_result(&reply).map(|r| r.to_owned());
            if let Err(e) = r {
                return match e.is_temporary() {
                    true => Err(DaemonError::unavailable_from("the node is not ready", e)),
                    false => Ok(Err(e)),
                };
            }
            Ok(r)
        }
        Err(_) => Err(http_error(status, bytes)),
    }
}

fn parse_batch<T>(
    status: u16,
    bytes: &[u8],
    n: usize,
    convert: &impl Fn(&RawValue) -> Result<T, DaemonError>,
) -> Result<Vec<Result<T, DaemonError>>, DaemonError> {
    let replies: Vec<RpcReply<'_>> = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(_) => {
            // A whole-batch error object (e.g. warming up) or a non-JSON HTTP error.
            if let Ok(single) = serde_json::from_slice::<RpcReply<'_>>(bytes)
                && let Some(e) = single.error
            {
                let err = DaemonError::Rpc {
                    code: e.code,
                    message: e.message,
                };
                return Err(if err.is_temporary() {
                    DaemonError::unavailable_from("the node is not ready", err)
                } else {
                    err
                });
            }
            return Err(http_error(status, bytes));
        }
    };
    if replies.len() != n {
        return Err(DaemonError::bad_response(format!(
            "batch of {n} got {} replies",
            replies.len()
        )));
    }
    let mut slots: Vec<Option<Result<T, DaemonError>>> = (0..n).map(|_| None).collect();
    for reply in replies {
        let id = reply
            .id
            .ok_or_else(|| DaemonError::bad_response("batch reply without id"))?
            as usize;
        let slot = slots
            .get_mut(id)
            .ok_or_else(|| DaemonError::bad_response(format!("batch reply id {id}")))?;
        let r = reply_result(&reply);
        if let Err(e) = r {
            if e.is_temporary() {
                return Err(DaemonError::unavailable_from("the node is not ready", e));
            }
            *slot = Some(Err(e));
            continue;
        }
        *slot = Some(r.and_then(convert));
    }
    slots
        .into_iter()
        .map(|s| s.ok_or_else(|| DaemonError::bad_response("batch reply missing")))
        .collect()
}

fn hex_of(raw: &RawValue) -> Result<Vec<u8>, DaemonError> {
    let s = raw.get();
    let inner = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .ok_or_else(|| DaemonError::bad_response("expected a hex string"))?;
    const_hex::decode(inner).map_err(|e| DaemonError::bad_response_from("bad hex", e))
}

fn hash_of(raw: &RawValue) -> Result<Hash32, DaemonError> {
    let s: &str = serde_json::from_str(raw.get())
        .map_err(|e| DaemonError::bad_response_from("expected a hash", e))?;
    Hash32::from_display_hex(s).ok_or_else(|| DaemonError::bad_response(format!("bad hash {s:?}")))
}

#[async_trait]
impl Daemon for RpcDaemon {
    async fn height(&self) -> DaemonResult<u32> {
        self.typed_call("getblockcount", json!([])).await
    }

    async fn call_json(&self, method: &str, params: Value) -> DaemonResult<Value> {
        self.typed_call(method, params).await
    }

    async fn best_block_hash(&self) -> DaemonResult<BlockHash> {
        let raw = self.call("getbestblockhash", json!([])).await?;
        hash_of(&raw)
    }

    async fn block_hashes(&self, first: u32, count: u32) -> DaemonResult<Vec<BlockHash>> {
        let params: Vec<Value> = (first..first.saturating_add(count))
            .map(|h| json!([h]))
            .collect();
        self.batch_map("getblockhash", &params, hash_of)
            .await?
            .into_iter()
            .collect()
    }

    async fn raw_blocks(&self, hashes: &[BlockHash]) -> DaemonResult<Vec<Vec<u8>>> {
        let params: Vec<Value> = hashes
            .iter()
            .map(|h| json!([h.to_display_hex(), false]))
            .collect();
        self.batch_map("getblock", &params, hex_of)
            .await?
            .into_iter()
            .collect()
    }

    async fn mempool_txids(&self) -> DaemonResult<Vec<Txid>> {
        let list: Vec<String> = self.typed_call("getrawmempool", json!([])).await?;
        list.iter()
            .map(|s| {
                Hash32::from_display_hex(s)
                    .ok_or_else(|| DaemonError::bad_response(format!("bad txid {s:?}")))
            })
            .collect()
    }

    async fn raw_transactions(&self, txids: &[Txid]) -> DaemonResult<Vec<Option<Vec<u8>>>> {
        let params: Vec<Value> = txids
            .iter()
            .map(|t| json!([t.to_display_hex(), 0]))
            .collect();
        self.batch_map("getrawtransaction", &params, hex_of)
            .await?
            .into_iter()
            .map(|r| match r {
                Ok(v) => Ok(Some(v)),
                Err(DaemonError::Rpc { code: -5, .. }) => Ok(None),
                Err(e) => Err(e),
            })
            .collect()
    }

    async fn broadcast(&self, raw_tx: &[u8]) -> DaemonResult<Txid> {
        let raw = self
            .call("sendrawtransaction", json!([const_hex::encode(raw_tx)]))
            .await?;
        hash_of(&raw)
    }

    async fn estimate_fee(&self, blocks: u32) -> DaemonResult<Option<f64>> {
        match self
            .typed_call::<Value>("estimatesmartfee", json!([blocks]))
            .await
        {
            Ok(v) => Ok(v
                .get("feerate")
                .and_then(Value::as_f64)
                .filter(|f| *f > 0.0)),
            Err(DaemonError::Rpc { code: -32601, .. }) => {
                let v: f64 = self.typed_call("estimatefee", json!([blocks])).await?;
                Ok(Some(v).filter(|f| *f > 0.0))
            }
            Err(e) => Err(e),
        }
    }

    async fn relay_fee(&self) -> DaemonResult<f64> {
        let v: Value = self.typed_call("getnetworkinfo", json!([])).await?;
        v.get("relayfee")
            .and_then(Value::as_f64)
            .ok_or_else(|| DaemonError::bad_response("getnetworkinfo without relayfee"))
    }

    fn stats(&self) -> Option<crate::stats::DaemonStats> {
        let mut s = self.stats.lock().clone();
        s.current_url = self.logged_url();
        Some(s)
    }

    fn describe(&self) -> String {
        self.urls
            .read()
            .iter()
            .map(|u| u.url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_url_forms() {
        let urls = DaemonUrl::parse_list(
            "http://u:p%40ss@127.0.0.1:8332/, 10.0.0.1 ,rpc:x@node",
            18332,
        )
        .unwrap();
        assert_eq!(urls.len(), 3);
        assert_eq!(urls[0].url, "http://127.0.0.1:8332/");
        assert_eq!(urls[0].user_pass, Some(("u".into(), "p@ss".into())));
        assert_eq!(urls[1].url, "http://10.0.0.1:18332/");
        assert_eq!(urls[1].user_pass, None);
        assert_eq!(urls[2].url, "http://node:18332/");
        assert!(!format!("{:?}", urls[0]).contains("p@ss"));
        assert!(DaemonUrl::parse_list("", 1).is_err());
        assert!(DaemonUrl::parse_list("ftp://x", 1).is_err());
        let local = DaemonUrl::parse_list("127.0.0.1,localhost:8332,[::1]:1", 1).unwrap();
        assert!(local.iter().all(DaemonUrl::is_loopback));
        assert!(!RpcDaemonConfig::new(local.clone()).reuses_connections());
        let mut mixed = local;
        mixed.extend(DaemonUrl::parse_list("10.0.0.1", 1).unwrap());
        assert!(RpcDaemonConfig::new(mixed).reuses_connections());
    }

    #[test]
    fn batch_replies_are_reordered_and_errors_kept_per_call() {
        let body = br#"[{"result":"b","error":null,"id":1},{"result":null,"error":{"code":-5,"message":"nope"},"id":0}]"#;
        let r = parse_batch(200, body, 2, &|r: &RawValue| Ok(r.get().to_string())).unwrap();
        assert!(matches!(&r[0], Err(DaemonError::Rpc { code: -5, .. })));
        assert_eq!(r[1].as_ref().unwrap(), "\"b\"");
        let warming =
            br#"{"result":null,"error":{"code":-28,"message":"Loading block index..."},"id":null}"#;
        assert!(
            parse_batch(500, warming, 2, &hex_of)
                .unwrap_err()
                .is_temporary()
        );
        assert!(
            parse_batch(503, b"Work queue depth exceeded", 1, &hex_of)
                .unwrap_err()
                .is_temporary()
        );
        assert!(
            !parse_batch(404, b"not found", 1, &hex_of)
                .unwrap_err()
                .is_temporary()
        );
        assert!(parse_batch(200, b"[]", 1, &hex_of).is_err());
    }
}
