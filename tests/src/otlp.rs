//! An OTLP receiver on loopback ports — gRPC (tonic) and HTTP/protobuf, metrics and traces — that
//! records every request and answers as scripted, so the end-to-end tests of the OTLP exporters
//! can check what arrived and how the exporters react to errors, throttling and hangs.
//!
//! Both servers run on a dedicated thread with its own tokio runtime, so blocking tests and
//! async tests can use the receiver alike.
//!
//! Requests the receiver cannot accept whatever the script says (an HTTP body that does not
//! decode: 400; a wrong `Content-Type` or an unknown `Content-Encoding`: 415) are recorded as
//! attempts with that answer, without consuming the script.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic_types::{ErrorDetails, StatusExt};

use crate::scripted::{
    Script, ScriptedServer, bind_loopback, expect_accepting, find_header, header_pairs, poll_until,
};

pub use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// The protobuf content type of OTLP/HTTP.
const PROTOBUF: &str = "application/x-protobuf";

/// Largest gRPC message the receiver decodes (tonic's default is 4 MiB).
const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// The signal a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `ExportMetricsServiceRequest` (gRPC `MetricsService/Export`, HTTP `/v1/metrics`).
    Metrics,
    /// `ExportTraceServiceRequest` (gRPC `TraceService/Export`, HTTP `/v1/traces`).
    Traces,
}

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Accept (gRPC OK / HTTP 200 with an empty Export*ServiceResponse protobuf body).
    Ok,
    /// gRPC UNAVAILABLE (with a google.rpc.RetryInfo detail when `retry_after` is Some) / HTTP
    /// 503 (with `Retry-After: <whole seconds, rounded up>` when Some).
    Unavailable {
        /// The delay the server asks for, if any.
        retry_after: Option<Duration>,
    },
    /// gRPC RESOURCE_EXHAUSTED (with RetryInfo when Some) / HTTP 429 (with Retry-After when
    /// Some).
    Throttled {
        /// The delay the server asks for, if any.
        retry_after: Option<Duration>,
    },
    /// gRPC INVALID_ARGUMENT / HTTP 400 (body: a protobuf google.rpc.Status with a message).
    Invalid,
    /// Any gRPC code (as i32, `tonic::Code as i32`) / any HTTP status, for the other codes of
    /// the spec. The HTTP body is a google.rpc.Status with code `grpc`.
    Status {
        /// The gRPC status code.
        grpc: i32,
        /// The HTTP status code.
        http: u16,
    },
    /// Accept, with partial_success { rejected_data_points / rejected_spans = rejected,
    /// error_message = message }.
    PartialSuccess {
        /// Rejected data points (metrics) or spans (traces).
        rejected: i64,
        /// The `error_message`.
        message: String,
    },
    /// Do not answer for this long (sleep inside the handler), then answer UNAVAILABLE / 503.
    /// The attempt is recorded on arrival; the request is not accepted.
    Hang(Duration),
    /// HTTP 503 with `Retry-After: <this value>` exactly as given (huge numbers, dates,
    /// garbage) / gRPC UNAVAILABLE with the longest RetryInfo delay (10,000 years).
    RetryAfterRaw(String),
    /// HTTP `status` (a 3xx) with `Location: location` and a small HTML body / gRPC INTERNAL.
    /// `GET /login` on the HTTP port serves a 200 HTML page to redirect to.
    Redirect {
        /// The HTTP status.
        status: u16,
        /// The `Location` header.
        location: String,
    },
}

