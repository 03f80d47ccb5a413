//! Sending one encoded request over gRPC or HTTP, and classifying the answer the way the OTLP
//! specification asks: success (possibly partial), retryable (with the server's delay), or final.

use std::io::Write as _;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use flate2::Compression as GzLevel;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_types::StatusExt as _;

use crate::Error;
use crate::config::{Compression, Protocol, Resolved};

pub(crate) use sonde_push::Outcome;

/// A metrics client over either protocol.
pub(crate) enum Client {
    Grpc {
        channel: Channel,
        metadata: MetadataMap,
        gzip: bool,
        endpoint: String,
    },
    Http {
        client: reqwest::Client,
        url: String,
        /// `url` without credentials, for messages.
        shown: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
}

/// Most bytes of a response body read: enough for a `google.rpc.Status` or a partial-success
/// answer; a larger body is cut there rather than buffered whole.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

const METRICS_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

impl Client {
    /// Builds the client. Must run inside the exporter's runtime (the gRPC channel registers
    /// with it).
    pub(crate) fn new(settings: &Resolved) -> Result<Client, Error> {
        let gzip = settings.compression == Compression::Gzip;
        match settings.protocol {
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
                    .map_err(|e| {
                        Error::Config(format!(
                            "the OTLP endpoint {:?} is not a valid URI: {e}",
                            sonde_push::redact_url(&settings.endpoint)
                        ))
                    })?
                    .connect_timeout(settings.timeout)
                    .tcp_nodelay(true);
                if settings.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(grpc_tls(settings)?)
                        .map_err(|e| Error::Config(format!("TLS settings rejected: {e}")))?;
                }
                let mut metadata = MetadataMap::new();
                for (k, v) in &settings.headers {
                    let (Ok(k), Ok(v)) = (
                        k.parse::<AsciiMetadataKey>(),
                        v.parse::<AsciiMetadataValue>(),
                    ) else {
                        return Err(Error::Config(format!(
                            "the header {k:?} cannot be sent as gRPC metadata; use lowercase ASCII names and values"
                        )));
                    };
                    metadata.insert(k, v);
                }
                Ok(Client::Grpc {
                    channel: endpoint.connect_lazy(),
                    metadata,
                    gzip,
                    endpoint: sonde_push::redact_url(&settings.endpoint).into_owned(),
                })
            }
            Protocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &settings.headers {
                    let (Ok(k), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                        reqwest::header::HeaderValue::from_str(v),
                    ) else {
                        return Err(Error::Config(format!("the header {k:?} is invalid")));
                    };
                    headers.insert(k, v);
                }
                Ok(Client::Http {
                    client: http_client(settings)?,
                    url: settings.endpoint.clone(),
                    shown: sonde_push::redact_url(&settings.endpoint).into_owned(),
                    headers,
                    gzip,
                })
            }
        }
    }

    /// Sends `body` (an encoded `ExportMetricsServiceRequest`) once, within `timeout`.
    pub(crate) async fn send_body(&mut self, body: &Bytes, timeout: Duration) -> Outcome {
        match self {
            Client::Grpc {
                channel,
                metadata,
                gzip,
                endpoint,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if *gzip {
                    grpc = grpc.send_compressed(CompressionEncoding::Gzip);
                }
                grpc = grpc.accept_compressed(CompressionEncoding::Gzip);
                let mut request = tonic::Request::new(body.clone());
                *request.metadata_mut() = metadata.clone();
                request.set_timeout(timeout);
                let call = async {
                    grpc.ready().await.map_err(|e| {
                        tonic::Status::unavailable(format!("cannot connect to {endpoint}: {e}"))
                    })?;
                    grpc.unary(
                        request,
                        http::uri::PathAndQuery::from_static(METRICS_PATH),
                        RawCodec,
                    )
                    .await
                };
                // The push engine bounds the whole attempt by `timeout`.
                match call.await {
                    Ok(response) => success(response.into_inner()),
                    Err(status) => grpc_outcome(&status, endpoint),
                }
            }
            Client::Http {
                client,
                url,
                shown,
                headers,
                gzip,
            } => {
                let mut request = client
                    .post(url.as_str())
                    .timeout(timeout)
                    .headers(headers.clone())
                    .header("content-type", "application/x-protobuf");
                request = if *gzip {
                    match gzip_bytes(body) {
                        Ok(z) => request.header("content-encoding", "gzip").body(z),
                        Err(e) => return Outcome::Fail(format!("could not compress: {e}")),
                    }
                } else {
                    request.body(body.clone())
                };
                let mut response = match request.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Outcome::Retry {
                            // reqwest's message names the URL, credentials included.
                            error: format!(
                                "could not reach {shown}: {}",
                                sonde_push::error_chain(&e.without_url())
                            ),
                            after: None,
                        };
                    }
                };
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let answer = Answer {
                    retry_after: header("retry-after")
                        .as_deref()
                        .and_then(sonde_push::parse_retry_after),
                    location: header("location"),
                    content_type: header("content-type"),
                };
                let body = sonde_http1::client::read_capped(&mut response, MAX_RESPONSE_BYTES)
                    .await
                    .body;
                http_outcome(status, &answer, &body, shown)
            }
        }
    }
}

