//! Transports under the sessions: plain TCP, TLS (certificate and key reloaded when the
//! files change on disk), and WebSocket / secure WebSocket, where each frame carries one
//! JSON message. A WebSocket connection is bridged to the same line-based session code.

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio_tungstenite::tungstenite::Message;

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

/// Runs a WebSocket connection through a line-based duplex pipe: each text frame becomes
/// one line for the session; each line the session writes becomes one text frame.
pub async fn websocket_bridge<S>(stream: S, max_message: usize) -> Option<tokio::io::DuplexStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = match tokio_tungstenite::accept_async(stream).await {
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
    tokio::spawn(async move {
        while let Some(msg) = ws_rx.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t.to_string(),
                Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            // Newlines are only whitespace in JSON; the session splits on them.
            let mut line = text.replace(['\n', '\r'], " ");
            line.push('\n');
            if pipe_tx.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = pipe_tx.shutdown().await;
    });
    // Lines from the session → frames out.
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe_rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if ws_tx.send(Message::text(line)).await.is_err() {
                break;
            }
        }
        let _ = ws_tx.close().await;
    });
    Some(session_side)
}
