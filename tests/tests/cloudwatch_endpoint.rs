#![allow(clippy::result_large_err)] // the SDK's own SdkError, returned as the SDK returns it
//! Self-test of the CloudWatch test endpoint (`sonde_tests::cloudwatch`) against the real
//! `aws-sdk-cloudwatch` client: what the SDK sends decodes to exactly what was sent, large bodies
//! arrive gzipped, every validation rule answers CloudWatch's error code (as the SDK reports it),
//! and scripted faults surface with the codes and statuses the exporter decides retries from.

use sonde_tests::http::Reply;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::operation::put_metric_data::{PutMetricDataError, PutMetricDataOutput};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, MetricDatum, StandardUnit, StatisticSet as SdkStatisticSet,
};
use ciborium::Value;
use sonde_tests::cloudwatch::{
    CloudWatchEndpoint, CwFault, Datum, SERVICE_PATH, StatisticSet, sdk_client,
};

type PutResult = Result<PutMetricDataOutput, SdkError<PutMetricDataError>>;

/// An endpoint, an SDK client pointed at it and a runtime to drive the client.
struct Harness {
    endpoint: CloudWatchEndpoint,
    client: aws_sdk_cloudwatch::Client,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    fn new() -> Harness {
        let endpoint = CloudWatchEndpoint::start();
        let client = sdk_client(&endpoint.url());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Harness {
            endpoint,
            client,
            runtime,
        }
    }

    /// PutMetricData with `namespace` (None: unset) and `datums`.
    fn put(&self, namespace: Option<&str>, datums: Vec<MetricDatum>) -> PutResult {
        let request = self
            .client
            .put_metric_data()
            .set_namespace(namespace.map(str::to_owned))
            .set_metric_data(Some(datums));
        self.runtime.block_on(request.send())
    }
}

/// What the SDK reports for a failed call.
struct Failure {
    code: Option<String>,
    message: Option<String>,
    status: Option<u16>,
    error: SdkError<PutMetricDataError>,
}

impl Failure {
    fn service(&self) -> &PutMetricDataError {
        self.error
            .as_service_error()
            .unwrap_or_else(|| panic!("not a service error: {:?}", self.error))
    }
}

