//! Blocking HTTP for the push exporters (remote write and Pushgateway): one `ureq` agent per
//! exporter, outcomes sorted into success, retryable and permanent, and jittered backoff.

use std::time::Duration;

pub(crate) use sonde_core::telemetry::Backoff;

use crate::Error;

/// The `User-Agent` of every push.
pub(crate) const USER_AGENT: &str = concat!("sonde/", env!("CARGO_PKG_VERSION"));

/// Bytes of an error response kept for the error message.
const BODY_LIMIT: usize = 1024;

/// An agent that returns every status as a response, follows no redirect (a redirected POST
/// would lose its body) and gives up on a request after `timeout`.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(USER_AGENT)
        .build()
        .into()
}

/// Checks that `url` is an absolute `http://` or `https://` URL.
pub(crate) fn check_url(url: &str, example: &str) -> Result<(), Error> {
    let fail = |reason: &str| {
        Err(Error::Config(format!(
            "the URL {:?} is invalid ({reason}); give an absolute http:// or https:// URL such as {example}",
            sonde_push::redact_url(url)
        )))
    };
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(_)) => Ok(()),
            (Some(s), Some(_)) => fail(&format!("unsupported scheme {s:?}")),
            _ => fail("no scheme or host"),
        },
        Err(e) => fail(&e.to_string()),
    }
}

/// What became of one HTTP attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 2xx.
    Success,
    /// Worth another try: network errors, 5xx, 429 (with the server's `Retry-After`, if any).
    Retry {
        error: Error,
        retry_after: Option<Duration>,
    },
    /// Trying again would fail the same way: other statuses, invalid requests.
    Fail(Error),
}

/// Sorts a response or transport error into an [`Outcome`]; `hint` says what to check for a
/// given non-2xx status.
pub(crate) fn outcome(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    hint: impl Fn(u16) -> &'static str,
) -> Outcome {
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            let retryable = matches!(
                e,
                ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::HostNotFound
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::Protocol(_)
                    | ureq::Error::BodyStalled
                    | ureq::Error::ConnectProxyFailed(_)
            );
            let error = Error::Transport {
                url: sonde_push::redact_url(url).into_owned(),
                reason: e.to_string(),
            };
            return if retryable {
                Outcome::Retry {
                    error,
                    retry_after: None,
                }
            } else {
                Outcome::Fail(error)
            };
        }
    };
    let status = response.status().as_u16();
    // Seconds or an HTTP-date, clamped: a hostile value cannot stall or crash the sender.
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(sonde_push::parse_retry_after);
    // Read (a bounded part of) the body: a drained response lets the connection be reused,
    // and an error's body says what the server disliked.
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    if (200..300).contains(&status) {
        return Outcome::Success;
    }
    let mut text = String::from_utf8_lossy(&body[..body.len().min(BODY_LIMIT)])
        .trim()
        .to_owned();
    if body.len() > BODY_LIMIT {
        text.push_str("...");
    }
    let error = Error::Status {
        url: sonde_push::redact_url(url).into_owned(),
        status,
        body: text,
        hint: hint(status),
    };
    if status == 429 || status >= 500 {
        Outcome::Retry { error, retry_after }
    } else {
        Outcome::Fail(error)
    }
}

/// `Debug` of configured headers: names only, values (tokens, API keys) hidden.
pub(crate) fn redacted_headers(headers: &[(String, String)]) -> impl std::fmt::Debug + '_ {
    struct Headers<'a>(&'a [(String, String)]);
    impl std::fmt::Debug for Headers<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_map()
                .entries(self.0.iter().map(|(k, _)| (k, sonde_push::REDACTED)))
                .finish()
        }
    }
    Headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_hide_credentials() {
        let rw = crate::remote_write::RemoteWriteBuilder::new("https://u:s3cret@h/api/v1/write")
            .header("authorization", "Bearer s3cret");
        let pg = crate::push::PushgatewayBuilder::new("https://u:s3cret@h:9091")
            .header("authorization", "Bearer s3cret");
        for shown in [format!("{rw:?}"), format!("{pg:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(
                shown.contains(r#""authorization": "<redacted>""#),
                "{shown}"
            );
            assert!(shown.contains("https://<redacted>@h"), "{shown}");
        }
        let e = check_url("ftp://u:s3cret@h/", "x").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        let e = outcome(
            "http://u:s3cret@127.0.0.1:1/",
            Err(ureq::Error::ConnectionFailed),
            |_| "",
        );
        assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
    }

    #[test]
    fn retry_after_is_parsed_and_clamped() {
        let answer = |v: &str| {
            let r = ureq::http::Response::builder()
                .status(503)
                .header("retry-after", v)
                .body(ureq::Body::builder().data(""))
                .unwrap();
            match outcome("http://h/", Ok(r), |_| "") {
                Outcome::Retry { retry_after, .. } => retry_after,
                o => panic!("{o:?}"),
            }
        };
        assert_eq!(answer("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            answer("18446744073709551616"),
            Some(sonde_push::MAX_PEER_DELAY)
        );
        assert_eq!(
            answer("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(sonde_push::MAX_PEER_DELAY)
        );
        assert_eq!(answer("later"), None);
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:9090/api/v1/write", "x").is_ok());
        assert!(check_url("https://example.invalid/push", "x").is_ok());
        let e = check_url("127.0.0.1:9090", "http://h/").unwrap_err();
        assert!(e.to_string().contains("http://h/"), "{e}");
        assert!(check_url("ftp://h/x", "x").is_err());
        assert!(check_url("", "x").is_err());
        assert!(check_url("http://", "x").is_err());
    }
}
