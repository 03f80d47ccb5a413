//! Probe definitions and their validation.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::Error;

/// Default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default probe interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Longest accepted timeout and interval.
const MAX_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// One configured check.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeTarget {
    /// An HTTP(S) request.
    Http(HttpProbe),
    /// A TCP connect.
    Tcp(TcpProbe),
}

impl ProbeTarget {
    /// The probe's name.
    pub fn name(&self) -> &str {
        match self {
            ProbeTarget::Http(p) => &p.name,
            ProbeTarget::Tcp(p) => &p.name,
        }
    }
}

impl From<HttpProbe> for ProbeTarget {
    fn from(p: HttpProbe) -> Self {
        ProbeTarget::Http(p)
    }
}

impl From<TcpProbe> for ProbeTarget {
    fn from(p: TcpProbe) -> Self {
        ProbeTarget::Tcp(p)
    }
}

/// An HTTP(S) check: one HTTP/1.1 request per run, no redirects followed, no request body.
/// In a configuration file, one `[[probes.http]]` table with these keys (`headers` a table).
#[derive(Clone, PartialEq, serde::Deserialize, custom_debug::Debug)]
#[serde(default, deny_unknown_fields)]
pub struct HttpProbe {
    /// Unique name of the probe (the `probe.name` label).
    pub name: String,
    /// `http://` or `https://` URL; `user:password@` is not supported (pass an `Authorization`
    /// header instead), a `#fragment` is ignored.
    pub url: String,
    /// Request method; empty means `GET`.
    pub method: String,
    /// Status codes that count as success; empty means any 2xx or 3xx.
    pub expect_status: Vec<u16>,
    /// Bound on the whole check, from name resolution to the end of the body.
    #[serde(with = "sonde_settings::duration")]
    pub timeout: Duration,
    /// Time between the starts of two checks.
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
    /// Extra request headers. `Host`, `User-Agent` and `Accept` replace the defaults;
    /// `Connection`, `Content-Length` and `Transfer-Encoding` are refused.
    #[serde(with = "sonde_settings::pairs")]
    #[debug(with = sonde_settings::redact::headers)]
    pub headers: Vec<(String, String)>,
    /// PEM file of the CA certificate(s) to trust instead of the system's roots (https only).
    pub ca_certificate: Option<PathBuf>,
    /// Accepts any server certificate (https only). The expiry metric is still recorded.
    pub insecure_skip_verify: bool,
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe {
            name: String::new(),
            url: String::new(),
            method: "GET".into(),
            expect_status: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            interval: DEFAULT_INTERVAL,
            headers: Vec::new(),
            ca_certificate: None,
            insecure_skip_verify: false,
        }
    }
}

impl HttpProbe {
    /// A `GET` probe of `url` with the defaults (any 2xx/3xx, 5 s timeout, 30 s interval).
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        HttpProbe {
            name: name.into(),
            url: url.into(),
            ..HttpProbe::default()
        }
    }
}

/// A TCP check: succeeds when a connection to `address` is established. In a configuration
/// file, one `[[probes.tcp]]` table with these keys.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpProbe {
    /// Unique name of the probe (the `probe.name` label).
    pub name: String,
    /// `host:port`, with IPv6 literals in brackets (`[::1]:5432`).
    pub address: String,
    /// Bound on resolution plus connect.
    #[serde(with = "sonde_settings::duration")]
    pub timeout: Duration,
    /// Time between the starts of two checks.
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
}

/// The probes of a configuration file (the agent's `[[probes.http]]` and `[[probes.tcp]]`),
/// each checked where it stands as [`Prober::new`](crate::Prober::new) checks it.
///
/// ```
/// use sonde_probes::{ProbesConfig, TcpProbe};
/// use sonde_settings::Settings;
///
/// let config = ProbesConfig {
///     tcp: vec![TcpProbe::new("db", "127.0.0.1:5432"), TcpProbe::new("db", "127.0.0.1:5433")],
///     ..Default::default()
/// };
/// let problems = config.validate();
/// assert_eq!(problems[0].key, "tcp.1");
/// assert!(problems[0].message.contains("used by another probe"));
/// assert_eq!(config.targets().len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesConfig {
    /// HTTP(S) probes.
    pub http: Vec<HttpProbe>,
    /// TCP probes.
    pub tcp: Vec<TcpProbe>,
}

impl ProbesConfig {
    /// Every probe, HTTP first.
    pub fn targets(&self) -> Vec<ProbeTarget> {
        let http = self.http.iter().cloned().map(ProbeTarget::Http);
        http.chain(self.tcp.iter().cloned().map(ProbeTarget::Tcp))
            .collect()
    }
}

