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
            "the URL {url:?} is invalid ({reason}); give an absolute http:// or https:// URL such as {example}"
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
                url: url.to_owned(),
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
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
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
        url: url.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
