//! The agent in a container (issue #18 item 2): with the host's `/` mounted at a host root
//! (`[agent] host_root`, or `HOST_ROOT` / `HOST_PROC`), the host collector reports the host's
//! `/proc`, the mounts of the host's PID 1 and the sizes of the host's filesystems, not the
//! container's own view. A prepared host tree stands for the host (no container engine here).

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, check_config, check_config_with_env, line_starting_with, write_config};
use sonde_tests::agent::{sample_value, scrape_metrics, spawn_agent_with_env};
use sonde_tests::host_tree::HostTree;
use sonde_tests::{TempDir, free_addr, wait_for};

fn config(dir: &TempDir, metrics: std::net::SocketAddr, agent_extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        format!(
            "[agent]\ninterval = \"1h\"\n{agent_extra}\n[collectors.host]\ninterval = \"200ms\"\n\n\
             [statsd]\nenabled = false\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
    )
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
    let out = check_config(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[agent] host_root: cannot read /nonexistent/host/proc/stat")
            && err.contains("-v /:/host:ro"),
        "{err}"
    );
    let out = check_config_with_env(&config_path, &[("HOST_ROOT", "/nonexistent/host")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("environment variable HOST_ROOT"), "{err}");
}

/// A cgroup the test makes in every hierarchy this host mounts (v2 `unified`, v1 `cpu`,
/// `cpuacct`, `memory`), removed on drop.
struct TestCgroup {
    name: String,
    dirs: Vec<std::path::PathBuf>,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl TestCgroup {
    fn new(name: String) -> TestCgroup {
        let root = std::path::Path::new(CGROUP_ROOT);
        let mut dirs = Vec::new();
        let v2_only = root.join("cgroup.controllers").exists();
        let parents: Vec<std::path::PathBuf> = if v2_only {
            vec![root.to_path_buf()]
        } else {
            ["unified", "cpu", "cpuacct", "memory"]
                .iter()
                .map(|h| root.join(h))
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        };
        for p in parents {
            let d = p.join(&name);
            std::fs::create_dir(&d).unwrap_or_else(|e| {
                panic!(
                    "cannot create the cgroup {}: {e} (the test runs as root)",
                    d.display()
                )
            });
            dirs.push(d);
        }
        TestCgroup { name, dirs }
    }

    fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// A file of the hierarchy whose directory name is `hierarchy` (`memory`, `cpu`...).
    fn file(&self, hierarchy: &str, name: &str) -> Option<std::path::PathBuf> {
        self.dirs
            .iter()
            .find(|d| d.parent().is_some_and(|p| p.ends_with(hierarchy)) || self.dirs.len() == 1)
            .map(|d| d.join(name))
            .filter(|f| f.exists())
    }

    fn add(&self, pid: u32) {
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A Python child that waits for a line, then allocates and touches `mib` MiB, says `ok`, and
/// waits for the end of its input.
fn memory_hog(mib: u32) -> std::process::Child {
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import sys\nsys.stdin.readline()\nb = b'x' * ({mib} << 20)\nprint('ok', flush=True)\nsys.stdin.read()\n"
            ),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_number(path: &std::path::Path, key: Option<&str>) -> f64 {
    let text = std::fs::read_to_string(path).unwrap();
    match key {
        None => text.trim().parse().unwrap(),
        Some(k) => text
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' '))
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    }
}

/// Real cgroups (issue #18 item 1): the test makes them, puts a CPU-burning, a memory-holding
/// and an out-of-memory child in them, and the agent reports each figure as the kernel's cgroup
/// files give it; a removed cgroup's series go.
#[test]
fn real_cgroups_are_reported_as_the_kernel_counts_them() {
    use std::io::{BufRead, Write};
    let metrics = free_addr();
    let dir = TempDir::new("agent-cgroups");
    let config = dir.0.join("agent.toml");
    let tag = std::process::id();
    std::fs::write(
        &config,
        format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = true\ninterval = \"100ms\"\n\n\
             [collectors.cgroups]\nenabled = true\ncontainers = false\ninclude = [\"/sonde-test-{tag}-*\"]\n\n\
             [statsd]\nenabled = false\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
        ),
    )
    .unwrap();
    let _agent = spawn_agent_with_env(BIN, &config, &dir.0, &[]);
    wait_for("the agent", Duration::from_secs(20), || {
        scrape_metrics(metrics)
    });

    let work = TestCgroup::new(format!("sonde-test-{tag}-work"));
    let oom = TestCgroup::new(format!("sonde-test-{tag}-oom"));
    let limit = 128u64 << 20;
    if let Some(f) = work.file("memory", "memory.limit_in_bytes") {
        std::fs::write(f, limit.to_string()).unwrap();
    } else if let Some(f) = work.file("", "memory.max") {
        std::fs::write(f, limit.to_string()).unwrap();
    }
    // A CPU quota of 20 % so the burner is throttled.
    if let Some(f) = work.file("cpu", "cpu.cfs_quota_us") {
        std::fs::write(f, "20000").unwrap();
    }
    // The burner: one second of CPU, throttled, then gone.
    let mut burner = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    work.add(burner.id());
    std::thread::sleep(Duration::from_millis(1500));
    burner.kill().unwrap();
    burner.wait().unwrap();
    // The memory holder: 64 MiB, charged to the cgroup (it allocates once inside).
    let mut hog = memory_hog(64);
    work.add(hog.id());
    let mut stdin = hog.stdin.take().unwrap();
    writeln!(stdin).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(hog.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ok");
    // Out of memory: a 32 MiB limit (swap included) and a child that wants 200 MiB.
    let small = 32u64 << 20;
    for f in ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"] {
        if let Some(f) = oom.file("memory", f) {
            std::fs::write(f, small.to_string()).unwrap();
        }
    }
    if let Some(f) = oom.file("", "memory.max") {
        std::fs::write(f, small.to_string()).unwrap();
        if let Some(swap) = oom.file("", "memory.swap.max") {
            std::fs::write(swap, "0").unwrap();
        }
    }
    let mut victim = memory_hog(200);
    oom.add(victim.id());
    writeln!(victim.stdin.take().unwrap()).unwrap();
    let status = victim.wait().unwrap();
    assert!(
        !status.success(),
        "the 200 MiB child outlived a 32 MiB limit"
    );

    let series = |cgroup: &str, name: &str| {
        format!(
            "{name}{{cgroup_path=\"{cgroup}\",container_id=\"\",container_runtime=\"\",k8s_pod_uid=\"\"}}"
        )
    };
    let (w, o) = (work.path(), oom.path());
    let scrape = wait_for("the cgroups' readings", Duration::from_secs(20), || {
        scrape_metrics(metrics).filter(|s| {
            sample_value(s, &series(&o, "container_memory_oom_kills_total"))
                .is_some_and(|v| v >= 1.0)
                && sample_value(s, &series(&w, "container_memory_usage_bytes"))
                    .is_some_and(|v| v >= (64u64 << 20) as f64)
        })
    });
    // CPU: what the kernel counted, exactly (the burner is gone, nothing moves).
    let cpu_file = work
        .file("unified", "cpu.stat")
        .or_else(|| work.file("", "cpu.stat"));
    let kernel_cpu = match cpu_file.filter(|f| read_number(f, Some("usage_usec")) > 0.0) {
        Some(f) => read_number(&f, Some("usage_usec")) / 1e6,
        None => read_number(&work.file("cpuacct", "cpuacct.usage").unwrap(), None) / 1e9,
    };
    let ours = sample_value(&scrape, &series(&w, "container_cpu_time_seconds_total")).unwrap();
    assert!(kernel_cpu > 0.1, "the burner ran: {kernel_cpu}");
    assert!(
        (ours - kernel_cpu).abs() < 0.05,
        "agent {ours} s, kernel {kernel_cpu} s"
    );
    let throttled = sample_value(
        &scrape,
        &series(&w, "container_cpu_throttled_periods_total"),
    );
    if let Some(f) = work.file("cpu", "cpu.stat") {
        let kernel = read_number(&f, Some("nr_throttled"));
        assert!(kernel > 0.0, "a 20 % quota throttles a busy loop");
        assert_eq!(throttled, Some(kernel));
    }
    // Memory: the holder's 64 MiB, the limit as set, a working set within the usage.
    let usage = sample_value(&scrape, &series(&w, "container_memory_usage_bytes")).unwrap();
    let kernel_usage = work
        .file("memory", "memory.usage_in_bytes")
        .or_else(|| work.file("", "memory.current"))
        .map(|f| read_number(&f, None))
        .unwrap();
    assert!(
        (usage - kernel_usage).abs() / kernel_usage < 0.1,
        "agent {usage}, kernel {kernel_usage}"
    );
    assert_eq!(
        sample_value(&scrape, &series(&w, "container_memory_limit_bytes")),
        Some(limit as f64)
    );
    let ws = sample_value(&scrape, &series(&w, "container_memory_working_set_bytes")).unwrap();
    eprintln!(
        "cpu: agent {ours} s, kernel {kernel_cpu} s; throttled periods {throttled:?}; memory: agent {usage}, kernel {kernel_usage}, working set {ws}"
    );
    assert!(ws > 0.0 && ws <= usage, "working set {ws}, usage {usage}");
    assert_eq!(
        sample_value(&scrape, &series(&o, "container_memory_oom_kills_total")),
        Some(1.0)
    );
    // Pressure per cgroup where the host has cgroup v2 files.
    if work.file("unified", "cpu.pressure").is_some() || work.file("", "cpu.pressure").is_some() {
        assert!(
            scrape.contains(&format!(
                "container_pressure_waiting_seconds_total{{cgroup_path=\"{w}\""
            )),
            "{scrape}"
        );
    }

    // Gone: the holder exits, the cgroups are removed, their series leave /metrics.
    drop(stdin);
    hog.wait().unwrap();
    drop(work);
    drop(oom);
    wait_for(
        "the removed cgroups' series to go",
        Duration::from_secs(10),
        || scrape_metrics(metrics).filter(|s| !s.contains(&format!("sonde-test-{tag}-"))),
    );
}

/// `[agent] resource_detectors` (issue #18 item 4): the EC2 detector asks the instance metadata
/// service with an IMDSv2 token, the ECS detector the task metadata endpoint, and what they
/// find joins the agent's resource (`target_info` on /metrics). Stand-ins answer as AWS
/// documents (no EC2 or ECS here).
#[test]
fn ec2_and_ecs_metadata_become_resource_attributes() {
    use sonde_tests::metadata::Metadata;
    let (ec2, ecs) = (Metadata::ec2(), Metadata::ecs());
    let dir = TempDir::new("agent-detect");
    let metrics = free_addr();
    let config = config(&dir, metrics, "resource_detectors = [\"ec2\", \"ecs\"]\n");
    let ec2_url = format!("http://{}", ec2.addr);
    let ecs_url = format!("http://{}/v4/abc", ecs.addr);
    let _agent = spawn_agent_with_env(
        BIN,
        &config,
        &dir.0,
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &ec2_url),
            ("ECS_CONTAINER_METADATA_URI_V4", &ecs_url),
            // Configured attributes win over detected ones.
            ("OTEL_RESOURCE_ATTRIBUTES", "host.type=configured"),
        ],
    );
    let scrape = wait_for("the agent", Duration::from_secs(20), || {
        scrape_metrics(metrics)
    });
    let info = line_starting_with(&scrape, "target_info{");
    sonde_core::testing::assert_contains_all(
        info,
        &[
            // EC2, through the token.
            "host_id=\"i-0123456789abcdef0\"",
            "host_type=\"configured\"",
            "host_image_id=\"ami-0abcdef1234567890\"",
            "host_name=\"ip-10-0-0-12.eu-west-1.compute.internal\"",
            // ECS, the later detector: its platform and region win.
            "cloud_provider=\"aws\"",
            "cloud_platform=\"aws_ecs\"",
            "cloud_region=\"us-west-2\"",
            "cloud_account_id=\"111122223333\"",
            "aws_ecs_task_family=\"checkout\"",
            "aws_ecs_task_revision=\"5\"",
            "aws_ecs_launchtype=\"fargate\"",
            "aws_ecs_cluster_arn=\"arn:aws:ecs:us-west-2:111122223333:cluster/prod\"",
            "container_name=\"checkout\"",
            "container_image_name=\"registry.example:5000/shop/checkout\"",
            "container_image_tags=\"1.4.2\"",
        ],
    );
}

