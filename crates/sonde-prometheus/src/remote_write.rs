//! Prometheus remote write 1.0: snapshots pushed as snappy-compressed protobuf
//! `prometheus.WriteRequest`s to any compatible receiver (Prometheus with
//! `--web.enable-remote-write-receiver`, VictoriaMetrics, Mimir, Thanos receive...).
//!
//! Two threads of the exporter's own do the work, never the application's: a collector that reads
//! a snapshot every interval, converts it with the names and labels of the `/metrics` encoder
//! (counters `_total`, histograms `_bucket{le}`/`_sum`/`_count`, the resource as `target_info`)
//! and queues the requests; and a sender that posts them in order, retrying network errors, 5xx
//! and 429 with jittered exponential backoff (honouring `Retry-After`). The queue is bounded:
//! when full, the oldest request is dropped (the newest cumulative values supersede it) and its
//! samples are counted in `sonde_exporter_dropped_points_total{exporter="remote_write"}`.
//!
//! ```no_run
//! use std::time::Duration;
//! use sonde_core::Registry;
//! use sonde_prometheus::RemoteWriteBuilder;
//!
//! let registry = Registry::new();
//! let writer = RemoteWriteBuilder::new("http://127.0.0.1:9090/api/v1/write")
//!     .registry(registry.clone())
//!     .interval(Duration::from_secs(15))
//!     .external_label("job", "checkout")
//!     .install()?;
//! registry.counter("jobs.done").build()?.handle().inc();
//! // Deliver what was recorded, e.g. before exiting.
//! writer.shutdown(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod convert;
#[cfg(feature = "sigv4")]
pub mod sigv4;

use std::time::Duration;

use sonde_core::name::is_prometheus_label_name;
use sonde_core::{Registry, Resource, Temporality};

use crate::Error;
use crate::client;
use client::Outcome;
pub use config::RemoteWriteConfig;
pub use sonde_push::telemetry;
pub use sonde_push::telemetry::{DROPPED_POINTS, LAST_SUCCESS, QUEUE_SIZE, REQUESTS, RETRIES};

/// The `exporter` label of the self-metrics.
const EXPORTER: &str = "remote_write";

/// How long dropping a [`RemoteWriter`] waits for the last collection to be delivered.
pub use sonde_push::DROP_SHUTDOWN_TIMEOUT;

/// Longer durations are treated as this (a century), so no deadline arithmetic overflows.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The protocol's protobuf messages (`prometheus.WriteRequest` of remote write 1.0, field
/// numbers as in Prometheus's `prompb`), generated from `proto/remote.proto` by the build script.
#[allow(clippy::doc_markdown)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));

    impl WriteRequest {
        /// The first series of the metric `name` (its `__name__` label).
        pub fn series(&self, name: &str) -> Option<&TimeSeries> {
            self.timeseries
                .iter()
                .find(|t| t.label("__name__") == Some(name))
        }
    }

    impl TimeSeries {
        /// The value of the label `name`, if the series has it.
        pub fn label(&self, name: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.as_str())
        }

        /// The labels as `(name, value)` pairs, in their order (sorted by name).
        pub fn label_pairs(&self) -> Vec<(&str, &str)> {
            self.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect()
        }
    }
}

/// Decodes a remote write request body (snappy block format around a protobuf `WriteRequest`),
/// as a receiver would; `None` if it is not one. For tests and fake receivers.
pub fn decode_request(body: &[u8]) -> Option<pb::WriteRequest> {
    convert::decode(body)
}

