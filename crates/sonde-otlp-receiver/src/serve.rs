//! The two transports: gRPC (tonic) and HTTP/protobuf (hyper), over one recorder.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use sonde_core::{Counter, Family, Registry};
use tonic::codec::CompressionEncoding;
use tonic_types::{ErrorDetails, StatusExt};

use crate::record::{Outcome, Recorder};
use crate::{RETRY_AFTER, count};

/// What both transports share.
pub(crate) struct State {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) registry: Registry,
    pub(crate) points: Option<Family<Counter>>,
    pub(crate) max_request_bytes: usize,
    pub(crate) bearer_token: Option<String>,
}

/// Why a request is not recorded.
enum Refusal {
    /// The memory budget is full: retry later.
    Exhausted,
}

impl State {
    fn authorized(&self, header: Option<&str>) -> bool {
        match &self.bearer_token {
            None => true,
            Some(token) => header
                .and_then(|h| h.strip_prefix("Bearer "))
                .is_some_and(|t| t.trim() == token),
        }
    }

    /// Records a decoded request, or refuses it whole.
    fn export(
        &self,
        transport: &str,
        request: &ExportMetricsServiceRequest,
    ) -> Result<Outcome, Refusal> {
        // About one histogram series: refuse the whole request before anything is recorded,
        // so the sender keeps it and retries, rather than half of it landing.
        if self.registry.over_budget(6 * 1024) {
            count(
                &self.points,
                transport,
                "refused",
                "budget",
                points_in(request),
            );
            return Err(Refusal::Exhausted);
        }
        let outcome = self.recorder.record(request);
        count(&self.points, transport, "accepted", "", outcome.accepted);
        for (reason, n) in &outcome.rejected {
            count(&self.points, transport, "rejected", reason, *n);
        }
        Ok(outcome)
    }
}

fn points_in(r: &ExportMetricsServiceRequest) -> u64 {
    r.resource_metrics
        .iter()
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter())
        .filter_map(|m| m.data.as_ref())
        .map(crate::record::points)
        .sum()
}

fn response(outcome: &Outcome) -> ExportMetricsServiceResponse {
    let rejected = outcome.rejected_total();
    ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: format!(
                "{rejected} data points not recorded: {:?}",
                outcome.rejected
            ),
        }),
    }
}

/// The PEM certificate chain and key, for both transports.
pub(crate) struct TlsFiles {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    config: Arc<rustls::ServerConfig>,
}

/// Reads and checks the certificate chain and key.
pub(crate) fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsFiles, String> {
    use rustls_pki_types::pem::PemObject;
    let cert_pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let private = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    // ring: the workspace's one TLS stack.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("the certificate and key do not make a pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsFiles {
        cert_pem,
        key_pem,
        config: Arc::new(config),
    })
}

/// Starts both servers on the current runtime.
pub(crate) fn serve(
    state: Arc<State>,
    grpc: Option<std::net::TcpListener>,
    http: Option<std::net::TcpListener>,
    tls: Option<TlsFiles>,
) -> Result<(), String> {
    if let Some(l) = grpc {
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| format!("gRPC listener: {e}"))?;
        let service = MetricsServiceServer::new(Grpc(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(state.max_request_bytes);
        let mut builder = tonic::transport::Server::builder();
        if let Some(t) = &tls {
            let identity = tonic::transport::Identity::from_pem(&t.cert_pem, &t.key_pem);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|e| format!("gRPC TLS: {e}"))?;
        }
        let router = builder.add_service(service);
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
            if let Err(e) = router.serve_with_incoming(incoming).await {
                sonde_core::diag::warn(format_args!("the OTLP/gRPC receiver stopped: {e}"));
            }
        });
    }
    if let Some(l) = http {
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| format!("HTTP listener: {e}"))?;
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    // Out of descriptors and the like: back off rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let state = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle_http(&state, req).await) }
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = server.serve_connection(TokioIo::new(stream), service).await;
                        }
                        // A handshake that fails or stalls ends the connection, nothing else.
                        Some(a) => {
                            let handshake = tokio::time::timeout(
                                std::time::Duration::from_secs(10),
                                a.accept(stream),
                            );
                            if let Ok(Ok(tls)) = handshake.await {
                                let _ = server.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                    }
                });
            }
        });
    }
    Ok(())
}

struct Grpc(Arc<State>);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !self.0.authorized(auth) {
            return Err(tonic::Status::unauthenticated("a bearer token is required"));
        }
        match self.0.export("grpc", request.get_ref()) {
            Ok(outcome) => Ok(tonic::Response::new(response(&outcome))),
            Err(Refusal::Exhausted) => Err(tonic::Status::with_error_details(
                tonic::Code::ResourceExhausted,
                "the agent's memory budget is full; retry later",
                ErrorDetails::with_retry_info(Some(RETRY_AFTER)),
            )),
        }
    }
}

type HttpResponse = Response<Full<Bytes>>;

fn plain(status: StatusCode, message: String) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(message)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle_http(state: &State, req: Request<Incoming>) -> HttpResponse {
    if req.uri().path() != "/v1/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            format!(
                "no route for {}: OTLP metrics go to POST /v1/metrics",
                req.uri().path()
            ),
        );
    }
    if req.method() != Method::POST {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST".into());
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("POST"));
        return r;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_ascii_lowercase())
    };
    if !state.authorized(
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
    ) {
        return plain(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required".into(),
        );
    }
    let media = header("content-type");
    if media
        .as_deref()
        .and_then(|m| m.split(';').next())
        .map(str::trim)
        != Some("application/x-protobuf")
    {
        count(&state.points, "http", "refused", "content_type", 1);
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {media:?} is not application/x-protobuf (OTLP/JSON is not accepted)"
            ),
        );
    }
    let encoding = header("content-encoding");
    let limit = state.max_request_bytes;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            count(
                &state.points,
                "http",
                "refused",
                if too_big { "too_large" } else { "body" },
                1,
            );
            return if too_big {
                plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request is over {limit} bytes"),
                )
            } else {
                plain(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            };
        }
    };
    let raw = match encoding.as_deref() {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            let read = flate2::read::GzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out);
            match read {
                Ok(_) if out.len() > limit => {
                    count(&state.points, "http", "refused", "too_large", 1);
                    return plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the request is over {limit} bytes once decompressed"),
                    );
                }
                Ok(_) => out,
                Err(e) => {
                    count(&state.points, "http", "refused", "malformed", 1);
                    return plain(StatusCode::BAD_REQUEST, format!("gunzip: {e}"));
                }
            }
        }
        Some(other) => {
            count(&state.points, "http", "refused", "content_encoding", 1);
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?} is not supported: use gzip or none"),
            );
        }
    };
    let request = match ExportMetricsServiceRequest::decode(&raw[..]) {
        Ok(r) => r,
        Err(e) => {
            count(&state.points, "http", "refused", "malformed", 1);
            return plain(
                StatusCode::BAD_REQUEST,
                format!("not an OTLP metrics request: {e}"),
            );
        }
    };
    match state.export("http", &request) {
        Ok(outcome) => {
            let mut r = Response::new(Full::new(Bytes::from(response(&outcome).encode_to_vec())));
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/x-protobuf"),
            );
            r
        }
        Err(Refusal::Exhausted) => {
            let mut r = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "the agent's memory budget is full; retry later".into(),
            );
            r.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&RETRY_AFTER.as_secs().to_string())
                    .unwrap_or(HeaderValue::from_static("5")),
            );
            r
        }
    }
}
