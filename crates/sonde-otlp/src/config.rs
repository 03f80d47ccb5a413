//! Transport settings shared by metrics and traces, resolved the OpenTelemetry way: explicit
//! settings beat `OTEL_EXPORTER_OTLP_<SIGNAL>_*` variables, which beat `OTEL_EXPORTER_OTLP_*`,
//! which beat the defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::Error;

/// The wire protocol; in a configuration file `"grpc"` or `"http/protobuf"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318), the specification's default.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Protocol {
    /// Its names in a configuration file and in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub(crate) const NAMES: &[&str] = &["grpc", "http/protobuf"];

    /// The specification's default endpoint: the local collector on the protocol's port.
    fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => "http://localhost:4317",
            Protocol::HttpProtobuf => "http://localhost:4318",
        }
    }
}

/// Body compression; in a configuration file `"none"` or `"gzip"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed (the specification's default).
    None,
    /// gzip, which every OTLP receiver must accept.
    Gzip,
}

impl Compression {
    /// Its names in a configuration file and in `OTEL_EXPORTER_OTLP_COMPRESSION`.
    pub(crate) const NAMES: &[&str] = &["gzip", "none"];
}

/// `name` read as a configuration file names a value of `T` (serde's name for it), so that
/// the environment variables take the same names.
fn named<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    use serde::de::IntoDeserializer;
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name)).ok()
}

/// Which signal a setting is resolved for: it picks the signal-specific variables and the HTTP
/// path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `/v1/metrics`, `OTEL_EXPORTER_OTLP_METRICS_*`.
    Metrics,
    /// `/v1/traces`, `OTEL_EXPORTER_OTLP_TRACES_*`.
    Traces,
}

impl Signal {
    fn var_infix(self) -> &'static str {
        match self {
            Signal::Metrics => "METRICS_",
            Signal::Traces => "TRACES_",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Traces => "/v1/traces",
        }
    }
}

/// Where and how to send: endpoint, protocol, headers, compression, timeout and TLS. Every field
/// left unset falls back to the environment, then to the default. One value configures both the
/// metrics exporter and the tracing pipeline.
///
/// ```
/// use std::time::Duration;
/// use sonde_otlp::{Compression, OtlpTransport, Protocol};
///
/// let transport = OtlpTransport::new()
///     .endpoint("http://collector:4317")
///     .protocol(Protocol::Grpc)
///     .compression(Compression::Gzip)
///     .header("x-tenant", "checkout")
///     .timeout(Duration::from_secs(5));
/// # let _ = transport;
/// ```
// Header values (API keys, tokens) and URL credentials never appear in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, custom_debug::Debug)]
pub struct OtlpTransport {
    #[debug(with = sonde_settings::redact::optional_url)]
    endpoint: Option<String>,
    protocol: Option<Protocol>,
    #[debug(with = sonde_settings::redact::headers)]
    headers: Vec<(String, String)>,
    compression: Option<Compression>,
    timeout: Option<Duration>,
    ca_certificate: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

impl OtlpTransport {
    /// Nothing set: everything comes from the environment or the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    sonde_push::builder_setters! {
        /// The receiver. For gRPC, `scheme://host:port`. For HTTP, either a base
        /// (`http://host:4318`, to which `/v1/metrics` or `/v1/traces` is appended) or, when it
        /// has a path, the full URL used as is.
        endpoint: Some(impl Into<String>);
    }

