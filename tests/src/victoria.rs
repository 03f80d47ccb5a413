//! A real VictoriaMetrics single-node server (the Debian `victoria-metrics` package) on a
//! loopback port with a temporary storage directory, receiving remote write at `/api/v1/write`
//! and answering PromQL (MetricsQL) at `/api/v1/query`.
//!
//! Freshly ingested samples sit in memory buffers for up to a second; [`VictoriaMetrics::query`]
//! calls `/internal/force_flush` first, and the server runs with `-search.latencyOffset=0s` and
//! `-search.disableCache`, so what was written is visible to the next query.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::prometheus::Sample;
use crate::{TempDir, free_addr, http, require_program, wait_for};

const INSTALL: &str = "apt-get install -y victoria-metrics";

/// A running VictoriaMetrics; killed on drop.
pub struct VictoriaMetrics {
    child: Child,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics and waits until `/health` answers.
    pub fn start() -> VictoriaMetrics {
        let bin = require_program("victoria-metrics", INSTALL);
        let dir = TempDir::new("victoria");
        let addr = free_addr();
        let log = std::fs::File::create(dir.0.join("victoria.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr={addr}"))
            .arg(format!("-storageDataPath={}", dir.0.join("data").display()))
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .arg("-loggerLevel=WARN")
            .arg("-memory.allowedPercent=5")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start victoria-metrics: {e}; {INSTALL}"));
        let mut vm = VictoriaMetrics { child, addr, dir };
        wait_for(
            "victoria-metrics to become healthy",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = vm.child.try_wait() {
                    panic!("victoria-metrics exited with {status}: {}", vm.log());
                }
                let ok = std::panic::catch_unwind(|| {
                    http::get(&format!("http://{addr}/health"), &[]).status == 200
                });
                ok.unwrap_or(false).then_some(())
            },
        );
        vm
    }

    /// The remote write endpoint.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("victoria.log")).unwrap_or_default()
    }

    /// Makes recently ingested samples searchable.
    pub fn flush(&self) {
        let r = http::get(&format!("http://{}/internal/force_flush", self.addr), &[]);
        assert_eq!(r.status, 200, "force_flush: {}", r.text());
    }

    /// Flushes, then evaluates `expr` now. Panics on an API error.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        self.flush();
        let url = format!(
            "http://{}/api/v1/query?query={}",
            self.addr,
            encode_query(expr)
        );
        let reply = http::get(&url, &[]);
        let body: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{url}: {e}: {}", reply.text()));
        assert_eq!(body["status"], "success", "{url}: {body}");
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
                        .collect::<BTreeMap<_, _>>(),
                    value: s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN),
                })
                .collect(),
            other => panic!("unexpected result type {other:?} for {expr}: {body}"),
        }
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

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
pub fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
