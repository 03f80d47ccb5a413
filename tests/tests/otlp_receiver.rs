//! The OTLP test receiver itself, driven by opentelemetry-proto's generated tonic clients and a
//! plain HTTP client: what arrives is recorded and decoded, the script answers in order, and
//! the answers reach the clients as the OTLP spec has them.

use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sonde_tests::otlp::{
    ExportMetricsServiceRequest, ExportTraceServiceRequest, Fault, OtlpReceiver, Signal, Transport,
    attrs, find_metrics,
};
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic_types::StatusExt;

const PROTOBUF: &str = "application/x-protobuf";

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One request with a monotonic sum `name` holding one point `value` with two attributes.
fn metrics_request(name: &str, value: i64) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.to_owned(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![
                                kv("route", any_value::Value::StringValue("/a".to_owned())),
                                kv("code", any_value::Value::IntValue(200)),
                            ],
                            value: Some(number_data_point::Value::AsInt(value)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn trace_request(span_name: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: span_name.to_owned(),
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Exports one span named `span_name` over a new gRPC connection; the receiver's answer.
async fn export_span(receiver: &OtlpReceiver, span_name: &str) -> ExportTraceServiceResponse {
    let mut traces = TraceServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();
    traces
        .export(trace_request(span_name))
        .await
        .unwrap()
        .into_inner()
}

/// What a raw HTTP POST got back.
struct Reply {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let r = sonde_tests::http::post_with(url, headers, body);
    Reply {
        status: r.status,
        content_type: r.header("content-type").map(str::to_owned),
        retry_after: r.header("retry-after").map(str::to_owned),
        body: r.body,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn grpc_export_arrives_and_decodes() {
    let receiver = OtlpReceiver::start();
    let mut client = MetricsServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();
    let mut request = tonic::Request::new(metrics_request("requests_total", 7));
    request
        .metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    let response = client.export(request).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);

    // Compressed, on the same connection.
    let mut client = client.send_compressed(CompressionEncoding::Gzip);
    client
        .export(metrics_request("requests_total", 9))
        .await
        .unwrap();

    let response = export_span(&receiver, "GET /a").await;
    assert_eq!(response.partial_success, None);

    let metrics = receiver.metrics();
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[0], metrics_request("requests_total", 7));
    let found = find_metrics(&metrics, "requests_total");
    assert_eq!(found.len(), 2);
    let Some(metric::Data::Sum(sum)) = &found[1].data else {
        panic!("not a sum: {:?}", found[1]);
    };
    assert_eq!(
        sum.data_points[0].value,
        Some(number_data_point::Value::AsInt(9))
    );
    assert_eq!(
        attrs(&sum.data_points[0].attributes),
        vec![
            ("code".to_owned(), "200".to_owned()),
            ("route".to_owned(), "/a".to_owned())
        ]
    );
    assert!(find_metrics(&metrics, "other").is_empty());
    assert_eq!(receiver.traces(), vec![trace_request("GET /a")]);

    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a.transport == Transport::Grpc));
    assert!(attempts.iter().all(|a| a.fault == Fault::Ok));
    assert_eq!(
        attempts.iter().map(|a| a.signal).collect::<Vec<_>>(),
        [Signal::Metrics, Signal::Metrics, Signal::Traces]
    );
    assert_eq!(
        attempts.iter().map(|a| a.gzip).collect::<Vec<_>>(),
        [false, true, false]
    );
    assert_eq!(attempts[0].header("authorization"), Some("Bearer t0ken"));
    assert!(
        attempts[0]
            .header("content-type")
            .unwrap()
            .starts_with("application/grpc"),
        "{:?}",
        attempts[0].headers
    );
    assert_eq!(
        attempts[0].body_bytes,
        metrics_request("requests_total", 7).encoded_len()
    );
    assert!(attempts[0].at <= attempts[1].at && attempts[1].at <= attempts[2].at);

    receiver.clear();
    assert!(receiver.attempts().is_empty() && receiver.metrics().is_empty());
    assert!(receiver.traces().is_empty());
}

#[test]
fn http_gzip_and_plain_bodies_arrive() {
    let receiver = OtlpReceiver::start();
    let raw = metrics_request("http_total", 3).encode_to_vec();
    let compressed = gzip(&raw);
    let url = format!("{}/v1/metrics", receiver.http_endpoint());
    let reply = post(
        &url,
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        &compressed,
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type.as_deref(), Some(PROTOBUF));
    assert_eq!(
        ExportMetricsServiceResponse::decode(&reply.body[..]).unwrap(),
        ExportMetricsServiceResponse::default()
    );

    let reply = post(
        &format!("{}/v1/traces", receiver.http_endpoint()),
        &[("content-type", PROTOBUF)],
        &trace_request("span").encode_to_vec(),
    );
    assert_eq!(reply.status, 200);

    assert!(receiver.wait_for_metrics(Duration::from_secs(1), |m| m.len() == 1));
    assert_eq!(receiver.metrics(), vec![metrics_request("http_total", 3)]);
    assert!(receiver.wait_for_traces(Duration::from_secs(1), |t| t.len() == 1));
    assert!(!receiver.wait_for_traces(Duration::from_millis(50), |t| t.len() == 2));

    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].transport, Transport::Http);
    assert_eq!(attempts[0].signal, Signal::Metrics);
    assert!(attempts[0].gzip);
    assert_eq!(attempts[0].body_bytes, compressed.len());
    assert_eq!(attempts[0].header("content-encoding"), Some("gzip"));
    assert_eq!(attempts[1].signal, Signal::Traces);
    assert!(!attempts[1].gzip);
}

