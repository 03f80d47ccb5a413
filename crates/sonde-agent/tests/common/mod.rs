//! Helpers shared by the agent's integration tests: writing a configuration and running
//! `check-config` on it.
#![allow(dead_code)] // each test binary uses some of them

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sonde_tests::agent::{KillOnDrop, free_udp, scrape_metrics, spawn_agent};
use sonde_tests::{TempDir, free_addr, prometheus, wait_for};

/// The agent binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sonde-agent");

/// Writes `toml` to `agent.toml` in `dir`; returns its path.
pub fn write_config(dir: &TempDir, toml: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// A new temporary directory named after `name`, with `toml` written to `agent.toml` in it;
/// returns both.
pub fn temp_config(name: &str, toml: impl AsRef<[u8]>) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let path = write_config(&dir, toml);
    (dir, path)
}

/// Runs `sonde-agent check-config <path>` with `env` added to its environment.
pub fn check_config_with_env(path: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("check-config")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Runs `sonde-agent check-config <path>`.
pub fn check_config(path: &Path) -> Output {
    check_config_with_env(path, &[])
}

/// Asserts that `check-config` accepts the configuration at `path` (with `env`), showing its
/// errors if not.
pub fn assert_config_ok_with_env(path: &Path, env: &[(&str, &str)]) {
    let out = check_config_with_env(path, env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `check-config` accepts the configuration at `path`, showing its errors if not.
pub fn assert_config_ok(path: &Path) {
    assert_config_ok_with_env(path, &[]);
}

/// Writes `toml` to `path`, asserts that `check-config` refuses it as a configuration error
/// (exit 2) and returns what it said.
pub fn refused_config(path: &Path, toml: &str) -> String {
    std::fs::write(path, toml).unwrap();
    let out = check_config(path);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{toml}\n{err}");
    err
}

/// Asserts that `err` mentions every one of `expected`.
pub fn assert_mentions(err: &str, expected: &[&str]) {
    for expected in expected {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
}

/// A running agent that takes StatsD on `statsd` and serves `/metrics` on `metrics`; killed
/// when dropped.
pub struct StatsdAgent {
    pub statsd: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: TempDir,
    pub process: KillOnDrop,
    sock: UdpSocket,
}

impl StatsdAgent {
    /// Starts the agent in a temporary directory named after `name`, configured by
    /// `config(statsd, metrics)` with free ports for both; returns once `/metrics` answers.
    pub fn start(name: &str, config: impl FnOnce(SocketAddr, SocketAddr) -> String) -> Self {
        let (statsd, metrics) = (free_udp(), free_addr());
        let (dir, path) = temp_config(name, config(statsd, metrics));
        let process = spawn_agent(BIN, &path, &dir.0);
        wait_for("the agent's /metrics", Duration::from_secs(20), || {
            scrape_metrics(metrics)
        });
        StatsdAgent {
            statsd,
            metrics,
            dir,
            process,
            sock: UdpSocket::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// Sends `lines` to the agent's StatsD port, in one datagram.
    pub fn send(&self, lines: &str) {
        self.sock.send_to(lines.as_bytes(), self.statsd).unwrap();
    }

    /// The first body of `/metrics` for which `ready` holds, waiting up to `timeout` for it.
    pub fn scrape_until(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        wait_for(what, timeout, || self.scrape().filter(|t| ready(t)))
    }

    /// The body of `/metrics`, if it answers.
    pub fn scrape(&self) -> Option<String> {
        scrape_metrics(self.metrics)
    }
}

/// Asserts that `promtool check metrics` finds nothing to say about the exposition `text`.
pub fn assert_promtool_clean(text: &str) {
    let findings = prometheus::promtool_check_metrics(text);
    assert!(
        findings.trim().is_empty(),
        "promtool check metrics has findings on the agent's exposition:\n{findings}\n---\n{text}"
    );
}
