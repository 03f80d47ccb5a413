//! A CloudWatch-compatible test endpoint: an HTTP server on a loopback port that speaks the wire
//! protocol `aws-sdk-cloudwatch` uses for `PutMetricData` (Smithy RPC v2 CBOR with
//! `awsQueryCompatible` errors), validates every request as strictly as CloudWatch documents,
//! records every call and answers as scripted, so the end-to-end tests of the CloudWatch exporter
//! can check what arrived and how the exporter reacts to throttling, faults and rejections.
//!
//! # Wire protocol
//!
//! Requests: `POST /service/GraniteServiceVersion20100801/operation/PutMetricData` with
//! `smithy-protocol: rpc-v2-cbor`, `Content-Type: application/cbor` and a CBOR map body
//! (`Namespace`, `MetricData` [{`MetricName`, `Dimensions` [{`Name`, `Value`}], `Timestamp` (tag 1,
//! epoch seconds), `Value`, `StatisticValues` {`SampleCount`, `Sum`, `Minimum`, `Maximum`},
//! `Values`, `Counts`, `Unit`, `StorageResolution`}], `EntityMetricData`,
//! `StrictEntityValidation`), gzip-compressed with `Content-Encoding: gzip` when the SDK's body
//! is at least 10 KiB.
//!
//! Success: HTTP 200, `smithy-protocol: rpc-v2-cbor`, `Content-Type: application/cbor`,
//! `x-amzn-requestid`, body an empty CBOR map.
//!
//! Errors: the HTTP status, `smithy-protocol: rpc-v2-cbor`, `Content-Type: application/cbor`,
//! `x-amzn-requestid`, for CloudWatch's codes `x-amzn-query-error: <Code>;<Sender|Receiver>`,
//! and a CBOR map body `{"__type": "<namespace>#<Shape>", "message": "..."}` (`"Message"` for
//! `InternalServiceFault`, the member name of that shape). The SDK takes the error code from
//! `__type` (namespace stripped), then overrides it with the code of `x-amzn-query-error`; it
//! maps the codes `InvalidParameterValue`, `InvalidParameterCombination`, `MissingParameter` and
//! `InternalServiceError` to the modeled `PutMetricDataError` variants; others are unmodeled.
//!
//! | Answer | Status | `x-amzn-query-error` | `__type` | SDK `code()` |
//! |---|---|---|---|---|
//! | invalid value | 400 | `InvalidParameterValue;Sender` | `com.amazonaws.cloudwatch#InvalidParameterValueException` | `InvalidParameterValue` |
//! | invalid combination | 400 | `InvalidParameterCombination;Sender` | `com.amazonaws.cloudwatch#InvalidParameterCombinationException` | `InvalidParameterCombination` |
//! | missing parameter | 400 | `MissingParameter;Sender` | `com.amazonaws.cloudwatch#MissingRequiredParameterException` | `MissingParameter` |
//! | [`CwFault::Throttling`] | 400 | `Throttling;Sender` | `com.amazon.coral.availability#ThrottlingException` | `Throttling` |
//! | [`CwFault::InternalServiceFault`] | 500 | `InternalServiceError;Receiver` | `com.amazonaws.cloudwatch#InternalServiceFault` | `InternalServiceError` |
//! | [`CwFault::Unavailable`] | 503 | — (empty body) | — | none |
//! | payload over 1 MB | 413 | `RequestEntityTooLarge;Sender` | `com.amazon.coral.service#RequestEntityTooLargeException` | `RequestEntityTooLarge` |
//! | undecodable body | 400 | — | `com.amazon.coral.service#SerializationException` | `SerializationException` |
//! | bad `Content-Type` / `Content-Encoding` | 415 | — | `com.amazon.coral.service#UnsupportedMediaTypeException` | `UnsupportedMediaTypeException` |
//! | other operation, path, method, or no `smithy-protocol` header | 400 | — | `com.amazon.coral.service#UnknownOperationException` | `UnknownOperationException` |
//!
//! # Script
//!
//! Every `PutMetricData` request takes the next scripted [`CwFault`] (then the default), before
//! validation; requests that cannot be routed (unknown operation, wrong path or method, missing
//! `smithy-protocol` header) are answered `UnknownOperationException` without taking one. Every
//! request is recorded as a [`CwAttempt`]; only requests answered 200 are kept as
//! [`PutRequest`]s.
//!
//! # Validation
//!
//! The first violation found (request order) is answered; messages name the parameter the way
//! CloudWatch does, with 1-based member indexes (`MetricData.member.3.Value`, datums of
//! `EntityMetricData` as `EntityMetricData.member.E.MetricData.member.N`). See
//! [`CloudWatchEndpoint`] for the rules.

use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ciborium::Value;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::scripted::{
    Script, ScriptedServer, bind_loopback, expect_accepting, find_header, header_pairs, poll_until,
};

/// The path prefix of every operation of the CloudWatch service (the Smithy service name).
pub const SERVICE_PATH: &str = "/service/GraniteServiceVersion20100801/operation/";

/// Largest uncompressed `PutMetricData` payload CloudWatch accepts, bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1_048_576;

/// CloudWatch's `StandardUnit` names, the only accepted `Unit` values.
pub const STANDARD_UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

