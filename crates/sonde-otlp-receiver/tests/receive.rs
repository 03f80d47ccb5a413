//! The receiver on 127.0.0.1 fed by sonde's own OTLP exporter (gRPC and HTTP, cumulative and
//! delta) and by raw requests: exact values, the mapping, and every refusal.

use crate::common;

use std::io::Write;
use std::time::Duration;

use common::http_receiver;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use sonde_core::{MemoryBudget, Registry, Resource, Snapshot, Temporality, Unit};
use sonde_otlp::{OtlpMetricsBuilder, OtlpTransport, Protocol};
use sonde_otlp_receiver::{OtlpReceiverBuilder, OtlpReceiverConfig};

fn number(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.point(name, labels)
        .and_then(|p| p.number())
        .map(|n| n.as_f64())
}

/// A service's registry and an exporter pushing it to `endpoint`.
fn service(
    endpoint: String,
    protocol: Protocol,
    temporality: Temporality,
) -> (Registry, sonde_otlp::OtlpMetricsExporter) {
    let resource = Resource::empty()
        .with("service.name", "checkout")
        .with("service.namespace", "shop")
        .with("service.instance.id", "pod-1");
    pushing(
        resource,
        OtlpTransport::new().endpoint(endpoint).protocol(protocol),
        temporality,
    )
}

/// A new registry and an exporter of it, as `resource`, that pushes only when flushed.
fn pushing(
    resource: Resource,
    transport: OtlpTransport,
    temporality: Temporality,
) -> (Registry, sonde_otlp::OtlpMetricsExporter) {
    let registry = Registry::new();
    let exporter = OtlpMetricsBuilder::new()
        .registry(registry.clone())
        .resource(resource)
        .transport(transport)
        .temporality(temporality)
        .interval(Duration::from_secs(3600))
        .install()
        .unwrap();
    (registry, exporter)
}

const ID: [(&str, &str); 2] = [("job", "shop/checkout"), ("instance", "pod-1")];

fn with_id<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = extra.to_vec();
    l.extend(ID);
    l
}

fn exact_values_arrive(protocol: Protocol, temporality: Temporality) {
    let agent = Registry::new();
    let receiver = OtlpReceiverBuilder::new()
        .grpc("127.0.0.1:0")
        .http("127.0.0.1:0")
        .registry(agent.clone())
        .start()
        .unwrap();
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", receiver.grpc_addr().unwrap()),
        _ => format!("http://{}", receiver.http_addr().unwrap()),
    };
    let (svc, exporter) = service(endpoint, protocol, temporality);
    let orders = svc
        .counter("shop.orders")
        .labels(["region"])
        .build()
        .unwrap();
    let queue = svc
        .gauge_f64("shop.queue")
        .build()
        .unwrap()
        .with::<&str>(&[]);
    let active = svc
        .up_down_counter("shop.active")
        .build()
        .unwrap()
        .with::<&str>(&[]);
    let latency = svc
        .histogram("shop.latency")
        .unit(Unit::Seconds)
        .buckets([0.1, 0.5])
        .labels(["route"])
        .build()
        .unwrap();
    orders.with(&["eu"]).add(5);
    queue.set(7.5);
    active.add(3);
    for v in [0.05, 0.2, 0.3, 2.0] {
        latency.with(&["/pay"]).observe(v);
    }
    exporter.flush(Duration::from_secs(10)).unwrap();
    orders.with(&["eu"]).add(2);
    active.add(-1);
    latency.with(&["/pay"]).observe(0.07);
    exporter.flush(Duration::from_secs(10)).unwrap();

    let s = agent.snapshot();
    assert_eq!(
        number(&s, "shop.orders", &with_id(&[("region", "eu")])),
        Some(7.0),
        "{s:#?}"
    );
    assert_eq!(number(&s, "shop.queue", &with_id(&[])), Some(7.5));
    assert_eq!(number(&s, "shop.active", &with_id(&[])), Some(2.0));
    let h = s
        .point("shop.latency", &with_id(&[("route", "/pay")]))
        .unwrap()
        .histogram()
        .unwrap();
    assert_eq!(h.count(), 5);
    assert!((h.sum() - 2.62).abs() < 1e-9, "{}", h.sum());
    assert_eq!(
        h.cumulative_buckets(),
        vec![(0.1, 2), (0.5, 4), (f64::INFINITY, 5)]
    );
    assert_eq!(
        s.family("shop.latency").unwrap().meta.unit(),
        &Unit::Seconds
    );
    let accepted = number(
        &s,
        "sonde.otlp_receiver.points",
        &[
            (
                "transport",
                if protocol == Protocol::Grpc {
                    "grpc"
                } else {
                    "http"
                },
            ),
            ("outcome", "accepted"),
            ("reason", ""),
        ],
    );
    assert!(accepted.unwrap() >= 8.0, "{accepted:?}");
}

