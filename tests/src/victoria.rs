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
use crate::prometheus::{Sample, SecuredApi};
use crate::{http, wait_for};

const INSTALL: &str = "apt-get install -y victoria-metrics";

/// The server's flags: listen address, storage, and what makes ingested samples searchable at
/// once.
fn args(addr: SocketAddr, dir: &std::path::Path) -> Vec<String> {
    vec![
        format!("-httpListenAddr={addr}"),
        format!("-storageDataPath={}", dir.join("data").display()),
        "-search.latencyOffset=0s".to_owned(),
        "-search.disableCache".to_owned(),
        "-loggerLevel=WARN".to_owned(),
        "-memory.allowedPercent=5".to_owned(),
    ]
}

/// A running VictoriaMetrics; killed on drop.
pub struct VictoriaMetrics {
    peer: Peer,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics and waits until `/health` answers.
    pub fn start() -> VictoriaMetrics {
        let peer = Peer::start("victoria-metrics", INSTALL, args, "/health");
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
/// and credentials ([`SecuredApi`]; the single-node server checks no client certificates
/// outside its enterprise edition, so the one presented is ignored).
pub struct SecuredVictoriaMetrics(SecuredApi);

impl std::ops::Deref for SecuredVictoriaMetrics {
    type Target = SecuredApi;
    fn deref(&self) -> &SecuredApi {
        &self.0
    }
}

impl SecuredVictoriaMetrics {
    /// Starts it and waits until `/health` answers through TLS and auth.
    pub fn start(
        certs: &crate::certs::Certs,
        user: &str,
        password: &str,
    ) -> SecuredVictoriaMetrics {
        let (cert, key) = (certs.server_cert.clone(), certs.server_key.clone());
        let (auth_user, auth_password) = (user.to_owned(), password.to_owned());
        SecuredVictoriaMetrics(SecuredApi::start(
            "victoria-metrics",
            INSTALL,
            certs,
            (user, password),
            move |addr, dir| {
                let mut args = args(addr, dir);
                args.extend([
                    "-tls".to_owned(),
                    format!("-tlsCertFile={}", cert.display()),
                    format!("-tlsKeyFile={}", key.display()),
                    format!("-httpAuth.username={auth_user}"),
                    format!("-httpAuth.password={auth_password}"),
                ]);
                args
            },
            "/health",
        ))
    }

    /// Flushes, then evaluates `expr` now, through TLS and auth.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        let flushed = self.get("/internal/force_flush", None).map(|r| r.status);
        assert_eq!(flushed, Some(200), "force_flush; log: {}", self.log());
        self.0.query(expr)
    }
}
