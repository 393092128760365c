//! TLS for tests: a throwaway CA with a server certificate, as an operator's files, and a
//! client that trusts that CA.

use anyhow::Result;
use std::path::Path;

/// Files made by [`files`].
pub struct TlsFiles {
    /// The CA certificate (PEM), for clients.
    pub ca_pem: String,
    /// The CA certificate's file.
    pub ca_file: std::path::PathBuf,
    /// The server certificate file (PEM).
    pub cert: String,
    /// The server key file (PEM, PKCS#8).
    pub key: String,
}

/// A CA, and a certificate for `host` (a name or an IP address) signed by it, written into
/// `dir` (readable by all: a server that drops privileges reads them too).
pub fn files(dir: &Path, host: &str) -> Result<TlsFiles> {
    use std::os::unix::fs::PermissionsExt;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "electrumx-rs test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])?.signed_by(&key, &ca)?;
    let (a, c, k) = (
        dir.join("ca.pem"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    std::fs::write(&a, ca.pem())?;
    std::fs::write(&c, cert.pem())?;
    std::fs::write(&k, key.serialize_pem())?;
    for p in [&c, &k] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(TlsFiles {
        ca_pem: ca.pem(),
        ca_file: a,
        cert: c.display().to_string(),
        key: k.display().to_string(),
    })
}

/// A TLS client that trusts the CA `ca_pem`.
pub fn connector(ca_pem: &str) -> Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, pem::PemObject},
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
