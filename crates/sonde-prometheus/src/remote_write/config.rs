//! [`RemoteWriteConfig`]: a remote writer as a configuration file sets it (the agent's
//! `[exporters.remote_write]`), checked as [`RemoteWriteBuilder::check`] checks it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sonde_settings::{Expect, Problem, Settings};

use super::RemoteWriteBuilder;

/// The settings of a remote writer: where, how often, and how it authenticates. The registry,
/// the resource, the selection and a durable queue are the caller's to add to the
/// [builder](Self::builder).
///
/// ```
/// use sonde_prometheus::RemoteWriteConfig;
/// use sonde_settings::Settings;
///
/// let config = RemoteWriteConfig {
///     url: "http://127.0.0.1:9090/api/v1/write".into(),
///     username: Some("agent".into()),
///     ..Default::default()
/// };
/// let problems = config.validate();
/// assert!(problems[0].message.contains("basic auth needs both `username` and `password`"));
/// ```
// `Debug` keeps the password, tokens, header values and URL credentials out of logs.
#[derive(Clone, PartialEq, Deserialize, custom_debug::Debug)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's endpoint (`http://host:9090/api/v1/write`).
    #[debug(with = sonde_settings::redact::url)]
    pub url: String,
    /// Push interval (default 15 s).
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
    /// HTTP basic auth user (with `password`).
    pub username: Option<String>,
    /// HTTP basic auth password (with `username`).
    #[debug(with = sonde_settings::redact::secret)]
    pub password: Option<String>,
    /// A bearer token.
    #[debug(with = sonde_settings::redact::secret)]
    pub bearer_token: Option<String>,
    /// A file holding the bearer token, read again whenever it changes.
    pub bearer_token_file: Option<PathBuf>,
    /// Sent as `X-Scope-OrgID` (Mimir, Cortex).
    pub tenant: Option<String>,
    /// Extra HTTP headers.
    #[serde(with = "sonde_settings::pairs")]
    #[debug(with = sonde_settings::redact::headers)]
    pub headers: Vec<(String, String)>,
    /// The private CA to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Its private key (with `cert_file`).
    pub key_file: Option<PathBuf>,
    /// Signs requests with AWS SigV4 (credentials from the AWS default chain).
    pub sigv4: bool,
    /// The SigV4 region (else the AWS configuration's).
    pub sigv4_region: Option<String>,
    /// The SigV4 service (default `aps`).
    pub sigv4_service: Option<String>,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            url: String::new(),
            interval: Duration::from_secs(15),
            username: None,
            password: None,
            bearer_token: None,
            bearer_token_file: None,
            tenant: None,
            headers: Vec::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            sigv4: false,
            sigv4_region: None,
            sigv4_service: None,
        }
    }
}

impl RemoteWriteConfig {
    /// The writer these settings describe (add the registry, resource, selection and queue).
    pub fn builder(&self) -> RemoteWriteBuilder {
        let mut b = RemoteWriteBuilder::new(self.url.clone()).interval(self.interval);
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            b = b.basic_auth(user.clone(), password.clone());
        }
        if let Some(t) = &self.bearer_token {
            b = b.bearer_token(t.clone());
        }
        if let Some(path) = &self.bearer_token_file {
            b = b.bearer_token_file(path.clone());
        }
        if let Some(t) = &self.tenant {
            b = b.tenant(t.clone());
        }
        for (k, v) in &self.headers {
            b = b.header(k.clone(), v.clone());
        }
        if let Some(ca) = &self.ca_file {
            b = b.tls_ca_file(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            b = b.tls_client_cert(cert.clone(), key.clone());
        }
        #[cfg(feature = "sigv4")]
        if self.sigv4 {
            b = b.sigv4_service(self.sigv4_service.clone().unwrap_or_else(|| "aps".into()));
            if let Some(r) = &self.sigv4_region {
                b = b.sigv4_region(r.clone());
            }
        }
        b
    }
}

const EXAMPLE_URL: &str = "http://127.0.0.1:9090/api/v1/write";

impl Settings for RemoteWriteConfig {
    fn expect(key: &str) -> Option<Expect> {
        match key {
            "interval" => Some(Expect::interval(Duration::from_secs(15))),
            "sigv4" => Some(Expect::Flag),
            _ => None,
        }
    }

    /// The ranges, the pairs that go together, then everything [`RemoteWriteBuilder::check`]
    /// checks (credentials, the token file, the TLS files are read).
    fn validate(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = Self::within("interval", self.interval)
            .into_iter()
            .collect();
        if self.url.is_empty() {
            problems.push(Problem::new(
                "",
                "needs a `url`",
                format!("for example url = \"{EXAMPLE_URL}\""),
            ));
            return problems;
        }
        if !sonde_push::is_http_url(&self.url) {
            problems.push(Problem::new(
                "url",
                format!(
                    "`{}` is not an absolute http:// or https:// URL with a host",
                    self.url
                ),
                format!("for example \"{EXAMPLE_URL}\""),
            ));
            return problems;
        }
        let pairs = [
            (
                "username",
                self.username.is_some() != self.password.is_some(),
                "basic auth needs both `username` and `password`",
                "give both, or use bearer_token / bearer_token_file instead",
            ),
            (
                "cert_file",
                self.cert_file.is_some() != self.key_file.is_some(),
                "mutual TLS needs both `cert_file` and `key_file`",
                "give the client certificate (PEM) and its private key together",
            ),
            (
                "sigv4_region",
                !self.sigv4 && (self.sigv4_region.is_some() || self.sigv4_service.is_some()),
                "sigv4_region and sigv4_service need `sigv4 = true`",
                "add sigv4 = true to sign requests with AWS SigV4",
            ),
        ];
        if self.sigv4 && cfg!(not(feature = "sigv4")) {
            problems.push(Problem::new(
                "sigv4",
                "SigV4 signing is not in this build",
                "build sonde-prometheus with its `sigv4` feature",
            ));
        }
        for (key, wrong, message, hint) in pairs {
            if wrong {
                problems.push(Problem::new(key, message, hint));
            }
        }
        if let Err(e) = self.builder().check() {
            problems.push(Problem::new(
                "",
                e.to_string(),
                "fix the setting named; files are read as the agent reads them at start",
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_user_but_no_secret() {
        let config = RemoteWriteConfig {
            url: "https://u:s3cret-url@h/api/v1/write".into(),
            username: Some("agent".into()),
            password: Some("s3cret-password".into()),
            bearer_token: Some("s3cret-token".into()),
            headers: vec![("x-api-key".into(), "s3cret-header".into())],
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(r#"username: Some("agent")"#), "{shown}");
        assert!(shown.contains(r#"password: Some("<redacted>")"#), "{shown}");
        assert!(shown.contains(r#"{"x-api-key": "<redacted>"}"#), "{shown}");
        assert!(
            shown.contains("https://<redacted>@h/api/v1/write"),
            "{shown}"
        );
    }
}