#[test]
fn grpc_cumulative() {
    exact_values_arrive(Protocol::Grpc, Temporality::Cumulative);
}

#[test]
fn http_delta() {
    exact_values_arrive(Protocol::HttpProtobuf, Temporality::Delta);
}

fn post(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let headers: Vec<(&str, &str)> = [("Host", "x")]
        .into_iter()
        .chain(headers.iter().copied())
        .collect();
    let req = sonde_testkit::http_head("POST /v1/metrics HTTP/1.1", body.len(), &headers);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap_or_default();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// POSTs `request` in protobuf; the status of the answer.
fn post_request(addr: std::net::SocketAddr, request: &ExportMetricsServiceRequest) -> u16 {
    let proto = [("Content-Type", "application/x-protobuf")];
    post(addr, &proto, &request.encode_to_vec()).0
}

#[test]
fn bad_requests_are_refused_with_the_right_status_and_counted() {
    let agent = Registry::new();
    let receiver = OtlpReceiverBuilder::new()
        .http("127.0.0.1:0")
        .max_request_bytes(64 * 1024)
        .registry(agent.clone())
        .start()
        .unwrap();
    let addr = receiver.http_addr().unwrap();
    let proto = [("Content-Type", "application/x-protobuf")];
    assert_eq!(post(addr, &proto, b"\xff\xff\xff garbage").0, 400);
    assert_eq!(
        post(addr, &[("Content-Type", "application/json")], b"{}").0,
        415
    );
    assert_eq!(post(addr, &proto, &vec![0u8; 100 * 1024]).0, 413);
    // A gzip bomb: 10 MB of zeros in a few KiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 10 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 64 * 1024);
    let (status, _) = post(
        addr,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    assert_eq!(status, 413);
    assert_eq!(
        post(
            addr,
            &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "br")
            ],
            b"x"
        )
        .0,
        415
    );
    // An empty request is fine.
    let empty = ExportMetricsServiceRequest::default().encode_to_vec();
    assert_eq!(post(addr, &proto, &empty).0, 200);
    let s = agent.snapshot();
    for reason in ["malformed", "content_type", "too_large", "content_encoding"] {
        assert!(
            number(
                &s,
                "sonde.otlp_receiver.points",
                &[
                    ("transport", "http"),
                    ("outcome", "refused"),
                    ("reason", reason)
                ]
            )
            .is_some(),
            "{reason} not counted"
        );
    }
}

#[test]
fn a_full_budget_asks_senders_to_retry_and_a_token_is_checked() {
    // A budget so small that it is full once the receiver's own counter exists.
    let agent = Registry::with_budget(10, MemoryBudget::new(1, 1 << 20));
    let filler = agent.counter("filler").labels(["i"]).build().unwrap();
    for i in 0..10 {
        filler.with(&[i.to_string()]).add(1);
    }
    let receiver = http_receiver(&agent);
    let addr = receiver.http_addr().unwrap();
    let empty = ExportMetricsServiceRequest::default().encode_to_vec();
    let (status, text) = post(addr, &[("Content-Type", "application/x-protobuf")], &empty);
    assert_eq!(status, 429, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 5"),
        "{text}"
    );

    let open = Registry::new();
    let config = OtlpReceiverConfig {
        grpc: None,
        http: Some(([127, 0, 0, 1], 0).into()),
        bearer_token: Some("s3cret".into()),
        ..Default::default()
    };
    let builder = config.builder().registry(open);
    // The token stays out of logs.
    for shown in [format!("{config:?}"), format!("{builder:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains(r#"bearer_token: Some("<redacted>")"#),
            "{shown}"
        );
    }
    let guarded = builder.start().unwrap();
    let addr = guarded.http_addr().unwrap();
    let proto = ("Content-Type", "application/x-protobuf");
    assert_eq!(post(addr, &[proto], &empty).0, 401);
    assert_eq!(
        post(addr, &[proto, ("Authorization", "Bearer nope")], &empty).0,
        401
    );
    assert_eq!(
        post(addr, &[proto, ("Authorization", "Bearer s3cret")], &empty).0,
        200
    );
}