impl Fault {
    /// Whether the request is accepted (its data is kept).
    fn accepts(&self) -> bool {
        matches!(self, Fault::Ok | Fault::PartialSuccess { .. })
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The transport it came over.
    pub transport: Transport,
    /// The signal it carried.
    pub signal: Signal,
    /// The answer given.
    pub fault: Fault,
    /// Whether the body arrived gzip-compressed (HTTP `Content-Encoding: gzip` / gRPC
    /// `grpc-encoding: gzip`).
    pub gzip: bool,
    /// Request headers / gRPC metadata, lowercased names (ascii values only), in arrival order.
    pub headers: Vec<(String, String)>,
    /// Size of the body as received (compressed size if compressed), bytes. For gRPC, the
    /// decoded message's `encoded_len`.
    pub body_bytes: usize,
    /// When it arrived.
    pub at: Instant,
}

impl Attempt {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// What the servers share with the test.
struct State {
    script: Script<Fault>,
    attempts: Vec<Attempt>,
    metrics: Vec<ExportMetricsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
}

type Shared = crate::scripted::Shared<State>;

/// A request that arrived, before its answer is chosen.
struct Arrival {
    transport: Transport,
    signal: Signal,
    gzip: bool,
    headers: Vec<(String, String)>,
    body_bytes: usize,
    at: Instant,
}

impl Arrival {
    fn into_attempt(self, fault: Fault) -> Attempt {
        Attempt {
            transport: self.transport,
            signal: self.signal,
            fault,
            gzip: self.gzip,
            headers: self.headers,
            body_bytes: self.body_bytes,
            at: self.at,
        }
    }
}

/// A decoded request.
enum Payload {
    Metrics(ExportMetricsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

impl Shared {
    /// Takes the next answer (script, then default), records the attempt and, when the answer
    /// accepts, the request.
    fn arrive(&self, arrival: Arrival, payload: Payload) -> Fault {
        let mut guard = self.lock();
        let state = &mut *guard;
        let fault = state.script.next();
        if fault.accepts() {
            match payload {
                Payload::Metrics(r) => state.metrics.push(r),
                Payload::Traces(r) => state.traces.push(r),
            }
        }
        state.attempts.push(arrival.into_attempt(fault.clone()));
        fault
    }

    /// Records a request answered `fault` regardless of the script (which is left alone).
    fn reject(&self, arrival: Arrival, fault: Fault) {
        self.lock().attempts.push(arrival.into_attempt(fault));
    }
}

/// An OTLP receiver (gRPC and HTTP) on free loopback ports; stopped on drop.
#[derive(custom_debug::Debug)]
pub struct OtlpReceiver {
    #[debug(skip)]
    server: ScriptedServer<State>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl OtlpReceiver {
    /// Starts a gRPC server (tonic, MetricsService + TraceService, accepting gzip) and an HTTP
    /// server (POST `/v1/metrics` and `/v1/traces`, `Content-Type: application/x-protobuf`,
    /// accepting `Content-Encoding: gzip`; other paths 404; undecodable body 400) on free
    /// 127.0.0.1 ports, on a dedicated thread with its own tokio runtime. Panics with a clear
    /// message if it cannot start. Returns once both ports accept connections.
    pub fn start() -> OtlpReceiver {
        const PEER: &str = "OTLP receiver";
        let (grpc_listener, grpc_addr) = bind_loopback(PEER, "gRPC");
        let (http_listener, http_addr) = bind_loopback(PEER, "HTTP");

        let state = State {
            script: Script::new(Fault::Ok),
            attempts: Vec::new(),
            metrics: Vec::new(),
            traces: Vec::new(),
        };
        let server = ScriptedServer::start(PEER, "otlp-receiver", state, move |shared| {
            serve(shared, grpc_listener, http_listener)
        });
        for (what, addr) in [("gRPC", grpc_addr), ("HTTP", http_addr)] {
            expect_accepting(PEER, what, addr);
        }
        OtlpReceiver {
            server,
            grpc_addr,
            http_addr,
        }
    }

    /// `http://127.0.0.1:PORT` of the gRPC server.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `http://127.0.0.1:PORT`, the base of the HTTP server (clients append `/v1/metrics`,
    /// `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Answers for the next requests, consumed in order (one per request, any signal or
    /// transport), after those already scripted; once the script is used up, the default
    /// applies.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.server.lock().script.extend(faults);
    }

    /// The answer when the script is empty (initially [`Fault::Ok`]), e.g. `Unavailable` for an
    /// outage, then `Ok` again.
    pub fn set_default(&self, fault: Fault) {
        self.server.lock().script.set_default(fault);
    }

    /// Every attempt so far, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.server.lock().attempts.clone()
    }

    /// Metrics requests that were accepted (answered `Ok` or `PartialSuccess`), in order.
    pub fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.server.lock().metrics.clone()
    }

