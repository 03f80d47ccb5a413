//! Property tests: the parser and the ingest never panic, whatever the bytes, and well-formed
//! lines round-trip.

use proptest::prelude::*;
use sonde_core::Registry;
use sonde_core::name::{validate_label_name, validate_metric_name};
use sonde_statsd::{
    Ingest, Mapper, MappingRule, MetricType, Sample, parse_line, parse_packet, sanitize_label_name,
    sanitize_metric_name,
};

#[derive(Debug, Clone)]
struct Line {
    name: String,
    metric_type: MetricType,
    /// (number, written with a sign)
    values: Vec<(f64, bool)>,
    member: String,
    rate: Option<f64>,
    tags: Vec<(String, Option<String>)>,
    container: Option<String>,
    timestamp: Option<u64>,
    extension: Option<String>,
}

impl Line {
    fn render(&self) -> String {
        let mut s = format!("{}:", self.name);
        if self.metric_type == MetricType::Set {
            s.push_str(&self.member);
        } else {
            let values: Vec<String> = self
                .values
                .iter()
                .map(|&(v, signed)| {
                    if signed && !v.is_sign_negative() {
                        format!("+{v}")
                    } else {
                        format!("{v}")
                    }
                })
                .collect();
            s.push_str(&values.join(":"));
        }
        s.push('|');
        s.push_str(self.metric_type.as_str());
        // Extensions in a fixed order; the parser accepts any.
        if let Some(r) = self.rate {
            s.push_str(&format!("|@{r}"));
        }
        if let Some(e) = &self.extension {
            s.push_str(&format!("|{e}"));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self
                .tags
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}:{v}"),
                    None => k.clone(),
                })
                .collect();
            s.push_str(&format!("|#{}", tags.join(",")));
        }
        if let Some(c) = &self.container {
            s.push_str(&format!("|c:{c}"));
        }
        if let Some(t) = self.timestamp {
            s.push_str(&format!("|T{t}"));
        }
        s
    }
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u64..1_000_000).prop_map(|n| n as f64),
        -1e6..1e6f64,
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    ]
}

fn metric_type() -> impl Strategy<Value = MetricType> {
    proptest::sample::select(MetricType::ALL.to_vec())
}

fn line() -> impl Strategy<Value = Line> {
    (
        "[a-zA-Z_][a-zA-Z0-9_.\\-]{0,30}",
        metric_type(),
        proptest::collection::vec((number(), any::<bool>()), 1..4),
        "[a-zA-Z0-9_.:\\-]{1,12}",
        proptest::option::of((1u32..=1000).prop_map(|n| f64::from(n) / 1000.0)),
        proptest::collection::vec(
            (
                "[a-z][a-z0-9_.\\-]{0,10}",
                proptest::option::of("[a-zA-Z0-9_./:\\-]{0,10}"),
            ),
            0..5,
        ),
        proptest::option::of("[a-f0-9]{1,12}"),
        proptest::option::of(any::<u64>()),
        proptest::option::of(prop_oneof![Just("card:low"), Just("e:x"), Just("x")]),
    )
        .prop_map(
            |(name, metric_type, values, member, rate, tags, container, timestamp, ext)| {
                let values = values
                    .into_iter()
                    .map(|(v, signed)| {
                        let v = if metric_type == MetricType::Counter {
                            v.abs()
                        } else {
                            v
                        };
                        (v, signed || v.is_sign_negative())
                    })
                    .collect();
                Line {
                    name,
                    metric_type,
                    values,
                    member,
                    rate,
                    tags,
                    container,
                    timestamp,
                    extension: ext.map(str::to_owned),
                }
            },
        )
}

fn check_round_trip(line: &Line, sample: Sample<'_>) {
    let text = line.render();
    let Sample::Metric(m) = sample else {
        panic!("{text:?} is not a metric")
    };
    assert_eq!(m.name, line.name, "{text}");
    assert_eq!(m.metric_type, line.metric_type, "{text}");
    if line.metric_type == MetricType::Set {
        assert_eq!(m.set_member(), Some(line.member.as_str()), "{text}");
        assert_eq!(m.values().count(), 0);
    } else {
        let got: Vec<(f64, bool)> = m.values().map(|v| (v.number, v.signed)).collect();
        assert_eq!(got.len(), line.values.len(), "{text}");
        for (g, w) in got.iter().zip(&line.values) {
            assert_eq!(g.0.to_bits(), w.0.to_bits(), "{text}");
            assert_eq!(g.1, w.1, "{text}");
        }
    }
    assert_eq!(m.sample_rate, line.rate.unwrap_or(1.0), "{text}");
    let tags: Vec<(String, Option<String>)> = m
        .tags
        .iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
    assert_eq!(tags, line.tags, "{text}");
    assert_eq!(m.container, line.container.as_deref(), "{text}");
    assert_eq!(m.timestamp, line.timestamp, "{text}");
}

