//! [`ScrapeTargetConfig`]: a target as a configuration file sets it (one of the agent's
//! `[[sources.scrape]]`), checked as [`ScrapeSource::start`](crate::ScrapeSource::start) and
//! the first scrape would check it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sonde_settings::{Expect, Problem, Settings, show_duration};

use crate::{Auth, Target, Tls, check_login, check_url};

/// One scrape target's settings, flat as a file writes them.
///
/// ```
/// use sonde_scrape::ScrapeTargetConfig;
/// use sonde_settings::Settings;
///
/// let config = ScrapeTargetConfig {
///     job: "node".into(),
///     url: "http://127.0.0.1:9100/metrics".into(),
///     username: Some("u".into()),
///     ..Default::default()
/// };
/// assert!(config.validate()[0].message.contains("`username` and `password` together"));
/// assert_eq!(config.target().job, "node");
/// ```
// `Debug` keeps the password, the token and URL credentials out of logs.
#[derive(Clone, PartialEq, Deserialize, custom_debug::Debug)]
#[serde(default, deny_unknown_fields)]
pub struct ScrapeTargetConfig {
    /// The `job` label of its series.
    pub job: String,
    /// Its metrics URL.
    #[debug(with = sonde_settings::redact::url)]
    pub url: String,
    /// Time between scrapes (default 15 s).
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
    /// Time limit of one scrape (default 10 s), at most `interval`.
    #[serde(with = "sonde_settings::duration")]
    pub timeout: Duration,
    /// Basic auth user (with `password`).
    pub username: Option<String>,
    /// Basic auth password (with `username`).
    #[debug(skip)]
    pub password: Option<String>,
    /// A bearer token (alone).
    #[debug(skip)]
    pub bearer_token: Option<String>,
    /// The CA (PEM) that signed the target's certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
    /// A client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Ask for the protobuf format first (default true; the only one with native histograms).
    pub protobuf: bool,
    /// The most samples one scrape may expose (default
    /// [`DEFAULT_SAMPLE_LIMIT`](crate::DEFAULT_SAMPLE_LIMIT)); a scrape with more fails whole.
    pub sample_limit: usize,
}

impl Default for ScrapeTargetConfig {
    fn default() -> Self {
        let t = Target::new("", "");
        ScrapeTargetConfig {
            job: String::new(),
            url: String::new(),
            interval: t.interval,
            timeout: t.timeout,
            username: None,
            password: None,
            bearer_token: None,
            ca_file: None,
            insecure_skip_verify: false,
            cert_file: None,
            key_file: None,
            protobuf: t.protobuf,
            sample_limit: t.sample_limit,
        }
    }
}

impl ScrapeTargetConfig {
    /// The credentials, when they go together.
    fn auth(&self) -> Option<Auth> {
        match (&self.username, &self.password, &self.bearer_token) {
            (None, None, None) => Some(Auth::None),
            (Some(user), Some(password), None) => Some(Auth::Basic {
                user: user.clone(),
                password: password.clone(),
            }),
            (None, None, Some(token)) => Some(Auth::Bearer(token.clone())),
            _ => None,
        }
    }

    /// The target these settings describe.
    pub fn target(&self) -> Target {
        let mut t = Target::new(self.job.clone(), self.url.clone());
        t.interval = self.interval;
        t.timeout = self.timeout;
        t.auth = self.auth().unwrap_or_default();
        t.tls = Tls {
            ca_file: self.ca_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            client_cert: self.cert_file.clone().zip(self.key_file.clone()),
        };
        t.protobuf = self.protobuf;
        t.sample_limit = self.sample_limit;
        t
    }
}

impl Settings for ScrapeTargetConfig {
    fn expect(key: &str) -> Option<Expect> {
        match key {
            "interval" | "timeout" => Some(Expect::duration(
                Duration::from_millis(10)..=Duration::from_secs(7 * 24 * 3600),
                Duration::from_secs(15),
            )),
            "protobuf" | "insecure_skip_verify" => Some(Expect::Flag),
            "sample_limit" => Some(Expect::count(1..=10_000_000, crate::DEFAULT_SAMPLE_LIMIT)),
            _ => None,
        }
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = [
            Self::within("interval", self.interval),
            Self::within("timeout", self.timeout),
            Self::within("sample_limit", self.sample_limit),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.job.is_empty() || self.url.is_empty() {
            problems.push(Problem::new(
                "",
                "each [[sources.scrape]] needs `job` and `url`",
                "for example job = \"node\", url = \"http://127.0.0.1:9100/metrics\"",
            ));
            return problems;
        }
        if let Err(e) = check_url(&self.url) {
            problems.push(Problem::new(
                "url",
                e.message,
                "scrape targets are http:// or https:// URLs",
            ));
        }
        if self.job.trim().is_empty() {
            problems.push(Problem::new(
                "job",
                "`job` is empty",
                "name the target: its series carry it as the job label",
            ));
        }
        if self.timeout > self.interval {
            problems.push(Problem::new(
                "timeout",
                format!(
                    "the scrape timeout ({}) is longer than its interval ({})",
                    show_duration(self.timeout),
                    show_duration(self.interval)
                ),
                "make `timeout` at most `interval`, as Prometheus requires",
            ));
        }
        let job = &self.job;
        match self.auth() {
            None => problems.push(Problem::new(
                "",
                format!(
                    "`{job}`: give `username` and `password` together, or `bearer_token` alone"
                ),
                "basic auth needs both; a bearer token goes without them",
            )),
            Some(auth) => {
                if let Err(e) = check_login(&self.url, &auth) {
                    problems.push(Problem::new(
                        "url",
                        e.message,
                        "put the credentials in `username` and `password` (or `bearer_token`), not in the URL",
                    ));
                }
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push(Problem::new(
                "",
                format!("`{job}`: give `cert_file` and `key_file` together"),
                "a client certificate (PEM) goes with its private key (PEM)",
            ));
        } else if let Err(e) = self.target().tls.check() {
            problems.push(Problem::new(
                "ca_file",
                format!("`{job}`: {e}"),
                "ca_file is a PEM file with the certificate authority that signed the target's certificate; cert_file and key_file the client certificate and its key, in PEM",
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password_the_token_and_url_credentials() {
        let config = ScrapeTargetConfig {
            job: "node".into(),
            url: "https://u:s3cret@h:9100/metrics".into(),
            username: Some("u".into()),
            password: Some("s3cret".into()),
            bearer_token: Some("s3cret".into()),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("https://<redacted>@h:9100/metrics"),
            "{shown}"
        );
        assert!(shown.contains(r#"job: "node""#), "{shown}");
    }
}