impl sonde_settings::Settings for ProbesConfig {
    fn expect(key: &str) -> Option<sonde_settings::Expect> {
        use sonde_settings::Expect;
        match key {
            "http.interval" | "http.timeout" | "tcp.interval" | "tcp.timeout" => Some(
                Expect::duration(Duration::from_millis(10)..=MAX_PERIOD, DEFAULT_INTERVAL),
            ),
            "http.insecure_skip_verify" => Some(Expect::Flag),
            _ => None,
        }
    }

    fn validate(&self) -> Vec<sonde_settings::Problem> {
        use sonde_settings::{Expect, Problem};
        let period = Expect::duration(Duration::from_millis(10)..=MAX_PERIOD, DEFAULT_INTERVAL);
        let mut problems = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let http = self
            .http
            .iter()
            .map(|p| ("http", &p.name, p.interval, p.timeout));
        let tcp = self
            .tcp
            .iter()
            .map(|p| ("tcp", &p.name, p.interval, p.timeout));
        let indexed = http.enumerate().chain(tcp.enumerate()).zip(self.targets());
        for ((i, (kind, name, interval, timeout)), target) in indexed {
            let key = format!("{kind}.{i}");
            let needs = match kind {
                "http" => self.http[i].url.is_empty(),
                _ => self.tcp[i].address.is_empty(),
            };
            if name.is_empty() || needs {
                let what = if kind == "http" { "url" } else { "address" };
                problems.push(Problem::new(
                    &key,
                    format!("each [[probes.{kind}]] needs `name` and `{what}`"),
                    match kind {
                        "http" => {
                            "for example name = \"api\", url = \"http://127.0.0.1:8080/health\""
                        }
                        _ => "for example name = \"db\", address = \"127.0.0.1:5432\"",
                    },
                ));
                continue;
            }
            let mut bad_period = false;
            for (k, d) in [("interval", interval), ("timeout", timeout)] {
                if !period.admits(d) {
                    problems.push(period.problem(&format!("{key}.{k}")));
                    bad_period = true;
                }
            }
            if names.contains(&name.as_str()) {
                problems.push(Problem::new(
                    &key,
                    format!("the probe name `{name}` is used by another probe"),
                    "give every probe a unique name",
                ));
                continue;
            }
            names.push(name);
            if bad_period {
                continue;
            }
            if let Err(e) = crate::Prober::new(&sonde_core::Registry::new(), vec![target]) {
                problems.push(Problem::new(
                    &key,
                    e.to_string(),
                    "see [[probes.http]] and [[probes.tcp]] in `sonde-agent print-example-config`",
                ));
            }
        }
        problems
    }
}

impl Default for TcpProbe {
    fn default() -> Self {
        TcpProbe {
            name: String::new(),
            address: String::new(),
            timeout: DEFAULT_TIMEOUT,
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl TcpProbe {
    /// A probe of `address` (`host:port`) with the defaults (5 s timeout, 30 s interval).
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        TcpProbe {
            name: name.into(),
            address: address.into(),
            ..TcpProbe::default()
        }
    }
}

/// A parsed `http(s)` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    /// Host without brackets (`::1`, `example.com`), lowercased.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    /// The `Host` header value: brackets around IPv6 literals, the port when not the default.
    pub fn host_header(&self) -> String {
        let host = bracket(&self.host);
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn invalid(probe: &str, problem: impl Into<String>) -> Error {
    Error::InvalidTarget {
        probe: probe.to_owned(),
        problem: problem.into(),
    }
}

/// Parses `url` with [`http::Uri`]; `Err` holds a message naming the problem and the fix.
///
/// `http::Uri` is more lenient than a request line allows, so these checks stay on top of it:
/// only `http` and `https`, no `user:password@`, a host name of letters, digits, `-`, `.`, `_`
/// or an IP address (IPv6 in brackets), a port from 1 to 65535, an ASCII path and query, and no
/// whitespace or control character anywhere.
pub(crate) fn parse_url(url: &str) -> Result<Url, String> {
    if url.is_empty() {
        return Err("the url is empty; set it to an http:// or https:// URL".into());
    }
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "url {url:?} contains {c:?}; percent-encode spaces and control characters"
        ));
    }
    // `http::Uri` reads `host:port` alone as an authority; say what is missing instead.
    if !url.contains("://") {
        return Err(format!(
            "url {url:?} has no scheme; write it as http://host/path or https://host/path"
        ));
    }
    let uri: http::Uri = url.parse().map_err(|e| {
        format!(
            "url {url:?} is not a valid URL ({e}); write it as http://host:port/path, with an IPv6 address in brackets ([::1]:8080)"
        )
    })?;
    let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") => false,
        Some("https") => true,
        other => {
            return Err(format!(
                "url {url:?} has scheme {:?}; only http:// and https:// are supported (use a tcp probe for other protocols)",
                other.unwrap_or_default()
            ));
        }
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "url {url:?} contains user information; remove it and pass an Authorization header in `headers`"
        ));
    }
    let host = uri.host().unwrap_or_default();
    // Without user information the authority is the host, then `:port` if any; `port_u16`
    // alone cannot tell a missing port from an invalid one.
    let port = match authority.get(host.len()..).unwrap_or_default() {
        "" => {
            if https {
                443
            } else {
                80
            }
        }
        rest => check_port(rest.strip_prefix(':').unwrap_or(rest))
            .map_err(|problem| format!("url {url:?}: {problem}"))?,
    };
    let host = check_host(host).map_err(|problem| format!("url {url:?}: {problem}"))?;
    let target = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") => "/".to_owned(),
        Some(q) if q.starts_with('?') => format!("/{q}"),
        Some(pq) => pq.to_owned(),
    };
    // `http::Uri` keeps UTF-8 in the path; a request line is ASCII.
    if !target.is_ascii() {
        return Err(format!(
            "url {url:?} has non-ASCII characters in its path or query; percent-encode them"
        ));
    }
    Ok(Url {
        https,
        host,
        port,
        target,
    })
}