/// A metadata address that takes the connection and never answers costs start-up no more than
/// `resource_detection_timeout`, adds nothing, and is said once in the log.
#[test]
fn a_hanging_metadata_service_does_not_hold_the_start_up() {
    let (_silent, addr) = sonde_tests::metadata::silent();
    let dir = TempDir::new("agent-detect-hang");
    let metrics = free_addr();
    let config = config(
        &dir,
        metrics,
        "resource_detectors = [\"ec2\"]\nresource_detection_timeout = \"300ms\"\n",
    );
    let url = format!("http://{addr}");
    let started = std::time::Instant::now();
    let _agent = spawn_agent_with_env(
        BIN,
        &config,
        &dir.0,
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &url)],
    );
    let scrape = wait_for("the agent", Duration::from_secs(20), || {
        scrape_metrics(metrics)
    });
    let took = started.elapsed();
    // Generous for a loaded machine, and far below the 20 s the wait above would allow.
    assert!(took < Duration::from_secs(5), "start-up took {took:?}");
    assert!(!scrape.contains("cloud_platform"), "{scrape}");
    let log = std::fs::read_to_string(dir.0.join("agent.log")).unwrap();
    assert!(
        log.contains("resource detector ec2: no answer within 300ms"),
        "{log}"
    );
    eprintln!("/metrics answered {took:?} after the start, with a 300 ms detection deadline");
}