    /// Trace requests that were accepted (answered `Ok` or `PartialSuccess`), in order.
    pub fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        self.server.lock().traces.clone()
    }

    /// Waits (polling every 20 ms) until `pred(&self.metrics())` is true or `timeout` passes;
    /// returns whether it became true.
    pub fn wait_for_metrics(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ExportMetricsServiceRequest]) -> bool,
    ) -> bool {
        poll_until(timeout, || pred(&self.server.lock().metrics))
    }

    /// Waits (polling every 20 ms) until `pred(&self.traces())` is true or `timeout` passes;
    /// returns whether it became true.
    pub fn wait_for_traces(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ExportTraceServiceRequest]) -> bool,
    ) -> bool {
        poll_until(timeout, || pred(&self.server.lock().traces))
    }

    /// Forgets recorded attempts and requests (not the script or the default).
    pub fn clear(&self) {
        let mut state = self.server.lock();
        state.attempts.clear();
        state.metrics.clear();
        state.traces.clear();
    }
}

/// Spawns both servers on the current runtime.
fn serve(
    shared: Arc<Shared>,
    grpc_listener: StdTcpListener,
    http_listener: StdTcpListener,
) -> Result<(), String> {
    let grpc_listener = tokio::net::TcpListener::from_std(grpc_listener)
        .map_err(|e| format!("gRPC listener: {e}"))?;
    let http_listener = tokio::net::TcpListener::from_std(http_listener)
        .map_err(|e| format!("HTTP listener: {e}"))?;

    let grpc = GrpcReceiver(Arc::clone(&shared));
    let router = tonic::transport::Server::builder()
        .add_service(
            MetricsServiceServer::new(grpc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_GRPC_MESSAGE),
        )
        .add_service(
            TraceServiceServer::new(grpc)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(MAX_GRPC_MESSAGE),
        );
    tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming(TcpIncoming::from(grpc_listener).with_nodelay(Some(true)))
            .await
        {
            eprintln!("OTLP receiver: the gRPC server stopped: {e}");
        }
    });

    crate::serve::serve_http(http_listener, move |req| {
        let shared = Arc::clone(&shared);
        async move { handle_http(&shared, req).await }
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// gRPC

#[derive(Clone)]
struct GrpcReceiver(Arc<Shared>);

impl GrpcReceiver {
    fn arrival<T: Message>(request: &tonic::Request<T>, signal: Signal, at: Instant) -> Arrival {
        let headers = header_pairs(&request.metadata().clone().into_headers());
        let gzip = headers
            .iter()
            .any(|(k, v)| k == "grpc-encoding" && v.eq_ignore_ascii_case("gzip"));
        Arrival {
            transport: Transport::Grpc,
            signal,
            gzip,
            headers,
            body_bytes: request.get_ref().encoded_len(),
            at,
        }
    }

    /// Records a request of `signal` (its message kept as `payload` makes it) and answers as
    /// scripted: the response `respond` makes of the partial success, or an error status.
    async fn receive<T: Message, R>(
        &self,
        request: tonic::Request<T>,
        signal: Signal,
        payload: fn(T) -> Payload,
        respond: fn(Option<(i64, String)>) -> R,
    ) -> Result<tonic::Response<R>, tonic::Status> {
        let arrival = Self::arrival(&request, signal, Instant::now());
        let fault = self.0.arrive(arrival, payload(request.into_inner()));
        let partial = grpc_answer(fault).await?;
        Ok(tonic::Response::new(respond(partial)))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.receive(request, Signal::Metrics, Payload::Metrics, metrics_response)
            .await
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.receive(request, Signal::Traces, Payload::Traces, traces_response)
            .await
    }
}

/// The gRPC answer to `fault`: `Ok(partial success)` or an error status (after sleeping for
/// `Hang`).
async fn grpc_answer(fault: Fault) -> Result<Option<(i64, String)>, tonic::Status> {
    let with_retry = |code: Code, retry_after: Option<Duration>| {
        let message = format!("OTLP test receiver: scripted {}", code_name(code));
        match retry_after {
            Some(delay) => tonic::Status::with_error_details(
                code,
                message,
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => tonic::Status::new(code, message),
        }
    };
    match fault {
        Fault::Ok => Ok(None),
        Fault::PartialSuccess { rejected, message } => Ok(Some((rejected, message))),
        Fault::Unavailable { retry_after } => Err(with_retry(Code::Unavailable, retry_after)),
        Fault::Throttled { retry_after } => Err(with_retry(Code::ResourceExhausted, retry_after)),
        Fault::Invalid => Err(with_retry(Code::InvalidArgument, None)),
        Fault::Status { grpc, .. } => Err(with_retry(Code::from_i32(grpc), None)),
        Fault::Hang(duration) => {
            tokio::time::sleep(duration).await;
            Err(with_retry(Code::Unavailable, None))
        }
        Fault::RetryAfterRaw(_) => Err(with_retry(Code::Unavailable, Some(Duration::MAX))),
        Fault::Redirect { .. } => Err(with_retry(Code::Internal, None)),
    }
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
}

fn metrics_response(partial: Option<(i64, String)>) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: partial.map(|(rejected, message)| ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: message,
        }),
    }
}