/// Checks a host (an IPv6 literal in brackets, `[::1]`); returns it without brackets, lowercased.
fn check_host(host: &str) -> Result<String, String> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{inner:?} in brackets is not an IPv6 address"));
        }
        return Ok(inner.to_ascii_lowercase());
    }
    if host.is_empty() {
        return Err("the host is empty; write host:port".into());
    }
    if host.parse::<IpAddr>().is_err()
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "host {host:?} is not a valid host name; use letters, digits, '-', '.' (punycode for international names)"
        ));
    }
    Ok(host.to_ascii_lowercase())
}

/// A port from 1 to 65535.
fn check_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {p:?} is not a number from 1 to 65535")),
        Ok(n) => Ok(n),
    }
}

/// Splits a TCP probe's `host:port` (IPv6 in brackets, `[::1]:5432`).
pub(crate) fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if s.starts_with('[') {
        let Some(close) = s.find(']') else {
            return Err(format!(
                "{s:?} opens an IPv6 address with '[' but never closes it; write [::1]:port"
            ));
        };
        let (host, after) = s.split_at(close + 1);
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => {
                    return Err(format!(
                        "unexpected {after:?} after the IPv6 address; write [addr]:port"
                    ));
                }
            },
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "{s:?} looks like an IPv6 address without brackets; write [addr]:port"
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = check_host(host)?;
    let Some(port) = port else {
        return Err(format!(
            "{s:?} has no port; write host:port, e.g. {}:443",
            bracket(&host)
        ));
    };
    let port = check_port(port)?;
    Ok((host, port))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Validated HTTP request settings.
#[derive(Debug, Clone)]
pub(crate) struct HttpSpec {
    pub url: Url,
    pub method: String,
    pub expect_status: Vec<u16>,
    pub headers: Vec<(String, String)>,
}

pub(crate) fn validate_common(
    name: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<(), Error> {
    if name.is_empty() {
        return Err(invalid(
            name,
            "the probe name is empty; give every probe a unique name",
        ));
    }
    if timeout.is_zero() {
        return Err(invalid(name, "timeout is zero; set a timeout such as 5s"));
    }
    if interval.is_zero() {
        return Err(invalid(
            name,
            "interval is zero; set an interval such as 30s",
        ));
    }
    if timeout > MAX_PERIOD || interval > MAX_PERIOD {
        return Err(invalid(
            name,
            "timeout and interval must be at most 7 days; shorten them",
        ));
    }
    Ok(())
}

pub(crate) fn validate_http(p: &HttpProbe) -> Result<HttpSpec, Error> {
    validate_common(&p.name, p.timeout, p.interval)?;
    let url = parse_url(&p.url).map_err(|e| invalid(&p.name, e))?;
    let method = if p.method.is_empty() {
        "GET".to_owned()
    } else {
        p.method.to_ascii_uppercase()
    };
    if !is_token(&method) {
        return Err(invalid(
            &p.name,
            format!(
                "method {:?} is not a valid HTTP method; use GET, HEAD, POST...",
                p.method
            ),
        ));
    }
    if method == "CONNECT" {
        return Err(invalid(
            &p.name,
            "method CONNECT is not supported; use a tcp probe to check a proxy port",
        ));
    }
    if let Some(s) = p.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
        return Err(invalid(
            &p.name,
            format!("expect_status {s} is not an HTTP status code (100 to 599)"),
        ));
    }
    for (k, v) in &p.headers {
        if !is_token(k) {
            return Err(invalid(
                &p.name,
                format!("header name {k:?} is not valid; use letters, digits and '-'"),
            ));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(invalid(
                &p.name,
                format!("the value of header {k:?} contains a line break or NUL; remove it"),
            ));
        }
        if ["connection", "content-length", "transfer-encoding"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            return Err(invalid(
                &p.name,
                format!(
                    "header {k:?} is managed by the probe (it sends no body and closes the connection); remove it"
                ),
            ));
        }
    }
    if p.insecure_skip_verify && p.ca_certificate.is_some() {
        return Err(invalid(
            &p.name,
            "both ca_certificate and insecure_skip_verify are set; keep one of them",
        ));
    }
    Ok(HttpSpec {
        url,
        method,
        expect_status: p.expect_status.clone(),
        headers: p.headers.clone(),
    })
}

