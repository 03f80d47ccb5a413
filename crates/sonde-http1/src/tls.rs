//! rustls client configurations, one way for every HTTPS client of sonde.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The crypto provider: ring, as everywhere in the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    // rustls deprecates ring for lacking post-quantum key exchange; ring keeps the build free
    // of the C/cmake toolchain aws-lc needs, and is the workspace's one TLS stack.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which certificates a client accepts.
#[derive(Debug)]
pub enum Verify {
    /// Those the platform's verifier accepts (the system's roots).
    Platform,
    /// Those signed by these roots (a private CA).
    Roots(RootCertStore),
    /// Any certificate, for test servers: the handshake signatures are still checked, so the
    /// peer holds the key of the certificate it showed.
    Insecure,
    /// Like [`Platform`](Self::Platform), but a system without CA certificates (a distroless
    /// image) still gets a configuration: plain `http://` clients built on it work, and its
    /// `https://` handshakes fail saying what to install or configure.
    PlatformIfAny,
}

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the protocol set-up.
    #[error("TLS setup failed: {0}")]
    Setup(rustls::Error),
    /// The system's CA certificates could not be loaded.
    #[error("cannot load the system's CA certificates ({0})")]
    PlatformRoots(rustls::Error),
    /// A PEM file could not be read or holds nothing usable; the message names the file.
    #[error("{0}")]
    File(String),
}

/// A client certificate chain (leaf first) and its private key.
pub type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificates of the PEM file at `path` as roots (a private CA, replacing the system's),
/// or an error naming the file when it cannot be read or holds none.
pub fn load_roots(path: &std::path::Path) -> Result<RootCertStore, TlsError> {
    let pem = read(path, "CA file")?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        roots
            .add(cert)
            .map_err(|e| TlsError::File(format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(TlsError::File(format!(
            "the CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// The client certificate chain at `cert` and the private key at `key` (PEM files), for mutual
/// TLS, or an error naming the file at fault.
pub fn load_client_cert(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<ClientCert, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(cert, "client certificate")?)
            .flatten()
            .collect();
    if chain.is_empty() {
        return Err(TlsError::File(format!(
            "the client certificate {} holds no PEM certificate",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key, "client key")?).map_err(|_| {
        TlsError::File(format!(
            "the client key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        ))
    })?;
    Ok((chain, key_der))
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError::File(format!("cannot read the {what} {}: {e}", path.display())))
}

/// A client configuration with rustls' safe default protocol versions, verifying as `verify`
/// says and offering `alpn` (for example `[b"h2", b"http/1.1"]`).
pub fn client_config(verify: Verify, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with(verify, None, alpn)
}

/// [`client_config`] that also presents `client` (mutual TLS) when the server asks for it.
pub fn client_config_with(
    verify: Verify,
    client: Option<ClientCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match verify {
        Verify::Roots(roots) => builder.with_root_certificates(roots),
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Fixed {
                refuse: None,
                provider: provider(),
            })),
        Verify::Platform => builder
            .dangerous()
            .with_custom_certificate_verifier(platform_verifier()?),
        Verify::PlatformIfAny => {
            let verifier: Arc<dyn ServerCertVerifier> = match platform_verifier() {
                Ok(v) => v,
                Err(e) => Arc::new(Fixed {
                    refuse: Some(e.to_string()),
                    provider: provider(),
                }),
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
        }
    };
    let mut config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Setup)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The platform's verifier, built once: it reads the system's CA certificates, which took
/// 20 ms here, too much to pay for every client (a scrape builds one per scrape). A failure is
/// kept too: the store is read again only by a new process.
fn platform_verifier() -> Result<Arc<rustls_platform_verifier::Verifier>, TlsError> {
    static VERIFIER: std::sync::OnceLock<
        Result<Arc<rustls_platform_verifier::Verifier>, rustls::Error>,
    > = std::sync::OnceLock::new();
    VERIFIER
        .get_or_init(|| rustls_platform_verifier::Verifier::new(provider()).map(Arc::new))
        .clone()
        .map_err(TlsError::PlatformRoots)
}

/// A verifier that decides on the certificate alone: accepts any (`refuse: None`, for
/// [`Verify::Insecure`]) or refuses every one with a reason (a system without CA certificates).
/// Either way the handshake signatures are checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct Fixed {
    refuse: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Fixed {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.refuse {
            None => Ok(ServerCertVerified::assertion()),
            Some(why) => Err(rustls::Error::General(format!(
                "{why}; install them (the ca-certificates package) or configure a CA file"
            ))),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a system without CA certificates, an `https://` handshake fails with the reason and
    /// what to do, while the configuration (and so plain `http://`) still builds.
    #[test]
    fn without_system_roots_handshakes_say_what_to_install() {
        let verifier = Fixed {
            refuse: Some("No CA certificates were loaded from the system".into()),
            provider: provider(),
        };
        let name = ServerName::try_from("example.com").unwrap();
        let e = verifier
            .verify_server_cert(
                &CertificateDer::from(vec![0u8; 4]),
                &[],
                &name,
                &[],
                UnixTime::now(),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("No CA certificates"), "{e}");
        assert!(e.contains("ca-certificates"), "{e}");
        assert!(client_config(Verify::PlatformIfAny, &[b"http/1.1"]).is_ok());
    }
}