/// TLS on both transports: sonde's exporter trusting the receiver's CA delivers over gRPC and
/// HTTP; a plain-text client gets nothing in; files that do not load are a start error.
#[test]
fn tls_on_both_transports() {
    let dir = std::env::temp_dir().join(format!("sonde-otlp-rx-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let agent = Registry::new();
    let receiver = OtlpReceiverBuilder::new()
        .grpc("127.0.0.1:0")
        .http("127.0.0.1:0")
        .tls(&cert_pem, &key_pem)
        .registry(agent.clone())
        .start()
        .unwrap();
    for (protocol, addr) in [
        (Protocol::Grpc, receiver.grpc_addr().unwrap()),
        (Protocol::HttpProtobuf, receiver.http_addr().unwrap()),
    ] {
        let svc = Registry::new();
        let exporter = OtlpMetricsBuilder::new()
            .registry(svc.clone())
            .resource(Resource::empty().with("service.name", "tls"))
            .transport(
                OtlpTransport::new()
                    .endpoint(format!("https://localhost:{}", addr.port()))
                    .protocol(protocol)
                    .ca_certificate(&cert_pem),
            )
            .interval(Duration::from_secs(3600))
            .install()
            .unwrap();
        let name = format!(
            "tls.{}",
            if protocol == Protocol::Grpc {
                "grpc"
            } else {
                "http"
            }
        );
        svc.counter(name.clone())
            .build()
            .unwrap()
            .with::<&str>(&[])
            .add(3);
        exporter.flush(Duration::from_secs(10)).unwrap();
        let s = agent.snapshot();
        assert_eq!(
            number(&s, &name, &[("job", "tls"), ("instance", "")]),
            Some(3.0),
            "{name}"
        );
    }
    // Plain HTTP to the TLS port: no answer worth the name, nothing recorded.
    let empty = ExportMetricsServiceRequest::default().encode_to_vec();
    let (status, _) = post(
        receiver.http_addr().unwrap(),
        &[("Content-Type", "application/x-protobuf")],
        &empty,
    );
    assert_ne!(status, 200);
    // A key that is not PEM.
    std::fs::write(&key_pem, "not a key").unwrap();
    let err = OtlpReceiverBuilder::new()
        .http("127.0.0.1:0")
        .tls(&cert_pem, &key_pem)
        .registry(Registry::new())
        .start()
        .unwrap_err();
    assert!(matches!(err, sonde_otlp_receiver::Error::Tls(_)), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exponential histograms (cumulative, two requests) and summaries, as raw OTLP requests.
#[test]
fn exponential_histograms_and_summaries_are_recorded() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
        ResourceMetrics, ScopeMetrics, Summary, SummaryDataPoint, exponential_histogram_data_point,
        metric::Data, summary_data_point::ValueAtQuantile,
    };
    let route = KeyValue {
        key: "route".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("/pay".into())),
        }),
        ..KeyValue::default()
    };
    let rescaled =
        |zero: u64, counts: Vec<u64>, sum: f64, scale: i32| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "exp.latency".into(),
                            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                                data_points: vec![ExponentialHistogramDataPoint {
                                    attributes: vec![route.clone()],
                                    count: zero + counts.iter().sum::<u64>(),
                                    sum: Some(sum),
                                    scale,
                                    zero_count: zero,
                                    positive: Some(exponential_histogram_data_point::Buckets {
                                        offset: 0,
                                        bucket_counts: counts,
                                    }),
                                    ..ExponentialHistogramDataPoint::default()
                                }],
                            })),
                            ..Metric::default()
                        },
                        Metric {
                            name: "gc.pause".into(),
                            data: Some(Data::Summary(Summary {
                                data_points: vec![SummaryDataPoint {
                                    attributes: vec![route.clone()],
                                    quantile_values: vec![
                                        ValueAtQuantile {
                                            quantile: 0.5,
                                            value: 0.2,
                                        },
                                        ValueAtQuantile {
                                            quantile: 0.99,
                                            value: 0.9,
                                        },
                                    ],
                                    ..SummaryDataPoint::default()
                                }],
                            })),
                            ..Metric::default()
                        },
                    ],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        };
    let request = |zero: u64, counts: Vec<u64>, sum: f64| rescaled(zero, counts, sum, 0);
    let agent = Registry::new();
    let receiver = http_receiver(&agent);
    let addr = receiver.http_addr().unwrap();
    // Buckets of scale 0: (1, 2] and (2, 4]; then two more in (2, 4].
    assert_eq!(post_request(addr, &request(1, vec![1, 2], 7.5)), 200);
    assert_eq!(post_request(addr, &request(1, vec![1, 4], 13.5)), 200);
    let latency = |s: &Snapshot| {
        let labels = [("route", "/pay"), ("job", ""), ("instance", "")];
        s.point("exp.latency", &labels)
            .unwrap()
            .histogram()
            .unwrap()
            .clone()
    };
    let s = agent.snapshot();
    let h = latency(&s);
    assert_eq!(h.count(), 6);
    assert!((h.sum() - 13.5).abs() < 1e-9, "{}", h.sum());
    // The median lies in (2, 4], the smallest value in the zero bucket.
    let p50 = h.quantile(0.5).unwrap();
    assert!((2.0..=4.0).contains(&p50), "{p50}");
    let q = |quantile: &str| {
        number(
            &s,
            "gc.pause",
            &[
                ("route", "/pay"),
                ("quantile", quantile),
                ("job", ""),
                ("instance", ""),
            ],
        )
    };
    assert_eq!((q("0.5"), q("0.99")), (Some(0.2), Some(0.9)));
    // The sender lowers its scale (its range widened): at scale -1 the bucket (1, 4] holds the
    // five earlier observations and two new ones. Only the two are added, nothing twice.
    assert_eq!(post_request(addr, &rescaled(1, vec![7], 20.0, -1)), 200);
    let h = latency(&agent.snapshot());
    assert_eq!(h.count(), 8, "6 before, 2 new");
    assert!((h.sum() - 20.0).abs() < 1e-9, "{}", h.sum());
}

