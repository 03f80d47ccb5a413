//! Selections applied by readers: names, label conditions, dropped labels and aggregation.

use std::time::Instant;

use sonde_core::{
    GaugeAggregation, Kind, Number, NumberKind, Pattern, Registry, Rule, Selection, Snapshot,
    Temporality, testing,
};

fn names(s: &Snapshot) -> Vec<&str> {
    s.families.iter().map(|f| f.meta.name()).collect()
}

/// The names of the families of `s` other than sonde's own (`sonde.*`).
fn own_names(s: &Snapshot) -> Vec<&str> {
    names(s)
        .into_iter()
        .filter(|n| !n.starts_with("sonde."))
        .collect()
}

/// What a reader of `reg` with `temporality` and `selection` collects first.
fn read(reg: &Registry, temporality: Temporality, selection: Selection) -> Snapshot {
    reg.reader(temporality).with_selection(selection).collect()
}

fn value(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.point(name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {s:#?}"))
        .number()
        .unwrap()
        .as_f64()
}

#[test]
fn globs_match_names_with_dots_and_stay_linear() {
    let p = Pattern::glob("system.cpu.*");
    assert!(p.matches("system.cpu.time"));
    assert!(p.matches("system.cpu.utilization"));
    assert!(p.matches("system.cpu."));
    assert!(!p.matches("system.cpus"));
    assert!(!p.matches("process.cpu.time"));
    assert!(Pattern::glob("*.duration").matches("http.server.request.duration"));
    assert!(Pattern::glob("disk.io?").matches("disk.io2"));
    assert!(!Pattern::glob("disk.io?").matches("disk.io"));
    assert!(Pattern::glob("exact").matches("exact") && !Pattern::glob("exact").matches("exactly"));
    assert!(Pattern::glob("*").matches(""));
    // The pattern that makes naive backtracking exponential.
    let hostile = Pattern::glob("a*a*a*a*a*a*a*a*a*a*b");
    let text = "a".repeat(20_000);
    let t = Instant::now();
    assert!(!hostile.matches(&text));
    assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());
    let re = Pattern::predicate("/^disk\\./", |s| s.starts_with("disk."));
    assert!(re.matches("disk.io") && !re.matches("xdisk.io"));
    assert_eq!(re.as_str(), "/^disk\\./");
}

#[test]
fn include_and_exclude_choose_families_and_the_rest_is_not_read() {
    let reg = Registry::new();
    for name in [
        "system.cpu.time",
        "system.cpu.utilization",
        "system.memory.usage",
        "disk.io",
    ] {
        testing::handle(reg.counter(name)).add(1);
    }
    let selection = Selection::from(
        Rule::new()
            .include([Pattern::glob("system.*")])
            .exclude([Pattern::glob("*.utilization")]),
    );
    let s = read(&reg, Temporality::Cumulative, selection.clone());
    assert_eq!(names(&s), ["system.cpu.time", "system.memory.usage"]);
    // The same through apply on a snapshot taken elsewhere.
    let mut all = reg.snapshot();
    selection.apply(&mut all);
    assert_eq!(names(&all), names(&s));
    // Exclude alone keeps everything else.
    let s = read(
        &reg,
        Temporality::Delta,
        Rule::new().exclude([Pattern::glob("system.cpu.*")]).into(),
    );
    let mine = own_names(&s);
    assert_eq!(mine, ["disk.io", "system.memory.usage"]);
    assert!(Selection::new().is_everything());
}

#[test]
fn label_conditions_keep_matching_series_and_an_absent_label_reads_empty() {
    let reg = Registry::new();
    let fs = testing::family(
        reg.up_down_counter("system.filesystem.usage")
            .labels(["device", "state"]),
    );
    fs.with(&["sda1", "used"]).add(10);
    fs.with(&["sda1", "free"]).add(90);
    fs.with(&["tmpfs", "used"]).add(1);
    testing::handle(reg.counter("no.labels")).add(1);
    let s = read(
        &reg,
        Temporality::Cumulative,
        Rule::new()
            .label("state", [Pattern::glob("used")])
            .label("device", [Pattern::glob("sd*"), Pattern::glob("nvme*")])
            .into(),
    );
    let f = s.family("system.filesystem.usage").unwrap();
    assert_eq!(f.series.len(), 1);
    assert_eq!(
        value(
            &s,
            "system.filesystem.usage",
            &[("device", "sda1"), ("state", "used")]
        ),
        10.0
    );
    // A family without the label reads it as "": dropped unless "" matches.
    assert!(s.family("no.labels").unwrap().series.is_empty());
    let s = read(
        &reg,
        Temporality::Cumulative,
        Rule::new()
            .label("state", [Pattern::glob("used"), Pattern::glob("")])
            .into(),
    );
    assert_eq!(s.family("no.labels").unwrap().series.len(), 1);
    assert_eq!(s.family("system.filesystem.usage").unwrap().series.len(), 2);
}

#[test]
fn dropping_labels_adds_counters_and_merges_histograms() {
    let reg = Registry::new();
    let io = testing::family(reg.counter("disk.io").labels(["device", "direction"]));
    io.with(&["sda", "read"]).add(3);
    io.with(&["sdb", "read"]).add(4);
    io.with(&["sda", "write"]).add(5);
    let lat = testing::family(
        reg.histogram("http.server.request.duration")
            .labels(["http.route", "instance"]),
    );
    for i in 0..100 {
        lat.with(&["/a", "1"]).observe(0.001 * (i + 1) as f64);
        lat.with(&["/a", "2"]).observe(0.1 + 0.001 * (i + 1) as f64);
    }
    let selection = Selection::from(Rule::new().drop_labels(["device", "instance"]));
    let s = read(&reg, Temporality::Cumulative, selection.clone());
    let f = s.family("disk.io").unwrap();
    assert_eq!(f.meta.label_names().collect::<Vec<_>>(), ["direction"]);
    assert_eq!(f.series.len(), 2);
    assert_eq!(value(&s, "disk.io", &[("direction", "read")]), 7.0);
    assert_eq!(value(&s, "disk.io", &[("direction", "write")]), 5.0);
    let h = s
        .point("http.server.request.duration", &[("http.route", "/a")])
        .unwrap()
        .histogram()
        .unwrap();
    assert_eq!(h.count(), 200);
    // The median of the union lies between the two halves, not at either one's median.
    let p50 = h.quantile(0.5).unwrap();
    assert!((0.09..=0.11).contains(&p50), "p50 {p50}");
    let p99 = h.quantile(0.99).unwrap();
    assert!((0.19..=0.21).contains(&p99), "p99 {p99}");
    assert_eq!(selection.aggregated_series(), 2);
    assert_eq!(selection.incompatible_series(), 0);
}

#[test]
fn gauges_aggregate_as_configured_and_an_integer_mean_becomes_a_float() {
    let reg = Registry::new();
    let util = testing::family(reg.gauge_f64("system.cpu.utilization").labels(["cpu"]));
    util.with(&["0"]).set(0.2);
    util.with(&["1"]).set(0.6);
    util.with(&["2"]).set(0.4);
    let threads = reg.gauge("threads").labels(["pool"]).build().unwrap();
    threads.with(&["a"]).set(3);
    threads.with(&["b"]).set(4);
    let read = |how| {
        read(
            &reg,
            Temporality::Cumulative,
            Rule::new().keep_labels::<&str>([]).gauges(how).into(),
        )
    };
    let mean = read(GaugeAggregation::Mean);
    assert!((value(&mean, "system.cpu.utilization", &[]) - 0.4).abs() < 1e-12);
    assert_eq!(value(&mean, "threads", &[]), 3.5);
    let f = mean.family("threads").unwrap();
    assert_eq!(f.meta.number_kind(), NumberKind::F64);
    assert!(matches!(f.series[0].point.number(), Some(Number::F64(_))));
    let sum = read(GaugeAggregation::Sum);
    assert!((value(&sum, "system.cpu.utilization", &[]) - 1.2).abs() < 1e-12);
    assert_eq!(
        sum.point("threads", &[]).unwrap().number(),
        Some(Number::I64(7))
    );
    assert_eq!(
        value(&read(GaugeAggregation::Min), "system.cpu.utilization", &[]),
        0.2
    );
    assert_eq!(
        value(&read(GaugeAggregation::Max), "system.cpu.utilization", &[]),
        0.6
    );
    assert_eq!(GaugeAggregation::parse("max"), Some(GaugeAggregation::Max));
    assert_eq!(GaugeAggregation::parse("avg"), None);
}

#[test]
fn aggregated_deltas_are_the_sum_of_the_members_changes() {
    let reg = Registry::new();
    let c = reg.counter("requests").labels(["pod"]).build().unwrap();
    let mut reader = reg
        .reader(Temporality::Delta)
        .with_selection(Rule::new().drop_labels(["pod"]).into());
    c.with(&["a"]).add(10);
    c.with(&["b"]).add(5);
    assert_eq!(value(&reader.collect(), "requests", &[]), 15.0);
    c.with(&["a"]).add(1);
    c.with(&["c"]).add(2); // a new member mid-way counts from its creation
    let s = reader.collect();
    assert_eq!(value(&s, "requests", &[]), 3.0);
    assert!(s.is_delta(s.family("requests").unwrap()));
    assert_eq!(s.family("requests").unwrap().meta.kind(), Kind::Counter);
}

#[test]
fn the_overflow_series_is_never_merged_into_a_labelled_one() {
    let reg = Registry::new();
    let c = testing::family(reg.counter("hits").labels(["key", "region"]).max_series(2));
    c.with(&["a", "eu"]).add(1);
    c.with(&["b", "eu"]).add(1);
    c.with(&["c", "eu"]).add(1); // past the limit: the overflow series
    let s = read(
        &reg,
        Temporality::Cumulative,
        Rule::new().drop_labels(["key"]).into(),
    );
    let f = s.family("hits").unwrap();
    assert_eq!(f.series.len(), 2, "{f:#?}");
    assert_eq!(value(&s, "hits", &[("region", "eu")]), 2.0);
    assert!(f.series.iter().any(|x| x.is_overflow()));
}

#[test]
fn the_first_rule_that_takes_a_metric_decides_and_untaken_ones_are_not_sent() {
    let reg = Registry::new();
    let cpu = testing::family(
        reg.gauge_f64("system.cpu.utilization")
            .labels(["cpu", "state"]),
    );
    cpu.with(&["0", "user"]).set(0.5);
    cpu.with(&["1", "user"]).set(0.3);
    let net = testing::family(
        reg.counter("system.network.io")
            .labels(["device", "direction"]),
    );
    net.with(&["eth0", "transmit"]).add(100);
    net.with(&["lo", "transmit"]).add(5);
    testing::handle(reg.counter("system.paging.faults")).add(1);
    let app = testing::family(reg.counter("checkout.orders").labels(["cpu"]));
    app.with(&["0"]).add(2);
    app.with(&["1"]).add(3);
    let selection = Selection::new()
        .rule(
            Rule::new()
                .include([
                    Pattern::glob("system.cpu.utilization"),
                    Pattern::glob("system.network.io"),
                ])
                .drop_labels(["cpu", "device"]),
        )
        .rule(Rule::new().exclude([Pattern::glob("system.*"), Pattern::glob("sonde.*")]));
    let s = read(&reg, Temporality::Cumulative, selection);
    assert_eq!(
        names(&s),
        [
            "checkout.orders",
            "system.cpu.utilization",
            "system.network.io"
        ]
    );
    assert!((value(&s, "system.cpu.utilization", &[("state", "user")]) - 0.4).abs() < 1e-12);
    assert_eq!(
        value(&s, "system.network.io", &[("direction", "transmit")]),
        105.0
    );
    // The second rule took the application's metric: its `cpu` label is untouched.
    assert_eq!(value(&s, "checkout.orders", &[("cpu", "1")]), 3.0);
    assert_eq!(s.family("checkout.orders").unwrap().series.len(), 2);
}

#[test]
fn without_labels_leaves_out_families_that_carry_them_all() {
    let reg = Registry::new();
    reg.counter("node_cpu_seconds")
        .labels(["cpu", "job", "instance"])
        .build()
        .unwrap()
        .with(&["0", "node", "h:9100"])
        .add(1);
    reg.counter("orders")
        .labels(["job"])
        .build()
        .unwrap()
        .with(&["shop"])
        .add(1);
    let s = read(
        &reg,
        Temporality::Cumulative,
        Rule::new().without_labels(["job", "instance"]).into(),
    );
    let mine = own_names(&s);
    assert_eq!(
        mine,
        ["orders"],
        "a family with only one of the two is kept"
    );
}
