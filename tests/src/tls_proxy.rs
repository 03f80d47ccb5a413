//! A TLS-terminating TCP proxy on loopback, to test clients' TLS against a plaintext peer: it
//! presents a self-signed certificate for `localhost` and `127.0.0.1` (ALPN `h2` and
//! `http/1.1`) and forwards the decrypted bytes to the upstream address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::TempDir;

/// A running proxy; stops on drop.
pub struct TlsProxy {
    /// Where it accepts TLS connections.
    pub addr: SocketAddr,
    /// The PEM file of the certificate it presents (its own CA: trust it to connect).
    pub ca_pem: PathBuf,
    /// With [`start_requiring_client_cert`](Self::start_requiring_client_cert): a client
    /// certificate (PEM) and its key (PEM) that the proxy accepts, signed by its client CA.
    pub client: Option<(PathBuf, PathBuf)>,
    _dir: TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsProxy {
    /// Starts a proxy forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> TlsProxy {
        Self::start_with(upstream, false)
    }

    /// Starts a proxy that refuses clients without a certificate signed by its own client CA
    /// (mutual TLS); [`client`](Self::client) holds one that it accepts.
    pub fn start_requiring_client_cert(upstream: SocketAddr) -> TlsProxy {
        Self::start_with(upstream, true)
    }

    fn start_with(upstream: SocketAddr, client_auth: bool) -> TlsProxy {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .unwrap();
        let dir = TempDir::new("tls-proxy");
        let ca_pem = dir.0.join("ca.pem");
        std::fs::write(&ca_pem, cert.cert.pem()).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        // ring: the workspace's one TLS stack (rustls 0.23.48 deprecates it for lacking
        // post-quantum key exchange).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let mut client = None;
        let builder = if client_auth {
            // A client CA, and one client certificate it signs.
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca_cert = ca_params.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(ca_params, &ca_key);
            let client_key = rcgen::KeyPair::generate().unwrap();
            let client_cert = rcgen::CertificateParams::new(vec!["scraper".to_owned()])
                .unwrap()
                .signed_by(&client_key, &issuer)
                .unwrap();
            let (cert_pem, key_pem) = (dir.0.join("client.pem"), dir.0.join("client.key"));
            std::fs::write(&cert_pem, client_cert.pem()).unwrap();
            std::fs::write(&key_pem, client_key.serialize_pem()).unwrap();
            client = Some((cert_pem, key_pem));
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca_cert.der().clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (runtime, listener, addr) = crate::serve::loopback_runtime(1);
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        TlsProxy {
            addr,
            ca_pem,
            client,
            _dir: dir,
            runtime: Some(runtime),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
