//! A real VictoriaMetrics single-node server (the Debian `victoria-metrics` package) on a
//! loopback port with a temporary storage directory, receiving remote write at `/api/v1/write`
//! and answering PromQL (MetricsQL) at `/api/v1/query`.
//!
//! Freshly ingested samples sit in memory buffers for up to a second; [`VictoriaMetrics::query`]
//! calls `/internal/force_flush` first, and the server runs with `-search.latencyOffset=0s` and
//! `-search.disableCache`, so what was written is visible to the next query.

use std::net::SocketAddr;
use std::time::Duration;

use crate::peer::Peer;
use crate::prometheus::Sample;
use crate::{http, wait_for};

const INSTALL: &str = "apt-get install -y victoria-metrics";

/// A running VictoriaMetrics; killed on drop.
pub struct VictoriaMetrics {
    peer: Peer,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics and waits until `/health` answers.
    pub fn start() -> VictoriaMetrics {
        let peer = Peer::start(
            "victoria-metrics",
            INSTALL,
            |addr, dir| {
                vec![
                    format!("-httpListenAddr={addr}"),
                    format!("-storageDataPath={}", dir.join("data").display()),
                    "-search.latencyOffset=0s".to_owned(),
                    "-search.disableCache".to_owned(),
                    "-loggerLevel=WARN".to_owned(),
                    "-memory.allowedPercent=5".to_owned(),
                ]
            },
            "/health",
        );
        VictoriaMetrics {
            addr: peer.addr,
            peer,
        }
    }

    /// The remote write endpoint.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        self.peer.log()
    }

    /// Makes recently ingested samples searchable.
    pub fn flush(&self) {
        let r = http::get(&format!("http://{}/internal/force_flush", self.addr), &[]);
        assert_eq!(r.status, 200, "force_flush: {}", r.text());
    }

    /// Flushes, then evaluates `expr` now through the Prometheus-compatible API.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        self.flush();
        crate::prometheus::query(self.addr, expr)
    }

    /// Waits (bounded) until `expr` returns at least one sample.
    pub fn wait_for_series(&self, expr: &str, timeout: Duration) -> Vec<Sample> {
        wait_for(
            &format!("{expr} to return data from victoria-metrics"),
            timeout,
            || {
                let r = self.query(expr);
                (!r.is_empty()).then_some(r)
            },
        )
    }
}

/// A VictoriaMetrics behind its own flags for HTTPS (`-tls` with the server certificate of
/// `certs`) and basic auth (`-httpAuth.*`), receiving remote write; queried through the same TLS
/// and credentials. (The single-node server checks no client certificates outside its
/// enterprise edition.)
pub struct SecuredVictoriaMetrics {
    peer: Peer,
    /// Where its HTTPS API listens.
    pub addr: SocketAddr,
    ca: std::path::PathBuf,
    client: (std::path::PathBuf, std::path::PathBuf),
    authorization: String,
}

impl SecuredVictoriaMetrics {
    /// Starts it and waits until `/health` answers through TLS and auth.
    pub fn start(
        certs: &crate::certs::Certs,
        user: &str,
        password: &str,
    ) -> SecuredVictoriaMetrics {
        use base64::Engine as _;
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let ca = certs.server_cert.clone();
        // Presented but not asked for: the helper speaks TLS with a client identity.
        let client = (certs.client_cert.clone(), certs.client_key.clone());
        let (cert, key) = (certs.server_cert.clone(), certs.server_key.clone());
        let (user, password) = (user.to_owned(), password.to_owned());
        let (ready_ca, ready_client, ready_auth) =
            (ca.clone(), client.clone(), authorization.clone());
        let peer = Peer::start_ready_when(
            "victoria-metrics",
            INSTALL,
            |addr, dir| {
                vec![
                    format!("-httpListenAddr={addr}"),
                    format!("-storageDataPath={}", dir.join("data").display()),
                    "-tls".to_owned(),
                    format!("-tlsCertFile={}", cert.display()),
                    format!("-tlsKeyFile={}", key.display()),
                    format!("-httpAuth.username={user}"),
                    format!("-httpAuth.password={password}"),
                    "-search.latencyOffset=0s".to_owned(),
                    "-search.disableCache".to_owned(),
                    "-loggerLevel=WARN".to_owned(),
                    "-memory.allowedPercent=5".to_owned(),
                ]
            },
            move |addr, _| {
                http::try_get_mtls(
                    &format!("https://{addr}/health"),
                    &[("Authorization", &ready_auth)],
                    &ready_ca,
                    (&ready_client.0, &ready_client.1),
                )
                .is_some_and(|r| r.status == 200)
            },
        );
        SecuredVictoriaMetrics {
            addr: peer.addr,
            peer,
            ca,
            client,
            authorization,
        }
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        self.peer.log()
    }

    /// `GET https://addr{path}` with `authorization` (`None`: the right credentials); `None`
    /// when TLS fails.
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

    /// Flushes, then evaluates `expr` now, through TLS and auth.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        let flushed = self.get("/internal/force_flush", None).map(|r| r.status);
        assert_eq!(flushed, Some(200), "force_flush; log: {}", self.log());
        let reply = self
            .get(
                &format!("/api/v1/query?query={}", crate::percent_encode(expr)),
                None,
            )
            .unwrap_or_else(|| panic!("query {expr}: TLS failed; log: {}", self.log()));
        assert_eq!(reply.status, 200, "query {expr}: {}", reply.text());
        let v: serde_json::Value = serde_json::from_str(&reply.text()).unwrap();
        crate::prometheus::parse_vector(&v)
    }
}
