//! [`StatsdConfig`]: the server's settings as a configuration file holds them (the agent's
//! `[statsd]`), checked as [`StatsdServerBuilder::start`](crate::StatsdServerBuilder::start)
//! would check them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sonde_settings::{Expect, Problem, Settings};

use crate::{Mapper, MappingRule};

/// Longest unix socket path (`sun_path` holds 108 bytes with the final NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// The settings of a [`StatsdServer`](crate::StatsdServer): listeners, buffers, limits and
/// mapping rules. The defaults are a deployed agent's: UDP on `127.0.0.1:8125`, an 8 MiB
/// receive buffer, a 4096-datagram queue, a 10 minute TTL.
///
/// ```
/// use sonde_settings::Settings;
/// use sonde_statsd::{StatsdConfig, StatsdServer};
///
/// let config = StatsdConfig { udp: Some("127.0.0.1:0".parse()?), queue: 0, ..Default::default() };
/// let problems = config.validate();
/// assert_eq!(problems[0].to_string(), "`queue` must be a whole number from 1 to 65536 (for example 4096)");
///
/// let config = StatsdConfig { queue: 64, ..config };
/// assert!(config.validate().is_empty());
/// let server = StatsdServer::builder().config(&config).registry(sonde_core::Registry::new()).start()?;
/// assert!(server.local_addr().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsdConfig {
    /// UDP address (`"off"`: none).
    #[serde(with = "sonde_settings::address")]
    pub udp: Option<SocketAddr>,
    /// Unix datagram socket path (DogStatsD's `dogstatsd.socket`; `""`: none).
    #[serde(deserialize_with = "non_empty_path")]
    pub unix: Option<PathBuf>,
    /// TCP address for newline-delimited lines (off by default).
    #[serde(with = "sonde_settings::address")]
    pub tcp: Option<SocketAddr>,
    /// Most concurrent TCP connections.
    pub tcp_max_connections: usize,
    /// A TCP connection silent this long is closed.
    #[serde(with = "sonde_settings::duration")]
    pub tcp_idle_timeout: Duration,
    /// `SO_RCVBUF`, bytes.
    #[serde(with = "sonde_settings::size")]
    pub receive_buffer: usize,
    /// Datagrams queued between receiving and parsing.
    pub queue: usize,
    /// Most distinct metric names.
    pub max_metrics: usize,
    /// Series and names idle this long expire.
    #[serde(with = "sonde_settings::duration")]
    pub ttl: Duration,
    /// Mapping rules, in order (`[[statsd.mappings]]`).
    pub mappings: Vec<MappingRule>,
}

impl Default for StatsdConfig {
    fn default() -> Self {
        StatsdConfig {
            udp: Some(SocketAddr::from(([127, 0, 0, 1], 8125))),
            unix: None,
            tcp: None,
            tcp_max_connections: crate::tcp::DEFAULT_MAX_CONNECTIONS,
            tcp_idle_timeout: crate::tcp::DEFAULT_IDLE_TIMEOUT,
            receive_buffer: 8 << 20,
            queue: 4096,
            max_metrics: 10_000,
            ttl: Duration::from_secs(600),
            mappings: Vec::new(),
        }
    }
}

fn non_empty_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then(|| PathBuf::from(s)))
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl Settings for StatsdConfig {
    fn expect(key: &str) -> Option<Expect> {
        Some(match key {
            // `sync_channel` allocates every slot up front.
            "queue" => Expect::count(1..=65_536, 4096),
            // SO_RCVBUF is a C `int` that Linux doubles.
            "receive_buffer" => Expect::size(4096..=1 << 30, 8 << 20),
            "max_metrics" => Expect::count(1..=1_000_000, 10_000),
            // Each connection has a thread and up to 80 KiB of buffers.
            "tcp_max_connections" => Expect::count(1..=10_000, crate::tcp::DEFAULT_MAX_CONNECTIONS),
            "tcp_idle_timeout" => {
                Expect::duration(secs(1)..=secs(24 * 3600), crate::tcp::DEFAULT_IDLE_TIMEOUT)
            }
            "ttl" => Expect::duration(secs(1)..=secs(7 * 24 * 3600), secs(600)),
            "udp" => Expect::address("127.0.0.1:8125"),
            "tcp" => Expect::address("127.0.0.1:8125"),
            _ => return None,
        })
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = [
            Self::within("queue", self.queue),
            Self::within("receive_buffer", self.receive_buffer),
            Self::within("max_metrics", self.max_metrics),
            Self::within("tcp_max_connections", self.tcp_max_connections),
            Self::within("tcp_idle_timeout", self.tcp_idle_timeout),
            Self::within("ttl", self.ttl),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(p) = &self.unix {
            let len = p.as_os_str().len();
            if len > MAX_UNIX_PATH || p.as_os_str().as_encoded_bytes().contains(&0) {
                problems.push(Problem {
                    key: "unix".into(),
                    message: format!(
                        "must be a path of at most {MAX_UNIX_PATH} bytes without NUL (this one has {len})"
                    ),
                    names_key: true,
                    hint: "use a shorter path, like \"/run/sonde/dsd.socket\"".into(),
                });
            }
        }
        for (i, rule) in self.mappings.iter().enumerate() {
            let key = format!("mappings.{i}");
            if rule.name.is_none() && rule.labels.is_empty() && !rule.drop {
                problems.push(Problem::new(
                    &key,
                    format!("the mapping for `{}` does nothing", rule.pattern),
                    "give it a `name`, `labels` or drop = true",
                ));
            } else if let Err(e) = Mapper::new([rule.clone()]) {
                // Each rule alone, so the problem is at the rule that has it.
                problems.push(Problem::new(
                    &key,
                    e.to_string(),
                    "see [[statsd.mappings]] in `sonde-agent print-example-config`",
                ));
            }
        }
        problems
    }
}