const CBOR: &str = "application/cbor";
const RPC_V2_CBOR: &str = "rpc-v2-cbor";
const MAX_DATUMS: usize = 1000;
const MAX_DIMENSIONS: usize = 30;
const MAX_VALUES: usize = 150;
const MAX_NAME: usize = 255;
const MAX_DIMENSION_VALUE: usize = 1024;
const MAX_PAST_SECONDS: f64 = 14.0 * 86_400.0;
const MAX_FUTURE_SECONDS: f64 = 2.0 * 3_600.0;
/// Largest gzip-decompressed body the endpoint inflates before answering 413 (bomb guard).
const MAX_INFLATE: u64 = 64 * 1024 * 1024;

/// How the endpoint answers one request (applied before validation).
#[derive(Debug, Clone, PartialEq)]
pub enum CwFault {
    /// Validate, then store (200) or reject (400 with the validation error).
    Ok,
    /// HTTP 400, code `Throttling`, message "Rate exceeded" (`x-amzn-query-error:
    /// Throttling;Sender`, `__type` `com.amazon.coral.availability#ThrottlingException`); the SDK
    /// surfaces an unmodeled error with `code() == Some("Throttling")`.
    Throttling,
    /// HTTP 500, the `InternalServiceFault` shape (`__type`
    /// `com.amazonaws.cloudwatch#InternalServiceFault`) with CloudWatch's query error code
    /// `InternalServiceError` (`x-amzn-query-error: InternalServiceError;Receiver`): the SDK
    /// surfaces `PutMetricDataError::InternalServiceFault` with `code() ==
    /// Some("InternalServiceError")` — it maps only that code to the modeled variant.
    InternalServiceFault,
    /// HTTP 503 with an empty body (as a load balancer would answer); the SDK surfaces an
    /// unhandled error without a code.
    Unavailable,
}

/// `StatisticValues` of a datum.
#[derive(Debug, Clone, PartialEq)]
pub struct StatisticSet {
    /// `SampleCount`.
    pub sample_count: f64,
    /// `Sum`.
    pub sum: f64,
    /// `Minimum`.
    pub minimum: f64,
    /// `Maximum`.
    pub maximum: f64,
}

/// One accepted `MetricDatum`, as decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// `MetricName`.
    pub metric_name: String,
    /// `Dimensions` as (`Name`, `Value`), in request order.
    pub dimensions: Vec<(String, String)>,
    /// `Timestamp`, epoch seconds.
    pub timestamp: Option<f64>,
    /// `Value`.
    pub value: Option<f64>,
    /// `StatisticValues`.
    pub statistic_values: Option<StatisticSet>,
    /// `Values` (empty when absent).
    pub values: Vec<f64>,
    /// `Counts` (empty when absent).
    pub counts: Vec<f64>,
    /// `Unit`.
    pub unit: Option<String>,
    /// `StorageResolution`.
    pub storage_resolution: Option<i64>,
}

/// One accepted `PutMetricData` call.
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// `Namespace`.
    pub namespace: String,
    /// The datums of `MetricData`, then those of every `EntityMetricData` entry (entities are not
    /// kept), in request order.
    pub datums: Vec<Datum>,
    /// Size of the body as received (compressed size if compressed), bytes.
    pub body_bytes: usize,
    /// Size of the CBOR payload after decompression, bytes.
    pub uncompressed_bytes: usize,
    /// Whether the body arrived with `Content-Encoding: gzip`.
    pub gzip: bool,
    /// When it arrived.
    pub at: Instant,
}

/// Every call, with its answer.
#[derive(Debug, Clone)]
pub struct CwAttempt {
    /// The operation from the URL path (the whole path if it is not a service path).
    pub operation: String,
    /// The HTTP status answered.
    pub status: u16,
    /// Error code answered (None for 200 and for the empty-bodied 503), e.g. "Throttling",
    /// "InvalidParameterValue": the code the SDK's `code()` reports.
    pub error_code: Option<String>,
    /// The error message answered.
    pub message: Option<String>,
    /// Datums in the request (0 if undecodable).
    pub datums: usize,
    /// Size of the body as received, bytes.
    pub body_bytes: usize,
    /// Request headers, lowercased names (visible-ASCII values only), in arrival order.
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: Instant,
}

impl CwAttempt {
    /// The first value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors on the wire

/// The error answers the endpoint gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    InvalidParameterValue,
    InvalidParameterCombination,
    MissingParameter,
    Throttling,
    InternalServiceFault,
    RequestEntityTooLarge,
    Serialization,
    UnsupportedMediaType,
    UnknownOperation,
}

