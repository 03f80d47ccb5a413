//! End-to-end tests of sonde and the peers they run against, shared by every test rather than
//! rewritten per crate: a real Prometheus server ([`prometheus`]), HTTP helpers ([`http`]) and
//! the independent Python exposition parsers ([`python`]).
//!
//! Peers are real programs. When one is missing the helpers panic with the command that
//! installs it: tests fail loudly, never skip.
#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

pub mod agent;
pub mod certs;
pub mod cloudwatch;
pub mod example;
pub mod fixtures;
pub mod grafana;
pub mod host_tree;
pub mod http;
pub mod metadata;
pub mod otel_sdk;
pub mod otlp;
pub mod peer;
pub mod prometheus;
pub mod pushgateway;
pub mod python;
mod scripted;
pub mod serve;
pub mod sleeper;
pub mod switch;
pub mod ticker;
pub mod tls_proxy;
pub mod victoria;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the caller to use).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback address with a free port.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `sonde-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sonde-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` every 200 ms until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub use sonde_testkit::require_program;

/// sonde's Prometheus exporter of `registry` on a free 127.0.0.1 port, for a test to configure
/// further before it installs it.
pub fn loopback_exporter(registry: &sonde::Registry) -> sonde::prometheus::PrometheusBuilder {
    sonde::prometheus::PrometheusBuilder::new()
        .registry(registry.clone())
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// The value of the counter or gauge series `name{labels}` in `registry` now, 0 while it has
/// none (an exporter's self-metrics before their first event).
pub fn self_metric(registry: &sonde::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .snapshot()
        .point(name, labels)
        .and_then(|p| p.number())
        .map(|n| n.as_f64())
        .unwrap_or(0.0)
}

/// Percent-encodes a URL query parameter or path segment.
pub fn percent_encode(s: &str) -> String {
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

/// Runs `program args...` with `input` on its standard input and returns its output (status,
/// stdout, stderr), for peers that read an exposition from stdin (promtool, Python parsers).
pub fn run_with_stdin(
    program: &std::path::Path,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", program.display()));
    // A program that exits before reading everything closes the pipe; its output says why.
    let _ = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(input.as_bytes()));
    child.wait_with_output().unwrap()
}