/// A sender's resource attributes become its `target_info` series; when they change (a new
/// `process.pid` after a restart under the same instance id), the series is replaced, so a
/// join on `job, instance` keeps finding exactly one.
#[test]
fn a_senders_target_info_follows_its_resource() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric::Data,
        number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    };
    let request = |pid: &str| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(OtlpResource {
                attributes: vec![
                    kv("service.name", "cart"),
                    kv("service.instance.id", "i-1"),
                    kv("service.version", "3.1"),
                    kv("process.pid", pid),
                    kv("not.kept", "x"),
                ],
                ..OtlpResource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "cart.items".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsDouble(2.0)),
                            ..NumberDataPoint::default()
                        }],
                    })),
                    ..Metric::default()
                }],
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    };
    let agent = Registry::new();
    let receiver = http_receiver(&agent);
    let addr = receiver.http_addr().unwrap();
    let infos = || {
        let s = agent.snapshot();
        let f = s.family("target_info").unwrap().clone();
        f.series
            .iter()
            .map(|x| {
                f.labels(x)
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        assert_eq!(post_request(addr, &request("100")), 200);
    }
    assert_eq!(
        infos(),
        ["job=cart,instance=i-1,service.version=3.1,process.pid=100"]
    );
    assert_eq!(post_request(addr, &request("200")), 200);
    assert_eq!(
        infos(),
        ["job=cart,instance=i-1,service.version=3.1,process.pid=200"],
        "replaced, not added"
    );
}

/// One instance of the `checkout` service pushing to `endpoint` on demand: its counter, gauge,
/// up-down counter and histogram already hold values.
fn checkout_instance(endpoint: &str, id: &str) -> sonde_otlp::OtlpMetricsExporter {
    let resource = Resource::empty()
        .with("service.name", "checkout")
        .with("service.instance.id", id)
        .with("service.version", "1.0");
    let transport = OtlpTransport::new().endpoint(endpoint.to_owned());
    let (registry, exporter) = pushing(resource, transport, Temporality::Cumulative);
    registry
        .counter("co.orders")
        .build()
        .unwrap()
        .with::<&str>(&[])
        .add(5);
    registry
        .gauge("co.queue")
        .build()
        .unwrap()
        .with::<&str>(&[])
        .set(3);
    registry
        .up_down_counter("co.active")
        .build()
        .unwrap()
        .with::<&str>(&[])
        .add(2);
    registry
        .histogram("co.latency")
        .build()
        .unwrap()
        .with::<&str>(&[])
        .observe(0.1);
    exporter
}

const CHECKOUT: [&str; 4] = ["co.orders", "co.queue", "co.active", "co.latency"];

/// The checkout families in which `instance` has a series, `target_info` included.
fn checkout_series_of(s: &Snapshot, instance: &str) -> Vec<String> {
    CHECKOUT
        .iter()
        .chain(&["target_info"])
        .filter(|name| {
            s.family(name).is_some_and(|f| {
                f.series.iter().any(|x| {
                    f.labels(x)
                        .iter()
                        .any(|(k, v)| *k == "instance" && *v == instance)
                })
            })
        })
        .map(|name| (*name).to_owned())
        .collect()
}

#[test]
fn a_silent_senders_series_expire_and_names_without_series_are_unregistered() {
    let ttl = Duration::from_secs(3);
    let agent = Registry::new();
    let receiver = OtlpReceiverBuilder::new()
        .http("127.0.0.1:0")
        .registry(agent.clone())
        .series_ttl(Some(ttl))
        .start()
        .unwrap();
    let endpoint = format!("http://{}", receiver.http_addr().unwrap());
    let flush = |e: &sonde_otlp::OtlpMetricsExporter| e.flush(Duration::from_secs(10)).unwrap();
    // Two instances push; then pod-a goes (a redeploy) and pod-b keeps pushing.
    let pod_a = checkout_instance(&endpoint, "pod-a");
    let pod_b = checkout_instance(&endpoint, "pod-b");
    flush(&pod_a);
    let a_last = std::time::Instant::now();
    flush(&pod_b);
    let all: Vec<String> = CHECKOUT
        .iter()
        .chain(&["target_info"])
        .map(|n| (*n).to_owned())
        .collect();
    assert_eq!(checkout_series_of(&agent.snapshot(), "pod-a"), all);
    let deadline = a_last + ttl * 5;
    loop {
        flush(&pod_b);
        let s = agent.snapshot();
        assert_eq!(checkout_series_of(&s, "pod-b"), all, "pod-b keeps sending");
        let left = checkout_series_of(&s, "pod-a");
        if a_last.elapsed() < ttl {
            assert_eq!(left, all, "pod-a's series went before the TTL");
        }
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pod-a's {left:?} never expired"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // pod-b goes too: with no series left, the names are unregistered.
    let deadline = std::time::Instant::now() + ttl * 5;
    while CHECKOUT
        .iter()
        .any(|n| agent.family_names().iter().any(|f| f == n))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            agent.family_names()
        );
        let _ = agent.snapshot(); // collections run the expiry
        std::thread::sleep(Duration::from_millis(100));
    }
    // pod-a is back: its counter starts over from its cumulative total.
    flush(&pod_a);
    let s = agent.snapshot();
    let id = [("job", "checkout"), ("instance", "pod-a")];
    assert_eq!(number(&s, "co.orders", &id), Some(5.0));
    assert_eq!(number(&s, "co.active", &id), Some(2.0));
}

