//! Small blocking HTTP helpers over the workspace's one client (`sonde_http1::client`, reqwest),
//! for loopback servers only.

use std::io::Read;
use std::time::Duration;

/// A response: status, headers, body bytes.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// `Content-Encoding`.
    pub content_encoding: String,
    /// Every header.
    pub headers: http::HeaderMap,
    /// The body as received (not decompressed).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as UTF-8, gunzipped if it was sent gzipped.
    pub fn text(&self) -> String {
        if self.content_encoding == "gzip" {
            let mut out = String::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_string(&mut out)
                .unwrap();
            out
        } else {
            String::from_utf8(self.body.clone()).unwrap()
        }
    }

    /// The header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a request trusts and presents: PEM text of a CA, PEM files of a client identity.
#[derive(Default)]
struct Trust<'a> {
    ca_pem: Option<&'a [u8]>,
    client: Option<(&'a std::path::Path, &'a std::path::Path)>,
}

fn client(trust: &Trust<'_>) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject as _;
    use sonde_http1::tls;
    let verify = match trust.ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
                roots.add(cert.unwrap()).unwrap();
            }
            tls::Verify::Roots(roots)
        }
        None => tls::Verify::Platform,
    };
    let identity = trust
        .client
        .map(|(cert, key)| tls::load_client_cert(cert, key).unwrap());
    let config = tls::client_config_with(verify, identity, &[b"http/1.1"]).unwrap();
    sonde_http1::client::client_with(config, TIMEOUT, "sonde-tests").unwrap()
}

/// One request; any status is a reply, a transport error is an `Err` with its causes.
fn send(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    trust: &Trust<'_>,
    timeout: Duration,
) -> Result<Reply, String> {
    let client = client(trust);
    let mut request = client.request(method, url).timeout(timeout);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some(body) = body {
        request = request.body(body.to_vec());
    }
    let reply = sonde_http1::client::block_on(async move {
        let mut response = request
            .send()
            .await
            .map_err(|e| sonde_push::error_chain(&e))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (content_type, content_encoding) = (header("content-type"), header("content-encoding"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let read = sonde_http1::client::read_capped(&mut response, 64 << 20).await;
        if let Some(e) = read.error {
            return Err(sonde_push::error_chain(&e));
        }
        assert!(!read.truncated, "{url} answered more than 64 MiB");
        Ok(Reply {
            status,
            content_type,
            content_encoding,
            headers,
            body: read.body,
        })
    });
    reply.map_err(|e| format!("no runtime: {e}"))?
}

const TIMEOUT: Duration = Duration::from_secs(20);

/// GET `url` with extra headers; any status is returned, transport errors panic.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    get_with_ca(url, headers, None)
}

/// GET `url`; `None` when it cannot be reached (for polling a server that is starting).
pub fn try_get(url: &str) -> Option<Reply> {
    send(
        http::Method::GET,
        url,
        &[],
        None,
        &Trust::default(),
        TIMEOUT,
    )
    .ok()
}

/// GET over HTTPS trusting only the PEM certificate `ca_pem` (or the usual roots with `None`).
pub fn get_with_ca(url: &str, headers: &[(&str, &str)], ca_pem: Option<&str>) -> Reply {
    let trust = Trust {
        ca_pem: ca_pem.map(str::as_bytes),
        client: None,
    };
    send(http::Method::GET, url, headers, None, &trust, TIMEOUT)
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET over HTTPS trusting the PEM certificate at `ca`, presenting the client certificate
/// and key at `client` (mutual TLS), with extra headers (such as `Authorization`); any status is
/// returned, `None` when the connection or handshake fails.
pub fn try_get_mtls(
    url: &str,
    headers: &[(&str, &str)],
    ca: &std::path::Path,
    client: (&std::path::Path, &std::path::Path),
) -> Option<Reply> {
    let ca = std::fs::read(ca).unwrap();
    let trust = Trust {
        ca_pem: Some(&ca),
        client: Some(client),
    };
    send(http::Method::GET, url, headers, None, &trust, TIMEOUT).ok()
}

/// POST `body` to `url`.
pub fn post(url: &str, body: &[u8]) -> Reply {
    post_with(url, &[], body)
}

/// POST `body` to `url` with extra headers; any status is returned, transport errors panic.
pub fn post_with(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    try_post_with(url, headers, body, TIMEOUT).unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// POST `body` to `url` with extra headers within `timeout`; a transport error is an `Err`.
pub fn try_post_with(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    send(
        http::Method::POST,
        url,
        headers,
        Some(body),
        &Trust::default(),
        timeout,
    )
}

/// The `Authorization` value of HTTP basic authentication as `user` with `password`. A tiny
/// base64 encoder of its own, so that tests do not share the implementation of the servers
/// they check.
pub fn basic_auth(user: &str, password: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                T[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

pub use sonde_testkit::raw_request;
