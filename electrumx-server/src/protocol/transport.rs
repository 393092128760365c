//! Transports under the sessions: plain TCP, TLS (certificate and key reloaded when the
//! files change on disk), and WebSocket / secure WebSocket, where each frame carries one
//! JSON message. A WebSocket connection is bridged to the same line-based session code.

use crate::protocol::framing::{Line, LineReader};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// TLS certificate and key from PEM files (PKCS#8, PKCS#1 RSA or SEC1 EC keys), reloaded
/// when either file changes.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Loaded>,
}

/// The files' modification times when last loaded, and the acceptor built from them.
type Loaded = (Option<(SystemTime, SystemTime)>, Option<TlsAcceptor>);

fn stamp(p: &PathBuf) -> std::io::Result<SystemTime> {
    std::fs::metadata(p)?.modified()
}

impl TlsFiles {
    /// Loads the files once, failing with a message naming `SSL_CERTFILE`/`SSL_KEYFILE`.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<TlsFiles, String> {
        let files = TlsFiles {
            cert,
            key,
            current: Mutex::new((None, None)),
        };
        files.acceptor()?;
        Ok(files)
    }

    fn build(&self) -> Result<TlsAcceptor, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| format!("SSL_CERTFILE {}: {e}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("SSL_CERTFILE {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "SSL_CERTFILE {}: no certificate found",
                self.cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("SSL_KEYFILE {}: {e}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("SSL_CERTFILE/SSL_KEYFILE: {e}"))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The acceptor for the files as they are now (rebuilt if they changed).
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let now = (
            stamp(&self.cert).map_err(|e| format!("SSL_CERTFILE {}: {e}", self.cert.display()))?,
            stamp(&self.key).map_err(|e| format!("SSL_KEYFILE {}: {e}", self.key.display()))?,
        );
        let mut cur = self.current.lock();
        if cur.0 != Some(now) || cur.1.is_none() {
            match self.build() {
                Ok(a) => {
                    if cur.1.is_some() {
                        tracing::info!("TLS certificate reloaded from {}", self.cert.display());
                    }
                    *cur = (Some(now), Some(a));
                }
                // Keep serving with the previous certificate if the new files are not valid
                // (yet: an operator may be halfway through replacing them).
                Err(e) if cur.1.is_some() => {
                    tracing::warn!("keeping the previous TLS certificate: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur.1.clone().expect("acceptor present"))
    }
}

/// Longest a WebSocket frame may take to be written, and the closing handshake to finish:
/// a client that stops reading loses its connection after it.
const WS_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes a WebSocket connection reads at a time.
const WS_READ_BUFFER: usize = 4096;

/// Runs a WebSocket connection through a line-based duplex pipe: each text frame becomes
/// one line for the session; each line the session writes becomes one text frame.
///
/// Messages and frames are capped at `max_message` bytes (`MAX_RECV`) by the WebSocket
/// reader itself, before anything is buffered whole: a larger one ends the connection.
/// When the session ends (the client idled out, misbehaved or left), the connection is
/// closed even if the client never sends another byte.
pub async fn websocket_bridge<S>(stream: S, max_message: usize) -> Option<tokio::io::DuplexStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Electrum messages are small: a 4 KiB read buffer (tungstenite's default is 128 KiB,
    // zero-filled per connection) keeps an idle WebSocket client at a few KiB.
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws = match tokio_tungstenite::accept_async_with_config(stream, Some(config)).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!("WebSocket handshake failed: {e}");
            return None;
        }
    };
    let (session_side, bridge_side) = tokio::io::duplex(max_message.max(65536) * 2);
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (pipe_rx, mut pipe_tx) = tokio::io::split(bridge_side);
    // Frames in → lines to the session.
    let incoming = tokio::spawn(async move {
        while let Some(msg) = ws_rx.next().await {
            let sent = match msg {
                Ok(Message::Text(t)) => write_line(&mut pipe_tx, t.as_bytes()).await,
                Ok(Message::Binary(b)) => write_line(&mut pipe_tx, &b).await,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = pipe_tx.shutdown().await;
    });
    // Lines from the session → frames out.
    tokio::spawn(async move {
        // The session's own lines, of any length it writes (MAX_SEND bounds them).
        let mut lines = LineReader::new(pipe_rx, usize::MAX);
        while let Ok(Line::Text(line)) = lines.next_line().await {
            match tokio::time::timeout(WS_WRITE_TIMEOUT, ws_tx.send(Message::text(line))).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        // The session is over: stop reading the client too, so the socket closes even if
        // the client is silent.
        incoming.abort();
        let _ = tokio::time::timeout(WS_WRITE_TIMEOUT, ws_tx.close()).await;
    });
    Some(session_side)
}

/// Writes one message as a line: newlines inside it (only whitespace in JSON) become
/// spaces, since the session splits on them; copied only if it has any.
async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> std::io::Result<()> {
    if msg.iter().any(|b| *b == b'\n' || *b == b'\r') {
        let mut line: Vec<u8> = msg
            .iter()
            .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b })
            .collect();
        line.push(b'\n');
        w.write_all(&line).await
    } else {
        w.write_all(msg).await?;
        w.write_all(b"\n").await
    }
}
