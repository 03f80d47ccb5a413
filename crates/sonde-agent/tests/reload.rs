//! Reload without loss (issue #14 item 4): SIGHUP keeps every component whose section did not
//! change (StatsD socket and ingest state, `/metrics` socket, exporters with their delta
//! readers), and removes what the new configuration removed.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::LoggedAgent;

use sonde_tests::agent::{KillOnDrop as Kid, free_udp, sample_value as value, scrape_metrics};
use sonde_tests::cloudwatch::{CloudWatchEndpoint, TEST_ENV};
use sonde_tests::otlp::{OtlpReceiver, find_metrics};
use sonde_tests::{free_addr, wait_for};

/// Rewrites the configuration, sends SIGHUP and waits for the `n`th successful reload.
fn reload(agent: &LoggedAgent, config: &str, n: u32) {
    std::fs::write(agent.path(), config).unwrap();
    agent.signal("-HUP");
    let series = r#"sonde_agent_reloads_total{result="success"}"#;
    agent.scrape_until("the reload", Duration::from_secs(10), |t| {
        value(t, series) == Some(f64::from(n))
    });
}

/// The values of every data point (`AsInt(n)`, `AsDouble(x)`) in a metric's debug `text`.
fn values(text: &str) -> Vec<f64> {
    ["AsInt(", "AsDouble("]
        .iter()
        .flat_map(|tag| text.split(tag).skip(1))
        .filter_map(|s| s.split(')').next()?.parse().ok())
        .collect()
}