fn failure(result: PutResult) -> Failure {
    let error = match result {
        Ok(output) => panic!("expected an error, got {output:?}"),
        Err(e) => e,
    };
    Failure {
        code: error.code().map(str::to_owned),
        message: error.message().map(str::to_owned),
        status: error.raw_response().map(|r| r.status().as_u16()),
        error,
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn simple(name: &str, value: f64) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(name)
        .value(value)
        .build()
}

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_valid_request_decodes_to_exactly_what_was_sent() {
    let h = Harness::new();
    let at = DateTime::from_millis((now_secs() as i64 - 120) * 1000 + 250);
    let datums = vec![
        MetricDatum::builder()
            .metric_name("requests")
            .dimensions(dimension("service", "api"))
            .dimensions(dimension("region", "eu-west-1"))
            .timestamp(at)
            .value(42.5)
            .unit(StandardUnit::Count)
            .storage_resolution(1)
            .build(),
        MetricDatum::builder()
            .metric_name("latency")
            .dimensions(dimension("service", "api"))
            .statistic_values(
                SdkStatisticSet::builder()
                    .sample_count(10.0)
                    .sum(1.25)
                    .minimum(0.01)
                    .maximum(0.5)
                    .build(),
            )
            .unit(StandardUnit::Seconds)
            .storage_resolution(60)
            .build(),
        MetricDatum::builder()
            .metric_name("sizes")
            .set_values(Some(vec![1.0, 2.5, -3.0, 1e100]))
            .set_counts(Some(vec![1.0, 4.0, 0.0, 2.0]))
            .unit(StandardUnit::BytesSecond)
            .build(),
    ];
    h.put(Some("Sonde/Test"), datums).unwrap();

    let requests = h.endpoint.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.namespace, "Sonde/Test");
    assert!(!request.gzip, "a small body is not compressed");
    assert_eq!(request.body_bytes, request.uncompressed_bytes);
    let expected = vec![
        Datum {
            metric_name: "requests".into(),
            dimensions: vec![
                ("service".into(), "api".into()),
                ("region".into(), "eu-west-1".into()),
            ],
            timestamp: Some(at.as_secs_f64()),
            value: Some(42.5),
            statistic_values: None,
            values: vec![],
            counts: vec![],
            unit: Some("Count".into()),
            storage_resolution: Some(1),
        },
        Datum {
            metric_name: "latency".into(),
            dimensions: vec![("service".into(), "api".into())],
            timestamp: None,
            value: None,
            statistic_values: Some(StatisticSet {
                sample_count: 10.0,
                sum: 1.25,
                minimum: 0.01,
                maximum: 0.5,
            }),
            values: vec![],
            counts: vec![],
            unit: Some("Seconds".into()),
            storage_resolution: Some(60),
        },
        Datum {
            metric_name: "sizes".into(),
            dimensions: vec![],
            timestamp: None,
            value: None,
            statistic_values: None,
            values: vec![1.0, 2.5, -3.0, 1e100],
            counts: vec![1.0, 4.0, 0.0, 2.0],
            unit: Some("Bytes/Second".into()),
            storage_resolution: None,
        },
    ];
    assert_eq!(request.datums, expected);
    assert_eq!(
        h.endpoint.datums(),
        expected
            .iter()
            .map(|d| ("Sonde/Test".to_owned(), d.clone()))
            .collect::<Vec<_>>()
    );

    let attempts = h.endpoint.attempts();
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!(attempt.operation, "PutMetricData");
    assert_eq!(attempt.status, 200);
    assert_eq!(attempt.error_code, None);
    assert_eq!(attempt.datums, 3);
    assert_eq!(attempt.body_bytes, request.body_bytes);
    assert_eq!(attempt.header("smithy-protocol"), Some("rpc-v2-cbor"));
    assert_eq!(attempt.header("content-type"), Some("application/cbor"));
    assert_eq!(attempt.header("x-amzn-query-mode"), Some("true"));
    assert!(
        attempt
            .header("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDSONDETEST/")),
        "{:?}",
        attempt.headers
    );
    assert_eq!(header(&attempt.headers, "content-encoding"), None);

    // wait_for and clear.
    assert!(
        h.endpoint
            .wait_for(Duration::from_millis(100), |r| r.len() == 1)
    );
    let start = Instant::now();
    assert!(
        !h.endpoint
            .wait_for(Duration::from_millis(100), |r| r.len() == 2)
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    h.endpoint.clear();
    assert!(h.endpoint.requests().is_empty());
    assert!(h.endpoint.attempts().is_empty());
    assert!(h.endpoint.datums().is_empty());
}

#[test]
fn a_large_request_arrives_gzipped_and_decodes() {
    let h = Harness::new();
    let datums: Vec<MetricDatum> = (0..200)
        .map(|i| {
            MetricDatum::builder()
                .metric_name(format!("metric_{i}"))
                .dimensions(dimension("host", &format!("host-{i}.example.internal")))
                .value(f64::from(i))
                .build()
        })
        .collect();
    h.put(Some("Sonde/Big"), datums).unwrap();

    let requests = h.endpoint.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert!(
        request.gzip,
        "a body of at least 10 KiB is gzipped by the SDK"
    );
    assert!(request.uncompressed_bytes >= 10 * 1024, "{request:?}");
    assert!(request.body_bytes < request.uncompressed_bytes);
    assert_eq!(request.datums.len(), 200);
    for (i, datum) in request.datums.iter().enumerate() {
        assert_eq!(datum.metric_name, format!("metric_{i}"));
        assert_eq!(
            datum.dimensions,
            vec![("host".to_owned(), format!("host-{i}.example.internal"))]
        );
        assert_eq!(datum.value, Some(i as f64));
    }
    let attempt = &h.endpoint.attempts()[0];
    assert_eq!(attempt.header("content-encoding"), Some("gzip"));
    assert_eq!(attempt.body_bytes, request.body_bytes);
    assert_eq!(attempt.datums, 200);
}