impl ErrorKind {
    fn status(self) -> StatusCode {
        match self {
            ErrorKind::InternalServiceFault => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `__type` of the CBOR error body.
    fn shape(self) -> &'static str {
        match self {
            ErrorKind::InvalidParameterValue => {
                "com.amazonaws.cloudwatch#InvalidParameterValueException"
            }
            ErrorKind::InvalidParameterCombination => {
                "com.amazonaws.cloudwatch#InvalidParameterCombinationException"
            }
            ErrorKind::MissingParameter => {
                "com.amazonaws.cloudwatch#MissingRequiredParameterException"
            }
            ErrorKind::Throttling => "com.amazon.coral.availability#ThrottlingException",
            ErrorKind::InternalServiceFault => "com.amazonaws.cloudwatch#InternalServiceFault",
            ErrorKind::RequestEntityTooLarge => {
                "com.amazon.coral.service#RequestEntityTooLargeException"
            }
            ErrorKind::Serialization => "com.amazon.coral.service#SerializationException",
            ErrorKind::UnsupportedMediaType => {
                "com.amazon.coral.service#UnsupportedMediaTypeException"
            }
            ErrorKind::UnknownOperation => "com.amazon.coral.service#UnknownOperationException",
        }
    }

    /// The `x-amzn-query-error` value (`Code;Sender|Receiver`), for CloudWatch's query codes.
    fn query_error(self) -> Option<&'static str> {
        match self {
            ErrorKind::InvalidParameterValue => Some("InvalidParameterValue;Sender"),
            ErrorKind::InvalidParameterCombination => Some("InvalidParameterCombination;Sender"),
            ErrorKind::MissingParameter => Some("MissingParameter;Sender"),
            ErrorKind::Throttling => Some("Throttling;Sender"),
            ErrorKind::InternalServiceFault => Some("InternalServiceError;Receiver"),
            ErrorKind::RequestEntityTooLarge => Some("RequestEntityTooLarge;Sender"),
            ErrorKind::Serialization
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::UnknownOperation => None,
        }
    }

    /// The code the SDK reports: the query code if any, else `__type` without its namespace.
    fn code(self) -> &'static str {
        match self.query_error() {
            Some(q) => q.split(';').next().unwrap_or(q),
            None => self.shape().rsplit('#').next().unwrap_or(self.shape()),
        }
    }

    /// The member holding the message (`InternalServiceFault` models it as `Message`).
    fn message_member(self) -> &'static str {
        match self {
            ErrorKind::InternalServiceFault => "Message",
            _ => "message",
        }
    }
}

/// A rejected request: the error to answer.
#[derive(Debug, Clone)]
struct Rejection {
    kind: ErrorKind,
    message: String,
}

impl Rejection {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            message: message.into(),
        }
    }
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorKind::InvalidParameterValue, message)
}

fn missing(path: &str) -> Rejection {
    Rejection::new(
        ErrorKind::MissingParameter,
        format!("The parameter {path} is required."),
    )
}

fn serialization(message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorKind::Serialization, message)
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct State {
    script: Script<CwFault>,
    attempts: Vec<CwAttempt>,
    requests: Vec<PutRequest>,
}

type Shared = crate::scripted::Shared<State>;

/// A CloudWatch-compatible `PutMetricData` endpoint on a free loopback port; stopped on drop.
///
/// Validation (violations are answered with CloudWatch's codes and nothing of the request is
/// kept): per request, `Namespace` present (`MissingParameter`), 1–255 ASCII characters, not
/// starting with `AWS/`; 1–1000 datums (none: `MissingParameter`, more: `InvalidParameterValue`);
/// uncompressed payload at most 1 MB (413 `RequestEntityTooLarge`). Per datum: `MetricName`
/// present (`MissingParameter`), 1–255 ASCII; at most 30 dimensions, `Name` 1–255 ASCII not
/// starting with `:`, `Value` 1–1024 ASCII, both with a non-whitespace character, names unique;
/// exactly one of `Value` / `StatisticValues` / `Values` (an empty `Values` counts as absent;
/// `InvalidParameterCombination`); numbers finite and within ±2^360; `StatisticValues` with all
/// four members (`MissingParameter`), `SampleCount` > 0, `Minimum` ≤ `Maximum`; at most 150
/// unique `Values`; `Counts` as long as `Values`, each ≥ 0; `Unit` one of [`STANDARD_UNITS`];
/// `StorageResolution` 1 or 60; `Timestamp` at most two weeks old and two hours ahead. All of
/// these answer `InvalidParameterValue` unless noted.
#[derive(custom_debug::Debug)]
pub struct CloudWatchEndpoint {
    #[debug(skip)]
    server: ScriptedServer<State>,
    addr: SocketAddr,
}