/// Configures and starts a remote writer.
///
/// Defaults: the global registry, every 15 s, the resource from `OTEL_*` variables as
/// `target_info`, no external labels, 2000 series per request, a queue of 100 requests, 10
/// retries with backoff from 100 ms to 30 s, a 10 s request timeout, metadata sent.
#[must_use = "call .install() to start the remote writer"]
// `Debug` keeps header values, URL credentials and secrets out of logs.
#[derive(Clone, custom_debug::Debug)]
pub struct RemoteWriteBuilder {
    #[debug(with = sonde_settings::redact::url)]
    url: String,
    #[debug(skip)]
    registry: Registry,
    interval: Duration,
    #[debug(skip)]
    resource: Option<Resource>,
    external_labels: Vec<(String, String)>,
    max_series_per_request: usize,
    /// Queue and retry settings.
    delivery: sonde_push::PushConfig,
    timeout: Duration,
    metadata: bool,
    #[debug(with = sonde_settings::redact::headers)]
    headers: Vec<(String, String)>,
    #[debug(skip)]
    selection: sonde_core::Selection,
    auth: AuthSetting,
    tls: client::TlsFiles,
}

/// What [`RemoteWriteBuilder::checked`] makes of the settings.
struct Checked {
    external_labels: Vec<(String, String)>,
    headers: reqwest::header::HeaderMap,
    auth: Auth,
    client: reqwest::Client,
}

/// How requests authenticate, as configured (checked at install).
#[derive(Clone, Default, PartialEq, Eq)]
enum AuthSetting {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
    BearerFile(std::path::PathBuf),
    /// AWS SigV4 (feature `sigv4`).
    #[cfg(feature = "sigv4")]
    Sigv4(sigv4::Setting),
    /// More than one was set: refused at install.
    Conflict,
}

impl AuthSetting {
    fn set(&mut self, next: AuthSetting) {
        *self = match self {
            AuthSetting::None => next,
            _ => AuthSetting::Conflict,
        };
    }
}

// Not derived: only which kind of authentication, never the credentials.
impl std::fmt::Debug for AuthSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            AuthSetting::None => "none",
            AuthSetting::Basic { .. } => "basic",
            AuthSetting::Bearer(_) => "bearer",
            AuthSetting::BearerFile(_) => "bearer from file",
            #[cfg(feature = "sigv4")]
            AuthSetting::Sigv4(_) => "sigv4",
            AuthSetting::Conflict => "conflicting",
        };
        std::fmt::Debug::fmt(kind, f)
    }
}

impl RemoteWriteBuilder {
    /// A writer to `url`, the receiver's endpoint (`http://host:9090/api/v1/write` for
    /// Prometheus, `http://host:8428/api/v1/write` for VictoriaMetrics).
    pub fn new(url: impl Into<String>) -> Self {
        RemoteWriteBuilder {
            url: url.into(),
            registry: Registry::global().clone(),
            interval: Duration::from_secs(15),
            resource: None,
            external_labels: Vec::new(),
            max_series_per_request: 2000,
            delivery: sonde_push::PushConfig {
                queue_capacity: 100,
                max_retries: Some(10),
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(30),
                ..sonde_push::PushConfig::new(EXPORTER)
            },
            timeout: Duration::from_secs(10),
            metadata: true,
            headers: Vec::new(),
            selection: sonde_core::Selection::new(),
            auth: AuthSetting::None,
            tls: client::TlsFiles::default(),
        }
    }

    /// Authenticates with HTTP basic auth (Prometheus's web config, VictoriaMetrics'
    /// `-httpAuth.*`, Grafana Cloud). One of basic auth, a bearer token or a token file.
    pub fn basic_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth.set(AuthSetting::Basic {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Authenticates with `Authorization: Bearer <token>`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.auth.set(AuthSetting::Bearer(token.into()));
        self
    }

    /// Authenticates with the bearer token in the file at `path` (surrounding white space
    /// trimmed), read again whenever the file changes, so a rotated token (a Kubernetes
    /// service account token, a refreshed OAuth token) is used from the next request on. If
    /// the file cannot be read later, the last token read is kept and the failure is logged.
    pub fn bearer_token_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.auth.set(AuthSetting::BearerFile(path.into()));
        self
    }

