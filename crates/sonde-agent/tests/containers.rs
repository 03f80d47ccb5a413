//! The agent in a container (issue #18 item 2): with the host's `/` mounted at a host root
//! (`[agent] host_root`, or `HOST_ROOT` / `HOST_PROC`), the host collector reports the host's
//! `/proc`, the mounts of the host's PID 1 and the sizes of the host's filesystems, not the
//! container's own view. A prepared host tree stands for the host (no container engine here).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use sonde_tests::agent::{sample_value, scrape_metrics, spawn_agent_with_env};
use sonde_tests::host_tree::HostTree;
use sonde_tests::{TempDir, free_addr, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_sonde-agent");

fn config(dir: &TempDir, metrics: std::net::SocketAddr, agent_extra: &str) -> std::path::PathBuf {
    let path = dir.0.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\ninterval = \"1h\"\n{agent_extra}\n[collectors.host]\ninterval = \"200ms\"\n\n\
             [statsd]\nenabled = false\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    path
}

/// Reads the agent's /metrics until the host's memory shows, and returns the scrape.
fn host_scrape(metrics: std::net::SocketAddr) -> String {
    wait_for(
        "the host collector's first reading",
        Duration::from_secs(20),
        || scrape_metrics(metrics).filter(|s| s.contains("system_memory_limit_bytes")),
    )
}

#[test]
fn host_root_reports_the_mounted_host() {
    let tree = HostTree::new();
    let dir = TempDir::new("agent-host-root");
    let metrics = free_addr();
    let config = config(
        &dir,
        metrics,
        &format!("host_root = \"{}\"\n", tree.root().display()),
    );
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &[]);
    let scrape = host_scrape(metrics);
    assert_eq!(
        sample_value(&scrape, "system_memory_limit_bytes"),
        Some(4000.0 * 1024.0),
        "{scrape}"
    );
    assert_eq!(
        sample_value(&scrape, "system_cpu_load_average_1m"),
        Some(3.25)
    );
    // The host's filesystem, by the host's name for it, with the size read through the root;
    // not the container's own mounts.
    let fs: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("system_filesystem_limit_bytes{"))
        .collect();
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert!(
        fs[0].contains("system_filesystem_mountpoint=\"/data\"")
            && fs[0].contains("system_device=\"/dev/vdz\""),
        "{fs:?}"
    );
    let size: f64 = fs[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(size, tree.data_size());
    assert!(scrape.contains("network_interface_name=\"eth9\""));

    // Pressure stall information counts from the agent's start: nothing yet.
    let waiting = |resource: &str| {
        format!("system_pressure_waiting_seconds_total{{system_pressure_resource=\"{resource}\"}}")
    };
    let stalled = |resource: &str| {
        format!("system_pressure_stalled_seconds_total{{system_pressure_resource=\"{resource}\"}}")
    };
    assert_eq!(
        sample_value(&scrape, &waiting("cpu")),
        Some(0.0),
        "{scrape}"
    );
    assert_eq!(sample_value(&scrape, &stalled("io")), Some(0.0));
    assert_eq!(
        sample_value(&scrape, &stalled("cpu")),
        None,
        "no full line for cpu"
    );

    // A change on the host shows at the next collection: 2.5 s more of `some` stall on every
    // resource, 0.25 s more of `full`.
    tree.write("loadavg", "7.50 0.25 0.10 1/100 42\n");
    tree.pressure(3_500_000, 750_000);
    let scrape = wait_for("the new readings", Duration::from_secs(10), || {
        scrape_metrics(metrics).filter(|s| {
            sample_value(s, "system_cpu_load_average_1m") == Some(7.5)
                && sample_value(s, &stalled("memory")).is_some_and(|v| v > 0.0)
        })
    });
    for r in ["cpu", "memory", "io"] {
        assert_eq!(
            sample_value(&scrape, &waiting(r)),
            Some(2.5),
            "{r}: {scrape}"
        );
    }
    assert_eq!(sample_value(&scrape, &stalled("memory")), Some(0.25));
    assert_eq!(sample_value(&scrape, &stalled("io")), Some(0.25));
}

#[test]
fn host_proc_from_the_environment_and_a_missing_root_is_a_config_error() {
    let tree = HostTree::new();
    let dir = TempDir::new("agent-host-proc");
    let metrics = free_addr();
    let config_path = config(&dir, metrics, "");
    let proc = tree.proc();
    let _agent = spawn_agent_with_env(
        BIN,
        &config_path,
        &dir.0,
        &[("HOST_PROC", proc.to_str().unwrap())],
    );
    let scrape = host_scrape(metrics);
    assert_eq!(
        sample_value(&scrape, "system_memory_limit_bytes"),
        Some(4000.0 * 1024.0),
        "{scrape}"
    );

    // A host root without the host's /proc: refused before start, saying how to mount it.
    let other = TempDir::new("agent-host-root-missing");
    let bad = config(&other, free_addr(), "host_root = \"/nonexistent/host\"\n");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[agent] host_root: cannot read /nonexistent/host/proc/stat")
            && err.contains("-v /:/host:ro"),
        "{err}"
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&config_path)
        .env("HOST_ROOT", "/nonexistent/host")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("environment variable HOST_ROOT"), "{err}");
}