impl CloudWatchEndpoint {
    /// Starts on a free 127.0.0.1 port on its own thread and tokio runtime; returns once the
    /// port accepts connections; panics with a clear message if it cannot.
    pub fn start() -> CloudWatchEndpoint {
        const PEER: &str = "CloudWatch endpoint";
        let (listener, addr) = bind_loopback(PEER, "HTTP");
        let state = State {
            script: Script::new(CwFault::Ok),
            attempts: Vec::new(),
            requests: Vec::new(),
        };
        let server = ScriptedServer::start(PEER, "cloudwatch-endpoint", state, move |shared| {
            serve(shared, listener)
        });
        expect_accepting(PEER, "HTTP", addr);
        CloudWatchEndpoint { server, addr }
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// sonde's CloudWatch exporter of `registry` to this endpoint: example credentials, region
    /// us-east-1, and no collections but those asked for (an hourly interval, no jitter before
    /// the first flush). The caller adds the resource and the rest, then installs it.
    pub fn exporter(
        &self,
        namespace: &str,
        registry: &sonde::Registry,
    ) -> sonde::cloudwatch::CloudWatchBuilder {
        sonde::cloudwatch::CloudWatchBuilder::new(namespace)
            .registry(registry.clone())
            .endpoint_url(self.url())
            .region("us-east-1")
            .credentials("AKIDEXAMPLE", "secret")
            .interval(Duration::from_secs(3600))
            .jitter_first_flush(false)
    }

    /// Answers for the next `PutMetricData` requests, in order, after those already queued;
    /// once the script is used up, the default applies.
    pub fn script(&self, faults: impl IntoIterator<Item = CwFault>) {
        self.server.lock().script.extend(faults);
    }

    /// The answer when the script is empty (initially [`CwFault::Ok`]).
    pub fn set_default(&self, fault: CwFault) {
        self.server.lock().script.set_default(fault);
    }

    /// Every call so far, with its answer, in arrival order.
    pub fn attempts(&self) -> Vec<CwAttempt> {
        self.server.lock().attempts.clone()
    }

    /// Accepted calls, in order.
    pub fn requests(&self) -> Vec<PutRequest> {
        self.server.lock().requests.clone()
    }

    /// All accepted datums with their namespace, in order.
    pub fn datums(&self) -> Vec<(String, Datum)> {
        self.server
            .lock()
            .requests
            .iter()
            .flat_map(|r| r.datums.iter().map(|d| (r.namespace.clone(), d.clone())))
            .collect()
    }

    /// Polls every 20 ms (at least once) until `pred(&self.requests())` holds or `timeout`
    /// passes; returns whether it became true.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[PutRequest]) -> bool) -> bool {
        poll_until(timeout, || pred(&self.server.lock().requests))
    }

    /// Forgets recorded attempts and requests (not the script or the default).
    pub fn clear(&self) {
        let mut state = self.server.lock();
        state.attempts.clear();
        state.requests.clear();
    }
}

/// Environment for an agent exporting to a [`CloudWatchEndpoint`]: example static credentials
/// (the endpoint checks requests, not signatures) and no instance-metadata lookup.
pub const TEST_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "secret"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A CloudWatch SDK client pointed at `url` (plain `http://`) with dummy static credentials,
/// region us-east-1 and no SDK retries, for tests. Its HTTP client comes from
/// `aws-smithy-http-client` without TLS (no aws-lc).
pub fn sdk_client(url: &str) -> aws_sdk_cloudwatch::Client {
    use aws_sdk_cloudwatch::config::retry::RetryConfig;
    use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
    let http_client = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDSONDETEST",
            "sonde-test-secret",
            None,
            None,
            "sonde-tests",
        ))
        .endpoint_url(url)
        .retry_config(RetryConfig::disabled())
        .http_client(http_client)
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

// ---------------------------------------------------------------------------------------------
// Server

/// Spawns the accept loop on the current runtime.
fn serve(shared: Arc<Shared>, listener: StdTcpListener) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
    crate::serve::serve_http(listener, move |req| {
        let shared = Arc::clone(&shared);
        async move { handle(&shared, req).await }
    });
    Ok(())
}

type HttpResponse = Response<Full<Bytes>>;

/// What to answer.
enum Answer {
    Accepted,
    Error(Rejection),
    Unavailable,
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> HttpResponse {
    let at = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let headers = header_pairs(req.headers());
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // The connection broke mid-body: nothing to record.
            return error_response(&Rejection::new(
                ErrorKind::Serialization,
                format!("reading the body: {e}"),
            ));
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let operation = path.strip_prefix(SERVICE_PATH).unwrap_or(&path).to_owned();
    let mut attempt = CwAttempt {
        operation: operation.clone(),
        status: 0,
        error_code: None,
        message: None,
        datums: 0,
        body_bytes: body.len(),
        headers: headers.clone(),
        at,
    };

    // Routing, as a Smithy RPC v2 server does it; failures do not take the script.
    let route_error =
        if !path.starts_with(SERVICE_PATH) || operation.is_empty() || operation.contains('/') {
            Some(format!("No operation is served at {path}"))
        } else if method != Method::POST {
            Some(format!("{method} is not supported; operations are POSTed"))
        } else if header("smithy-protocol").as_deref() != Some(RPC_V2_CBOR) {
            Some("The request has no smithy-protocol: rpc-v2-cbor header".to_owned())
        } else if operation != "PutMetricData" {
            Some(format!(
                "The CloudWatch test endpoint does not implement {operation}"
            ))
        } else {
            None
        };
    if let Some(message) = route_error {
        let rejection = Rejection::new(ErrorKind::UnknownOperation, message);
        record(shared, attempt, &rejection);
        return error_response(&rejection);
    }

    let content_encoding = header("content-encoding").map(|v| v.to_ascii_lowercase());
    let gzip = content_encoding.as_deref() == Some("gzip");
    let payload = unpack(
        header("content-type").as_deref(),
        content_encoding.as_deref(),
        &body,
    );
    let decoded = payload
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|raw| decode_put(raw));
    attempt.datums = decoded.as_ref().map_or(0, |d| d.datums.len());