    /// Signs every request with AWS SigV4 for `region` (Amazon Managed Service for Prometheus;
    /// by default the region of an `aps-workspaces.<region>.amazonaws.com` URL, else the AWS
    /// configuration's), with credentials from the AWS default chain (environment, profile, web
    /// identity, ECS task role, EC2 instance role) unless [`sigv4_credentials`](Self::sigv4_credentials)
    /// gives them. Feature `sigv4`.
    #[cfg(feature = "sigv4")]
    pub fn sigv4_region(self, region: impl Into<String>) -> Self {
        let region = region.into();
        self.sigv4(|s| s.region = Some(region))
    }

    /// The service name SigV4 signs for (default `aps`). Feature `sigv4`.
    #[cfg(feature = "sigv4")]
    pub fn sigv4_service(self, service: impl Into<String>) -> Self {
        let service = service.into();
        self.sigv4(|s| s.service = Some(service))
    }

    /// Signs with these credentials instead of the default chain's. Feature `sigv4`.
    #[cfg(feature = "sigv4")]
    pub fn sigv4_credentials(
        self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        let c = (
            access_key_id.into(),
            secret_access_key.into(),
            session_token,
        );
        self.sigv4(|s| s.credentials = Some(c))
    }

    #[cfg(feature = "sigv4")]
    fn sigv4(mut self, f: impl FnOnce(&mut sigv4::Setting)) -> Self {
        match &mut self.auth {
            AuthSetting::Sigv4(s) => f(s),
            AuthSetting::None => {
                let mut s = sigv4::Setting::default();
                f(&mut s);
                self.auth = AuthSetting::Sigv4(s);
            }
            _ => self.auth = AuthSetting::Conflict,
        }
        self
    }

    /// The tenant, sent as `X-Scope-OrgID` (Grafana Mimir, Cortex, Loki-style multi-tenancy).
    pub fn tenant(self, org_id: impl Into<String>) -> Self {
        self.header("X-Scope-OrgID", org_id)
    }

    /// Trusts the certificates in this PEM file (a private CA) instead of the system's roots.
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate chain and key (PEM files) when the receiver asks for
    /// one (mutual TLS).
    pub fn tls_client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Time between collections (default 15 s; at least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.clamp(Duration::from_millis(10), LONGEST);
        self
    }

    sonde_push::builder_setters! {
        /// Exports this registry instead of the global one (the self-metrics go there too).
        registry: Registry;
        /// The resource sent as `target_info` (default: [`Resource::from_env`]; an empty
        /// resource sends none).
        resource: Some(Resource);
    }

