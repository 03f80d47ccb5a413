//! One lifecycle for every component (`sonde::Component`): a program holds its sources and
//! exporters in one list and flushes and stops them in one loop, against real peers on
//! loopback (the OTLP and CloudWatch test endpoints, a StatsD client socket, an EMF file).

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::UdpSocket;
use std::time::Duration;

use sonde::cloudwatch::{Destination, EmfBuilder};
use sonde::otlp::{OtlpMetricsBuilder, OtlpTransport};
use sonde::{Component, Registry, Resource};
use sonde_tests::cloudwatch::CloudWatchEndpoint;
use sonde_tests::otlp::{OtlpReceiver, find_metrics};

const T: Duration = Duration::from_secs(10);

#[test]
fn every_component_flushes_and_stops_through_one_trait() {
    let registry = Registry::new();
    let otlp_rx = OtlpReceiver::start();
    let cw = CloudWatchEndpoint::start();
    let dir = std::env::temp_dir().join(format!("sonde-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emf_path = dir.join("emf.log");
    let _ = std::fs::remove_file(&emf_path);

    let statsd = sonde_statsd::StatsdServer::builder()
        .udp("127.0.0.1:0")
        .registry(registry.clone())
        .start()
        .unwrap();
    let statsd_addr = statsd.local_addr().unwrap();
    let server = sonde_tests::loopback_exporter(&registry).install().unwrap();
    let metrics_addr = server.local_addr();
    let parts: Vec<Box<dyn Component>> = vec![
        Box::new(statsd),
        Box::new(
            sonde_host::HostCollector::new()
                .registry(&registry)
                .install()
                .unwrap(),
        ),
        Box::new(
            sonde::process::ProcessCollector::current()
                .registry(&registry)
                .install()
                .unwrap(),
        ),
        Box::new(server),
        Box::new(
            OtlpMetricsBuilder::new()
                .registry(registry.clone())
                .environment(|_| None)
                .transport(OtlpTransport::new().endpoint(otlp_rx.http_endpoint()))
                .resource(Resource::empty().with("service.name", "lifecycle"))
                .interval(Duration::from_secs(3600))
                .install()
                .unwrap(),
        ),
        Box::new(
            cw.exporter("sonde-lifecycle", &registry)
                .resource(Resource::empty().with("service.name", "lifecycle"))
                .install()
                .unwrap(),
        ),
        Box::new(
            EmfBuilder::new("sonde-lifecycle")
                .registry(registry.clone())
                .destination(Destination::File(emf_path.clone()))
                .resource(Resource::empty().with("service.name", "lifecycle"))
                .build()
                .unwrap(),
        ),
    ];
    let names: BTreeSet<&str> = parts.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "cloudwatch",
            "emf",
            "host",
            "otlp",
            "process",
            "prometheus",
            "statsd"
        ]),
        "each component names itself once"
    );

    // A datagram is in the registry once the list is flushed, and every exporter delivered it.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"lifecycle.jobs:3|c", statsd_addr).unwrap();
    let uptime = |snap: &sonde::Snapshot| {
        snap.point("system.uptime", &[])
            .and_then(|p| p.number())
            .map(|n| n.as_f64())
            .unwrap()
    };
    let before = uptime(&registry.snapshot());
    std::thread::sleep(Duration::from_millis(20));
    for c in &parts {
        c.flush(T).unwrap_or_else(|e| panic!("flush: {e}"));
    }
    let snap = registry.snapshot();
    assert!(
        uptime(&snap) > before,
        "the host collector's flush read the host again"
    );
    assert_eq!(
        snap.point("lifecycle.jobs", &[])
            .unwrap()
            .number()
            .unwrap()
            .as_f64(),
        3.0
    );
    assert!(
        snap.families
            .iter()
            .any(|f| f.meta.name().starts_with("system.")),
        "the host collector's flush read the host"
    );
    assert!(
        !find_metrics(&otlp_rx.metrics(), "lifecycle.jobs").is_empty(),
        "the OTLP exporter's flush delivered the counter"
    );
    assert!(
        cw.datums()
            .iter()
            .any(|(_, d)| d.metric_name == "lifecycle.jobs"),
        "the CloudWatch exporter's flush delivered the counter"
    );
    let emf = std::fs::read_to_string(&emf_path).unwrap();
    assert!(emf.contains("lifecycle.jobs"), "{emf}");

    // A scraper's kept-alive connection, idle after one scrape (Prometheus keeps one per
    // target), must not hold the server's shutdown up: it closes at once.
    let mut idle = std::net::TcpStream::connect(metrics_addr).unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: lifecycle\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(T)).unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // Shut down in one loop; a second shutdown is a no-op.
    for c in &parts {
        let within = if c.name() == "prometheus" {
            Duration::from_secs(2)
        } else {
            T
        };
        c.shutdown(within)
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
    }
    for c in &parts {
        c.shutdown(T)
            .unwrap_or_else(|e| panic!("second shutdown of {}: {e}", c.name()));
    }
    // Stopped means stopped: nothing answers on /metrics, and the push exporters and StatsD
    // refuse a flush, saying so.
    assert!(std::net::TcpStream::connect_timeout(&metrics_addr, Duration::from_secs(1)).is_err());
    for c in &parts {
        if matches!(c.name(), "otlp" | "cloudwatch" | "statsd") {
            let e = c.flush(Duration::from_secs(1)).unwrap_err();
            assert_eq!(e.component(), c.name());
            assert!(e.to_string().contains("shut down"), "{e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