    /// Adds a header (gRPC metadata) sent with every request; it replaces a header of the same
    /// name from the environment.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    sonde_push::builder_setters! {
        /// gRPC or HTTP/protobuf.
        protocol: Some(Protocol);
        /// Compression of request bodies.
        compression: Some(Compression);
        /// How long one request may take.
        timeout: Some(Duration);
    }

    /// A PEM file of CA certificates to trust instead of the system's (for `https` endpoints).
    pub fn ca_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_certificate = Some(path.into());
        self
    }

    /// A PEM certificate chain and private key for mutual TLS.
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }

    /// Resolves the settings for `signal` from explicit values, then the environment read
    /// through `env`, then defaults.
    pub fn resolve(
        &self,
        signal: Signal,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Resolved, Error> {
        let lookup = |suffix: &str| {
            var(
                env,
                &format!("OTEL_EXPORTER_OTLP_{}{suffix}", signal.var_infix()),
            )
            .or_else(|| var(env, &format!("OTEL_EXPORTER_OTLP_{suffix}")))
        };
        let protocol = named_setting(
            self.protocol,
            lookup("PROTOCOL"),
            Protocol::NAMES,
            Protocol::HttpProtobuf,
        );
        let endpoint = match &self.endpoint {
            Some(e) => endpoint_url(e, protocol, signal, false),
            None => {
                let specific = format!("OTEL_EXPORTER_OTLP_{}ENDPOINT", signal.var_infix());
                let default = || endpoint_url(protocol.default_endpoint(), protocol, signal, false);
                let from_env = |var: &str, as_is: bool| {
                    let v = env(var).filter(|v| !v.trim().is_empty())?;
                    Some(endpoint_url(v.trim(), protocol, signal, as_is).or_else(|| {
                        ignore_env(
                            var,
                            &sonde_push::redact_url(v.trim()),
                            "it must be an http:// or https:// URL with a host",
                            default(),
                        )
                    }))
                };
                // The signal-specific variable is used as is.
                from_env(&specific, true)
                    .or_else(|| from_env("OTEL_EXPORTER_OTLP_ENDPOINT", false))
                    .unwrap_or_else(default)
            }
        };
        let Some(endpoint) = endpoint else {
            return Err(Error::Config(format!(
                "the OTLP endpoint must be an http:// or https:// URL with a host, like {}",
                protocol.default_endpoint()
            )));
        };
        let mut headers = match lookup("HEADERS") {
            None => Vec::new(),
            Some((var, v)) => parse_headers(&v).unwrap_or_else(|| {
                // The value may hold an API key: not repeated in the warning.
                ignore_env(
                    &var,
                    "<hidden>",
                    "it must be a comma-separated list of name=value pairs (values percent-encoded), so no header from it is sent",
                    Vec::new(),
                )
            }),
        };
        for (k, v) in &self.headers {
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
            headers.push((k.to_ascii_lowercase(), v.clone()));
        }
        for (name, value) in &headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(Error::Config(format!(
                    "the header {name:?} is invalid; use a token name and a visible ASCII value"
                )));
            }
        }
        let compression = named_setting(
            self.compression,
            lookup("COMPRESSION"),
            Compression::NAMES,
            Compression::None,
        );
        let timeout = setting(
            self.timeout,
            lookup("TIMEOUT"),
            millis,
            "it must be a whole number of milliseconds, like 10000",
            Duration::from_secs(10),
        )
        .max(Duration::from_millis(1));
        let path = |explicit: &Option<PathBuf>, suffix: &str| {
            explicit
                .clone()
                .or_else(|| lookup(suffix).map(|(_, v)| PathBuf::from(v.trim())))
        };
        Ok(Resolved {
            endpoint,
            protocol,
            headers,
            compression,
            timeout,
            ca_certificate: path(&self.ca_certificate, "CERTIFICATE"),
            client_certificate: path(&self.client_certificate, "CLIENT_CERTIFICATE"),
            client_key: path(&self.client_key, "CLIENT_KEY"),
        })
    }
}

/// Settings after resolution. `Debug` hides header values and URL credentials.
#[derive(Clone, PartialEq, custom_debug::Debug)]
pub struct Resolved {
    /// The URL requests go to (for HTTP, including the signal's path).
    #[debug(with = sonde_settings::redact::url)]
    pub endpoint: String,
    /// The protocol.
    pub protocol: Protocol,
    /// Headers, names lowercased.
    #[debug(with = sonde_settings::redact::headers)]
    pub headers: Vec<(String, String)>,
    /// Compression.
    pub compression: Compression,
    /// Per-request timeout.
    pub timeout: Duration,
    /// CA certificates to trust.
    pub ca_certificate: Option<PathBuf>,
    /// Client certificate chain for mutual TLS.
    pub client_certificate: Option<PathBuf>,
    /// Client private key for mutual TLS.
    pub client_key: Option<PathBuf>,
}

/// The URL for `signal`: gRPC endpoints are used as given; HTTP bases get the signal's path
/// unless `as_is` or they already have a path.
fn endpoint_url(e: &str, protocol: Protocol, signal: Signal, as_is: bool) -> Option<String> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    match protocol {
        Protocol::Grpc => Some(e.trim_end_matches('/').to_string()),
        Protocol::HttpProtobuf if as_is || !(path.is_empty() || path == "/") => Some(e.to_string()),
        Protocol::HttpProtobuf => Some(format!("{}{}", e.trim_end_matches('/'), signal.path())),
    }
}

/// `k1=v1,k2=v2` with percent-encoded values (the W3C baggage format the spec refers to);
/// names are lowercased.
fn parse_headers(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = sonde_core::parse_key_values(s)?;
    for (k, _) in &mut out {
        k.make_ascii_lowercase();
    }
    Some(out)
}

/// A setting as given in code, else as the variable `found` (name and value) holds it, else
/// `default`. A value `parse` refuses (it gets the value trimmed) is warned about, with `hint`,
/// and the default used.
pub(crate) fn setting<T>(
    explicit: Option<T>,
    found: Option<(String, String)>,
    parse: impl FnOnce(&str) -> Option<T>,
    hint: &str,
    default: T,
) -> T {
    match (explicit, found) {
        (Some(t), _) => t,
        (None, None) => default,
        (None, Some((var, value))) => match parse(value.trim()) {
            Some(t) => t,
            None => ignore_env(&var, &value, hint, default),
        },
    }
}