    let mut guard = shared.lock();
    let state = &mut *guard;
    let fault = state.script.next();
    let answer = match fault {
        CwFault::Throttling => {
            Answer::Error(Rejection::new(ErrorKind::Throttling, "Rate exceeded"))
        }
        CwFault::InternalServiceFault => Answer::Error(Rejection::new(
            ErrorKind::InternalServiceFault,
            "Internal service fault (scripted by the CloudWatch test endpoint)",
        )),
        CwFault::Unavailable => Answer::Unavailable,
        CwFault::Ok => {
            let accepted = decoded.and_then(|d| validate(d, now_epoch_seconds()));
            match (accepted, payload) {
                (Ok((namespace, datums)), Ok(raw)) => {
                    state.requests.push(PutRequest {
                        namespace,
                        datums,
                        body_bytes: body.len(),
                        uncompressed_bytes: raw.len(),
                        gzip,
                        at,
                    });
                    Answer::Accepted
                }
                (Err(rejection), _) | (_, Err(rejection)) => Answer::Error(rejection),
            }
        }
    };
    match answer {
        Answer::Accepted => {
            attempt.status = 200;
            state.attempts.push(attempt);
            success_response()
        }
        Answer::Unavailable => {
            attempt.status = 503;
            state.attempts.push(attempt);
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        }
        Answer::Error(rejection) => {
            attempt.status = rejection.kind.status().as_u16();
            attempt.error_code = Some(rejection.kind.code().to_owned());
            attempt.message = Some(rejection.message.clone());
            state.attempts.push(attempt);
            error_response(&rejection)
        }
    }
}

/// Records an attempt answered `rejection`.
fn record(shared: &Shared, mut attempt: CwAttempt, rejection: &Rejection) {
    attempt.status = rejection.kind.status().as_u16();
    attempt.error_code = Some(rejection.kind.code().to_owned());
    attempt.message = Some(rejection.message.clone());
    shared.lock().attempts.push(attempt);
}

/// The CBOR payload of a body: checks the media type, inflates gzip, enforces the 1 MB limit.
fn unpack(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Rejection> {
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase());
    if media_type.as_deref() != Some(CBOR) {
        return Err(Rejection::new(
            ErrorKind::UnsupportedMediaType,
            format!("Content-Type {content_type:?} is not {CBOR}"),
        ));
    }
    let raw = match content_encoding {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_INFLATE)
                .read_to_end(&mut raw)
                .map_err(|e| serialization(format!("Cannot gunzip the request body: {e}")))?;
            raw
        }
        Some(other) => {
            return Err(Rejection::new(
                ErrorKind::UnsupportedMediaType,
                format!("Content-Encoding {other} is not supported"),
            ));
        }
    };
    if raw.len() > MAX_PAYLOAD_BYTES {
        return Err(Rejection::new(
            ErrorKind::RequestEntityTooLarge,
            format!(
                "Request size {} exceeded {MAX_PAYLOAD_BYTES} bytes",
                raw.len()
            ),
        ));
    }
    Ok(raw)
}

fn now_epoch_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn success_response() -> HttpResponse {
    // An empty CBOR map: the (memberless) PutMetricData output.
    let mut response = Response::new(Full::new(Bytes::from_static(&[0xa0])));
    add_protocol_headers(response.headers_mut());
    response
}

