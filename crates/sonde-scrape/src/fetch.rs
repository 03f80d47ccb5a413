//! One bounded GET of a metrics endpoint.

use std::time::Duration;

use sonde_push::redact_url;

/// The `Accept` header of a scrape: OpenMetrics first (it carries `# UNIT`), text as fallback.
pub const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// The `Accept` header of a scrape that asks for the protobuf format first, as Prometheus
/// does when native histograms are on.
pub const ACCEPT_PROTOBUF: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,text/plain;version=0.0.4;q=0.5";

/// The largest body read by default (a bigger one is refused rather than filling memory).
pub const MAX_BODY_BYTES: u64 = 64 << 20;

/// How to authenticate a scrape.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// None.
    #[default]
    None,
    /// `Authorization: Basic`.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    // Credentials stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// How an https target is trusted: a private CA, no verification (a self-signed target on
/// loopback), a client certificate for mutual TLS. The files are read at each scrape, so renewed
/// ones are picked up; [`Tls::check`](sonde_http1::client::TlsFiles::check) reads them now.
pub use sonde_http1::client::TlsFiles as Tls;

/// A fetch that failed: the message names the URL (credentials redacted) and what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// What happened.
    pub message: String,
    /// Why, in a word, for a `reason` label: `bad_url`, `connect`, `status`, `protobuf`, `body`.
    pub reason: &'static str,
}

fn fail(reason: &'static str, message: String) -> FetchError {
    FetchError { message, reason }
}

/// Checks that `url` is an absolute http(s) URL with a host.
pub fn check_url(url: &str) -> Result<(), FetchError> {
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(()),
        _ => Err(fail(
            "bad_url",
            format!(
                "{:?} is not an absolute http:// or https:// URL; give the metrics endpoint, such as http://127.0.0.1:9100/metrics",
                redact_url(url)
            ),
        )),
    }
}

/// Checks that `url` and `auth` do not both carry credentials: the client turns a URL's
/// `user:password@` into an `Authorization` header, and a second one would follow.
pub fn check_login(url: &str, auth: &Auth) -> Result<(), FetchError> {
    let in_url = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().contains('@')))
        .unwrap_or(false);
    if in_url && *auth != Auth::None {
        return Err(fail(
            "bad_url",
            format!(
                "{} carries credentials and basic auth or a bearer token is set too; keep one of them",
                redact_url(url)
            ),
        ));
    }
    Ok(())
}

/// No TLS settings: the system's roots, no client certificate.
static NO_TLS: Tls = Tls {
    ca_file: None,
    client_cert: None,
    insecure_skip_verify: false,
};

/// One bounded GET of a metrics endpoint: where, within how long, as whom, how much is read.
///
/// [`Request::new`] asks for no login, the system's TLS roots and at most [`MAX_BODY_BYTES`];
/// the setters change that. Redirects are not followed (credentials must not travel) and a
/// non-2xx answer is an error.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    url: &'a str,
    timeout: Duration,
    auth: &'a Auth,
    tls: &'a Tls,
    max_body: u64,
    user_agent: &'a str,
    max_samples: usize,
}

// Not derived: a URL's `user:password@` stays out of logs (the login's own Debug hides it too).
impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("url", &redact_url(self.url))
            .field("timeout", &self.timeout)
            .field("auth", self.auth)
            .field("tls", self.tls)
            .field("max_body", &self.max_body)
            .field("user_agent", &self.user_agent)
            .field("max_samples", &self.max_samples)
            .finish()
    }
}

impl<'a> Request<'a> {
    /// A GET of `url` within `timeout`, sending `user_agent`.
    pub fn new(url: &'a str, timeout: Duration, user_agent: &'a str) -> Self {
        Request {
            url,
            timeout,
            auth: &Auth::None,
            tls: &NO_TLS,
            max_body: MAX_BODY_BYTES,
            user_agent,
            max_samples: usize::MAX,
        }
    }

    /// Authenticates as `auth` says.
    pub fn auth(self, auth: &'a Auth) -> Self {
        Request { auth, ..self }
    }

    /// Trusts an https target as `tls` says.
    pub fn tls(self, tls: &'a Tls) -> Self {
        Request { tls, ..self }
    }

    /// Reads at most `max_body` bytes (a bigger body is an error).
    pub fn max_body(self, max_body: u64) -> Self {
        Request { max_body, ..self }
    }

    /// Reads at most `max_samples` samples of an [`exposition`](Self::exposition) (a bucket,
    /// `_sum` and `_count` each count): more is an error of reason `sample_limit`, found
    /// while parsing, so a body of tiny samples cannot make the reader hold millions.
    pub fn max_samples(self, max_samples: usize) -> Self {
        Request {
            max_samples,
            ..self
        }
    }