/// A request the endpoint must reject, and how.
struct Case {
    label: &'static str,
    namespace: Option<String>,
    datums: Vec<MetricDatum>,
    code: &'static str,
    status: u16,
    /// Text the message must contain.
    message: String,
    /// The modeled variant, if the code has one.
    variant: Option<fn(&PutMetricDataError) -> bool>,
}

fn case(label: &'static str, datums: Vec<MetricDatum>, code: &'static str, message: &str) -> Case {
    Case {
        label,
        namespace: Some("Sonde/Test".to_owned()),
        datums,
        code,
        status: 400,
        message: message.to_owned(),
        variant: match code {
            "InvalidParameterValue" => {
                Some(PutMetricDataError::is_invalid_parameter_value_exception)
            }
            "InvalidParameterCombination" => {
                Some(PutMetricDataError::is_invalid_parameter_combination_exception)
            }
            "MissingParameter" => Some(PutMetricDataError::is_missing_required_parameter_exception),
            _ => None,
        },
    }
}

fn stats(
    sample_count: Option<f64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
) -> MetricDatum {
    MetricDatum::builder()
        .metric_name("stats")
        .statistic_values(
            SdkStatisticSet::builder()
                .set_sample_count(sample_count)
                .set_sum(sum)
                .set_minimum(min)
                .set_maximum(max)
                .build(),
        )
        .build()
}

fn with_values(values: Vec<f64>, counts: Option<Vec<f64>>) -> MetricDatum {
    MetricDatum::builder()
        .metric_name("dist")
        .set_values(Some(values))
        .set_counts(counts)
        .build()
}

fn with_dimensions(dimensions: Vec<Dimension>) -> MetricDatum {
    MetricDatum::builder()
        .metric_name("dims")
        .set_dimensions(Some(dimensions))
        .value(1.0)
        .build()
}

const IPV: &str = "InvalidParameterValue";
const IPC: &str = "InvalidParameterCombination";
const MP: &str = "MissingParameter";

/// A case of one good datum put in `namespace` (`None`: no namespace at all).
fn namespace_case(
    label: &'static str,
    namespace: Option<String>,
    code: &'static str,
    message: &str,
) -> Case {
    Case {
        namespace,
        ..case(label, vec![simple("ok", 1.0)], code, message)
    }
}

