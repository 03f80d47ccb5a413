//! HTTP for the push exporters (remote write and Pushgateway): the workspace's async `reqwest`
//! client on rustls with the ring provider (as in sonde-otlp), outcomes sorted into success,
//! retryable and permanent, bounded reads of answers, and jittered backoff.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::Error;

/// The `User-Agent` of every push.
pub(crate) use sonde_http1::client::USER_AGENT;

/// Bytes of an error response kept for the error message.
const BODY_LIMIT: usize = 1024;

/// Most bytes of a response body read: enough to drain a usual answer so the connection can be
/// reused; a larger (or endless) body is cut there rather than buffered whole.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

pub(crate) use sonde_http1::client::TlsFiles;

/// The workspace's one client (`sonde_http1::client`): no redirect, HTTP/1.1, connecting for at
/// most `timeout`; each request sets its own overall timeout.
pub(crate) fn client(timeout: Duration, tls: &TlsFiles) -> Result<reqwest::Client, Error> {
    sonde_http1::client::client(tls, timeout, USER_AGENT).map_err(|e| Error::Config(e.to_string()))
}

/// The configured headers, checked: an invalid one is a configuration error, not a failed
/// request.
pub(crate) fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => {
                return Err(Error::Config(format!(
                    "the HTTP header {name:?} is invalid; use a token name and a visible ASCII value"
                )));
            }
        }
    }
    Ok(map)
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

/// Sorts a response or transport error into an [`Outcome`], reading at most
/// [`MAX_RESPONSE_BYTES`] of the body; `hint` says what to check for a given non-2xx status.
pub(crate) async fn outcome(
    url: &str,
    result: Result<reqwest::Response, reqwest::Error>,
    hint: impl Fn(u16) -> &'static str,
) -> Outcome {
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            // A request that cannot be built fails the same way every time; anything else
            // (connect, timeout, reset, bad answer) may pass on another try.
            let retryable = !e.is_builder();
            let error = Error::Transport {
                url: sonde_push::redact_url(url).into_owned(),
                // reqwest's message names the URL, credentials included.
                reason: sonde_push::error_chain(&e.without_url()),
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
    // Read a bounded part of the body: a drained response lets the connection be reused, and
    // an error's body says what the server disliked. A read error ends the body, not the
    // outcome: the status already says what happened.
    let body = sonde_http1::client::read_capped(&mut response, MAX_RESPONSE_BYTES)
        .await
        .body;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::time::Instant;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn debug_and_errors_hide_credentials() {
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
        // A real refused connection: reqwest's error names the URL, ours must not leak it.
        let url = format!("http://u:s3cret@127.0.0.1:{}/", free_port());
        let client = client(Duration::from_secs(2), &TlsFiles::default()).unwrap();
        let e = outcome(&url, client.post(&url).send().await, |_| "").await;
        match &e {
            Outcome::Retry { error, .. } => {
                let shown = format!("{error} {error:?}");
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(shown.contains("http://<redacted>@127.0.0.1"), "{shown}");
            }
            o => panic!("a refused connection is retryable: {o:?}"),
        }
    }

    #[tokio::test]
    async fn retry_after_is_parsed_and_clamped() {
        let answer = |v: &str| {
            let r = http::Response::builder()
                .status(503)
                .header("retry-after", v)
                .body("")
                .unwrap();
            outcome("http://h/", Ok(reqwest::Response::from(r)), |_| "")
        };
        for (value, want) in [
            ("3", Some(Duration::from_secs(3))),
            ("18446744073709551616", Some(sonde_push::MAX_PEER_DELAY)),
            (
                "Fri, 31 Dec 9999 23:59:59 GMT",
                Some(sonde_push::MAX_PEER_DELAY),
            ),
            ("later", None),
        ] {
            match answer(value).await {
                Outcome::Retry { retry_after, .. } => assert_eq!(retry_after, want, "{value}"),
                o => panic!("{o:?}"),
            }
        }
    }

    #[tokio::test]
    async fn statuses_are_sorted() {
        let sort = |status: u16, body: String| {
            let r = http::Response::builder().status(status).body(body).unwrap();
            outcome("http://h/", Ok(reqwest::Response::from(r)), |_| "the hint")
        };
        assert!(matches!(sort(204, String::new()).await, Outcome::Success));
        assert!(matches!(
            sort(429, String::new()).await,
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            sort(502, String::new()).await,
            Outcome::Retry { .. }
        ));
        // A redirect is not followed: it is a failure that names the status.
        match sort(307, "moved".into()).await {
            Outcome::Fail(Error::Status { status, body, .. }) => {
                assert_eq!((status, body.as_str()), (307, "moved"));
            }
            o => panic!("{o:?}"),
        }
        match sort(400, "x".repeat(5000)).await {
            Outcome::Fail(e @ Error::Status { .. }) => {
                let Error::Status { body, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(body.len(), BODY_LIMIT + 3, "cut, with ...");
                assert!(e.to_string().contains("the hint"), "{e}");
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn header_maps() {
        let ok = [("Authorization".to_owned(), "Bearer t".to_owned())];
        assert_eq!(header_map(&ok).unwrap().len(), 1);
        let bad = [("bad header".to_owned(), "v".to_owned())];
        assert!(
            header_map(&bad)
                .unwrap_err()
                .to_string()
                .contains("HTTP header")
        );
        let bad = [("x".to_owned(), "line\nbreak".to_owned())];
        assert!(matches!(header_map(&bad), Err(Error::Config(_))));
    }

    #[tokio::test]
    async fn an_endless_answer_is_read_only_up_to_a_limit() {
        // Announces a gigabyte, sends 1 MiB, then stalls: reading it whole would never end (or
        // exhaust memory), and the request timeout would cut it at 10 s.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = conn.read(&mut [0u8; 65536]);
            let _ = write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\nContent-Length: 1000000000\r\n\r\n"
            );
            let _ = conn.write_all(&vec![b'x'; 1 << 20]);
            std::thread::sleep(Duration::from_secs(3));
        });
        let url = format!("http://{addr}/api/v1/write");
        let client = client(Duration::from_secs(10), &TlsFiles::default()).unwrap();
        let t = Instant::now();
        let sent = client
            .post(&url)
            .timeout(Duration::from_secs(10))
            .body("x")
            .send()
            .await;
        match outcome(&url, sent, |_| "").await {
            Outcome::Fail(Error::Status { status, body, .. }) => {
                assert_eq!(status, 400);
                assert!(body.starts_with("xxx") && body.ends_with("..."), "{body}");
            }
            o => panic!("{o:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        server.join().unwrap();
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