fn traces_response(partial: Option<(i64, String)>) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: partial.map(|(rejected, message)| ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

type HttpResponse = Response<Full<Bytes>>;

async fn handle_http(shared: &Shared, req: Request<Incoming>) -> HttpResponse {
    let at = Instant::now();
    let signal = match req.uri().path() {
        "/v1/metrics" => Signal::Metrics,
        "/v1/traces" => Signal::Traces,
        // Where `Fault::Redirect` may send a client: what a login page or portal answers.
        "/login" => return html_response(StatusCode::OK, None),
        path => {
            return text_response(
                StatusCode::NOT_FOUND,
                format!("OTLP test receiver: no route for {path}"),
            );
        }
    };
    if req.method() != Method::POST {
        let mut response = text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("OTLP test receiver: {} not allowed", req.method()),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let headers = header_pairs(req.headers());
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let content_type = header("content-type");
    let encoding = header("content-encoding");
    let gzip = encoding.as_deref() == Some("gzip");
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // The connection broke mid-body: nothing to record.
            return text_response(
                StatusCode::BAD_REQUEST,
                format!("OTLP test receiver: reading the body: {e}"),
            );
        }
    };
    let arrival = Arrival {
        transport: Transport::Http,
        signal,
        gzip,
        headers,
        body_bytes: body.len(),
        at,
    };

    let media_type = content_type
        .as_deref()
        .and_then(|ct| ct.split(';').next())
        .map(str::trim);
    if media_type != Some(PROTOBUF) {
        return unsupported(
            shared,
            arrival,
            format!("Content-Type {content_type:?} is not {PROTOBUF}"),
        );
    }
    let raw = match encoding.as_deref() {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => match gunzip(&body) {
            Ok(raw) => raw,
            Err(e) => return invalid(shared, arrival, format!("gunzip: {e}")),
        },
        Some(other) => {
            return unsupported(
                shared,
                arrival,
                format!("Content-Encoding {other:?} is not supported"),
            );
        }
    };
    let payload = match signal {
        Signal::Metrics => ExportMetricsServiceRequest::decode(&raw[..]).map(Payload::Metrics),
        Signal::Traces => ExportTraceServiceRequest::decode(&raw[..]).map(Payload::Traces),
    };
    let payload = match payload {
        Ok(payload) => payload,
        Err(e) => return invalid(shared, arrival, format!("decoding the protobuf body: {e}")),
    };
    let fault = shared.arrive(arrival, payload);
    http_answer(fault, signal).await
}

/// Records and answers 400 for a body that cannot be read.
fn invalid(shared: &Shared, arrival: Arrival, message: String) -> HttpResponse {
    shared.reject(arrival, Fault::Invalid);
    status_response(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        format!("OTLP test receiver: {message}"),
        None,
    )
}

