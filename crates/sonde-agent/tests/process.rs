//! The agent's own process metrics and procstat on `/metrics`: procstat under its own
//! `procstat_*` names with group totals, the agent's `process_*` series its own alone, its
//! limits, and the Prometheus client libraries' names with `prometheus_names = true`.
#![cfg(target_os = "linux")]

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::LoggedAgent;

use sonde_tests::agent::{KillOnDrop as Kid, sample_value as value};
use sonde_tests::free_addr;

/// Sum of the sample lines of family `name` whose labels contain `needle`.
fn sum(scrape: &str, name: &str, needle: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn soft_nofile(pid: u32) -> f64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn procstat_has_its_own_names_and_group_totals_next_to_the_agents_process_metrics() {
    let metrics = free_addr();
    let arg = format!("7{}.375", std::process::id() % 1000);
    let _kids: Vec<Kid> = (0..2)
        .map(|_| Kid(Command::new("sleep").arg(&arg).spawn().unwrap()))
        .collect();
    let regex = format!("^sleep {}$", arg.replace('.', "\\."));
    // Escaped alike in TOML and in the exposition's label values.
    let escaped = regex.replace('\\', "\\\\");
    let config = format!(
        "[collectors.host]\nenabled = false\n\n[collectors.process]\nprometheus_names = true\n\n\
         [[collectors.procstat]]\npattern = \"{escaped}\"\n\n[statsd]\nenabled = false\n\n\
         [exporters.prometheus]\nlisten = \"{metrics}\"\n"
    );
    let agent = LoggedAgent::start("agent-procstat", &config, metrics, &[]);
    let group = format!("process_match=\"pattern:{escaped}\"");
    let text = agent.scrape_until("procstat on /metrics", Duration::from_secs(20), |t| {
        sum(t, "procstat_memory_usage_bytes", &group) > 0.0
    });
    let fail = || format!("{text}\n{}", agent.log());

    // procstat: one series per child, and the group totals equal their sums.
    let per_pid = text
        .lines()
        .filter(|l| l.starts_with("procstat_memory_usage_bytes{") && l.contains(&group))
        .count();
    assert_eq!(per_pid, 2, "{}", fail());
    for (total, each) in [
        (
            "procstat_group_memory_usage_bytes",
            "procstat_memory_usage_bytes",
        ),
        (
            "procstat_group_memory_virtual_bytes",
            "procstat_memory_virtual_bytes",
        ),
    ] {
        assert_eq!(
            value(&text, &format!("{total}{{{group}}}")),
            Some(sum(&text, each, &group)),
            "{total}\n{}",
            fail()
        );
    }
    // The agent's process_*: unlabelled, the agent alone (no procstat pid in them).
    let agent_pid = agent.pid();
    for line in text.lines().filter(|l| l.starts_with("process_")) {
        assert!(!line.contains("process_pid"), "{line}\n{}", fail());
        assert!(!line.contains("process_match"), "{line}\n{}", fail());
    }
    let rss = value(&text, "process_memory_usage_bytes").unwrap();
    assert_eq!(value(&text, "process_resident_memory_bytes"), Some(rss));
    // The limits, under the names an alert uses, and the client libraries' names.
    let soft = soft_nofile(agent_pid);
    assert_eq!(
        value(&text, "process_open_file_descriptor_limit"),
        Some(soft),
        "{}",
        fail()
    );
    assert_eq!(value(&text, "process_max_fds"), Some(soft));
    assert!(value(&text, "process_open_fds").unwrap() >= 3.0);
    assert!(value(&text, "process_cpu_seconds_total").is_some());
    assert!(value(&text, "process_threads").unwrap() >= 1.0);
    let start = value(&text, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 60.0..=now).contains(&start), "{start} vs {now}");
    // This machine's cgroup has no memory limit: no process_memory_limit_bytes (not a huge
    // number). With a limit it is there: sonde-process's tests make one.
    let cgroup = std::fs::read_to_string(format!("/proc/{agent_pid}/cgroup")).unwrap();
    let limited = cgroup.lines().any(|l| {
        let Some(p) = l.split(':').nth(2) else {
            return false;
        };
        let v1 = format!("/sys/fs/cgroup/memory{p}/memory.limit_in_bytes");
        let v2 = format!("/sys/fs/cgroup{p}/memory.max");
        [v1, v2].iter().any(|f| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|v| v < 1 << 62)
        })
    });
    assert_eq!(
        value(&text, "process_memory_limit_bytes").is_some(),
        limited,
        "{}",
        fail()
    );
}