#[test]
fn http_rejects_what_is_not_otlp() {
    let receiver = OtlpReceiver::start();
    let base = receiver.http_endpoint();
    let body = metrics_request("x", 1).encode_to_vec();
    assert_eq!(
        post(
            &format!("{base}/v1/logs"),
            &[("content-type", PROTOBUF)],
            &body
        )
        .status,
        404
    );
    // Not recorded: not an OTLP metrics/traces request.
    assert!(receiver.attempts().is_empty());

    let reply = post(
        &format!("{base}/v1/metrics"),
        &[("content-type", PROTOBUF)],
        b"\xff\xff\xff not protobuf",
    );
    assert_eq!(reply.status, 400);
    let status = tonic_types::Status::decode(&reply.body[..]).unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(!status.message.is_empty());

    let reply = post(
        &format!("{base}/v1/metrics"),
        &[("content-type", "application/json")],
        b"{}",
    );
    assert_eq!(reply.status, 415);

    let faults: Vec<Fault> = receiver.attempts().into_iter().map(|a| a.fault).collect();
    assert_eq!(
        faults,
        [
            Fault::Invalid,
            Fault::Status {
                grpc: Code::InvalidArgument as i32,
                http: 415
            }
        ]
    );
    assert!(receiver.metrics().is_empty());
}

#[tokio::test]
async fn script_answers_in_order_then_default() {
    let receiver = OtlpReceiver::start();
    receiver.script([
        Fault::Unavailable {
            retry_after: Some(Duration::from_millis(1500)),
        },
        Fault::Throttled {
            retry_after: Some(Duration::from_millis(1500)),
        },
        Fault::Throttled {
            retry_after: Some(Duration::from_secs(3)),
        },
        Fault::Invalid,
        Fault::Status {
            grpc: Code::PermissionDenied as i32,
            http: 403,
        },
    ]);
    let mut client = MetricsServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();
    let http_url = format!("{}/v1/metrics", receiver.http_endpoint());
    let body = metrics_request("m", 1).encode_to_vec();
    let post_metrics = {
        let (url, body) = (http_url.clone(), body.clone());
        move || post(&url, &[("content-type", PROTOBUF)], &body)
    };

    // 1: gRPC UNAVAILABLE with RetryInfo.
    let status = client.export(metrics_request("m", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));

    // 2: HTTP 429, Retry-After rounded up to whole seconds.
    let reply = post_metrics();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.retry_after.as_deref(), Some("2"));
    let status = tonic_types::Status::decode(&reply.body[..]).unwrap();
    assert_eq!(status.code, Code::ResourceExhausted as i32);

    // 3: gRPC RESOURCE_EXHAUSTED with RetryInfo.
    let status = client.export(metrics_request("m", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(3))
    );

    // 4: HTTP 400 with a google.rpc.Status body.
    let reply = post_metrics();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.retry_after, None);
    let status = tonic_types::Status::decode(&reply.body[..]).unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(!status.message.is_empty());

    // 5: gRPC PERMISSION_DENIED, no RetryInfo.
    let status = client.export(metrics_request("m", 1)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.get_details_retry_info().is_none());

    // Script used up: the default (Ok), then an outage, then Ok again.
    client.export(metrics_request("m", 2)).await.unwrap();
    receiver.set_default(Fault::Unavailable { retry_after: None });
    let status = client.export(metrics_request("m", 3)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_none());
    let reply = post_metrics();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.retry_after, None);
    receiver.set_default(Fault::Ok);
    assert_eq!(post_metrics().status, 200);

    let attempts = receiver.attempts();
    assert_eq!(
        attempts.iter().map(|a| a.transport).collect::<Vec<_>>(),
        [
            Transport::Grpc,
            Transport::Http,
            Transport::Grpc,
            Transport::Http,
            Transport::Grpc,
            Transport::Grpc,
            Transport::Grpc,
            Transport::Http,
            Transport::Http,
        ]
    );
    assert_eq!(attempts[3].fault, Fault::Invalid);
    assert_eq!(attempts[8].fault, Fault::Ok);
    // Only the accepted ones are kept.
    assert_eq!(
        receiver.metrics(),
        vec![metrics_request("m", 2), metrics_request("m", 1)]
    );
}

