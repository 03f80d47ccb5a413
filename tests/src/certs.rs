//! TLS files for tests of mutual TLS against real peers: a server certificate for `localhost`
//! and `127.0.0.1` (self-signed, so its PEM is also the CA a client trusts), and a client CA
//! with one client certificate it signs. PEM files in a temporary directory.

use std::path::PathBuf;

use crate::TempDir;

/// The files; removed with the directory on drop.
pub struct Certs {
    /// The server's certificate (and the CA clients trust).
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// The CA the server trusts for client certificates.
    pub client_ca: PathBuf,
    /// A client certificate signed by `client_ca`.
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// A client certificate signed by no CA the server knows (self-signed), with its key.
    pub stranger: (PathBuf, PathBuf),
    /// The directory holding them.
    pub dir: TempDir,
}

impl Certs {
    /// Generates fresh keys and certificates.
    pub fn generate() -> Certs {
        let dir = TempDir::new("certs");
        let path = |name: &str| dir.0.join(name);
        let server = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .unwrap();
        std::fs::write(path("server.pem"), server.cert.pem()).unwrap();
        std::fs::write(path("server.key"), server.signing_key.serialize_pem()).unwrap();

        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, &ca_key);
        std::fs::write(path("client-ca.pem"), ca_cert.pem()).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client = rcgen::CertificateParams::new(vec!["sonde-agent".to_owned()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        std::fs::write(path("client.pem"), client.pem()).unwrap();
        std::fs::write(path("client.key"), client_key.serialize_pem()).unwrap();

        let stranger = rcgen::generate_simple_self_signed(vec!["stranger".to_owned()]).unwrap();
        std::fs::write(path("stranger.pem"), stranger.cert.pem()).unwrap();
        std::fs::write(path("stranger.key"), stranger.signing_key.serialize_pem()).unwrap();
        Certs {
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_ca: path("client-ca.pem"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            stranger: (path("stranger.pem"), path("stranger.key")),
            dir,
        }
    }
}