fn cases() -> Vec<Case> {
    let ok = || simple("ok", 1.0);
    let now = now_secs();
    let mut cases = vec![
        // Values.
        case(
            "NaN value",
            vec![ok(), simple("bad", f64::NAN)],
            IPV,
            "The value NaN for parameter MetricData.member.2.Value is invalid.",
        ),
        case(
            "infinite value",
            vec![simple("bad", f64::INFINITY)],
            IPV,
            "The value Infinity for parameter MetricData.member.1.Value is invalid.",
        ),
        case(
            "value beyond 2^360",
            vec![simple("bad", -(2f64.powi(361)))],
            IPV,
            "The value -4.6970851655476665E108 for parameter MetricData.member.1.Value is invalid.",
        ),
        case(
            "Value and Values",
            vec![
                MetricDatum::builder()
                    .metric_name("both")
                    .value(1.0)
                    .values(2.0)
                    .build(),
            ],
            IPC,
            "The parameters MetricData.member.1.Value and MetricData.member.1.Values are mutually exclusive",
        ),
        case(
            "Value and StatisticValues",
            vec![
                MetricDatum::builder()
                    .metric_name("both")
                    .value(1.0)
                    .statistic_values(
                        SdkStatisticSet::builder()
                            .sample_count(1.0)
                            .sum(1.0)
                            .minimum(1.0)
                            .maximum(1.0)
                            .build(),
                    )
                    .build(),
            ],
            IPC,
            "MetricData.member.1.Value and MetricData.member.1.StatisticValues",
        ),
        case(
            "no value at all",
            vec![MetricDatum::builder().metric_name("none").build()],
            IPC,
            "MetricData.member.1.Value, MetricData.member.1.StatisticValues or MetricData.member.1.Values",
        ),
        // StatisticValues.
        case(
            "StatisticValues without Sum",
            vec![stats(Some(1.0), None, Some(1.0), Some(2.0))],
            MP,
            "The parameter MetricData.member.1.StatisticValues.Sum is required.",
        ),
        case(
            "StatisticValues without SampleCount",
            vec![stats(None, Some(1.0), Some(1.0), Some(2.0))],
            MP,
            "MetricData.member.1.StatisticValues.SampleCount",
        ),
        case(
            "StatisticValues with SampleCount 0",
            vec![stats(Some(0.0), Some(1.0), Some(1.0), Some(2.0))],
            IPV,
            "MetricData.member.1.StatisticValues.SampleCount",
        ),
        case(
            "StatisticValues with Minimum > Maximum",
            vec![stats(Some(2.0), Some(1.0), Some(3.0), Some(2.0))],
            IPV,
            "MetricData.member.1.StatisticValues.Minimum",
        ),
        case(
            "StatisticValues with a NaN Sum",
            vec![stats(Some(2.0), Some(f64::NAN), Some(1.0), Some(2.0))],
            IPV,
            "The value NaN for parameter MetricData.member.1.StatisticValues.Sum is invalid.",
        ),
        // Values / Counts.
        case(
            "151 Values",
            vec![with_values((0..151).map(f64::from).collect(), None)],
            IPV,
            "The collection MetricData.member.1.Values must not have a size greater than 150.",
        ),
        case(
            "duplicate Values",
            vec![with_values(vec![1.0, 2.0, 1.0], None)],
            IPV,
            "MetricData.member.1.Values must be unique",
        ),
        case(
            "NaN in Values",
            vec![with_values(vec![1.0, f64::NAN], None)],
            IPV,
            "The value NaN for parameter MetricData.member.1.Values.member.2 is invalid.",
        ),
        case(
            "Counts length mismatch",
            vec![with_values(vec![1.0, 2.0], Some(vec![1.0]))],
            IPV,
            "MetricData.member.1.Values and MetricData.member.1.Counts must be of the same size",
        ),
        case(
            "negative Count",
            vec![with_values(vec![1.0, 2.0], Some(vec![1.0, -1.0]))],
            IPV,
            "MetricData.member.1.Counts.member.2",
        ),
        case(
            "infinite Count",
            vec![with_values(vec![1.0], Some(vec![f64::INFINITY]))],
            IPV,
            "The value Infinity for parameter MetricData.member.1.Counts.member.1 is invalid.",
        ),
        // Names and dimensions.
        case(
            "31 dimensions",
            vec![with_dimensions(
                (0..31).map(|i| dimension(&format!("d{i}"), "v")).collect(),
            )],
            IPV,
            "The collection MetricData.member.1.Dimensions must not have a size greater than 30.",
        ),
        case(
            "duplicate dimension names",
            vec![with_dimensions(vec![
                dimension("a", "1"),
                dimension("a", "2"),
            ])],
            IPV,
            "MetricData.member.1.Dimensions must not contain duplicate dimension names",
        ),
        case(
            "dimension value of 1025 characters",
            vec![with_dimensions(vec![dimension("a", &"v".repeat(1025))])],
            IPV,
            "MetricData.member.1.Dimensions.member.1.Value must be shorter than 1025 characters",
        ),
        case(
            "dimension name of 256 characters",
            vec![with_dimensions(vec![dimension(&"n".repeat(256), "v")])],
            IPV,
            "MetricData.member.1.Dimensions.member.1.Name must be shorter than 256 characters",
        ),
        case(
            "empty dimension value",
            vec![with_dimensions(vec![dimension("a", "")])],
            IPV,
            "MetricData.member.1.Dimensions.member.1.Value",
        ),
        case(
            "non-ASCII dimension value",
            vec![with_dimensions(vec![dimension("a", "café")])],
            IPV,
            "MetricData.member.1.Dimensions.member.1.Value must contain only ASCII characters",
        ),
        case(
            "dimension without a value",
            vec![with_dimensions(vec![
                Dimension::builder().name("a").build(),
            ])],
            MP,
            "The parameter MetricData.member.1.Dimensions.member.1.Value is required.",
        ),
        case(
            "non-ASCII metric name",
            vec![ok(), ok(), simple("latência", 1.0)],
            IPV,
            "The parameter MetricData.member.3.MetricName must contain only ASCII characters.",
        ),
        case(
            "metric name of 256 characters",
            vec![simple(&"m".repeat(256), 1.0)],
            IPV,
            "MetricData.member.1.MetricName must be shorter than 256 characters",
        ),
        case(
            "missing metric name",
            vec![MetricDatum::builder().value(1.0).build()],
            MP,
            "The parameter MetricData.member.1.MetricName is required.",
        ),
        // Unit, resolution, timestamp.
        case(
            "unknown unit",
            vec![
                MetricDatum::builder()
                    .metric_name("u")
                    .value(1.0)
                    .unit(StandardUnit::from("Furlongs"))
                    .build(),
            ],
            IPV,
            "The value Furlongs for parameter MetricData.member.1.Unit is invalid.",
        ),
        case(
            "StorageResolution 30",
            vec![
                MetricDatum::builder()
                    .metric_name("r")
                    .value(1.0)
                    .storage_resolution(30)
                    .build(),
            ],
            IPV,
            "The value 30 for parameter MetricData.member.1.StorageResolution is invalid.",
        ),
        case(
            "timestamp three weeks old",
            vec![
                MetricDatum::builder()
                    .metric_name("old")
                    .value(1.0)
                    .timestamp(DateTime::from_secs_f64(now - 21.0 * 86_400.0))
                    .build(),
            ],
            IPV,
            "MetricData.member.1.Timestamp must specify a time no more than two weeks in the past",
        ),
        case(
            "timestamp three hours ahead",
            vec![
                MetricDatum::builder()
                    .metric_name("future")
                    .value(1.0)
                    .timestamp(DateTime::from_secs_f64(now + 3.0 * 3_600.0))
                    .build(),
            ],
            IPV,
            "MetricData.member.1.Timestamp must specify a time no more than two hours in the future",
        ),
        // The request.
        case(
            "1001 datums",
            (0..1001).map(|i| simple(&format!("m{i}"), 1.0)).collect(),
            IPV,
            "The collection MetricData must not have a size greater than 1000.",
        ),
        case(
            "no datums",
            vec![],
            MP,
            "The parameter MetricData is required.",
        ),
    ];
    // Namespaces: one good datum in a namespace CloudWatch refuses.
    cases.extend([
        namespace_case(
            "no namespace",
            None,
            MP,
            "The parameter Namespace is required.",
        ),
        namespace_case(
            "reserved namespace",
            Some("AWS/EC2".to_owned()),
            IPV,
            "The value AWS/EC2 for parameter Namespace is invalid.",
        ),
        namespace_case(
            "non-ASCII namespace",
            Some("Sondé".to_owned()),
            IPV,
            "The parameter Namespace must contain only ASCII characters.",
        ),
        namespace_case(
            "namespace of 256 characters",
            Some("n".repeat(256)),
            IPV,
            "The parameter Namespace must be shorter than 256 characters.",
        ),
    ]);
    // 1000 datums of 150 unique values each: about 1.4 MB of CBOR (sent gzipped).
    cases.push(Case {
        status: 413,
        ..case(
            "payload over 1 MB",
            (0..1000)
                .map(|i| {
                    with_values(
                        (0..150).map(|v| f64::from(i * 1000 + v) + 0.5).collect(),
                        None,
                    )
                })
                .collect(),
            "RequestEntityTooLarge",
            "exceeded 1048576 bytes",
        )
    });
    cases
}

