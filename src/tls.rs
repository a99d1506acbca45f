//! The rustls client side, for SMTP and the token endpoint alike: the system's roots plus
//! every certificate in `tls_ca_file`, with the host name (or IP address) always verified.
//! No option turns verification off.
//!
//! A certificate in `tls_ca_file` that the server itself presents is trusted as it is
//! (pinned), as msmtp's `tls_trust_file` and curl's `--cacert` do: a self-signed server
//! certificate made with `openssl req -x509` carries `CA:TRUE`, which webpki refuses as an
//! end-entity certificate. Its host name is still checked.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use rustls_platform_verifier::Verifier;

use crate::error::{Error, Phase, Result};

/// A client config trusting the platform's roots and those in `ca_file` (PEM).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    build(extra_roots(ca_file)?)
}

/// [`client_config`] for a caller that has network work to do first: the CA file is read
/// now (its errors are configuration errors before any network use), and the platform's
/// roots (on Debian some 150 files, about 10 ms) load on a blocking thread while the
/// caller connects, greets and asks for STARTTLS.
pub fn client_config_soon(ca_file: Option<&Path>) -> Result<PendingConfig> {
    let extra = extra_roots(ca_file)?;
    Ok(PendingConfig(tokio::task::spawn_blocking(move || {
        build(extra)
    })))
}

/// A client config being built (see [`client_config_soon`]).
pub struct PendingConfig(tokio::task::JoinHandle<Result<Arc<ClientConfig>>>);

impl PendingConfig {
    pub async fn ready(self) -> Result<Arc<ClientConfig>> {
        self.0
            .await
            .map_err(|e| Error::internal(format!("TLS set-up: {e}")))?
    }
}

fn extra_roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>> {
    match ca_file {
        Some(path) => read_roots(path),
        None => Ok(Vec::new()),
    }
}

fn build(extra: Vec<CertificateDer<'static>>) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let pinned = extra.clone();
    let verifier = Verifier::new_with_extra_roots(extra, provider.clone()).map_err(|e| {
        Error::protocol(
            Phase::Tls,
            format!("cannot set up certificate verification: {e}"),
        )
    })?;
    let verifier = PinnedOrVerified { verifier, pinned };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS versions: {e}")))?
        // "dangerous" only in name: the chain (or the pin) and the host name are checked.
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The platform's verification, or else an exact match with a certificate the user put
/// in `tls_ca_file` that is valid for the host name.
#[derive(Debug)]
struct PinnedOrVerified {
    verifier: Verifier,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedOrVerified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if verified.is_err()
            && self
                .pinned
                .iter()
                .any(|c| c.as_ref() == end_entity.as_ref())
        {
            rustls::client::verify_server_name(
                &ParsedCertificate::try_from(end_entity)?,
                server_name,
            )?;
            return Ok(ServerCertVerified::assertion());
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier.supported_verify_schemes()
    }
}

/// The process-wide provider `main` installs; ring if none was installed (unit tests).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Every certificate in a PEM file; a file without one is a config error, not "trust
/// nothing extra" (the user meant something).
fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| Error::config(format!("tls_ca_file {shown}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "tls_ca_file {shown}: no PEM certificate in it"
        )));
    }
    Ok(certs)
}

/// The name the certificate must carry: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| Error::config(format!("smtp_host {host:?} is not a valid host name")))
}

/// A failed handshake: a certificate that does not verify is [`Kind::Certificate`] (exit
/// 76, never "try again later"), another TLS refusal a protocol error that says why, a
/// connection that broke a network error.
///
/// [`Kind::Certificate`]: crate::error::Kind::Certificate
pub fn handshake_error(e: &io::Error) -> Error {
    if let Some(cert) = Error::certificate_in("the SMTP server", e) {
        return cert;
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Error::protocol(Phase::Tls, format!("{tls}; no credentials were sent")),
        None => Error::network(Phase::Tls, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert_eq!(e.exit_code(), 78);
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let missing = dir.path().join("missing.pem");
        assert_eq!(client_config(Some(&missing)).unwrap_err().exit_code(), 78);
    }

    #[test]
    fn ip_addresses_are_server_names() {
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("smtp.office365.com").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host").is_err());
    }
}