#[test]
fn a_receiver_started_in_anothers_place_counts_nothing_twice() {
    // The agent's reload of [sources.otlp]: a new receiver on the same registry, whose
    // series stay; the senders' next cumulative points must not be added to them again.
    let agent = Registry::new();
    let builder = || {
        OtlpReceiverBuilder::new()
            .http("127.0.0.1:0")
            .registry(agent.clone())
    };
    let first = builder().start().unwrap();
    let pod = checkout_instance(&format!("http://{}", first.http_addr().unwrap()), "pod-a");
    pod.flush(Duration::from_secs(10)).unwrap();
    let id = [("job", "checkout"), ("instance", "pod-a")];
    assert_eq!(number(&agent.snapshot(), "co.orders", &id), Some(5.0));
    drop(pod);
    sonde_core::Component::shutdown(&first, Duration::from_secs(5)).unwrap();
    // Another TTL too: the state is taken over all the same.
    let second = builder()
        .series_ttl(Some(Duration::from_secs(30)))
        .continue_from(&first)
        .start()
        .unwrap();
    drop(first);
    let pod = checkout_instance(&format!("http://{}", second.http_addr().unwrap()), "pod-a");
    pod.flush(Duration::from_secs(10)).unwrap();
    let s = agent.snapshot();
    assert_eq!(number(&s, "co.orders", &id), Some(5.0));
    assert_eq!(number(&s, "co.active", &id), Some(2.0));
    let h = s.point("co.latency", &id).unwrap().histogram().unwrap();
    assert_eq!(h.count(), 1);
}
