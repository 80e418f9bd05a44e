//! TLS for dr's own PostgreSQL connections (snapshot, maintenance, checks), on rustls with
//! ring, with libpq's meaning of `sslmode` so that dr and the `pg_dump`/`pg_restore` it runs
//! (which inherit the same settings through the environment) agree:
//!
//! - `disable`: no TLS.
//! - `prefer` (the default): TLS if the server offers it, else plain.
//! - `require`: TLS or no connection.
//!
//! The server's certificate is checked when a root certificate is given, as libpq does: the
//! file named by `PGSSLROOTCERT`, else `~/.postgresql/root.crt` if it exists. dr then checks
//! the chain *and* the host name (libpq's `verify-full`). Without a root certificate the
//! session is encrypted but the server is not authenticated, which is libpq's `require`.
//! TLS is never used over Unix sockets (nor does libpq use it there).

use std::path::PathBuf;
use std::sync::Arc;

use dr_core::{Error, ErrorKind, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The environment variable naming the root certificates (PEM) that authenticate servers.
pub const ROOT_CERT_VAR: &str = "PGSSLROOTCERT";

/// The TLS connector for a connection, with the server check described in the module
/// documentation.
pub(crate) fn connector() -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Other, "cannot set up TLS").with_source(e))?;
    let config = match root_cert_file() {
        Some(path) => builder
            .with_root_certificates(load_roots(&path)?)
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `PGSSLROOTCERT`, else libpq's default `~/.postgresql/root.crt` when it exists.
fn root_cert_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(ROOT_CERT_VAR).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let default = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
    default.is_file().then_some(default)
}

fn load_roots(path: &std::path::Path) -> Result<RootCertStore> {
    let bad = |what: String| {
        Error::new(ErrorKind::InvalidInput, what).with_context("root certificates", path.display())
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read the root certificate file: {e}")))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("a root certificate is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("the file holds no PEM certificate".into()));
    }
    Ok(roots)
}

/// libpq's `sslmode=require` without a root certificate: any server certificate is
/// accepted (the session is encrypted, the server not authenticated), but the handshake's
/// signatures are still checked against it.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
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