#[tokio::test]
async fn partial_success_reaches_the_client() {
    let receiver = OtlpReceiver::start();
    let partial = |rejected: i64| Fault::PartialSuccess {
        rejected,
        message: format!("dropped {rejected}"),
    };
    receiver.script([partial(2), partial(3), partial(4)]);

    let mut client = MetricsServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();
    let response = client
        .export(metrics_request("m", 1))
        .await
        .unwrap()
        .into_inner();
    let ps = response.partial_success.unwrap();
    assert_eq!(
        (ps.rejected_data_points, ps.error_message.as_str()),
        (2, "dropped 2")
    );

    let response = export_span(&receiver, "s").await;
    let ps = response.partial_success.unwrap();
    assert_eq!(
        (ps.rejected_spans, ps.error_message.as_str()),
        (3, "dropped 3")
    );

    let reply = post(
        &format!("{}/v1/traces", receiver.http_endpoint()),
        &[("content-type", PROTOBUF)],
        &trace_request("h").encode_to_vec(),
    );
    assert_eq!(reply.status, 200);
    let ps = ExportTraceServiceResponse::decode(&reply.body[..])
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(
        (ps.rejected_spans, ps.error_message.as_str()),
        (4, "dropped 4")
    );

    // Partial successes are accepted.
    assert_eq!(receiver.metrics().len(), 1);
    assert_eq!(receiver.traces().len(), 2);
}

#[tokio::test]
async fn hang_answers_late_and_drop_is_quick() {
    let receiver = OtlpReceiver::start();
    receiver.script([Fault::Hang(Duration::from_millis(300))]);
    let mut client = MetricsServiceClient::connect(receiver.grpc_endpoint())
        .await
        .unwrap();
    let start = Instant::now();
    let status = client.export(metrics_request("m", 1)).await.unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(status.code(), Code::Unavailable);
    assert!(receiver.metrics().is_empty());
    let attempts = receiver.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].fault, Fault::Hang(Duration::from_millis(300)));

    // A client timeout cuts a long hang short; the attempt is recorded on arrival.
    receiver.set_default(Fault::Hang(Duration::from_secs(60)));
    let mut request = tonic::Request::new(metrics_request("m", 2));
    request.set_timeout(Duration::from_millis(200));
    let status = client.export(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert_eq!(receiver.attempts().len(), 2);

    // An HTTP request hanging in the receiver does not hold up its drop.
    let url = format!("{}/v1/metrics", receiver.http_endpoint());
    let hanging = std::thread::spawn(move || {
        sonde_tests::http::try_post_with(
            &url,
            &[("content-type", PROTOBUF)],
            &metrics_request("m", 3).encode_to_vec(),
            Duration::from_secs(30),
        )
        .map(|r| r.status)
    });
    assert!(receiver.wait_for_metrics(Duration::ZERO, |m| m.is_empty()));
    let arrived = Instant::now();
    while receiver.attempts().len() < 3 {
        assert!(
            arrived.elapsed() < Duration::from_secs(5),
            "HTTP request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    drop(receiver);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "drop took {:?}",
        start.elapsed()
    );
    // The hanging client sees its connection close rather than a 200.
    assert_ne!(hanging.join().unwrap().ok(), Some(200));
}
