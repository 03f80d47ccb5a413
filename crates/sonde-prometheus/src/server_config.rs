//! [`PrometheusServerConfig`]: the `/metrics` server as a configuration file sets it (the
//! agent's `[exporters.prometheus]`), checked as start-up checks it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sonde_settings::{Expect, Problem, Settings};

use crate::{PrometheusBuilder, check_basic_auth_user, check_tls_files};

/// The server's settings: where it listens, TLS, and basic auth in the style of Prometheus's
/// web configuration. The registry and resource are the caller's to add to the
/// [builder](Self::builder).
///
/// ```
/// use sonde_prometheus::PrometheusServerConfig;
/// use sonde_settings::Settings;
///
/// let config = PrometheusServerConfig {
///     basic_auth_users: vec![("admin".into(), "hunter2".into())],
///     ..Default::default()
/// };
/// let problems = config.validate();
/// assert_eq!(problems[0].key, "basic_auth_users.admin");
/// assert!(problems[0].message.contains("not a bcrypt hash"));
/// ```
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusServerConfig {
    /// Where `/metrics` is served (default [`DEFAULT_LISTEN`], `127.0.0.1:9465`).
    #[serde(deserialize_with = "address")]
    pub listen: SocketAddr,
    /// The certificate chain (PEM, leaf first) to serve HTTPS; re-read when it changes.
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// User names and bcrypt hashes, as in Prometheus's web configuration.
    #[serde(with = "sonde_settings::pairs")]
    pub basic_auth_users: Vec<(String, String)>,
}

/// The address `/metrics` is served on by default from a configuration file: port 9465, a
/// deployed agent's, not [`PrometheusBuilder`]'s 9464 (the OpenTelemetry Prometheus
/// exporter's), so an agent and a service embedding sonde run on one host with their defaults.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9465);

impl Default for PrometheusServerConfig {
    fn default() -> Self {
        PrometheusServerConfig {
            listen: DEFAULT_LISTEN,
            tls_cert_file: None,
            tls_key_file: None,
            basic_auth_users: Vec::new(),
        }
    }
}

// Not derived: password hashes stay out of logs.
impl std::fmt::Debug for PrometheusServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self
            .basic_auth_users
            .iter()
            .map(|(u, _)| u.as_str())
            .collect();
        f.debug_struct("PrometheusServerConfig")
            .field("listen", &self.listen)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("basic_auth_users", &users)
            .finish()
    }
}

fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    sonde_settings::address::deserialize(d).map(|a| a.unwrap_or(DEFAULT_LISTEN))
}

impl PrometheusServerConfig {
    /// The server these settings describe.
    pub fn builder(&self) -> PrometheusBuilder {
        let mut b = PrometheusBuilder::new().bind(self.listen);
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            b = b.tls(cert, key);
        }
        for (user, hash) in &self.basic_auth_users {
            b = b.basic_auth_user(user, hash);
        }
        b
    }
}

impl Settings for PrometheusServerConfig {
    fn expect(key: &str) -> Option<Expect> {
        (key == "listen").then_some(Expect::Address {
            example: "127.0.0.1:9465",
        })
    }

    /// TLS files loaded and each user's hash checked, as the server does at start.
    fn validate(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = Problem::tls_files(
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
            check_tls_files,
        )
        .into_iter()
        .collect();
        for (user, hash) in &self.basic_auth_users {
            if let Err(e) = check_basic_auth_user(user, hash) {
                problems.push(Problem::new(
                    &format!("basic_auth_users.{user}"),
                    format!("basic_auth_users: {e}"),
                    "the value is the bcrypt hash, not the password",
                ));
            }
        }
        problems
    }
}
