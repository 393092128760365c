//! Outgoing connections to peers: direct TCP (bound to our listening address, so peers see
//! the address we announce) or through the SOCKS5 proxy, then TLS when asked. Like
//! ElectrumX, outgoing TLS does not verify certificates: peers commonly use self-signed
//! ones, and what a peer is worth is checked by verification, not by its certificate.

use super::peer::Transport;
use super::socks;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{
    self, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// A stream to a peer (TCP or TLS).
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for T {}

/// Most addresses of one host name tried.
const MAX_ADDRS: usize = 4;

/// Accepts any certificate, but still checks that the handshake is signed by the key of
/// the certificate presented.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client configuration for peers: any certificate accepted.
fn peer_tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// Dials peers.
pub struct Dialer {
    /// Our listening address, used as the source of direct connections.
    pub local_addr: Option<IpAddr>,
    /// `PEER_ALLOW_PRIVATE`: host names may resolve to private addresses.
    allow_private: bool,
    tls: TlsConnector,
}

/// A connection and the address it reached (`None` for onion peers).
pub type Dialed = (Box<dyn PeerStream>, Option<IpAddr>);

impl Dialer {
    /// A dialer binding direct connections to `local_addr` when the families match; host
    /// names must resolve to public addresses unless `allow_private`.
    pub fn new(local_addr: Option<IpAddr>, allow_private: bool) -> Dialer {
        Dialer {
            local_addr,
            allow_private,
            tls: TlsConnector::from(peer_tls_config()),
        }
    }

    async fn direct(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(local) = self.local_addr
            && local.is_ipv4() == addr.is_ipv4()
        {
            socket.bind(SocketAddr::new(local, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Connects to `host:port`: through `proxy` when given (onion names resolved by the
    /// proxy, other names by us), else directly. The caller bounds the time taken.
    pub async fn dial(
        &self,
        host: &str,
        port: u16,
        transport: Transport,
        proxy: Option<SocketAddr>,
    ) -> Result<Dialed, String> {
        let onion = super::netaddr::is_onion(host);
        let (tcp, ip) = if onion {
            let proxy = proxy.ok_or("onion peer needs a proxy")?;
            let s = socks::connect(proxy, socks::Target::Domain(host), port)
                .await
                .map_err(|e| e.to_string())?;
            (s, None)
        } else {
            // A public name may resolve to a private or loopback address (by mistake, or
            // to make us probe the operator's own network): such addresses are not dialed
            // unless private peers are allowed.
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("cannot resolve: {e}"))?
                .filter(|a| self.allow_private || super::netaddr::is_global(a.ip().to_canonical()))
                .take(MAX_ADDRS)
                .collect();
            let mut last = format!("{host} resolves to no public address");
            let mut found = None;
            for addr in addrs {
                let attempt = match proxy {
                    Some(p) => socks::connect(p, socks::Target::Ip(addr.ip()), port).await,
                    None => self.direct(addr).await,
                };
                match attempt {
                    Ok(s) => {
                        found = Some((s, Some(addr.ip().to_canonical())));
                        break;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            found.ok_or(last)?
        };
        match transport {
            Transport::Tcp => Ok((Box::new(tcp), ip)),
            Transport::Ssl => {
                let name = match super::netaddr::ip_literal(host) {
                    Some(ip) => ServerName::IpAddress(ip.into()),
                    None => ServerName::try_from(host.to_string())
                        .map_err(|e| format!("bad TLS server name: {e}"))?,
                };
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Ok((Box::new(tls), ip))
            }
        }
    }
}