impl sonde_push::Sink for Client {
    type Batch = crate::convert::Encoded;

    async fn send(&mut self, batch: &crate::convert::Encoded, timeout: Duration) -> Outcome {
        self.send_body(&batch.body, timeout).await
    }
}

fn success(r: ExportMetricsServiceResponse) -> Outcome {
    match r.partial_success {
        Some(p) if p.rejected_data_points > 0 || !p.error_message.is_empty() => Outcome::Success {
            rejected: u64::try_from(p.rejected_data_points).unwrap_or(0),
            message: p.error_message,
        },
        _ => Outcome::Success {
            rejected: 0,
            message: String::new(),
        },
    }
}

/// The specification's retryable gRPC codes; RESOURCE_EXHAUSTED only when the server says when
/// to come back (RetryInfo), since otherwise the quota may never recover.
pub(crate) fn grpc_outcome(status: &tonic::Status, endpoint: &str) -> Outcome {
    use tonic::Code;
    let after = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .map(sonde_push::peer_delay);
    let error = format!(
        "{endpoint} answered {:?}: {}",
        status.code(),
        status.message()
    );
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Outcome::Retry { error, after },
        Code::ResourceExhausted if after.is_some() => Outcome::Retry { error, after },
        Code::Unimplemented => Outcome::Fail(format!(
            "{error}; the receiver does not serve OTLP metrics over gRPC (check the port: 4317 is gRPC, 4318 HTTP)"
        )),
        Code::Unauthenticated | Code::PermissionDenied => Outcome::Fail(format!(
            "{error}; add credentials with OtlpTransport::header or OTEL_EXPORTER_OTLP_HEADERS"
        )),
        _ => Outcome::Fail(error),
    }
}

/// The headers of an HTTP answer that decide its outcome.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// `Retry-After`, parsed and clamped.
    pub(crate) retry_after: Option<Duration>,
    pub(crate) location: Option<String>,
    pub(crate) content_type: Option<String>,
}

/// Retryable HTTP answers: 429, 502, 503, 504 (with Retry-After); 400 and the rest are final.
/// Redirects are not followed (they would carry the API-key headers to another place, and a
/// redirected POST loses its body): a 3xx is a final failure naming where it pointed.
pub(crate) fn http_outcome(status: u16, answer: &Answer, body: &[u8], url: &str) -> Outcome {
    if (200..300).contains(&status) {
        // An HTML page (a login or captive portal, a proxy's error page) is not an OTLP answer.
        if answer
            .content_type
            .as_deref()
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"))
        {
            return Outcome::Fail(format!(
                "{url} answered HTTP {status} with an HTML page, not an OTLP response; check that the endpoint is the OTLP receiver (path /v1/metrics, port 4318)"
            ));
        }
        return success(ExportMetricsServiceResponse::decode(body).unwrap_or_default());
    }
    if (300..400).contains(&status) {
        let to = answer
            .location
            .as_deref()
            .map(|l| format!(" to {}", sonde_push::redact_url(l)))
            .unwrap_or_default();
        return Outcome::Fail(format!(
            "{url} answered HTTP {status}, a redirect{to}, which is not followed (it would carry the headers elsewhere); set the endpoint to the final URL"
        ));
    }
    let message = tonic_types::pb::Status::decode(body)
        .ok()
        .map(|s| s.message)
        .filter(|m| !m.is_empty())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let error = format!("{url} answered HTTP {status}{message}");
    match status {
        429 | 502 | 503 | 504 => Outcome::Retry {
            error,
            after: answer.retry_after,
        },
        404 => Outcome::Fail(format!(
            "{error}; check the path (/v1/metrics) and that the port serves OTLP/HTTP (4318; 4317 is gRPC)"
        )),
        401 | 403 => Outcome::Fail(format!(
            "{error}; add credentials with OtlpTransport::header or OTEL_EXPORTER_OTLP_HEADERS"
        )),
        413 => Outcome::Fail(format!(
            "{error}; the request is too large for the receiver: lower max_request_bytes"
        )),
        _ => Outcome::Fail(error),
    }
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut z = GzEncoder::new(Vec::with_capacity(body.len() / 4), GzLevel::fast());
    z.write_all(body)?;
    z.finish()
}

fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the {what} {}: {e}; give the path of a PEM file",
            path.display()
        ))
    })
}

pub(crate) fn grpc_tls(settings: &Resolved) -> Result<ClientTlsConfig, Error> {
    let mut tls = ClientTlsConfig::new();
    tls = match &settings.ca_certificate {
        Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(read_pem(
            ca,
            "CA certificate",
        )?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&settings.client_certificate, &settings.client_key) {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read_pem(cert, "client certificate")?,
            read_pem(key, "client key")?,
        ));
    }
    Ok(tls)
}

/// The workspace's one HTTP client (`sonde_http1::client`: rustls with the ring provider, no
/// redirect, so the API-key headers never travel; `http_outcome` reports a redirect).
pub(crate) fn http_client(settings: &Resolved) -> Result<reqwest::Client, Error> {
    let tls = sonde_http1::client::TlsFiles {
        ca_file: settings.ca_certificate.clone(),
        client_cert: settings
            .client_certificate
            .clone()
            .zip(settings.client_key.clone()),
        insecure_skip_verify: false,
    };
    sonde_http1::client::client(&tls, settings.timeout, sonde_http1::client::USER_AGENT)
        .map_err(|e| Error::Config(e.to_string()))
}

/// Sends pre-encoded request bytes and decodes the response, so queued requests are kept as
/// bytes rather than as message trees.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportMetricsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportMetricsServiceResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportMetricsServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn retryable(o: &Outcome) -> bool {
        matches!(o, Outcome::Retry { .. })
    }

    #[test]
    fn only_the_specified_grpc_codes_are_retried() {
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(
                retryable(&grpc_outcome(&tonic::Status::new(code, "x"), "e")),
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Internal,
            Code::Unimplemented,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
        ] {
            assert!(
                !retryable(&grpc_outcome(&tonic::Status::new(code, "x"), "e")),
                "{code:?}"
            );
        }
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(3)));
        let status =
            tonic::Status::with_error_details(Code::ResourceExhausted, "slow down", details);
        match grpc_outcome(&status, "e") {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(3))),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn redirects_and_html_pages_are_failures() {
        let redirect = Answer {
            location: Some("https://user:pw@login.example/sso".into()),
            ..Answer::default()
        };
        for s in [301, 302, 303, 307, 308] {
            match http_outcome(s, &redirect, b"", "u") {
                Outcome::Fail(m) => {
                    assert!(m.contains("https://<redacted>@login.example/sso"), "{m}");
                    assert!(!m.contains("pw"), "{m}");
                }
                o => panic!("{s}: {o:?}"),
            }
        }
        let html = Answer {
            content_type: Some("text/html; charset=utf-8".into()),
            ..Answer::default()
        };
        assert!(matches!(
            http_outcome(200, &html, b"<html>log in</html>", "u"),
            Outcome::Fail(m) if m.contains("HTML page")
        ));
    }

    #[test]
    fn server_delays_are_clamped() {
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::MAX));
        let status = tonic::Status::with_error_details(Code::Unavailable, "later", details);
        match grpc_outcome(&status, "e") {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(sonde_push::MAX_PEER_DELAY)),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn only_the_specified_http_statuses_are_retried() {
        let none = Answer::default();
        for s in [429, 502, 503, 504] {
            assert!(retryable(&http_outcome(s, &none, b"", "u")), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 500, 501] {
            assert!(!retryable(&http_outcome(s, &none, b"", "u")), "{s}");
        }
        let seven = Answer {
            retry_after: Some(Duration::from_secs(7)),
            ..Answer::default()
        };
        match http_outcome(429, &seven, b"", "u") {
            Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(7))),
            o => panic!("{o:?}"),
        }
        let body = tonic_types::pb::Status {
            code: 3,
            message: "bad metric".into(),
            details: vec![],
        }
        .encode_to_vec();
        match http_outcome(400, &none, &body, "u") {
            Outcome::Fail(m) => assert!(m.contains("bad metric"), "{m}"),
            o => panic!("{o:?}"),
        }
    }
}