/// Records and answers 415 for a content type or encoding the receiver does not take.
fn unsupported(shared: &Shared, arrival: Arrival, message: String) -> HttpResponse {
    shared.reject(
        arrival,
        Fault::Status {
            grpc: Code::InvalidArgument as i32,
            http: 415,
        },
    );
    status_response(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Code::InvalidArgument,
        format!("OTLP test receiver: {message}"),
        None,
    )
}

/// The HTTP answer to `fault` (after sleeping for `Hang`).
async fn http_answer(fault: Fault, signal: Signal) -> HttpResponse {
    let scripted = |code: Code| format!("OTLP test receiver: scripted {}", code_name(code));
    match fault {
        Fault::Ok => success_response(signal, None),
        Fault::PartialSuccess { rejected, message } => {
            success_response(signal, Some((rejected, message)))
        }
        Fault::Unavailable { retry_after } => status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            scripted(Code::Unavailable),
            retry_after,
        ),
        Fault::Throttled { retry_after } => status_response(
            StatusCode::TOO_MANY_REQUESTS,
            Code::ResourceExhausted,
            scripted(Code::ResourceExhausted),
            retry_after,
        ),
        Fault::Invalid => status_response(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            scripted(Code::InvalidArgument),
            None,
        ),
        Fault::Status { grpc, http } => {
            let code = Code::from_i32(grpc);
            status_response(
                StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                format!(
                    "OTLP test receiver: scripted HTTP {http} / {}",
                    code_name(code)
                ),
                None,
            )
        }
        Fault::Hang(duration) => {
            tokio::time::sleep(duration).await;
            status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                scripted(Code::Unavailable),
                None,
            )
        }
        Fault::RetryAfterRaw(value) => {
            let mut response = status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                scripted(Code::Unavailable),
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(RETRY_AFTER, v);
            }
            response
        }
        Fault::Redirect { status, location } => html_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND),
            Some(&location),
        ),
    }
}

/// A small HTML page with `status`, and `Location` when given.
fn html_response(status: StatusCode, location: Option<&str>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"<!doctype html><html><body><form>Log in</form></body></html>",
    )));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    response
}

/// 200 with the encoded Export*ServiceResponse.
fn success_response(signal: Signal, partial: Option<(i64, String)>) -> HttpResponse {
    let body = match signal {
        Signal::Metrics => metrics_response(partial).encode_to_vec(),
        Signal::Traces => traces_response(partial).encode_to_vec(),
    };
    protobuf_response(StatusCode::OK, body)
}

/// `status` with a google.rpc.Status body and, when given, `Retry-After` in whole seconds
/// (rounded up).
fn status_response(
    status: StatusCode,
    code: Code,
    message: String,
    retry_after: Option<Duration>,
) -> HttpResponse {
    let body = tonic_types::Status {
        code: code as i32,
        message,
        details: Vec::new(),
    }
    .encode_to_vec();
    let mut response = protobuf_response(status, body);
    if let Some(delay) = retry_after {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn protobuf_response(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    response
}

fn text_response(status: StatusCode, text: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Decoding helpers

/// Every metric named `name` across `requests` (all resources and scopes), in order.
pub fn find_metrics<'a>(
    requests: &'a [ExportMetricsServiceRequest],
    name: &str,
) -> Vec<&'a Metric> {
    requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == name)
        .collect()
}

/// The attributes of a request's `resource`, as [`attrs`] renders them; panics when the
/// request carried none.
pub fn resource_attrs(resource: Option<&Resource>) -> Vec<(String, String)> {
    attrs(&resource.expect("the request carries a resource").attributes)
}

/// Attributes of a KeyValue list as sorted (key, string value) pairs: strings, ints, doubles and
/// bools rendered with `to_string`; arrays as `[a, b]`, key-value lists as `{k=v, ...}`, bytes
/// as lowercase hex, an absent value as the empty string.
pub fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = kvs
        .iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect();
    pairs.sort();
    pairs
}

fn render(value: Option<&AnyValue>) -> String {
    use any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(|v| render(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(list)) => {
            let items: Vec<String> = list
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, render(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(Value::BytesValue(bytes)) => bytes.iter().fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        }),
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
    }
}
