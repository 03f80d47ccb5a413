//! What operators deploy (issue #18 item 3): the Kubernetes manifest passes a schema validator
//! (kubernetes-validate, PyPI, strict) and its configuration starts an agent whose liveness and
//! readiness paths answer; the systemd unit passes `systemd-analyze verify` and its security
//! review.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, assert_config_ok_with_env, temp_config, write_file};
use sonde_testkit::succeeded;
use sonde_tests::agent::spawn_agent_with_env;
use sonde_tests::{free_addr, http, require_program, wait_for};

const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/kubernetes/sonde-agent.yaml"
);
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/sonde-agent.service");

/// The `agent.toml` of the manifest's ConfigMap (the block under `agent.toml: |`).
fn configmap_toml() -> String {
    let text = std::fs::read_to_string(MANIFEST).unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != "agent.toml: |");
    lines.next().expect("the ConfigMap has agent.toml");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kubernetes_manifest_is_valid_and_its_configuration_runs() {
    let validate = require_program(
        "kubernetes-validate",
        "python3 -m pip install kubernetes-validate",
    );
    let out = Command::new(validate)
        .args(["--strict", MANIFEST])
        .output()
        .unwrap();
    let said = succeeded("kubernetes-validate", &out);
    assert_eq!(said.matches(" passed for resource ").count(), 4, "{said}");

    // The ConfigMap's configuration, with this machine's / as the host and free ports: it
    // checks, starts, and answers the probes' paths.
    let (dir, config) = temp_config("agent-daemonset", configmap_toml());
    let metrics = free_addr();
    let (statsd, grpc, otlp_http) = (sonde_tests::agent::free_udp(), free_addr(), free_addr());
    let env = [
        ("SONDE_AGENT_HOST_ROOT", "/".to_owned()),
        ("SONDE_EXPORTERS_PROMETHEUS_LISTEN", metrics.to_string()),
        ("SONDE_STATSD_UDP", statsd.to_string()),
        ("SONDE_SOURCES_OTLP_GRPC", grpc.to_string()),
        ("SONDE_SOURCES_OTLP_HTTP", otlp_http.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_config_ok_with_env(&config, &env);
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &env);
    for path in ["/health", "/ready"] {
        wait_for(path, Duration::from_secs(20), || {
            http::try_get(&format!("http://{metrics}{path}")).filter(|r| r.status == 200)
        });
    }
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let analyze = require_program("systemd-analyze", "apt-get install -y systemd");
    // The unit as installed, with the paths of this build.
    let (dir, config) = temp_config("agent-unit", "[statsd]\nenabled = false\n");
    let unit = std::fs::read_to_string(UNIT)
        .unwrap()
        .replace("/usr/local/bin/sonde-agent", BIN)
        .replace("/etc/sonde/agent.toml", config.to_str().unwrap());
    let path = write_file(&dir, "sonde-agent.service", unit);
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for sonde-agent.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    // systemd rates 0-10; "OK" is below 2.5 (the unit before hardening scored 7.4, MEDIUM).
    assert!(exposure < 2.5, "exposure {exposure}:\n{report}");
    // The settings this depends on, so a later edit that drops one is caught by name too.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    for line in [
        "DynamicUser=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "SystemCallFilter=@system-service",
    ] {
        sonde_core::testing::assert_has_line(&unit, line);
    }
}
