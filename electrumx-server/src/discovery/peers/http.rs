//! Fetching a small document by URL for the blacklist: `file://` paths, and `http://` /
//! `https://` with a minimal HTTP/1.1 GET (certificates verified against the Mozilla roots,
//! a few redirects followed, chunked bodies decoded, size and time bounded).

use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// Most redirects followed.
const MAX_REDIRECTS: usize = 3;

struct Url {
    tls: bool,
    host: String,
    port: u16,
    /// `host[:port]` for the Host header.
    authority: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "unsupported URL {url:?} (file://, http:// or https://)"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("bad IPv6 host in URL")?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in URL {url:?}"))?,
        None if tls => 443,
        None => 80,
    };
    if host.is_empty() {
        return Err(format!("no host in URL {url:?}"));
    }
    Ok(Url {
        tls,
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path: path.split('#').next().unwrap_or("/").to_string(),
    })
}

fn web_tls() -> TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    TlsConnector::from(config.clone())
}

async fn read_limited<S: AsyncRead + Unpin>(mut s: S, max: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > max {
            return Err(format!("response over {max} bytes"));
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    url: &Url,
    max: usize,
) -> Result<Vec<u8>, String> {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        crate::protocol::version::server_version()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    read_limited(s, max + 65536).await
}

/// Decodes a chunked body.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked body")?;
        let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err("truncated chunked body".into());
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).ok_or("truncated chunked body")?;
    }
}

enum Response {
    Body(Vec<u8>),
    Redirect(String),
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("bad HTTP status line")?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    match status {
        200 => {}
        301 | 302 | 303 | 307 | 308 => {
            return header("location")
                .map(Response::Redirect)
                .ok_or_else(|| format!("HTTP {status} without Location"));
        }
        other => return Err(format!("HTTP {other}")),
    }
    let _ = lines;
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return dechunk(body).map(Response::Body);
    }
    let len = header("content-length").and_then(|v| v.parse::<usize>().ok());
    Ok(Response::Body(match len {
        Some(n) if n <= body.len() => body[..n].to_vec(),
        _ => body.to_vec(),
    }))
}

async fn get_once(url: &Url, max: usize) -> Result<Response, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", url.authority))?;
    let raw = if url.tls {
        let name = match super::netaddr::ip_literal(&url.host) {
            Some(ip) => ServerName::IpAddress(ip.into()),
            None => ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?,
        };
        let tls = web_tls()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(tls, url, max).await?
    } else {
        exchange(tcp, url, max).await?
    };
    parse_response(&raw)
}

/// The document at `url` as text: at most `max` bytes, within `timeout` in all.
pub async fn fetch(url: &str, max: usize, timeout: Duration) -> Result<String, String> {
    let work = async {
        if let Some(path) = url.strip_prefix("file://") {
            let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
            if meta.len() > max as u64 {
                return Err(format!("{path} is over {max} bytes"));
            }
            return tokio::fs::read_to_string(path)
                .await
                .map_err(|e| e.to_string());
        }
        let mut current = parse_url(url)?;
        for _ in 0..=MAX_REDIRECTS {
            match get_once(&current, max).await? {
                Response::Body(b) => {
                    if b.len() > max {
                        return Err(format!("response over {max} bytes"));
                    }
                    return String::from_utf8(b).map_err(|_| "response is not UTF-8".into());
                }
                Response::Redirect(to) => {
                    let next = if to.starts_with('/') {
                        Url {
                            path: to,
                            ..current
                        }
                    } else {
                        parse_url(&to)?
                    };
                    // An https:// document never comes over plain http (a redirect could
                    // otherwise hand the blacklist to anyone on the path).
                    if current.tls && !next.tls {
                        return Err(format!(
                            "refused redirect from https to plain http ({})",
                            next.authority
                        ));
                    }
                    current = next;
                }
            }
        }
        Err("too many redirects".into())
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves `responses` in turn, one per connection.
    async fn serve(responses: Vec<String>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for r in responses {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                s.write_all(r.as_bytes()).await.unwrap();
            }
        });
        port
    }

    #[tokio::test]
    async fn http_plain_chunked_and_redirected() {
        let t = Duration::from_secs(5);
        let port = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: /real.json\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[\"a\"\r\n1\r\n]\r\n0\r\n\r\n".into(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]junk".into(),
            "HTTP/1.1 404 Not Found\r\n\r\n".into(),
        ])
        .await;
        let url = format!("http://127.0.0.1:{port}/list.json");
        assert_eq!(fetch(&url, 1000, t).await.unwrap(), "[\"a\"]");
        assert_eq!(fetch(&url, 1000, t).await.unwrap(), "[]");
        assert_eq!(fetch(&url, 1000, t).await.unwrap_err(), "HTTP 404");
        assert!(fetch("gopher://x", 1000, t).await.is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.json");
        std::fs::write(&f, "[\"x\"]").unwrap();
        let url = format!("file://{}", f.display());
        assert_eq!(fetch(&url, 1000, t).await.unwrap(), "[\"x\"]");
        assert!(fetch(&url, 2, t).await.is_err());
    }
}