#[test]
fn every_validation_rule_is_rejected_with_cloudwatchs_code_and_nothing_is_stored() {
    let h = Harness::new();
    let mut failures = Vec::new();
    for case in cases() {
        h.endpoint.clear();
        let datums = case.datums.len();
        let f = failure(h.put(case.namespace.as_deref(), case.datums));
        let mut problems = Vec::new();
        if f.code.as_deref() != Some(case.code) {
            problems.push(format!("code {:?}, want {}", f.code, case.code));
        }
        if f.status != Some(case.status) {
            problems.push(format!("status {:?}, want {}", f.status, case.status));
        }
        if !f.message.as_deref().unwrap_or("").contains(&case.message) {
            problems.push(format!("message {:?} lacks {:?}", f.message, case.message));
        }
        let service = f.service();
        match case.variant {
            Some(is_variant) if !is_variant(service) => {
                problems.push(format!("not the modeled variant: {service:?}"));
            }
            None if service.is_invalid_parameter_value_exception()
                || service.is_invalid_parameter_combination_exception()
                || service.is_missing_required_parameter_exception()
                || service.is_internal_service_fault() =>
            {
                problems.push(format!("unexpectedly modeled: {service:?}"));
            }
            _ => {}
        }
        if !h.endpoint.requests().is_empty() || !h.endpoint.datums().is_empty() {
            problems.push("the rejected request was stored".to_owned());
        }
        let attempts = h.endpoint.attempts();
        match attempts.as_slice() {
            [a] => {
                if a.error_code.as_deref() != Some(case.code)
                    || a.status != case.status
                    || a.message != f.message
                    || a.datums != if case.status == 413 { 0 } else { datums }
                {
                    problems.push(format!("attempt recorded as {a:?}"));
                }
            }
            other => problems.push(format!("{} attempts recorded", other.len())),
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.label, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // The endpoint still accepts a valid request afterwards.
    h.endpoint.clear();
    h.put(Some("Sonde/Test"), vec![simple("ok", 1.0)]).unwrap();
    assert_eq!(h.endpoint.requests().len(), 1);
}

#[test]
fn scripted_faults_surface_as_cloudwatch_errors_then_ok() {
    let h = Harness::new();
    h.endpoint.script([
        CwFault::Throttling,
        CwFault::InternalServiceFault,
        CwFault::Unavailable,
    ]);
    let send = || h.put(Some("Sonde/Test"), vec![simple("x", 1.0)]);

    let throttled = failure(send());
    assert_eq!(throttled.code.as_deref(), Some("Throttling"));
    assert_eq!(throttled.status, Some(400));
    assert_eq!(throttled.message.as_deref(), Some("Rate exceeded"));
    let service = throttled.service();
    assert!(
        !service.is_invalid_parameter_value_exception() && !service.is_internal_service_fault(),
        "{service:?}"
    );

    let fault = failure(send());
    assert_eq!(fault.status, Some(500));
    // CloudWatch's query error code for the InternalServiceFault shape.
    assert_eq!(fault.code.as_deref(), Some("InternalServiceError"));
    assert!(
        fault.service().is_internal_service_fault(),
        "{:?}",
        fault.error
    );
    assert!(fault.message.is_some());

    let unavailable = failure(send());
    assert_eq!(unavailable.status, Some(503));
    assert_eq!(unavailable.code, None);

    send().unwrap();
    assert_eq!(h.endpoint.requests().len(), 1);
    let attempts = h.endpoint.attempts();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.status, a.error_code.as_deref(), a.datums))
            .collect::<Vec<_>>(),
        vec![
            (400, Some("Throttling"), 1),
            (500, Some("InternalServiceError"), 1),
            (503, None, 1),
            (200, None, 1),
        ]
    );

    // The fault applies before validation; the default applies once the script is used up.
    h.endpoint.clear();
    h.endpoint.set_default(CwFault::Throttling);
    let nan = || h.put(Some("Sonde/Test"), vec![simple("x", f64::NAN)]);
    assert_eq!(failure(nan()).code.as_deref(), Some("Throttling"));
    assert_eq!(failure(send()).code.as_deref(), Some("Throttling"));
    h.endpoint.script([CwFault::Ok]);
    assert_eq!(
        failure(nan()).code.as_deref(),
        Some("InvalidParameterValue")
    );
    assert_eq!(failure(send()).code.as_deref(), Some("Throttling"));
    h.endpoint.set_default(CwFault::Ok);
    send().unwrap();
    assert_eq!(h.endpoint.requests().len(), 1);
    assert_eq!(h.endpoint.attempts().len(), 5);
}

