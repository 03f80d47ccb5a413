//! The agent's `/metrics` server: HTTPS and basic auth from `[exporters.prometheus]` (scraped
//! by a real Prometheus, certificate reloaded when its files change), `check-config` errors
//! for a bad web configuration, and no busy loop when file descriptors run out.

use crate::common;

use std::io::Read as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, assert_config_ok, check_config, write_config, write_file};
use sonde_tests::agent::{KillOnDrop as Running, spawn_agent};
use sonde_tests::prometheus::Prometheus;
use sonde_tests::{TempDir, free_addr, http, wait_for};

fn spawn(program: &str, args: &[&str], dir: &Path) -> Running {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    Running(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn self_signed(dir: &Path, tag: &str) -> String {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let pem = cert.cert.pem();
    // Written next to the served files and renamed over them, as certificate renewal tools do.
    let (c, k) = (
        dir.join(format!("{tag}.crt")),
        dir.join(format!("{tag}.key")),
    );
    std::fs::write(&c, &pem).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    std::fs::rename(&k, dir.join("tls.key")).unwrap();
    std::fs::rename(&c, dir.join("tls.crt")).unwrap();
    pem
}

/// Whether an HTTPS GET trusting only `ca` gets `status`.
fn https_status(url: &str, auth: &str, ca: &str) -> Option<u16> {
    let (url, auth, ca) = (url.to_owned(), auth.to_owned(), ca.to_owned());
    std::panic::catch_unwind(move || {
        http::get_with_ca(&url, &[("Authorization", &auth)], Some(&ca)).status
    })
    .ok()
}

#[test]
fn https_and_basic_auth_from_the_config_with_certificate_reload() {
    let dir = TempDir::new("agent-https");
    let first = self_signed(&dir.0, "first");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let metrics = free_addr();
    let config = format!(
        "[agent]\ninterval = \"1h\"\n\n[statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\ntls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\"\nbasic_auth_users = {{ prometheus = \"{hash}\" }}\n",
        statsd = free_addr(),
        cert = dir.0.join("tls.crt").display(),
        key = dir.0.join("tls.key").display(),
    );
    let path = write_config(&dir, &config);
    assert_config_ok(&path);
    let _agent = spawn_agent(BIN, &path, &dir.0);
    let url = format!("https://127.0.0.1:{}/metrics", metrics.port());
    let good = http::basic_auth("prometheus", "s3cret");
    wait_for("the agent over HTTPS", Duration::from_secs(20), || {
        (https_status(&url, &good, &first) == Some(200)).then_some(())
    });
    assert_eq!(
        https_status(&url, &http::basic_auth("prometheus", "nope"), &first),
        Some(401)
    );
    // Plain HTTP gets no metrics.
    let plain = http::try_get(&format!("http://{metrics}/metrics"));
    assert!(plain.is_none_or(|r| r.status != 200));

    // A real Prometheus scrapes it with tls_config and basic_auth.
    let ca = write_file(&dir, "ca-first.pem", &first);
    let scrape = format!(
        "  - job_name: agent\n    scheme: https\n    tls_config:\n      ca_file: '{}'\n    basic_auth:\n      username: prometheus\n      password: s3cret\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        ca.display(),
        metrics.port()
    );
    let prom = Prometheus::start_with_scrape_configs(&scrape, &[], &[]);
    let up = prom.wait_for_series("up{job=\"agent\"} == 1", Duration::from_secs(30));
    assert_eq!(up[0].value, 1.0, "{}", prom.log());
    prom.wait_for_series("sonde_agent_info{job=\"agent\"}", Duration::from_secs(30));

    // A renewed certificate is served without a restart or reload.
    let second = self_signed(&dir.0, "second");
    wait_for("the renewed certificate", Duration::from_secs(10), || {
        (https_status(&url, &good, &second) == Some(200)).then_some(())
    });
    assert_eq!(https_status(&url, &good, &first), None);
}

#[test]
fn check_config_locates_web_config_errors() {
    let dir = TempDir::new("agent-webcfg");
    let not_pem = write_file(&dir, "not.pem", "hello\n");
    let missing = dir.0.join("missing.pem");
    let cases = [
        (
            format!(
                "[exporters.prometheus]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                missing.display(),
                not_pem.display()
            ),
            ":3:17",
            "missing.pem",
        ),
        (
            format!(
                "[exporters.prometheus]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{0}\"\ntls_key_file = \"{0}\"\n",
                not_pem.display()
            ),
            ":3:17",
            "holds no certificate",
        ),
        (
            format!(
                "[exporters.prometheus]\ntls_key_file = \"{}\"\n",
                not_pem.display()
            ),
            ":2:16",
            "needs both tls_cert_file and tls_key_file",
        ),
        (
            "[exporters.prometheus]\nbasic_auth_users = { admin = \"hunter2\" }\n".to_owned(),
            ":2:",
            "not a bcrypt hash",
        ),
        (
            "[exporters.prometheus.basic_auth_users]\nadmin = \"hunter2\"\n".to_owned(),
            ":2:9",
            "not a bcrypt hash",
        ),
    ];
    for (i, (config, at, needle)) in cases.iter().enumerate() {
        let path = write_file(&dir, format!("bad{i}.toml"), config);
        let out = check_config(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}\n{err}");
        let located = format!("{}{at}", path.display());
        assert!(
            err.contains(&located) && err.contains(needle),
            "want {located} and {needle:?}:\n{err}"
        );
    }
}

/// CPU time (user + system, clock ticks) of the threads named `sonde-promethe*` of `pid`.
fn server_ticks(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, rest)) = stat.split_once(") ") else {
            continue;
        };
        if !name.contains("sonde-promethe") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        total += f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    }
    total
}