    /// Adds a label to every series that does not have one of that name, like Prometheus's
    /// `external_labels` (`job`, `instance`, `cluster`...). Setting a name again replaces its
    /// value. Names must match `[a-zA-Z_][a-zA-Z0-9_]*` and not start with `__`.
    pub fn external_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        sonde_push::set_label(&mut self.external_labels, name.into(), value.into());
        self
    }

    /// Adds an HTTP header to every request (authentication, `X-Scope-OrgID` for Mimir...).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    sonde_push::delivery_setters!(delivery, backoff: "100 ms to 30 s", retries: "10");

    /// Requests waiting to be sent; past it the oldest is dropped (default 100, at least 1).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.delivery.queue_capacity = n.max(1);
        self
    }

    /// Series per request; larger collections are split (default 2000, at least 1).
    pub fn max_series_per_request(mut self, n: usize) -> Self {
        self.max_series_per_request = n.max(1);
        self
    }

    /// Time allowed for one request, connection included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), LONGEST);
        self
    }

    sonde_push::builder_setters! {
        /// Which metrics and series to send, and which labels to keep
        /// ([`sonde_core::Selection`]; default: everything).
        selection: sonde_core::Selection;
        /// Whether to send type, help and unit metadata with the series (default true).
        metadata: bool;
    }

    /// Checks every setting as [`install`](Self::install) does (URL, labels, headers,
    /// credentials, the token file and the TLS files are read), without starting anything: what
    /// passes here installs.
    pub fn check(&self) -> Result<(), Error> {
        self.checked().map(|_| ())
    }

    fn checked(&self) -> Result<Checked, Error> {
        client::check_url(&self.url, "http://127.0.0.1:9090/api/v1/write")?;
        let mut external_labels = self.external_labels.clone();
        for (name, _) in &external_labels {
            if !is_prometheus_label_name(name) {
                return Err(Error::Config(format!(
                    "external label name {name:?} is invalid; use [a-zA-Z_][a-zA-Z0-9_]* not starting with __"
                )));
            }
        }
        external_labels.sort();
        #[cfg(feature = "sigv4")]
        if let AuthSetting::Sigv4(s) = &self.auth {
            let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
            let profile = std::env::var_os("AWS_CONFIG_FILE")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| std::path::PathBuf::from(h).join(".aws/config"))
                })
                .is_some_and(|p| p.exists());
            if s.region.is_none()
                && sigv4::region_from_url(&self.url).is_none()
                && !env("AWS_REGION")
                && !env("AWS_DEFAULT_REGION")
                && !profile
            {
                return Err(Error::Config(
                    "SigV4: no AWS region: give sigv4_region, use an aps-workspaces.<region>.amazonaws.com URL, or set AWS_REGION".into(),
                ));
            }
        }
        if self.auth != AuthSetting::None
            && self
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            return Err(Error::Config(
                "remote write has an Authorization header and basic_auth, a bearer token or sigv4: give one".into(),
            ));
        }
        Ok(Checked {
            external_labels,
            headers: client::header_map(&self.headers)?,
            auth: Auth::new(self.auth.clone())?,
            client: client::client(self.timeout, &self.tls)?,
        })
    }

    /// Checks the settings, registers the self-metrics and starts the collector and sender
    /// threads. The first collection happens one interval from now.
    pub fn install(self) -> Result<RemoteWriter, Error> {
        let Checked {
            external_labels,
            headers,
            auth,
            client,
        } = self.checked()?;
        let mut config = self.delivery.clone();
        config.interval = self.interval;
        config.timeout = self.timeout;
        let source = Collector {
            reader: self
                .registry
                .reader(Temporality::Cumulative)
                .with_selection(self.selection),
            last_timestamp: 0,
            options: convert::Options {
                resource: self.resource.unwrap_or_else(Resource::from_env),
                external_labels,
                max_series_per_request: self.max_series_per_request,
                metadata: self.metadata,
            },
            dropped: Vec::new(),
        };
        let sender = Sender {
            client,
            url: self.url.clone(),
            headers,
            auth,
            #[cfg(feature = "sigv4")]
            signer: None,
        };
        #[cfg(feature = "sigv4")]
        let (sigv4, timeout) = match &self.auth {
            AuthSetting::Sigv4(s) => (Some(s.clone()), self.timeout),
            _ => (None, self.timeout),
        };
        let inner = sonde_push::start(&self.registry, config, source, move || async move {
            #[cfg(feature = "sigv4")]
            let sender = Sender {
                signer: match sigv4 {
                    Some(s) => Some(sigv4::Signer::new(s, &sender.url, timeout).await?),
                    None => None,
                },
                ..sender
            };
            Ok::<_, Error>(sender)
        })
        .map_err(sonde_push::StartError::into_exporter)?;
        Ok(RemoteWriter {
            inner,
            url: self.url,
        })
    }
}

// Only the error: the builder is no `PushBuilder` (no deltas to continue, so no `read_settings`).
sonde_push::push_builder!(error: Error);

/// A running remote writer. Dropping it shuts it down, waiting up to
/// [`DROP_SHUTDOWN_TIMEOUT`] for the last collection to be delivered, and logs that it did.
#[must_use = "dropping the handle stops the remote writer: keep it (`let _remote_write = ...`) for as long as it should export"]
pub struct RemoteWriter {
    inner: sonde_push::PushExporter,
    url: String,
}