#[test]
fn other_operations_are_unknown_and_do_not_take_the_script() {
    let h = Harness::new();
    h.endpoint.script([CwFault::Throttling]);
    let result = h
        .runtime
        .block_on(h.client.list_metrics().namespace("Sonde/Test").send());
    let error = result.unwrap_err();
    assert_eq!(error.code(), Some("UnknownOperationException"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(400));
    let attempts = h.endpoint.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].operation, "ListMetrics");
    assert_eq!(
        attempts[0].error_code.as_deref(),
        Some("UnknownOperationException")
    );
    // The scripted Throttling is still there for PutMetricData.
    let throttled = failure(h.put(Some("Sonde/Test"), vec![simple("x", 1.0)]));
    assert_eq!(throttled.code.as_deref(), Some("Throttling"));
    h.put(Some("Sonde/Test"), vec![simple("x", 1.0)]).unwrap();
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn raw_post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    sonde_tests::http::post_with(url, headers, body)
}

fn response_map(response: &Reply) -> Vec<(String, String)> {
    let value: Value = ciborium::de::from_reader(&response.body[..]).unwrap();
    match value {
        Value::Map(entries) => entries
            .into_iter()
            .map(|(k, v)| match (k, v) {
                (Value::Text(k), Value::Text(v)) => (k, v),
                other => panic!("unexpected member {other:?}"),
            })
            .collect(),
        other => panic!("not a map: {other:?}"),
    }
}