#[test]
fn running_out_of_file_descriptors_does_not_spin_and_recovers() {
    let dir = TempDir::new("agent-emfile");
    let metrics = free_addr();
    let path = write_config(
        &dir,
        format!(
            "[agent]\ninterval = \"1h\"\n\n[statsd]\nudp = \"{}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n",
            free_addr()
        ),
    );
    // A low open-files limit for the agent alone.
    let agent = spawn(
        "prlimit",
        &[
            "--nofile=96:96",
            "--",
            BIN,
            "--config",
            path.to_str().unwrap(),
        ],
        &dir.0,
    );
    let pid = agent.0.id();
    let url = format!("http://{metrics}/metrics");
    wait_for("the agent's /metrics", Duration::from_secs(20), || {
        http::try_get(&url).filter(|r| r.status == 200)
    });
    // More connections than descriptors left: the rest wait in the backlog, accept fails.
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..120 {
        match TcpStream::connect_timeout(&metrics, Duration::from_secs(1)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (t0, start) = (server_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let ticks = server_ticks(pid) - t0;
    let elapsed = start.elapsed().as_secs_f64();
    let log = std::fs::read_to_string(dir.0.join("agent.log")).unwrap_or_default();
    println!(
        "{} connections held, server threads used {ticks} ticks (1/100 s) of CPU in {elapsed:.1} s",
        held.len()
    );
    assert!(
        log.contains("cannot accept connections"),
        "accept never failed; raise the connection count\n{log}"
    );
    // Spinning on accept used ~100 ticks a second; backing off uses a few.
    assert!(
        ticks <= 20,
        "{ticks} ticks in {elapsed:.1} s: the accept loop spins"
    );
    assert_eq!(
        log.matches("cannot accept connections").count(),
        1,
        "logged once per minute\n{log}"
    );
    // Descriptors freed: the server serves again.
    drop(held);
    wait_for(
        "a scrape after the descriptors were freed",
        Duration::from_secs(10),
        || {
            let mut s = TcpStream::connect(metrics).ok()?;
            std::io::Write::write_all(
                &mut s,
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.contains("sonde_http_accept_errors_total").then_some(())
        },
    );
}