/// [`setting`] for a value named like in a configuration file, one of `names`.
fn named_setting<T: serde::de::DeserializeOwned>(
    explicit: Option<T>,
    found: Option<(String, String)>,
    names: &'static [&'static str],
    default: T,
) -> T {
    let hint = sonde_settings::Expect::OneOf(names).hint();
    setting(explicit, found, named, &hint, default)
}

/// The variable `name` read through `env`, with its name, unless it is unset or blank.
pub(crate) fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<(String, String)> {
    env(name)
        .filter(|v| !v.trim().is_empty())
        .map(|v| (name.to_owned(), v))
}

/// A whole number of milliseconds, the unit of the specification's duration variables.
pub(crate) fn millis(v: &str) -> Option<Duration> {
    v.parse().ok().map(Duration::from_millis)
}

/// What to do with an environment variable whose value cannot be used: the OpenTelemetry
/// specification asks for a warning and the default, not a failure (explicit settings given in
/// code stay errors).
pub(crate) fn ignore_env<T>(var: &str, value: &str, problem: &str, default: T) -> T {
    sonde_core::diag::warn(format_args!(
        "{var}={value:?} is ignored ({problem}); using the default"
    ));
    default
}

/// Reads a process environment variable.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Where the builders read configuration variables (the process environment, or a closure for
/// tests and embedding). Its `Debug` shows no variable, so the builders can derive theirs.
#[derive(Clone)]
pub(crate) struct Env(std::sync::Arc<Lookup>);

/// A variable's value by name.
pub(crate) type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Env {
    /// The process environment.
    pub(crate) fn process() -> Env {
        Env(std::sync::Arc::new(process_env))
    }

    /// Variables read through `lookup`.
    pub(crate) fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Env {
        Env(std::sync::Arc::new(lookup))
    }
}

/// What the metrics exporter's and the tracing pipeline's builders both hold: where and how to
/// send, the resource, and where configuration variables are read.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) transport: OtlpTransport,
    pub(crate) resource: Option<sonde_core::Resource>,
    pub(crate) env: Env,
}

impl Shared {
    /// Everything from the process environment or the defaults.
    pub(crate) fn new() -> Shared {
        Shared {
            transport: OtlpTransport::new(),
            resource: None,
            env: Env::process(),
        }
    }

    /// The transport resolved for `signal` and the resource (as set, else detected from the
    /// variables), with the variables for the builder's own settings.
    pub(crate) fn resolve(
        self,
        signal: Signal,
    ) -> Result<(Resolved, sonde_core::Resource, Env), Error> {
        let settings = self.transport.resolve(signal, &*self.env)?;
        let resource = self
            .resource
            .unwrap_or_else(|| sonde_core::Resource::detect_from(&*self.env));
        Ok((settings, resource, self.env))
    }
}

/// Writes the setters of the [`Shared`] settings of a builder whose field `shared` holds them.
macro_rules! shared_setters {
    () => {
        /// Endpoint, protocol, headers, compression, timeout and TLS (one transport can serve
        /// both the metrics exporter and the tracing pipeline).
        pub fn transport(mut self, transport: $crate::OtlpTransport) -> Self {
            self.shared.transport = transport;
            self
        }

        /// The resource (default: [`Resource::detect_from`](sonde_core::Resource::detect_from)
        /// the configuration variables: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, host,
        /// process and FaaS attributes).
        pub fn resource(mut self, resource: sonde_core::Resource) -> Self {
            self.shared.resource = Some(resource);
            self
        }

        /// Reads configuration variables through `env` instead of the process environment (for
        /// tests and for embedding in a daemon with its own configuration).
        pub fn environment(
            mut self,
            env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
        ) -> Self {
            self.shared.env = $crate::config::Env::from_fn(env);
            self
        }
    };
}
pub(crate) use shared_setters;