/// Twenty SIGHUPs while 20,000 StatsD increments stream in: `/metrics` answers every poll,
/// it ends on exactly the number sent, and the delta OTLP receiver's points sum to it too. The
/// old reload closed the StatsD and `/metrics` sockets for a moment and started a new OTLP
/// exporter whose first delta was the lifetime total.
#[test]
fn twenty_reloads_under_load_lose_nothing_and_count_nothing_twice() {
    const PER_PACKET: u64 = 10;
    const PACKETS: u64 = 2_000; // 200 packets/s, 2,000 lines/s, for 10 s.
    let rx = OtlpReceiver::start();
    let statsd = free_udp();
    let metrics = free_addr();
    let endpoint = rx.grpc_endpoint();
    // Every reload adds or removes a probe, every other one changes the OTLP interval (a new
    // exporter continuing the old one's deltas); the rest must stay as it is.
    let config = |n: u32| {
        let every = if (n / 2).is_multiple_of(2) {
            "500ms"
        } else {
            "400ms"
        };
        let mut c = format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n\
             [statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
             [exporters.otlp]\nendpoint = \"{endpoint}\"\nprotocol = \"grpc\"\n\
             interval = \"{every}\"\ntemporality = \"delta\"\n"
        );
        if n % 2 == 1 {
            c += &format!(
                "\n[[probes.tcp]]\nname = \"self\"\naddress = \"{metrics}\"\ninterval = \"1s\"\n"
            );
        }
        c
    };
    let agent = LoggedAgent::start("agent-reload", &config(0), metrics, &[]);

    let done = Arc::new(AtomicBool::new(false));
    let (polls, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let poller = {
        let (done, polls, refused) = (done.clone(), polls.clone(), refused.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                polls.fetch_add(1, Ordering::Relaxed);
                if scrape_metrics(metrics).is_none() {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let sender = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let packet = vec!["reload.hits:1|c"; PER_PACKET as usize].join("\n");
        let start = Instant::now();
        for i in 0..PACKETS {
            // Paced against the clock, so a slow moment does not turn into a burst.
            let due = start + Duration::from_millis(i * 5);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            sock.send_to(packet.as_bytes(), statsd).unwrap();
        }
    });
    for n in 1..=20 {
        std::thread::sleep(Duration::from_millis(450));
        reload(&agent, &config(n), n);
    }
    sender.join().unwrap();
    let sent = PER_PACKET * PACKETS;
    let scraped = wait_for(
        "every increment on /metrics",
        Duration::from_secs(10),
        || {
            let v = value(&agent.scrape()?, "reload_hits_total")?;
            (v >= sent as f64).then_some(v)
        },
    );
    done.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let (polls, refused) = (
        polls.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    let (_, log) = agent.terminate(Duration::from_secs(15));
    assert_eq!(scraped, sent as f64, "{log}");
    assert_eq!(
        refused, 0,
        "{refused} of {polls} polls of /metrics failed:\n{log}"
    );
    assert!(polls > 100, "{polls} polls");
    let reqs = rx.metrics();
    let points = find_metrics(&reqs, "reload.hits");
    let mut delivered = 0.0;
    for m in &points {
        let text = format!("{m:?}");
        assert!(text.contains("aggregation_temporality: Delta"), "{text}");
        delivered += values(&text).iter().sum::<f64>();
    }
    assert_eq!(
        delivered,
        sent as f64,
        "OTLP deltas over {} requests:\n{log}",
        reqs.len()
    );
    // Shown with --nocapture, for RELIABILITY.md.
    println!(
        "sent {sent}, scraped {scraped}, otlp delta sum {delivered} over {} exports, /metrics polls {polls}, failed {refused}",
        points.len()
    );
}

/// A reload that removes a probe and a procstat entry removes their series; StatsD, unchanged,
/// keeps its ingest state, so a tag key first seen after the reload widens the family instead
/// of being refused as `type_conflict`.
#[test]
fn a_reload_removes_probes_and_procstat_and_keeps_statsd_tag_keys() {
    let statsd = free_udp();
    let metrics = free_addr();
    let arg = format!("8{}.625", std::process::id() % 1000);
    let _sleeper = Kid(Command::new("sleep").arg(&arg).spawn().unwrap());
    let pattern = format!("^sleep {}$", arg.replace('.', "\\\\."));
    let base = format!(
        "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n\
         [statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n"
    );
    let full = format!(
        "{base}\n[[collectors.procstat]]\npattern = \"{pattern}\"\n\n\
         [[probes.tcp]]\nname = \"gone\"\naddress = \"{metrics}\"\ninterval = \"1s\"\n\n\
         [[probes.tcp]]\nname = \"kept\"\naddress = \"{metrics}\"\ninterval = \"1s\"\n"
    );
    let kept = format!(
        "{base}\n[[probes.tcp]]\nname = \"kept\"\naddress = \"{metrics}\"\ninterval = \"1s\"\n"
    );
    let agent = LoggedAgent::start("agent-reload", &full, metrics, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"tagged.hits:1|c|#a:x", statsd).unwrap();
    let has = |t: &str, name: &str, needle: &str| {
        t.lines()
            .any(|l| l.starts_with(name) && l.contains(needle) && !l.starts_with('#'))
    };
    agent.scrape_until(
        "probes, procstat and StatsD on /metrics",
        Duration::from_secs(20),
        |t| {
            has(t, "probe_success{", "probe_name=\"gone\"")
                && has(t, "probe_success{", "probe_name=\"kept\"")
                && has(t, "procstat_memory_usage_bytes{", "")
                && value(t, r#"tagged_hits_total{a="x"}"#) == Some(1.0)
        },
    );
    reload(&agent, &kept, 1);
    sock.send_to(b"tagged.hits:1|c|#b:y", statsd).unwrap();
    let widened = |t: &str, a: &str, b: &str| {
        t.lines().any(|l| {
            l.starts_with("tagged_hits_total{")
                && l.contains(&format!("a=\"{a}\""))
                && l.contains(&format!("b=\"{b}\""))
                && l.ends_with(" 1")
        })
    };
    let t = agent.scrape_until(
        "the new tag key on /metrics",
        Duration::from_secs(10),
        |t| widened(t, "", "y"),
    );
    let log = agent.log();
    assert!(widened(&t, "x", ""), "{t}");
    assert!(!t.contains("reason=\"type_conflict\""), "{t}");
    for l in t.lines().filter(|l| !l.starts_with('#')) {
        assert!(!l.contains("probe_name=\"gone\""), "{l}\n{log}");
        assert!(!l.starts_with("procstat_"), "{l}\n{log}");
    }
    assert!(has(&t, "probe_success{", "probe_name=\"kept\""), "{t}");
    // The kept probe's checks continue (its series were not removed and re-created).
    let checks = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("probe_checks_total{") && l.contains("probe_name=\"kept\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = checks(&t);
    assert!(before >= 1.0, "{t}");
    wait_for(
        "the kept probe to keep checking",
        Duration::from_secs(5),
        || (checks(&agent.scrape()?) > before).then_some(()),
    );
}

/// A reload that changes the CloudWatch section starts a new exporter that continues the old
/// one's deltas: CloudWatch sums what it receives, and a first flush from zero would add every
/// counter's total once more.
#[test]
fn a_replaced_cloudwatch_exporter_continues_the_old_ones_deltas() {
    let cw = CloudWatchEndpoint::start();
    let statsd = free_udp();
    let metrics = free_addr();
    let url = cw.url();
    let config = |every: &str| {
        format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n\
             [statsd]\nudp = \"{statsd}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
             [exporters.cloudwatch]\nnamespace = \"reload\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"{url}\"\ninterval = \"{every}\"\n"
        )
    };
    let agent = LoggedAgent::start("agent-reload", &config("300ms"), metrics, &TEST_ENV);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // /metrics answers before every other component has started: wait until StatsD takes
    // lines (a datagram sent to a port not yet bound is lost).
    wait_for("StatsD bound", Duration::from_secs(20), || {
        sock.send_to(b"reload.ready:1|c", statsd).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        agent
            .scrape()
            .filter(|t| t.contains("reload_ready_total"))
            .map(|_| ())
    });
    let sent = |n: usize| {
        for _ in 0..n {
            sock.send_to(b"reload.hits:1|c", statsd).unwrap();
        }
    };
    let delivered = || -> f64 {
        cw.datums()
            .iter()
            .filter(|(_, d)| d.metric_name.contains("hits"))
            .map(|(_, d)| {
                d.value
                    .or(d.statistic_values.as_ref().map(|s| s.sum))
                    .unwrap_or(0.0)
            })
            .sum()
    };
    sent(100);
    // Generous: under a loaded CI machine the SDK's first request has been seen to take seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered() != 100.0 {
        assert!(
            Instant::now() < deadline,
            "{} of 100 in CloudWatch after 30 s; /metrics: {:?}\n{}",
            delivered(),
            agent.scrape().map(|t| value(&t, "reload_hits_total")),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    reload(&agent, &config("400ms"), 1);
    sent(50);
    agent.scrape_until("150 on /metrics", Duration::from_secs(10), |t| {
        value(t, "reload_hits_total") == Some(150.0)
    });
    let (_, log) = agent.terminate(Duration::from_secs(15));
    assert_eq!(delivered(), 150.0, "{log}");
}

/// Status code of `GET /metrics` with basic-auth `credentials` (base64 of `user:password`) on
/// a fresh connection, or the connection error.
fn status_with(addr: SocketAddr, credentials: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// Changing who may scrape (or the TLS files) on the same address hands the listening socket
/// to the new server: scrapes keep being answered through six reloads, none is refused. The
/// old reload closed the socket and bound it again, refusing connections in between.
#[test]
fn new_users_on_the_same_address_refuse_no_connection() {
    const A: &str = "YTpwdw=="; // a:pw
    const B: &str = "Yjpwdw=="; // b:pw
    let metrics = free_addr();
    let hash = bcrypt::hash("pw", 4).unwrap();
    let config = |user: Option<&str>| {
        let mut c = format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n"
        );
        if let Some(u) = user {
            c.push_str(&format!("basic_auth_users = {{ {u} = \"{hash}\" }}\n"));
        }
        c
    };
    let agent = LoggedAgent::start("agent-reload", &config(None), metrics, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A short pause: enough polls to catch a gap of a millisecond, without taking
                // a whole core from the tests running beside this one.
                std::thread::sleep(Duration::from_micros(500));
                match status_with(metrics, A) {
                    Ok(200 | 401) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(other) => failures.push(format!("status {other}")),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    for (n, (user, other)) in [("a", B), ("b", A), ("a", B), ("b", A), ("a", B), ("b", A)]
        .into_iter()
        .enumerate()
    {
        std::fs::write(agent.path(), config(Some(user))).unwrap();
        let before = answered.load(Ordering::Relaxed);
        agent.signal("-HUP");
        let mine = if user == "a" { A } else { B };
        // Done once the new users are served and the poller has scraped through the change
        // (counted, not timed: a fast machine reloads in fewer polls than a slow one).
        wait_for(
            &format!("reload {} (users = {user})", n + 1),
            Duration::from_secs(10),
            || {
                (status_with(metrics, mine).ok() == Some(200)
                    && status_with(metrics, other).ok() == Some(401)
                    && answered.load(Ordering::Relaxed) >= before + 10)
                    .then_some(())
            },
        );
    }
    stop.store(true, Ordering::Relaxed);
    let failures = poller.join().unwrap();
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered >= 60, "only {answered} scrapes answered");
    assert!(
        failures.is_empty(),
        "{} of {} scrapes failed across the reloads: {:?}\n{}",
        failures.len(),
        answered + failures.len() as u64,
        &failures[..failures.len().min(5)],
        agent.log()
    );
    agent.terminate(Duration::from_secs(15));
}

/// A reload that changes `[statsd]` (a new ingest on the same registry), the host interval and
/// the procstat list: the StatsD families are taken over (a tag set unlike the first one is
/// accepted, and a counter goes on from its value), the kept procstat matcher's series stay
/// on every scrape, the removed matcher's go, and the host collector is not re-created (its
/// series keep their start time).
#[test]
fn changed_sections_keep_the_series_that_still_exist() {
    let statsd = free_udp();
    let metrics = free_addr();
    let id = std::process::id() % 1000;
    let (kept_arg, gone_arg) = (format!("8{id}.375"), format!("8{id}.875"));
    let _kept = Kid(Command::new("sleep").arg(&kept_arg).spawn().unwrap());
    let _gone = Kid(Command::new("sleep").arg(&gone_arg).spawn().unwrap());
    let pattern = |a: &str| format!("^sleep {}$", a.replace('.', "\\\\."));
    let config = |ttl: &str, host_every: &str, both: bool| {
        let mut c = format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = true\ninterval = \"{host_every}\"\n\n\
             [statsd]\nudp = \"{statsd}\"\nttl = \"{ttl}\"\n\n[exporters.prometheus]\nlisten = \"{metrics}\"\n\n\
             [[collectors.procstat]]\npattern = \"{}\"\n",
            pattern(&kept_arg)
        );
        if both {
            c.push_str(&format!(
                "\n[[collectors.procstat]]\npattern = \"{}\"\n",
                pattern(&gone_arg)
            ));
        }
        c
    };
    let agent = LoggedAgent::start("agent-reload", &config("10m", "10s", true), metrics, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"hits:1|c|#a:x", statsd).unwrap();
    let matcher = |t: &str, arg: &str| {
        t.lines().any(|l| {
            l.starts_with("procstat_group_process_count") && l.contains(&arg.replace('.', "\\\\."))
        })
    };
    agent.scrape_until("StatsD and both matchers", Duration::from_secs(20), |t| {
        value(t, r#"hits_total{a="x"}"#) == Some(1.0)
            && matcher(t, &kept_arg)
            && matcher(t, &gone_arg)
    });
    // The host collector's counters in OpenMetrics carry their series' start (`_created`): a
    // collector re-created by the reload would start them again, at the reload.
    let host_created = || {
        let t = sonde_tests::http::get(
            &format!("http://{metrics}/metrics"),
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .text();
        let created: Vec<String> = t
            .lines()
            .filter(|l| l.starts_with("system_cpu_time_seconds_created"))
            .map(str::to_owned)
            .collect();
        assert!(!created.is_empty(), "no host CPU series:\n{t}");
        created
    };
    let host_before = host_created();
    // Poll while reloading: the kept matcher must be on every scrape.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        let kept_arg = kept_arg.clone();
        std::thread::spawn(move || {
            let mut missing = 0;
            let mut polls = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = scrape_metrics(metrics) {
                    polls += 1;
                    if !matcher(&t, &kept_arg) {
                        missing += 1;
                    }
                }
            }
            (polls, missing)
        })
    };
    reload(&agent, &config("5m", "7s", false), 1);
    sock.send_to(b"hits:1|c|#b:y\nhits:1|c|#a:x", statsd)
        .unwrap();
    let t = agent.scrape_until(
        "the StatsD lines after the reload",
        Duration::from_secs(10),
        |t| value(t, r#"hits_total{a="",b="y"}"#) == Some(1.0),
    );
    stop.store(true, Ordering::Relaxed);
    let (polls, missing) = poller.join().unwrap();
    let log = agent.log();
    assert_eq!(
        value(&t, r#"hits_total{a="x",b=""}"#),
        Some(2.0),
        "the counter goes on from its value:\n{t}\n{log}"
    );
    assert!(!t.contains("reason=\"type_conflict\""), "{t}");
    assert!(matcher(&t, &kept_arg), "{t}");
    assert!(
        !matcher(&t, &gone_arg),
        "the removed matcher's series stay:\n{t}"
    );
    assert!(
        polls > 5 && missing == 0,
        "{missing} of {polls} scrapes lacked the kept matcher"
    );
    assert_eq!(
        host_created(),
        host_before,
        "the host collector was re-created although only its interval changed:\n{log}"
    );
    agent.terminate(Duration::from_secs(15));
}

/// A reload that changes `[sources.otlp]` starts a new receiver in the old one's place: a
/// sender's next cumulative point continues its series instead of being added again (before,
/// the counter read 10 + 12 = 22 after the reload).
#[test]
fn a_reloaded_otlp_receiver_counts_nothing_twice() {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;

    let (metrics, grpc) = (free_addr(), free_addr());
    let config = |size: &str| {
        format!(
            "[agent]\ninterval = \"1h\"\n\n[collectors.host]\nenabled = false\n\n[statsd]\nenabled = false\n\n\
             [sources.otlp]\ngrpc = \"{grpc}\"\nhttp = \"off\"\nmax_request_size = \"{size}\"\n\n\
             [exporters.prometheus]\nlisten = \"{metrics}\"\n"
        )
    };
    let agent = LoggedAgent::start("agent-otlp-reload", &config("16MiB"), metrics, &[]);
    let (runtime, exporter) = common::sdk_grpc_exporter(grpc, false);
    let _guard = runtime.enter();
    let provider = sonde_tests::otel_sdk::provider(
        exporter,
        [
            KeyValue::new("service.name", "cart"),
            KeyValue::new("service.instance.id", "i-1"),
        ],
    );
    let orders = provider.meter("test").u64_counter("cart.orders").build();
    let series = "cart_orders_total{job=\"cart\",instance=\"i-1\"}";
    orders.add(10, &[]);
    provider.force_flush().unwrap();
    agent.scrape_until("the first push", Duration::from_secs(10), |t| {
        value(t, series) == Some(10.0)
    });
    reload(&agent, &config("8MiB"), 1);
    orders.add(2, &[]);
    // The new receiver binds the same address; the SDK's first attempt may meet the gap.
    wait_for("the second push", Duration::from_secs(10), || {
        provider.force_flush().ok()
    });
    let text = agent.scrape_until("the second push", Duration::from_secs(10), |t| {
        value(t, series).is_some_and(|v| v != 10.0)
    });
    assert_eq!(value(&text, series), Some(12.0), "{text}");
    provider.shutdown().unwrap();
}
