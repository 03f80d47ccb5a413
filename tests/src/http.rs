//! Small blocking HTTP helpers over `ureq`, for loopback servers only.

use std::io::Read;
use std::time::Duration;

/// A response: status, headers we care about, body bytes.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// `Content-Encoding`.
    pub content_encoding: String,
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
}

fn agent(ca_pem: Option<&str>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)));
    if let Some(pem) = ca_pem {
        let cert = ureq::tls::Certificate::from_pem(pem.as_bytes()).unwrap();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    cert,
                ])))
                .build(),
        );
    }
    config.build().into()
}

/// GET `url` with extra headers; any status is returned, transport errors panic.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    get_with_ca(url, headers, None)
}

/// GET `url`; `None` when it cannot be reached (for polling a server that is starting).
pub fn try_get(url: &str) -> Option<Reply> {
    agent(None).get(url).call().ok().map(into_reply)
}

/// GET over HTTPS trusting only the PEM certificate `ca_pem` (or the usual roots with `None`).
pub fn get_with_ca(url: &str, headers: &[(&str, &str)], ca_pem: Option<&str>) -> Reply {
    let mut req = agent(ca_pem).get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    into_reply(req.call().unwrap_or_else(|e| panic!("GET {url}: {e}")))
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
    let pem = |p: &std::path::Path| std::fs::read(p).unwrap();
    let ca = ureq::tls::Certificate::from_pem(&pem(ca))
        .unwrap()
        .to_owned();
    let chain = vec![
        ureq::tls::Certificate::from_pem(&pem(client.0))
            .unwrap()
            .to_owned(),
    ];
    let key = ureq::tls::PrivateKey::from_pem(&pem(client.1))
        .unwrap()
        .to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    ca,
                ])))
                .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)))
                .build(),
        )
        .build()
        .into();
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.call().ok().map(into_reply)
}

/// POST `body` to `url`.
pub fn post(url: &str, body: &[u8]) -> Reply {
    into_reply(
        agent(None)
            .post(url)
            .send(body)
            .unwrap_or_else(|e| panic!("POST {url}: {e}")),
    )
}

fn into_reply(mut r: ureq::http::Response<ureq::Body>) -> Reply {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (content_type, content_encoding) = (header("content-type"), header("content-encoding"));
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    Reply {
        status,
        content_type,
        content_encoding,
        body,
    }
}