impl std::ops::Deref for Env {
    type Target = Lookup;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

/// A lookup in a fixed list of variables, for tests in place of the process environment.
#[cfg(test)]
pub(crate) fn fixed_env(
    vars: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::fixed_env as env;
    use super::*;

    #[test]
    fn debug_hides_header_values_and_url_credentials() {
        let t = OtlpTransport::new()
            .endpoint("https://user:s3cret-pw@collector:4318")
            .header("authorization", "Bearer s3cret-token");
        let r = t
            .resolve(
                Signal::Metrics,
                &env(&[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cret-key")]),
            )
            .unwrap();
        let config = crate::OtlpExporterConfig {
            endpoint: Some("https://user:s3cret-pw@collector:4318".into()),
            headers: vec![("authorization".into(), "Bearer s3cret-token".into())],
            ..Default::default()
        };
        for shown in [format!("{t:?}"), format!("{r:?}"), format!("{config:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(
                shown.contains(r#""authorization": "<redacted>""#),
                "{shown}"
            );
            assert!(
                shown.contains("https://<redacted>@collector:4318"),
                "{shown}"
            );
        }
        assert!(format!("{r:?}").contains(r#""x-api-key": "<redacted>""#));
    }

    #[test]
    fn defaults_follow_the_specification() {
        let r = OtlpTransport::new()
            .resolve(Signal::Metrics, &env(&[]))
            .unwrap();
        assert_eq!(r.endpoint, "http://localhost:4318/v1/metrics");
        assert_eq!(r.protocol, Protocol::HttpProtobuf);
        assert_eq!(r.compression, Compression::None);
        assert_eq!(r.timeout, Duration::from_secs(10));
        let r = OtlpTransport::new()
            .protocol(Protocol::Grpc)
            .resolve(Signal::Traces, &env(&[]))
            .unwrap();
        assert_eq!(r.endpoint, "http://localhost:4317");
    }

    #[test]
    fn explicit_beats_signal_variables_which_beat_generic_ones() {
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318/"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:9999/custom",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=x%20y"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "c=3"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        let r = OtlpTransport::new()
            .resolve(Signal::Metrics, &vars)
            .unwrap();
        assert_eq!(r.endpoint, "http://generic:4318/v1/metrics");
        assert_eq!(r.headers, vec![("c".to_string(), "3".to_string())]);
        assert_eq!(r.compression, Compression::Gzip);
        assert_eq!(r.timeout, Duration::from_millis(2500));
        let r = OtlpTransport::new().resolve(Signal::Traces, &vars).unwrap();
        assert_eq!(r.endpoint, "http://traces:9999/custom");
        assert_eq!(
            r.headers,
            vec![("a".into(), "1".into()), ("b".into(), "x y".into())]
        );
        assert_eq!(r.timeout, Duration::from_secs(10));
        let r = OtlpTransport::new()
            .endpoint("https://explicit:4318")
            .compression(Compression::None)
            .header("B", "z")
            .timeout(Duration::from_secs(1))
            .resolve(Signal::Traces, &vars)
            .unwrap();
        assert_eq!(r.endpoint, "https://explicit:4318/v1/traces");
        assert_eq!(
            r.headers,
            vec![("a".into(), "1".into()), ("b".into(), "z".into())]
        );
        assert_eq!(r.compression, Compression::None);
        assert_eq!(r.timeout, Duration::from_secs(1));
    }

    /// The names the settings check offers are the ones a configuration file and the
    /// environment take.
    #[test]
    fn every_name_offered_is_read() {
        for name in Protocol::NAMES {
            assert!(named::<Protocol>(name).is_some(), "{name}");
        }
        for name in Compression::NAMES {
            assert!(named::<Compression>(name).is_some(), "{name}");
        }
        assert_eq!(named::<Protocol>("http/json"), None);
    }

    /// As the specification asks: a variable that cannot be used is warned about (naming it
    /// and the fix) and the default is used; nothing fails.
    #[test]
    fn bad_variables_warn_and_fall_back_to_the_defaults() {
        let warned = |vars: &'static [(&'static str, &'static str)]| {
            let (r, lines) = sonde_core::testing::capture_diagnostics(|| {
                OtlpTransport::new().resolve(Signal::Metrics, &env(vars))
            });
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].starts_with("WARN OTEL_EXPORTER_OTLP_"),
                "{lines:?}"
            );
            (r.unwrap(), lines[0].clone())
        };
        let defaults = OtlpTransport::new()
            .resolve(Signal::Metrics, &env(&[]))
            .unwrap();
        let (r, line) = warned(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert_eq!(r, defaults);
        assert!(line.contains("http/protobuf"), "{line}");
        let (r, line) = warned(&[("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd")]);
        assert_eq!(r, defaults);
        assert!(line.contains("gzip"), "{line}");
        let (r, line) = warned(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]);
        assert_eq!(r, defaults);
        assert!(line.contains("milliseconds"), "{line}");
        let (r, line) = warned(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret,novalue")]);
        assert_eq!(r, defaults);
        assert!(
            line.contains("name=value") && !line.contains("secret"),
            "{line}"
        );
        let (r, line) = warned(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
        assert_eq!(r, defaults);
        assert!(line.contains("http://"), "{line}");
        // Explicit settings in code are still errors.
        assert!(
            OtlpTransport::new()
                .endpoint("collector:4318")
                .resolve(Signal::Metrics, &env(&[]))
                .is_err()
        );
        let e = OtlpTransport::new()
            .header("bad header", "v")
            .resolve(Signal::Metrics, &env(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
    }
}