fn response_header<'a>(response: &'a Reply, name: &str) -> Option<&'a str> {
    response.header(name)
}

#[test]
fn errors_on_the_wire_are_rpc_v2_cbor_with_query_error_headers() {
    let endpoint = CloudWatchEndpoint::start();
    let url = format!("{}{SERVICE_PATH}PutMetricData", endpoint.url());
    let protocol = [
        ("smithy-protocol", "rpc-v2-cbor"),
        ("content-type", "application/cbor"),
    ];
    let datum = |value: f64| {
        Value::Map(vec![
            (text("MetricName"), text("m")),
            (text("Value"), Value::Float(value)),
            (
                text("Timestamp"),
                Value::Tag(1, Box::new(Value::Integer((now_secs() as i64).into()))),
            ),
        ])
    };
    let input = |value: f64| {
        cbor(&Value::Map(vec![
            (text("Namespace"), text("Sonde/Wire")),
            (text("MetricData"), Value::Array(vec![datum(value)])),
        ]))
    };

    // A validation error.
    let response = raw_post(&url, &protocol, &input(f64::NAN));
    assert_eq!(response.status, 400);
    assert_eq!(
        response_header(&response, "smithy-protocol"),
        Some("rpc-v2-cbor")
    );
    assert_eq!(
        response_header(&response, "content-type"),
        Some("application/cbor")
    );
    assert_eq!(
        response_header(&response, "x-amzn-query-error"),
        Some("InvalidParameterValue;Sender")
    );
    assert!(response_header(&response, "x-amzn-requestid").is_some());
    assert_eq!(
        response_map(&response),
        vec![
            (
                "__type".to_owned(),
                "com.amazonaws.cloudwatch#InvalidParameterValueException".to_owned()
            ),
            (
                "message".to_owned(),
                "The value NaN for parameter MetricData.member.1.Value is invalid.".to_owned()
            ),
        ]
    );

    // Success: an empty CBOR map; an integer timestamp in tag 1 is accepted.
    let response = raw_post(&url, &protocol, &input(1.0));
    assert_eq!(response.status, 200);
    assert_eq!(
        response_header(&response, "smithy-protocol"),
        Some("rpc-v2-cbor")
    );
    assert_eq!(response.body, vec![0xa0]);
    assert_eq!(endpoint.requests().len(), 1);

    // The scripted faults.
    endpoint.script([
        CwFault::Throttling,
        CwFault::InternalServiceFault,
        CwFault::Unavailable,
    ]);
    let response = raw_post(&url, &protocol, &input(1.0));
    assert_eq!(response.status, 400);
    assert_eq!(
        response_header(&response, "x-amzn-query-error"),
        Some("Throttling;Sender")
    );
    assert_eq!(
        response_map(&response),
        vec![
            (
                "__type".to_owned(),
                "com.amazon.coral.availability#ThrottlingException".to_owned()
            ),
            ("message".to_owned(), "Rate exceeded".to_owned()),
        ]
    );
    let response = raw_post(&url, &protocol, &input(1.0));
    assert_eq!(response.status, 500);
    assert_eq!(
        response_header(&response, "x-amzn-query-error"),
        Some("InternalServiceError;Receiver")
    );
    let members = response_map(&response);
    assert_eq!(
        members[0],
        (
            "__type".to_owned(),
            "com.amazonaws.cloudwatch#InternalServiceFault".to_owned()
        )
    );
    assert_eq!(members[1].0, "Message");
    let response = raw_post(&url, &protocol, &input(1.0));
    assert_eq!(response.status, 503);
    assert!(response.body.is_empty());

    // Undecodable bodies, wrong media types and unroutable requests.
    let response = raw_post(&url, &protocol, b"\xff\x00 not cbor");
    assert_eq!(response.status, 400);
    assert_eq!(
        response_map(&response)[0].1,
        "com.amazon.coral.service#SerializationException"
    );
    let wrong_type = cbor(&Value::Map(vec![
        (text("Namespace"), text("Sonde/Wire")),
        (
            text("MetricData"),
            Value::Array(vec![Value::Map(vec![
                (text("MetricName"), text("m")),
                (text("Value"), text("1.0")),
            ])]),
        ),
    ]));
    let response = raw_post(&url, &protocol, &wrong_type);
    assert_eq!(response.status, 400);
    let members = response_map(&response);
    assert_eq!(
        members[0].1,
        "com.amazon.coral.service#SerializationException"
    );
    assert!(
        members[1].1.contains("MetricData.member.1.Value"),
        "{members:?}"
    );
    let response = raw_post(
        &url,
        &[
            ("smithy-protocol", "rpc-v2-cbor"),
            ("content-type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(response.status, 415);
    let response = raw_post(&url, &[("content-type", "application/cbor")], &input(1.0));
    assert_eq!(response.status, 400);
    assert_eq!(
        response_map(&response)[0].1,
        "com.amazon.coral.service#UnknownOperationException"
    );
    let response = raw_post(&format!("{}/", endpoint.url()), &protocol, &input(1.0));
    assert_eq!(response.status, 400);

    assert_eq!(
        endpoint.requests().len(),
        1,
        "only the valid request was kept"
    );
    let attempts = endpoint.attempts();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.status, a.error_code.clone().unwrap_or_default()))
            .collect::<Vec<_>>(),
        [
            (400, "InvalidParameterValue"),
            (200, ""),
            (400, "Throttling"),
            (500, "InternalServiceError"),
            (503, ""),
            (400, "SerializationException"),
            (400, "SerializationException"),
            (415, "UnsupportedMediaTypeException"),
            (400, "UnknownOperationException"),
            (400, "UnknownOperationException"),
        ]
        .map(|(s, c)| (s, c.to_owned()))
    );
    assert_eq!(attempts[5].datums, 0, "an undecodable body has no datums");
    assert_eq!(attempts[9].operation, "/");
}

#[test]
fn drop_stops_the_endpoint_quickly() {
    let h = Harness::new();
    h.put(Some("Sonde/Test"), vec![simple("x", 1.0)]).unwrap();
    let url = h.endpoint.url();
    let addr = url.trim_start_matches("http://").to_owned();
    let start = Instant::now();
    drop(h.endpoint);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "{addr} still accepts connections"
    );
}