sonde_push::component_via_inner!(RemoteWriter, error: Error, debug_url: url);

impl RemoteWriter {
    /// The receiver's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// One encoded request, with the samples it carries.
type Batch = sonde_push::Encoded;

struct Collector {
    reader: sonde_core::Reader,
    options: convert::Options,
    last_timestamp: i64,
    dropped: Vec<(&'static str, u64)>,
}

impl sonde_push::Source for Collector {
    type Batch = Batch;

    fn collect(&mut self) -> Vec<Batch> {
        let snapshot = self.reader.collect();
        // Strictly increasing per collection: a receiver rejects a whole request holding a
        // second, different value at a timestamp it already has.
        let timestamp = convert::timestamp_ms(&snapshot).max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        let requests = convert::write_requests(&snapshot, timestamp, &self.options);
        drop(snapshot);
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            let samples: u64 = r.timeseries.iter().map(|t| t.samples.len() as u64).sum();
            match convert::encode(&r) {
                Ok(body) => out.push(Batch {
                    body: bytes::Bytes::from(body),
                    points: samples,
                }),
                Err(_) => self.dropped.push(("encode", samples)),
            }
        }
        out
    }

    fn take_dropped(&mut self) -> Vec<(&'static str, u64)> {
        std::mem::take(&mut self.dropped)
    }
}

/// Posts with the async `reqwest` client on the exporter's own runtime.
struct Sender {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    auth: Auth,
    #[cfg(feature = "sigv4")]
    signer: Option<sigv4::Signer>,
}

/// The `Authorization` of each request.
enum Auth {
    None,
    Fixed(reqwest::header::HeaderValue),
    File(TokenFile),
}

/// A bearer token file, read again when its modification time or size changes.
struct TokenFile {
    path: std::path::PathBuf,
    seen: Option<(std::time::SystemTime, u64)>,
    value: reqwest::header::HeaderValue,
}

impl Auth {
    fn new(setting: AuthSetting) -> Result<Auth, Error> {
        Ok(match setting {
            AuthSetting::None => Auth::None,
            AuthSetting::Conflict => {
                return Err(Error::Config(
                    "remote write takes one of basic_auth, bearer_token, bearer_token_file and sigv4, not several".into(),
                ));
            }
            // Signed per request by the sender's `Signer`.
            #[cfg(feature = "sigv4")]
            AuthSetting::Sigv4(_) => Auth::None,
            AuthSetting::Basic { username, password } => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                Auth::Fixed(secret(
                    &format!("Basic {encoded}"),
                    "the basic auth user name or password",
                )?)
            }
            AuthSetting::Bearer(token) => Auth::Fixed(secret(
                &format!("Bearer {}", token.trim()),
                "the bearer token",
            )?),
            AuthSetting::BearerFile(path) => {
                let (value, seen) = read_token(&path)?;
                Auth::File(TokenFile {
                    path,
                    seen: Some(seen),
                    value,
                })
            }
        })
    }

    /// The header for the next request.
    fn header(&mut self) -> Option<reqwest::header::HeaderValue> {
        match self {
            Auth::None => None,
            Auth::Fixed(v) => Some(v.clone()),
            Auth::File(f) => {
                let now = std::fs::metadata(&f.path)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())));
                if now.is_none() || now != f.seen {
                    match read_token(&f.path) {
                        Ok((value, seen)) => {
                            f.value = value;
                            f.seen = Some(seen);
                        }
                        Err(e) => {
                            static UNREADABLE: sonde_core::diag::RateLimit =
                                sonde_core::diag::RateLimit::new(Duration::from_secs(60));
                            if UNREADABLE.hit().is_some() {
                                sonde_core::diag::warn(format_args!(
                                    "remote write: {e}; sending the last token read"
                                ));
                            }
                        }
                    }
                }
                Some(f.value.clone())
            }
        }
    }
}