pub(crate) fn validate_tcp(p: &TcpProbe) -> Result<(String, u16), Error> {
    validate_common(&p.name, p.timeout, p.interval)?;
    split_host_port(&p.address)
        .map_err(|e| invalid(&p.name, format!("address {:?}: {e}", p.address)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_header_values() {
        let probe = HttpProbe {
            headers: vec![("Authorization".into(), "Bearer hunter2".into())],
            ..HttpProbe::new("api", "https://example.com/health")
        };
        let shown = format!("{probe:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains(r#"headers: {"Authorization": "<redacted>"}"#),
            "{shown}"
        );
        assert!(shown.contains("https://example.com/health"), "{shown}");
    }

    #[test]
    fn urls() {
        let u = parse_url("https://Example.com").unwrap();
        assert_eq!(
            u,
            Url {
                https: true,
                host: "example.com".into(),
                port: 443,
                target: "/".into()
            }
        );
        assert_eq!(u.host_header(), "example.com");
        let u = parse_url("http://127.0.0.1:8080/a/b?c=d#frag").unwrap();
        assert_eq!((u.port, u.target.as_str()), (8080, "/a/b?c=d"));
        assert_eq!(u.host_header(), "127.0.0.1:8080");
        let u = parse_url("http://[::1]:9000?x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.target, "/?x");
        assert_eq!(u.host_header(), "[::1]:9000");
        for bad in [
            "",
            "example.com",
            "ftp://example.com",
            "http://",
            "http://:80/",
            "http://host:0/",
            "http://host:99999/",
            "http://host:x/",
            "http://user:pw@host/",
            "http://ho st/",
            "http://[::1/",
            "http://::1/",
            "http://host/é",
            "http://ex$ample.com/",
            // http::Uri accepts these; the checks on top of it refuse them.
            "http://host:/",
            "http://[zz]/",
            "http://[fe80::1%25eth0]/",
            "http://host/a?é",
            "gopher://host/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad:?} accepted");
        }
        let u = parse_url("HTTP://Example.COM:8080#frag").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.target.as_str()),
            (false, "example.com", 8080, "/")
        );
        let u = parse_url("https://[::1]/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 443));
        assert_eq!(u.host_header(), "[::1]");
        for (bad, says) in [
            ("example.com:80", "no scheme"),
            ("http://host:0/", "1 to 65535"),
            ("http://u@host/", "Authorization"),
            ("http://[::1/", "brackets"),
            ("http://host/é", "percent-encode"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(split_host_port("db:5432").unwrap(), ("db".into(), 5432));
        assert_eq!(split_host_port("[::1]:22").unwrap(), ("::1".into(), 22));
        for bad in ["db", "db:", ":5432", "::1:22", "[::1]", "[::1]x", "db:0"] {
            assert!(split_host_port(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn http_validation_names_probe_and_fix() {
        let mut p = HttpProbe::new("api", "ftp://example.com");
        let e = validate_http(&p).unwrap_err().to_string();
        assert!(e.contains("\"api\"") && e.contains("http://"), "{e}");
        p.url = "http://example.com".into();
        p.headers = vec![("Connection".into(), "keep-alive".into())];
        assert!(validate_http(&p).is_err());
        p.headers = vec![("X-Ok".into(), "a\r\nb".into())];
        assert!(validate_http(&p).is_err());
        p.headers = vec![];
        p.expect_status = vec![700];
        assert!(validate_http(&p).is_err());
        p.expect_status = vec![204];
        p.method = "get".into();
        assert_eq!(validate_http(&p).unwrap().method, "GET");
        p.method = "G T".into();
        assert!(validate_http(&p).is_err());
        p.method = String::new();
        p.timeout = Duration::ZERO;
        assert!(validate_http(&p).is_err());
    }
}