fn error_response(rejection: &Rejection) -> HttpResponse {
    let kind = rejection.kind;
    let map = Value::Map(vec![
        (
            Value::Text("__type".to_owned()),
            Value::Text(kind.shape().to_owned()),
        ),
        (
            Value::Text(kind.message_member().to_owned()),
            Value::Text(rejection.message.clone()),
        ),
    ]);
    let mut body = Vec::new();
    if ciborium::ser::into_writer(&map, &mut body).is_err() {
        body.clear();
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = kind.status();
    let headers = response.headers_mut();
    add_protocol_headers(headers);
    if let Some(query_error) = kind.query_error() {
        headers.insert("x-amzn-query-error", HeaderValue::from_static(query_error));
    }
    response
}

fn add_protocol_headers(headers: &mut HeaderMap) {
    static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CBOR));
    headers.insert("smithy-protocol", HeaderValue::from_static(RPC_V2_CBOR));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{:08x}-50de-4c1d-8000-{id:012x}",
        std::process::id()
    )) {
        headers.insert("x-amzn-requestid", value);
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding (types only; CloudWatch's rules are checked by `validate`)

/// A decoded `PutMetricData` input.
struct DecodedPut {
    namespace: Option<String>,
    /// Whether `MetricData` or `EntityMetricData` was present at all.
    any_data: bool,
    /// (parameter path, datum), `MetricData` first, then `EntityMetricData`.
    datums: Vec<(String, RawDatum)>,
}

#[derive(Default)]
struct RawDatum {
    metric_name: Option<String>,
    dimensions: Vec<(Option<String>, Option<String>)>,
    timestamp: Option<f64>,
    value: Option<f64>,
    statistic_values: Option<RawStatistics>,
    values: Option<Vec<f64>>,
    counts: Option<Vec<f64>>,
    unit: Option<String>,
    storage_resolution: Option<i64>,
}

#[derive(Default)]
struct RawStatistics {
    sample_count: Option<f64>,
    sum: Option<f64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
}

fn decode_put(raw: &[u8]) -> Result<DecodedPut, Rejection> {
    let mut rest = raw;
    let value: Value = ciborium::de::from_reader(&mut rest)
        .map_err(|e| serialization(format!("The request body is not valid CBOR: {e}")))?;
    if !rest.is_empty() {
        return Err(serialization(format!(
            "The request body has {} bytes after its CBOR item",
            rest.len()
        )));
    }
    let mut put = DecodedPut {
        namespace: None,
        any_data: false,
        datums: Vec::new(),
    };
    for (key, value) in members(&value, "the input")? {
        match key {
            "Namespace" => put.namespace = text(value, "Namespace")?,
            "MetricData" => {
                if let Some(items) = list(value, "MetricData")? {
                    put.any_data = true;
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("MetricData.member.{}", i + 1);
                        let datum = decode_datum(item, &path)?;
                        put.datums.push((path, datum));
                    }
                }
            }
            "EntityMetricData" => {
                if let Some(entries) = list(value, "EntityMetricData")? {
                    put.any_data = true;
                    for (e, entry) in entries.iter().enumerate() {
                        let entry_path = format!("EntityMetricData.member.{}", e + 1);
                        for (key, value) in members(entry, &entry_path)? {
                            match key {
                                "Entity" if !matches!(value, Value::Null) => {
                                    members(value, &format!("{entry_path}.Entity"))?;
                                }
                                "MetricData" => {
                                    let list_path = format!("{entry_path}.MetricData");
                                    for (i, item) in
                                        list(value, &list_path)?.unwrap_or(&[]).iter().enumerate()
                                    {
                                        let path = format!("{list_path}.member.{}", i + 1);
                                        let datum = decode_datum(item, &path)?;
                                        put.datums.push((path, datum));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            "StrictEntityValidation" if !matches!(value, Value::Bool(_) | Value::Null) => {
                return Err(type_error("a boolean", "StrictEntityValidation", value));
            }
            // Unknown members are ignored, as Smithy servers do.
            _ => {}
        }
    }
    Ok(put)
}

fn decode_datum(value: &Value, path: &str) -> Result<RawDatum, Rejection> {
    let mut datum = RawDatum::default();
    for (key, value) in members(value, path)? {
        let member = format!("{path}.{key}");
        match key {
            "MetricName" => datum.metric_name = text(value, &member)?,
            "Dimensions" => {
                for (i, dimension) in list(value, &member)?.unwrap_or(&[]).iter().enumerate() {
                    let dimension_path = format!("{member}.member.{}", i + 1);
                    let mut pair = (None, None);
                    for (key, value) in members(dimension, &dimension_path)? {
                        match key {
                            "Name" => pair.0 = text(value, &format!("{dimension_path}.Name"))?,
                            "Value" => pair.1 = text(value, &format!("{dimension_path}.Value"))?,
                            _ => {}
                        }
                    }
                    datum.dimensions.push(pair);
                }
            }
            "Timestamp" => datum.timestamp = timestamp(value, &member)?,
            "Value" => datum.value = number(value, &member)?,
            "StatisticValues" => {
                if matches!(value, Value::Null) {
                    continue;
                }
                let mut stats = RawStatistics::default();
                for (key, value) in members(value, &member)? {
                    let field = format!("{member}.{key}");
                    match key {
                        "SampleCount" => stats.sample_count = number(value, &field)?,
                        "Sum" => stats.sum = number(value, &field)?,
                        "Minimum" => stats.minimum = number(value, &field)?,
                        "Maximum" => stats.maximum = number(value, &field)?,
                        _ => {}
                    }
                }
                datum.statistic_values = Some(stats);
            }
            "Values" => datum.values = numbers(value, &member)?,
            "Counts" => datum.counts = numbers(value, &member)?,
            "Unit" => datum.unit = text(value, &member)?,
            "StorageResolution" => {
                datum.storage_resolution = match value {
                    Value::Null => None,
                    Value::Integer(i) => Some(
                        i64::try_from(*i)
                            .map_err(|_| serialization(format!("{member} is out of range")))?,
                    ),
                    other => return Err(type_error("an integer", &member, other)),
                }
            }
            _ => {}
        }
    }
    Ok(datum)
}

/// The members of a CBOR map with text keys.
fn members<'a>(value: &'a Value, path: &str) -> Result<Vec<(&'a str, &'a Value)>, Rejection> {
    match value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| match k {
                Value::Text(k) => Ok((k.as_str(), v)),
                other => Err(type_error("text keys", path, other)),
            })
            .collect(),
        other => Err(type_error("a map", path, other)),
    }
}

fn list<'a>(value: &'a Value, path: &str) -> Result<Option<&'a [Value]>, Rejection> {
    match value {
        Value::Null => Ok(None),
        Value::Array(items) => Ok(Some(items)),
        other => Err(type_error("an array", path, other)),
    }
}

fn text(value: &Value, path: &str) -> Result<Option<String>, Rejection> {
    match value {
        Value::Null => Ok(None),
        Value::Text(s) => Ok(Some(s.clone())),
        other => Err(type_error("a text string", path, other)),
    }
}

fn number(value: &Value, path: &str) -> Result<Option<f64>, Rejection> {
    match value {
        Value::Null => Ok(None),
        Value::Float(f) => Ok(Some(*f)),
        Value::Integer(i) => Ok(Some(i128::from(*i) as f64)),
        other => Err(type_error("a number", path, other)),
    }
}

fn numbers(value: &Value, path: &str) -> Result<Option<Vec<f64>>, Rejection> {
    let Some(items) = list(value, path)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            number(item, &format!("{path}.member.{}", i + 1))?
                .ok_or_else(|| serialization(format!("{path}.member.{} is null", i + 1)))
        })
        .collect::<Result<Vec<f64>, Rejection>>()
        .map(Some)
}

fn timestamp(value: &Value, path: &str) -> Result<Option<f64>, Rejection> {
    match value {
        Value::Null => Ok(None),
        Value::Tag(1, inner) => match number(inner, path)? {
            Some(seconds) => Ok(Some(seconds)),
            None => Err(type_error("an epoch-seconds number in tag 1", path, inner)),
        },
        other => Err(type_error("a timestamp (CBOR tag 1)", path, other)),
    }
}

fn type_error(expected: &str, path: &str, got: &Value) -> Rejection {
    let got = match got {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "a text string",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unknown item",
    };
    serialization(format!("Expected {expected} for {path}, got {got}"))
}

// ---------------------------------------------------------------------------------------------
// Validation: CloudWatch's rules

fn validate(put: DecodedPut, now: f64) -> Result<(String, Vec<Datum>), Rejection> {
    let namespace = put.namespace.ok_or_else(|| missing("Namespace"))?;
    check_name(&namespace, "Namespace", MAX_NAME)?;
    if namespace.starts_with("AWS/") {
        return Err(invalid(format!(
            "The value {namespace} for parameter Namespace is invalid. Namespaces starting \
             with AWS/ are reserved for use by Amazon Web Services."
        )));
    }
    if !put.any_data || put.datums.is_empty() {
        return Err(missing("MetricData"));
    }
    if put.datums.len() > MAX_DATUMS {
        return Err(invalid(format!(
            "The collection MetricData must not have a size greater than {MAX_DATUMS}."
        )));
    }
    let datums = put
        .datums
        .into_iter()
        .map(|(path, datum)| validate_datum(datum, &path, now))
        .collect::<Result<Vec<Datum>, Rejection>>()?;
    Ok((namespace, datums))
}

fn validate_datum(datum: RawDatum, path: &str, now: f64) -> Result<Datum, Rejection> {
    let name_path = format!("{path}.MetricName");
    let metric_name = datum.metric_name.ok_or_else(|| missing(&name_path))?;
    check_name(&metric_name, &name_path, MAX_NAME)?;

    let dimensions_path = format!("{path}.Dimensions");
    if datum.dimensions.len() > MAX_DIMENSIONS {
        return Err(invalid(format!(
            "The collection {dimensions_path} must not have a size greater than {MAX_DIMENSIONS}."
        )));
    }
    let mut dimensions: Vec<(String, String)> = Vec::with_capacity(datum.dimensions.len());
    for (i, (name, value)) in datum.dimensions.into_iter().enumerate() {
        let member = format!("{dimensions_path}.member.{}", i + 1);
        let name_path = format!("{member}.Name");
        let value_path = format!("{member}.Value");
        let name = name.ok_or_else(|| missing(&name_path))?;
        let value = value.ok_or_else(|| missing(&value_path))?;
        check_name(&name, &name_path, MAX_NAME)?;
        check_dimension_text(&name, &name_path)?;
        if name.starts_with(':') {
            return Err(invalid(format!(
                "The parameter {name_path} must not start with a colon (:)."
            )));
        }
        check_name(&value, &value_path, MAX_DIMENSION_VALUE)?;
        check_dimension_text(&value, &value_path)?;
        if dimensions.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!(
                "The collection {dimensions_path} must not contain duplicate dimension names: \
                 {name} appears more than once."
            )));
        }
        dimensions.push((name, value));
    }

    // Exactly one of Value / StatisticValues / Values (an empty Values list is absent, as on
    // the query protocol, which cannot express it).
    let values = datum.values.unwrap_or_default();
    let present: Vec<String> = [
        datum.value.is_some().then_some("Value"),
        datum
            .statistic_values
            .is_some()
            .then_some("StatisticValues"),
        (!values.is_empty()).then_some("Values"),
    ]
    .into_iter()
    .flatten()
    .map(|member| format!("{path}.{member}"))
    .collect();
    match present.len() {
        0 => {
            return Err(Rejection::new(
                ErrorKind::InvalidParameterCombination,
                format!(
                    "One of the parameters {path}.Value, {path}.StatisticValues or \
                     {path}.Values must be specified."
                ),
            ));
        }
        1 => {}
        _ => {
            return Err(Rejection::new(
                ErrorKind::InvalidParameterCombination,
                format!(
                    "The parameters {} are mutually exclusive and you have specified {}.",
                    present.join(" and "),
                    if present.len() == 2 {
                        "both"
                    } else {
                        "all three"
                    }
                ),
            ));
        }
    }
    if let Some(value) = datum.value {
        check_number(value, &format!("{path}.Value"))?;
    }

    let statistic_values = match datum.statistic_values {
        None => None,
        Some(raw) => {
            let field = |v: Option<f64>, name: &str| -> Result<f64, Rejection> {
                let member = format!("{path}.StatisticValues.{name}");
                let v = v.ok_or_else(|| missing(&member))?;
                check_number(v, &member)?;
                Ok(v)
            };
            let stats = StatisticSet {
                sample_count: field(raw.sample_count, "SampleCount")?,
                sum: field(raw.sum, "Sum")?,
                minimum: field(raw.minimum, "Minimum")?,
                maximum: field(raw.maximum, "Maximum")?,
            };
            if stats.sample_count <= 0.0 {
                return Err(invalid(format!(
                    "The value {} for parameter {path}.StatisticValues.SampleCount is invalid. \
                     It must be greater than 0.",
                    show(stats.sample_count)
                )));
            }
            if stats.minimum > stats.maximum {
                return Err(invalid(format!(
                    "The parameters {path}.StatisticValues.Minimum ({}) and \
                     {path}.StatisticValues.Maximum ({}) are inconsistent: Minimum must not be \
                     greater than Maximum.",
                    show(stats.minimum),
                    show(stats.maximum)
                )));
            }
            Some(stats)
        }
    };

    let values_path = format!("{path}.Values");
    if values.len() > MAX_VALUES {
        return Err(invalid(format!(
            "The collection {values_path} must not have a size greater than {MAX_VALUES}."
        )));
    }
    for (i, &v) in values.iter().enumerate() {
        check_number(v, &format!("{values_path}.member.{}", i + 1))?;
        if values[..i].contains(&v) {
            return Err(invalid(format!(
                "The values in {values_path} must be unique: {} appears more than once.",
                show(v)
            )));
        }
    }
    let counts = datum.counts.unwrap_or_default();
    let counts_path = format!("{path}.Counts");
    if !counts.is_empty() {
        if counts.len() != values.len() {
            return Err(invalid(format!(
                "The parameters {values_path} and {counts_path} must be of the same size \
                 ({} values, {} counts).",
                values.len(),
                counts.len()
            )));
        }
        for (i, &c) in counts.iter().enumerate() {
            let member = format!("{counts_path}.member.{}", i + 1);
            check_number(c, &member)?;
            if c < 0.0 {
                return Err(invalid(format!(
                    "The value {} for parameter {member} is invalid. Counts must not be \
                     negative.",
                    show(c)
                )));
            }
        }
    }

    if let Some(unit) = &datum.unit
        && !STANDARD_UNITS.contains(&unit.as_str())
    {
        return Err(invalid(format!(
            "The value {unit} for parameter {path}.Unit is invalid."
        )));
    }
    if let Some(resolution) = datum.storage_resolution
        && resolution != 1
        && resolution != 60
    {
        return Err(invalid(format!(
            "The value {resolution} for parameter {path}.StorageResolution is invalid. Valid \
             values are 1 and 60."
        )));
    }
    if let Some(ts) = datum.timestamp {
        let ts_path = format!("{path}.Timestamp");
        if !ts.is_finite() {
            return Err(invalid(format!(
                "The value {} for parameter {ts_path} is invalid.",
                show(ts)
            )));
        }
        if ts < now - MAX_PAST_SECONDS {
            return Err(invalid(format!(
                "The parameter {ts_path} must specify a time no more than two weeks in the past."
            )));
        }
        if ts > now + MAX_FUTURE_SECONDS {
            return Err(invalid(format!(
                "The parameter {ts_path} must specify a time no more than two hours in the \
                 future."
            )));
        }
    }

    Ok(Datum {
        metric_name,
        dimensions,
        timestamp: datum.timestamp,
        value: datum.value,
        statistic_values,
        values,
        counts,
        unit: datum.unit,
        storage_resolution: datum.storage_resolution,
    })
}

