//! Baselines end to end against a real server (issue #12 item 7): two runs of the same server are
//! not a regression; the same server made 30 % slower is, and the exit code says so.

use crate::support;

use std::time::Duration;

use support::{Target, serial, sonde_load};

#[test]
fn the_same_server_is_no_regression_and_a_30_percent_slower_one_is() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let baselines = dir.path().join("baselines");
    let baselines = baselines.to_str().unwrap();
    let run = |target: &Target, extra: &[&str]| {
        let url = target.url("/api/users");
        let mut args = vec![
            "run",
            "--url",
            &url,
            "--users",
            "8",
            "--duration",
            "3s",
            "--baseline-dir",
            baselines,
        ];
        args.extend_from_slice(extra);
        sonde_load(&args, dir.path(), Duration::from_secs(30))
    };
    let normal = Target::start(&["--delay", "10ms"]);
    let first = run(&normal, &["--save-baseline", "main"]);
    assert_eq!(first.code(), 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first.result().total.count > 900,
        "{}",
        first.result().total.count
    );
    assert!(std::path::Path::new(baselines).join("main.json").exists());

    let mut again = run(&normal, &["--baseline", "main"]);
    if again.code() == 1 {
        // A burst elsewhere on the shared machine can move one run's tail by more than the noise
        // that run shows (seen once in CI: p95 11.2 ms, then 14.2 ms, of one 10 ms server). A
        // regression between two runs of one server must then not repeat on a fresh run.
        eprintln!(
            "a second look after a first verdict of regression:\n{}",
            again.stdout
        );
        again = run(&normal, &["--baseline", "main"]);
    }
    assert_eq!(
        again.code(),
        0,
        "two runs of one server must not be a regression:\n{}\n{}",
        again.stdout,
        again.stderr
    );
    assert!(!again.stdout.contains("REGRESSED"), "{}", again.stdout);
    drop(normal);

    let slower = Target::start(&["--delay", "13ms"]);
    let slow = run(&slower, &["--baseline", "main"]);
    assert_eq!(
        slow.code(),
        1,
        "30 % slower must be flagged:\n{}\n{}",
        slow.stdout,
        slow.stderr
    );
    assert!(slow.stdout.contains("REGRESSED"), "{}", slow.stdout);
    // A baseline that was never saved is a usage error, and nothing is sent.
    let missing = run(&slower, &["--baseline", "nope"]);
    assert_eq!(missing.code(), 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("--save-baseline nope"),
        "{}",
        missing.stderr
    );
}
