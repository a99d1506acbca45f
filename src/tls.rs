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
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use rustls_platform_verifier::Verifier;

use crate::error::{Error, Phase, Result};

/// A client config trusting the platform's roots and those in `ca_file` (PEM).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    build(extra_roots(ca_file)?, false)
}

/// [`client_config`] for a caller that has network work to do first: the CA file is read
/// now (its errors are configuration errors before any network use). Without a CA file
/// the platform's roots (on Debian some 150 certificates read from about 300 files, about
/// 10 ms of CPU) load on a blocking thread while the caller connects, greets and asks for
/// STARTTLS; with one, they load only if the server's certificate does not verify against
/// it (see `ConfiguredFirst`), so a local relay with its own CA never waits for them.
pub fn client_config_soon(ca_file: Option<&Path>) -> Result<PendingConfig> {
    let extra = extra_roots(ca_file)?;
    if !extra.is_empty() {
        return Ok(PendingConfig(Pending::Ready(build(extra, false))));
    }
    Ok(PendingConfig(Pending::Loading(
        tokio::task::spawn_blocking(move || build(extra, true)),
    )))
}

/// A client config being built (see [`client_config_soon`]).
pub struct PendingConfig(Pending);

enum Pending {
    Ready(Result<Arc<ClientConfig>>),
    Loading(tokio::task::JoinHandle<Result<Arc<ClientConfig>>>),
}

impl PendingConfig {
    pub async fn ready(self) -> Result<Arc<ClientConfig>> {
        match self.0 {
            Pending::Ready(config) => config,
            Pending::Loading(task) => task
                .await
                .map_err(|e| Error::internal(format!("TLS set-up: {e}")))?,
        }
    }
}

fn extra_roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>> {
    match ca_file {
        Some(path) => read_roots(path),
        None => Ok(Vec::new()),
    }
}

/// `load_platform_now`: read the platform's roots now rather than at the first
/// certificate the configured ones do not verify.
fn build(
    extra: Vec<CertificateDer<'static>>,
    load_platform_now: bool,
) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = ConfiguredFirst::new(extra, provider.clone());
    if load_platform_now {
        verifier.platform().map_err(|e| {
            Error::protocol(
                Phase::Tls,
                format!("cannot set up certificate verification: {e}"),
            )
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts a server certificate that verifies against the roots of `tls_ca_file` alone,
/// or is itself in that file (pinned, its name still checked), or verifies against the
/// platform's roots plus the file's. The platform verifier also trusts the file's roots,
/// so trying them first changes nothing about what is accepted; it only spares loading
/// the platform's roots when the file already answers.
#[derive(Debug)]
struct ConfiguredFirst {
    /// A verifier over the configured roots only; `None` without a CA file.
    configured: Option<Arc<WebPkiServerVerifier>>,
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    platform: OnceLock<std::result::Result<Verifier, String>>,
}

impl ConfiguredFirst {
    fn new(extra: Vec<CertificateDer<'static>>, provider: Arc<CryptoProvider>) -> ConfiguredFirst {
        let configured = (!extra.is_empty())
            .then(|| {
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(extra.iter().cloned());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .ok()
            })
            .flatten();
        ConfiguredFirst {
            configured,
            extra,
            provider,
            platform: OnceLock::new(),
        }
    }

    /// The platform's verifier (with the configured roots too), loaded once.
    fn platform(&self) -> std::result::Result<&Verifier, String> {
        self.platform
            .get_or_init(|| {
                Verifier::new_with_extra_roots(self.extra.clone(), self.provider.clone())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for ConfiguredFirst {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(configured) = &self.configured
            && let Ok(verified) = configured.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )
        {
            return Ok(verified);
        }
        let platform = self
            .platform()
            .map_err(|e| rustls::Error::General(format!("cannot load the system's roots: {e}")));
        let verified = platform.and_then(|p| {
            p.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        });
        if verified.is_err() && self.extra.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
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

/// A failed handshake: a certificate that does not verify is [`Error::certificate`] (exit
/// 76, never "try again later"), another TLS refusal a protocol error that says why, a
/// connection that broke a network error.
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