/// A header value that is never logged (`Debug` shows `Sensitive`).
fn secret(value: &str, what: &str) -> Result<reqwest::header::HeaderValue, Error> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        Error::Config(format!(
            "{what} holds characters an HTTP header cannot carry (control characters or line breaks)"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn read_token(
    path: &std::path::Path,
) -> Result<(reqwest::header::HeaderValue, (std::time::SystemTime, u64)), Error> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Config(format!(
            "cannot read the bearer token file {}: {e}",
            path.display()
        ))
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(&e))?;
    let text = std::fs::read_to_string(path).map_err(|e| fail(&e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(&"the file is empty"));
    }
    let value = secret(&format!("Bearer {token}"), "the bearer token file")?;
    Ok((value, (meta.modified().map_err(|e| fail(&e))?, meta.len())))
}

impl sonde_push::Sink for Sender {
    type Batch = Batch;

    async fn send(&mut self, batch: &Batch, timeout: Duration) -> sonde_push::Outcome {
        let request = self
            .client
            .post(self.url.as_str())
            .timeout(timeout)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .headers(self.headers.clone());
        let request = match self.auth.header() {
            Some(v) => request.header(reqwest::header::AUTHORIZATION, v),
            None => request,
        };
        #[cfg(feature = "sigv4")]
        let request = match &mut self.signer {
            Some(signer) => {
                // Every header sent but the client's own is signed.
                let mut signed: Vec<(&str, &str)> = vec![
                    ("content-encoding", "snappy"),
                    ("content-type", "application/x-protobuf"),
                    ("x-prometheus-remote-write-version", "0.1.0"),
                ];
                signed.extend(
                    self.headers
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
                );
                match signer.sign(&self.url, &signed, &batch.body).await {
                    Ok(headers) => headers
                        .into_iter()
                        .fold(request, |r, (k, v)| r.header(k, v)),
                    Err(error) => {
                        return sonde_push::Outcome::Retry { error, after: None };
                    }
                }
            }
            None => request,
        };
        let request = request
            // `Bytes` shares the encoded request: a retry sends it again without a copy.
            .body(batch.body.clone());
        match client::outcome(&self.url, request.send().await, hint).await {
            Outcome::Success => sonde_push::Outcome::Success {
                rejected: 0,
                message: String::new(),
            },
            Outcome::Fail(e) => sonde_push::Outcome::Fail(e.to_string()),
            Outcome::Retry { error, retry_after } => sonde_push::Outcome::Retry {
                error: error.to_string(),
                after: retry_after,
            },
        }
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        404 | 405 => {
            "check the URL path (/api/v1/write for Prometheus and VictoriaMetrics, /api/v1/push for Mimir) and, for Prometheus, that it runs with --web.enable-remote-write-receiver"
        }
        401 | 403 => {
            "the receiver refused the credentials: check basic_auth, bearer_token (or its file) and, for Mimir, the tenant"
        }
        413 => "the request is too large for the receiver: lower max_series_per_request",
        400 | 422 => {
            "the receiver rejected the samples (out of order, duplicate or invalid series); they were dropped"
        }
        429 => "the receiver is rate limiting; requests are retried with backoff",
        s if s >= 500 => "the receiver failed; requests are retried with backoff",
        _ => "check the URL and the receiver's logs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn writer_is_send_and_sync() {
        assert_send_sync::<RemoteWriter>();
    }

