//! The run's own metrics pushed while it goes (issue #12 item 9): a real OTLP receiver gets
//! `http.client.request.duration` with one point per request name and error class, and its
//! counts add up to the run's.

use crate::support;

use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use sonde_load::result::RunResult;
use sonde_tests::otlp::{OtlpReceiver, attrs, find_metrics};
use support::{Target, serial, sonde_load};

/// Two seconds at 100/s against the target's `/api/users`, pushing every 500 ms as `push`
/// says: it must exit 0; its `--json` result.
fn pushing_run(target: &Target, push: &[&str]) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let url = target.url("/api/users");
    let base = ["run", "--url", &url, "--rate", "100", "--duration", "2s"];
    let args = [&base[..], &["--push-interval", "500ms"], push].concat();
    let out = sonde_load(&args, dir.path(), Duration::from_secs(30));
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    out.result().clone()
}

#[test]
fn the_runs_metrics_reach_an_otlp_receiver() {
    let _serial = serial();
    let rx = OtlpReceiver::start();
    let target = Target::start(&["--error-ratio", "0.25", "--error-status", "503"]);
    let result = pushing_run(
        &target,
        &[
            "--push-otlp",
            &rx.http_endpoint(),
            "--push-attribute",
            "run.id=push-test",
        ],
    );
    assert!(result.total.count >= 150, "{}", result.total.count);
    let requests = rx.metrics();
    // Cumulative points: the last export holds the whole run.
    let last = requests
        .iter()
        .rev()
        .find(|r| {
            !find_metrics(std::slice::from_ref(*r), "http.client.request.duration").is_empty()
        })
        .unwrap_or_else(|| {
            panic!(
                "no http.client.request.duration in {} exports",
                requests.len()
            )
        });
    let resource = attrs(
        &last.resource_metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes,
    );
    assert!(
        resource.contains(&("service.name".into(), "sonde-load".into())),
        "{resource:?}"
    );
    assert!(
        resource.contains(&("run.id".into(), "push-test".into())),
        "{resource:?}"
    );
    let mut total = 0u64;
    let mut errors = 0u64;
    for m in find_metrics(std::slice::from_ref(last), "http.client.request.duration") {
        let points: Vec<(u64, Vec<(String, String)>)> = match &m.data {
            Some(Data::Histogram(h)) => h
                .data_points
                .iter()
                .map(|p| (p.count, attrs(&p.attributes)))
                .collect(),
            Some(Data::ExponentialHistogram(h)) => h
                .data_points
                .iter()
                .map(|p| (p.count, attrs(&p.attributes)))
                .collect(),
            other => panic!("not a histogram: {other:?}"),
        };
        for (count, labels) in points {
            assert!(
                labels.contains(&("request.name".into(), "default".into())),
                "{labels:?}"
            );
            total += count;
            if labels
                .iter()
                .any(|(k, v)| k == "error.type" && !v.is_empty())
            {
                errors += count;
            }
        }
    }
    assert_eq!(
        total, result.total.count,
        "every completed request is pushed"
    );
    assert_eq!(
        errors,
        result.total.error_count(),
        "errors keep their class"
    );
    assert!(
        errors > 0,
        "the target answered 503 to a quarter of the requests"
    );
}

/// The same over Prometheus remote write, into a real VictoriaMetrics: the run's request count
/// is queryable next to the service's series.
#[test]
fn the_runs_metrics_reach_victoria_metrics_over_remote_write() {
    let _serial = serial();
    let vm = sonde_tests::victoria::VictoriaMetrics::start();
    let target = Target::start(&[]);
    let count = pushing_run(&target, &["--push-remote-write", &vm.write_url()])
        .total
        .count as f64;
    let expr = "sum(http_client_request_duration_seconds_count{request_name=\"default\"})";
    vm.wait_for_series(expr, Duration::from_secs(15));
    // The last push (delivered before sonde-load exits) carries the whole run.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let samples = vm.query(expr);
        if samples.first().map(|s| s.value) == Some(count) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "VictoriaMetrics has {samples:?}, the run counted {count}\n{}",
            vm.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
