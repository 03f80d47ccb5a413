//! A real Prometheus server (the Debian `prometheus` package) on a loopback port, scraping the
//! given targets every second, queried through its HTTP API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::peer::Peer;
use crate::{http, percent_encode, require_program, wait_for};

const INSTALL: &str = "apt-get install -y prometheus";

/// One sample of an instant vector.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Labels, including `__name__` when the expression keeps it.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    peer: Peer,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `sonde`) every second, with `rule_files` loaded
    /// and `extra_flags` added, and waits until it is ready.
    pub fn start(targets: &[SocketAddr], rule_files: &[&str], extra_flags: &[&str]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let scrape = format!(
            "  - job_name: sonde\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        Self::start_with_scrape_configs(&scrape, rule_files, extra_flags)
    }

    /// Like [`start`](Self::start) with the `scrape_configs` list given as YAML (each entry
    /// indented by two spaces), for TLS, auth or several jobs.
    pub fn start_with_scrape_configs(
        scrape_configs: &str,
        rule_files: &[&str],
        extra_flags: &[&str],
    ) -> Prometheus {
        let rules: Vec<String> = rule_files.iter().map(|r| format!("  - '{r}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\nscrape_configs:\n{}",
            if rules.is_empty() {
                "  []".to_owned()
            } else {
                rules.join("\n")
            },
            if scrape_configs.trim().is_empty() {
                "  []\n"
            } else {
                scrape_configs
            }
        );
        let peer = Peer::start(
            "prometheus",
            INSTALL,
            |addr, dir| {
                let config_path = dir.join("prometheus.yml");
                std::fs::write(&config_path, &config).unwrap();
                let mut args = vec![
                    format!("--config.file={}", config_path.display()),
                    format!("--storage.tsdb.path={}", dir.join("data").display()),
                    format!("--web.listen-address={addr}"),
                    "--log.level=warn".to_owned(),
                ];
                args.extend(extra_flags.iter().map(|f| f.to_string()));
                args
            },
            "/-/ready",
        );
        Prometheus {
            addr: peer.addr,
            peer,
        }
    }

    /// Prometheus's own log, for failure messages.
    pub fn log(&self) -> String {
        self.peer.log()
    }

    /// Evaluates `expr` now. Panics on an API error (a bad expression is a test bug).
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        query(self.addr, expr)
    }

    /// Waits (bounded) until `expr` returns at least one sample.
    pub fn wait_for_series(&self, expr: &str, timeout: Duration) -> Vec<Sample> {
        wait_for(
            &format!("{expr} to return data (prometheus log: {})", self.log()),
            timeout,
            || {
                let r = self.query(expr);
                (!r.is_empty()).then_some(r)
            },
        )
    }

    /// GETs `/api/v1/<path>` with query parameters and returns the JSON body.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        api(self.addr, path, params)
    }
}

/// A Prometheus-compatible API (Prometheus, VictoriaMetrics) behind HTTPS and basic auth,
/// reached with the test's CA, client certificate and credentials.
pub struct SecuredApi {
    peer: Peer,
    /// Where its HTTPS API listens.
    pub addr: SocketAddr,
    ca: std::path::PathBuf,
    client: (std::path::PathBuf, std::path::PathBuf),
    authorization: String,
}

impl SecuredApi {
    /// Starts `program` with `args` and waits until `ready_path` answers 200 through TLS (the
    /// server certificate of `certs` as CA, its client certificate presented) and basic auth
    /// as `user`.
    pub fn start(
        program: &'static str,
        install: &str,
        certs: &crate::certs::Certs,
        (user, password): (&str, &str),
        args: impl Fn(SocketAddr, &std::path::Path) -> Vec<String>,
        ready_path: &'static str,
    ) -> SecuredApi {
        let authorization = http::basic_auth(user, password);
        let ca = certs.server_cert.clone();
        let client = (certs.client_cert.clone(), certs.client_key.clone());
        let peer = Peer::start_ready_when(program, install, args, |addr, _| {
            http::try_get_mtls(
                &format!("https://{addr}{ready_path}"),
                &[("Authorization", &authorization)],
                &ca,
                (&client.0, &client.1),
            )
            .is_some_and(|r| r.status == 200)
        });
        SecuredApi {
            addr: peer.addr,
            peer,
            ca,
            client,
            authorization,
        }
    }

    /// The server's own log, for failure messages.
    pub fn log(&self) -> String {
        self.peer.log()
    }