    /// Returns the body as text (invalid UTF-8 replaced); a protobuf body is an error.
    pub fn text(&self) -> Result<String, FetchError> {
        let (body, content_type) = self.get(ACCEPT)?;
        if content_type.contains("protobuf") {
            return Err(fail(
                "protobuf",
                format!(
                    "{} answered in protobuf ({content_type}); Prometheus text or OpenMetrics is read",
                    redact_url(self.url)
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Parses what the endpoint answers: the protobuf format (asked for first when `protobuf`
    /// is true, as Prometheus does with native histograms on; the only one that carries native
    /// histograms), OpenMetrics or Prometheus text.
    pub fn exposition(&self, protobuf: bool) -> Result<crate::Exposition, FetchError> {
        let shown = redact_url(self.url);
        let accept = if protobuf { ACCEPT_PROTOBUF } else { ACCEPT };
        let (body, content_type) = self.get(accept)?;
        let answered_protobuf = content_type.contains("application/vnd.google.protobuf");
        if answered_protobuf && !content_type.contains("encoding=delimited") {
            return Err(fail(
                "protobuf",
                format!(
                    "{shown} answered in protobuf without encoding=delimited ({content_type}); only the delimited MetricFamily stream is read"
                ),
            ));
        }
        let parsed = parse_body(&body, answered_protobuf, self.max_samples);
        parsed.map_err(|e| match e {
            crate::text::Unreadable::Invalid(problem) => {
                fail("parse", format!("{shown}: {problem}"))
            }
            too_many => fail("sample_limit", format!("{shown} exposed {too_many}")),
        })
    }

    /// The GET itself: the body and the lower-cased content type.
    fn get(&self, accept: &str) -> Result<(Vec<u8>, String), FetchError> {
        let Request {
            url,
            timeout,
            auth,
            tls,
            max_body,
            user_agent,
            max_samples: _,
        } = *self;
        check_url(url)?;
        let shown = redact_url(url);
        check_login(url, auth)?;
        let client = sonde_http1::client::client(tls, timeout, user_agent)
            .map_err(|e| fail("tls", format!("{shown}: {e}")))?;
        let mut request = client.get(url).timeout(timeout).header("Accept", accept);
        match auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                request = request.basic_auth(user, Some(password));
            }
            Auth::Bearer(token) => {
                request = request.bearer_auth(token);
            }
        }
        let cap = usize::try_from(max_body).unwrap_or(usize::MAX);
        let fetched = sonde_http1::client::block_on(async move {
            let mut response = request.send().await.map_err(|e| {
                fail(
                    "connect",
                    // reqwest's message names the URL, credentials included.
                    format!(
                        "{shown}: {}; check that the service or exporter is running and serves its metrics there",
                        sonde_push::error_chain(&e.without_url())
                    ),
                )
            })?;
            let status = response.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(fail(
                    "status",
                    format!(
                        "{shown} answered HTTP {status}; give the URL of a Prometheus or OpenMetrics endpoint"
                    ),
                ));
            }
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let read = sonde_http1::client::read_capped(&mut response, cap).await;
            let problem = match (&read.error, read.truncated) {
                (Some(e), _) => Some(sonde_push::error_chain(e)),
                (None, true) => Some("the body is larger than the limit".to_owned()),
                (None, false) => None,
            };
            match problem {
                None => Ok((read.body, content_type)),
                Some(why) => Err(fail(
                    "body",
                    format!(
                        "{shown}: reading the body failed: {why} (at most {} MiB are read)",
                        max_body >> 20
                    ),
                )),
            }
        });
        fetched.unwrap_or_else(|e| {
            let shown = redact_url(url);
            Err(fail(
                "connect",
                format!("{shown}: no runtime to fetch on: {e}"),
            ))
        })
    }
}

/// [`Request::exposition`] with every setting given; the scrape loop calls it with a target's.
pub fn fetch_exposition(
    url: &str,
    timeout: Duration,
    auth: &Auth,
    tls: &Tls,
    max_body: u64,
    user_agent: &str,
    protobuf: bool,
) -> Result<crate::Exposition, FetchError> {
    Request::new(url, timeout, user_agent)
        .auth(auth)
        .tls(tls)
        .max_body(max_body)
        .exposition(protobuf)
}

/// Parses a scraped body, the delimited protobuf stream or text (read lossily as UTF-8),
/// stopping past `max_samples`: what a scrape does with what it fetched.
pub(crate) fn parse_body(
    body: &[u8],
    protobuf: bool,
    max_samples: usize,
) -> Result<crate::Exposition, crate::text::Unreadable> {
    if protobuf {
        crate::proto::parse_protobuf_at_most(body, max_samples)
    } else {
        crate::text::parse_at_most(&String::from_utf8_lossy(body), max_samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_shows_no_credentials() {
        let auth = Auth::Bearer("token-secret".into());
        let shown = format!(
            "{:?}",
            Request::new(
                "http://user:pass-secret@127.0.0.1:9/metrics",
                Duration::from_secs(1),
                "t"
            )
            .auth(&auth)
        );
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("127.0.0.1:9/metrics"), "{shown}");
    }
}