    #[test]
    fn builder_debug_shows_the_kind_of_auth_but_no_credential() {
        let url = "http://127.0.0.1:9090/api/v1/write";
        let basic = RemoteWriteBuilder::new(url).basic_auth("agent", "s3cret-password");
        let shown = format!("{basic:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(r#"auth: "basic""#), "{shown}");
        let bearer = RemoteWriteBuilder::new(url).bearer_token("s3cret-token");
        let shown = format!("{bearer:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(r#"auth: "bearer""#), "{shown}");
    }

    #[test]
    fn invalid_settings_are_errors_that_say_what_to_do() {
        let err = |b: RemoteWriteBuilder| b.registry(Registry::new()).install().unwrap_err();
        let e = err(RemoteWriteBuilder::new("localhost:9090/api/v1/write"));
        assert!(
            e.to_string().contains("http://127.0.0.1:9090/api/v1/write"),
            "{e}"
        );
        let e = err(RemoteWriteBuilder::new("http://127.0.0.1:1/w").external_label("__x", "v"));
        assert!(e.to_string().contains("external label name \"__x\""), "{e}");
        assert!(matches!(
            err(RemoteWriteBuilder::new("http://127.0.0.1:1/w").external_label("a-b", "v")),
            Error::Config(_)
        ));
        let e = err(RemoteWriteBuilder::new("http://127.0.0.1:1/w").header("bad header", "v"));
        assert!(e.to_string().contains("HTTP header"), "{e}");
    }

    #[test]
    fn a_running_writer_debug_shows_no_url_credential() {
        let writer = RemoteWriteBuilder::new("http://u:s3cret@127.0.0.1:9/api/v1/write")
            .registry(Registry::new())
            .interval(Duration::from_secs(3600))
            .install()
            .unwrap();
        let shown = format!("{writer:?}");
        let _ = writer.shutdown(Duration::ZERO);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("http://<redacted>@127.0.0.1:9"), "{shown}");
    }

    /// A bearer token file that holds nothing but blanks is refused at install, naming the file.
    #[test]
    fn an_empty_bearer_token_file_is_refused() {
        let path =
            std::env::temp_dir().join(format!("sonde-rw-blank-token-{}", std::process::id()));
        std::fs::write(&path, " \n").unwrap();
        let e = RemoteWriteBuilder::new("http://127.0.0.1:9/api/v1/write")
            .registry(Registry::new())
            .bearer_token_file(&path)
            .install()
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            e,
            format!(
                "cannot read the bearer token file {}: the file is empty",
                path.display()
            )
        );
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let writer = RemoteWriteBuilder::new("http://127.0.0.1:9/api/v1/write")
            .registry(Registry::new())
            .interval(Duration::MAX)
            .backoff(Duration::MAX, Duration::MAX)
            .timeout(Duration::MAX)
            .install()
            .unwrap();
        let _ = writer.flush(Duration::ZERO);
        let start = Instant::now();
        let _ = writer.shutdown(Duration::ZERO);
        assert!(start.elapsed() < Duration::from_secs(5));
        let b = RemoteWriteBuilder::new("http://h/").interval(Duration::ZERO);
        assert_eq!(b.interval, Duration::from_millis(10));
    }

    #[test]
    fn shutdown_without_a_receiver_is_bounded() {
        // A port nobody listens on: the final collection cannot be delivered.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reg = Registry::new();
        let writer = RemoteWriteBuilder::new(format!("http://127.0.0.1:{port}/api/v1/write"))
            .registry(reg.clone())
            .resource(Resource::empty())
            .interval(Duration::from_secs(3600))
            .backoff(Duration::from_millis(5), Duration::from_millis(10))
            .max_retries(2)
            .install()
            .unwrap();
        let start = Instant::now();
        let e = writer.flush(Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("dropped"), "{e}");
        assert!(e.to_string().contains("gave up after 2 retries"), "{e}");
        assert!(writer.shutdown(Duration::from_secs(5)).is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(writer.shutdown(Duration::from_secs(5)).is_ok());
        let dropped = reg
            .snapshot()
            .point(
                DROPPED_POINTS,
                &[
                    ("exporter", "remote_write"),
                    ("reason", "retries_exhausted"),
                ],
            )
            .and_then(|p| p.number())
            .map(|n| n.as_f64())
            .unwrap_or(0.0);
        assert!(dropped > 0.0);
    }
}