fn small_ingest() -> Ingest {
    let mapper = Mapper::new([
        MappingRule::new("*.*").name("m.$1").label("second", "$2"),
        MappingRule::new("drop.*").drop(),
    ])
    .unwrap();
    Ingest::new(Registry::new())
        .mapper(mapper)
        .max_metrics(20)
        .max_series(5)
        .max_labels(4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_line(&bytes);
        let mut n = 0usize;
        parse_packet(&bytes, |r| {
            n += 1;
            if let Err(e) = r {
                assert!(!e.reason().is_empty());
            }
        });
        let mut ingest = small_ingest();
        assert_eq!(ingest.ingest_packet(&bytes), n);
        let _ = ingest.registry().snapshot();
    }

    #[test]
    fn statsd_like_text_never_panics(text in "([a-z_.#@|:,0-9+\\-eE{}]{0,40}\n?){1,12}") {
        let mut ingest = small_ingest();
        ingest.ingest_packet(text.as_bytes());
        ingest.rotate_sets();
        let _ = ingest.registry().snapshot();
    }

    #[test]
    fn valid_lines_round_trip(line in line()) {
        let text = line.render();
        let sample = parse_line(text.as_bytes());
        prop_assert!(sample.is_ok(), "{:?}: {:?}", text, sample);
        check_round_trip(&line, sample.unwrap());
    }

    #[test]
    fn packets_of_valid_lines_round_trip(lines in proptest::collection::vec(line(), 1..8), crlf in any::<bool>()) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let packet = lines.iter().map(Line::render).collect::<Vec<_>>().join(sep) + sep;
        let mut got = Vec::new();
        parse_packet(packet.as_bytes(), |r| got.push(r));
        prop_assert_eq!(got.len(), lines.len());
        for (line, r) in lines.iter().zip(got) {
            check_round_trip(line, r.unwrap());
        }
        let mut ingest = small_ingest();
        ingest.ingest_packet(packet.as_bytes());
        let _ = ingest.registry().snapshot();
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        line in line(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = line.render().into_bytes();
        for (at, byte, op) in edits {
            let at = at % (bytes.len() + 1);
            match op {
                0 => bytes.insert(at, byte),
                1 if at < bytes.len() => { bytes.remove(at); }
                _ if at < bytes.len() => bytes[at] = byte,
                _ => bytes.push(byte),
            }
        }
        let _ = parse_line(&bytes);
        let mut ingest = small_ingest();
        ingest.ingest_packet(&bytes);
        ingest.ingest_packet(&bytes);
        let _ = ingest.registry().snapshot();
    }

    #[test]
    fn sanitized_names_are_valid(name in "\\PC{1,40}", key in "\\PC{0,40}") {
        let s = sanitize_metric_name(&name);
        prop_assert!(validate_metric_name(&s).is_ok(), "{:?} -> {:?}", name, s);
        if let Some(k) = sanitize_label_name(&key) {
            prop_assert!(validate_label_name("m", &k, &[]).is_ok(), "{:?} -> {:?}", key, k);
        }
    }

    /// What a delta consumer receives adds up to what was sent, in any order of tag sets,
    /// including families being widened.
    #[test]
    fn counter_totals_survive_widening(
        lines in proptest::collection::vec(
            (0usize..2, proptest::sample::subsequence(vec!["x", "y", "z"], 0..=3), 0u32..3, 0u32..100),
            1..40,
        )
    ) {
        let registry = Registry::new();
        let mut ingest = Ingest::new(registry.clone());
        let mut reader = registry.reader(sonde_core::Temporality::Delta);
        let mut delivered = [0f64; 2];
        let mut expected = [0u64; 2];
        for (name, keys, value_of_tags, v) in &lines {
            let tags: Vec<String> = keys.iter().map(|k| format!("{k}:{value_of_tags}")).collect();
            let line = if tags.is_empty() {
                format!("n{name}:{v}|c")
            } else {
                format!("n{name}:{v}|c|#{}", tags.join(","))
            };
            ingest.ingest_packet(line.as_bytes());
            expected[*name] += u64::from(*v);
            let snap = reader.collect();
            for (i, d) in delivered.iter_mut().enumerate() {
                if let Some(f) = snap.family(&format!("n{i}")) {
                    *d += f.series.iter().map(|s| s.point.number().unwrap().as_f64()).sum::<f64>();
                }
            }
        }
        for (i, want) in expected.iter().enumerate() {
            prop_assert_eq!(delivered[i], *want as f64);
        }
    }

    /// Issue #14: whatever finite values arrive (huge ones, at tiny sample rates, added to
    /// gauges), no counter, gauge or histogram sum ever becomes infinite or NaN.
    #[test]
    fn huge_values_never_make_anything_non_finite(
        lines in proptest::collection::vec(
            (
                0usize..3,
                proptest::sample::select(vec!["c", "g", "h", "ms", "d"]),
                prop_oneof![
                    (1e300..f64::MAX).prop_map(|v| format!("{v:e}")),
                    (-f64::MAX..-1e300).prop_map(|v| format!("{v:e}")),
                    (1e300..f64::MAX).prop_map(|v| format!("+{v:e}")),
                    number().prop_map(|v| format!("{v}")),
                ],
                proptest::option::of(proptest::sample::select(vec!["0.001", "0.5", "1"])),
            ),
            1..30,
        )
    ) {
        let registry = Registry::new();
        let mut ingest = Ingest::new(registry.clone());
        for (name, t, value, rate) in &lines {
            let rate = rate.map(|r| format!("|@{r}")).unwrap_or_default();
            let line = format!("m{name}.{t}:{value}|{t}{rate}");
            ingest.ingest_packet(line.as_bytes());
        }
        for f in &registry.snapshot().families {
            for series in &f.series {
                let v = match &series.point {
                    sonde_core::Point::Histogram(h) => h.sum(),
                    p => p.number().unwrap().as_f64(),
                };
                prop_assert!(v.is_finite(), "{} = {v} after {lines:?}", f.meta.name());
            }
        }
    }
}