/// 1..=`max` ASCII characters.
fn check_name(s: &str, path: &str, max: usize) -> Result<(), Rejection> {
    if s.is_empty() {
        return Err(invalid(format!("The parameter {path} must not be empty.")));
    }
    if !s.is_ascii() {
        return Err(invalid(format!(
            "The parameter {path} must contain only ASCII characters."
        )));
    }
    if s.len() > max {
        return Err(invalid(format!(
            "The parameter {path} must be shorter than {} characters.",
            max + 1
        )));
    }
    Ok(())
}

fn check_dimension_text(s: &str, path: &str) -> Result<(), Rejection> {
    if s.trim().is_empty() {
        return Err(invalid(format!(
            "The parameter {path} must contain at least one non-whitespace character."
        )));
    }
    Ok(())
}

/// Finite and within ±2^360, CloudWatch's range.
fn check_number(v: f64, path: &str) -> Result<(), Rejection> {
    let limit = 2f64.powi(360);
    if !v.is_finite() || v.abs() > limit {
        return Err(invalid(format!(
            "The value {} for parameter {path} is invalid.",
            show(v)
        )));
    }
    Ok(())
}

/// A double as CloudWatch (Java's `Double.toString`) prints it: `NaN`, `Infinity`, `30.0`,
/// `0.25`, `1.0E300`.
fn show(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else if v == 0.0 || (1e-3..1e7).contains(&v.abs()) {
        let plain = v.to_string();
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let scientific = format!("{v:E}");
        match scientific.split_once('E') {
            Some((mantissa, exponent)) if !mantissa.contains('.') => {
                format!("{mantissa}.0E{exponent}")
            }
            _ => scientific,
        }
    }
}
