//! [`OtlpReceiverConfig`]: the receiver as a configuration file sets it (the agent's
//! `[sources.otlp]`), checked as start-up checks it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sonde_settings::{Expect, Problem, Settings};

use crate::{DEFAULT_MAX_REQUEST_BYTES, OtlpReceiverBuilder, check_tls};

/// The receiver's settings: listeners, request limit, token, TLS. The registry and the
/// `target_info` attributes are the caller's to add to the [builder](Self::builder).
///
/// ```
/// use sonde_otlp_receiver::OtlpReceiverConfig;
/// use sonde_settings::Settings;
///
/// let config = OtlpReceiverConfig { grpc: None, http: None, ..Default::default() };
/// assert!(config.validate()[0].message.contains("neither `grpc` nor `http`"));
/// ```
// The token stays out of `Debug` output.
#[derive(Clone, PartialEq, Deserialize, custom_debug::Debug)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpReceiverConfig {
    /// OTLP/gRPC address (default `127.0.0.1:4317`; `"off"`: none).
    #[serde(with = "sonde_settings::address")]
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP address (default `127.0.0.1:4318`; `"off"`: none).
    #[serde(with = "sonde_settings::address")]
    pub http: Option<SocketAddr>,
    /// Largest request, compressed or not.
    #[serde(with = "sonde_settings::size")]
    pub max_request_size: usize,
    /// The `Authorization: Bearer` token senders must present.
    #[debug(with = sonde_settings::redact::secret)]
    pub bearer_token: Option<String>,
    /// The certificate chain (PEM, leaf first) to serve both transports over TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// How long a series is kept without a point (default 10 minutes; see
    /// [`OtlpReceiverBuilder::series_ttl`]).
    #[serde(with = "sonde_settings::duration")]
    pub ttl: std::time::Duration,
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        OtlpReceiverConfig {
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 4317))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 4318))),
            max_request_size: DEFAULT_MAX_REQUEST_BYTES,
            bearer_token: None,
            tls_cert_file: None,
            tls_key_file: None,
            ttl: crate::DEFAULT_SERIES_TTL,
        }
    }
}

impl OtlpReceiverConfig {
    /// The receiver these settings describe.
    pub fn builder(&self) -> OtlpReceiverBuilder {
        let mut b = OtlpReceiverBuilder::new()
            .max_request_bytes(self.max_request_size)
            .series_ttl(Some(self.ttl));
        if let Some(a) = self.grpc {
            b = b.grpc(a.to_string());
        }
        if let Some(a) = self.http {
            b = b.http(a.to_string());
        }
        if let Some(t) = &self.bearer_token {
            b = b.bearer_token(t.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
            b = b.tls(cert.clone(), key.clone());
        }
        b
    }
}

impl Settings for OtlpReceiverConfig {
    fn expect(key: &str) -> Option<Expect> {
        Some(match key {
            "max_request_size" => Expect::size(1024..=1 << 30, DEFAULT_MAX_REQUEST_BYTES),
            "grpc" => Expect::address("127.0.0.1:4317"),
            "http" => Expect::address("127.0.0.1:4318"),
            "ttl" => Expect::duration(
                std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(7 * 24 * 3600),
                crate::DEFAULT_SERIES_TTL,
            ),
            _ => return None,
        })
    }

    /// The size range, a listener, and the TLS files read as the receiver reads them.
    fn validate(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = [
            Self::within("max_request_size", self.max_request_size),
            Self::within("ttl", self.ttl),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.grpc.is_none() && self.http.is_none() {
            problems.push(Problem::new(
                "",
                "has neither `grpc` nor `http`",
                "give at least one address, like grpc = \"127.0.0.1:4317\"",
            ));
        }
        problems.extend(Problem::tls_files(
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
            |cert, key| check_tls(cert, key).map_err(|e| format!("TLS files: {e}")),
        ));
        problems
    }
}