    /// `GET https://addr{path}` with the test's client certificate and `authorization`
    /// (`None`: the right credentials); `None` when TLS refuses.
    pub fn get(&self, path: &str, authorization: Option<&str>) -> Option<http::Reply> {
        http::try_get_mtls(
            &format!("https://{}{path}", self.addr),
            &[(
                "Authorization",
                authorization.unwrap_or(&self.authorization),
            )],
            &self.ca,
            (&self.client.0, &self.client.1),
        )
    }

    /// Evaluates `expr` now, through TLS and auth.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        let reply = self
            .get(
                &format!("/api/v1/query?query={}", percent_encode(expr)),
                None,
            )
            .unwrap_or_else(|| panic!("query {expr}: TLS failed; log: {}", self.log()));
        assert_eq!(reply.status, 200, "query {expr}: {}", reply.text());
        let v: Value = serde_json::from_str(&reply.text()).unwrap();
        parse_vector(&v)
    }

    /// A Prometheus behind its own web configuration: HTTPS with the server certificate of
    /// `certs`, client certificates required (signed by `certs.client_ca`) and basic auth for
    /// `user` (bcrypt hash of `password`), receiving remote write. Started, and waited for until
    /// it answers `/-/ready` through TLS and auth.
    pub fn prometheus(certs: &crate::certs::Certs, user: &str, password: &str) -> SecuredApi {
        let hash = bcrypt::hash(password, 4).unwrap();
        let web = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\nbasic_auth_users:\n  {user}: {hash}\n",
            certs.server_cert.display(),
            certs.server_key.display(),
            certs.client_ca.display(),
        );
        SecuredApi::start(
            "prometheus",
            INSTALL,
            certs,
            (user, password),
            |addr, dir| {
                let config_path = dir.join("prometheus.yml");
                std::fs::write(
                    &config_path,
                    "global:\n  scrape_interval: 1s\nscrape_configs: []\n",
                )
                .unwrap();
                let web_path = dir.join("web.yml");
                std::fs::write(&web_path, &web).unwrap();
                vec![
                    format!("--config.file={}", config_path.display()),
                    format!("--web.config.file={}", web_path.display()),
                    format!("--storage.tsdb.path={}", dir.join("data").display()),
                    format!("--web.listen-address={addr}"),
                    "--web.enable-remote-write-receiver".to_owned(),
                    "--log.level=warn".to_owned(),
                ]
            },
            "/-/ready",
        )
    }
}

/// GETs `/api/v1/<path>` of a Prometheus-compatible API (Prometheus, VictoriaMetrics) and returns
/// the JSON body, asserting `status: success`.
pub fn api(addr: SocketAddr, path: &str, params: &[(&str, &str)]) -> Value {
    let mut url = format!("http://{addr}/api/v1/{path}?");
    for (k, v) in params {
        url.push_str(k);
        url.push('=');
        url.push_str(&percent_encode(v));
        url.push('&');
    }
    let reply = http::get(&url, &[]);
    let body: Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("{url}: {e}: {}", reply.text()));
    assert_eq!(body["status"], "success", "{url}: {body}");
    body
}

/// Evaluates a PromQL instant query against a Prometheus-compatible API.
pub fn query(addr: SocketAddr, expr: &str) -> Vec<Sample> {
    parse_vector(&api(addr, "query", &[("query", expr)]))
}

/// The samples of a `/api/v1/query` answer (a vector or a scalar).
pub(crate) fn parse_vector(body: &Value) -> Vec<Sample> {
    let expr = "the query";
    let result = &body["data"]["result"];
    match body["data"]["resultType"].as_str() {
        Some("vector") => result
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                labels: s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                value: parse_value(&s["value"][1]),
            })
            .collect(),
        Some("scalar") => vec![Sample {
            labels: BTreeMap::new(),
            value: parse_value(&result[1]),
        }],
        other => panic!("unexpected result type {other:?} for {expr}: {body}"),
    }
}

fn parse_value(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Runs `promtool check metrics` on an exposition; returns its combined output, panicking if it
/// exits non-zero.
pub fn promtool_check_metrics(exposition: &str) -> String {
    let bin = require_program("promtool", INSTALL);
    let out = crate::run_with_stdin(&bin, &["check", "metrics"], exposition);
    succeeded("promtool check metrics", &out)
}

pub use sonde_testkit::promtool;
use sonde_testkit::succeeded;
