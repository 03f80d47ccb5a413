//! Snapshots to CloudWatch datums: what PutMetricData, the EMF writer and the cost preview share.
//!
//! Counters become their change over the interval, gauges and up-down counters their current
//! value, histograms `Values`/`Counts` pairs (so CloudWatch computes percentiles) whose smallest
//! and largest values are the exact minimum and maximum. Everything is validated here, before
//! any request: a datum CloudWatch would reject is never built, and what is left out is counted
//! by reason.

use std::collections::BTreeMap;

use sonde_core::{FamilySnapshot, HistogramPoint, Kind, Point, Resource, Snapshot, Unit};

/// Most `Values` per datum (CloudWatch's limit).
pub const MAX_VALUES_PER_DATUM: usize = 150;
/// Most dimensions per datum (CloudWatch's limit).
pub const MAX_DIMENSIONS: usize = 30;
/// Most datums per PutMetricData request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1000;
/// Most bytes per PutMetricData request.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest magnitude CloudWatch accepts.
pub const MAX_MAGNITUDE: f64 = 1.7668470647783843e108; // 2^360

/// What a datum carries.
#[derive(Debug, Clone, PartialEq)]
pub enum DatumValue {
    /// One value.
    Value(f64),
    /// A distribution: unique values and how often each occurred (at most 150 pairs).
    Values {
        /// Unique values.
        values: Vec<f64>,
        /// Occurrences of each value.
        counts: Vec<f64>,
    },
}

/// One CloudWatch metric datum, independent of the SDK.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// The metric name (the family's name).
    pub name: String,
    /// Dimensions, sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// The value or distribution.
    pub value: DatumValue,
    /// The CloudWatch unit name (`Seconds`, `Bytes`, `Count`, `None`...).
    pub unit: &'static str,
    /// 1 (high resolution) or 60.
    pub storage_resolution: i32,
    /// Milliseconds since the epoch.
    pub timestamp_ms: u64,
}

impl Datum {
    /// Bytes this datum adds to a request body, an upper bound for the SDK's CBOR encoding (and
    /// close to it).
    pub fn encoded_size_bound(&self) -> usize {
        let dims: usize = self
            .dimensions
            .iter()
            .map(|(n, v)| n.len() + v.len() + 24)
            .sum();
        let values = match &self.value {
            DatumValue::Value(_) => 16,
            DatumValue::Values { values, .. } => 32 + values.len() * 18,
        };
        96 + self.name.len() + dims + values
    }

    /// Number of observations the datum stands for (1 for a single value).
    pub fn sample_count(&self) -> f64 {
        match &self.value {
            DatumValue::Value(_) => 1.0,
            DatumValue::Values { counts, .. } => counts.iter().sum(),
        }
    }
}

/// Which labels become dimensions, and which rollups are sent.
#[derive(Debug, Clone)]
pub struct Dimensions {
    /// Only these labels (all when `None`).
    pub allow: Option<Vec<String>>,
    /// Never these labels.
    pub deny: Vec<String>,
    /// Resource attributes added as dimensions to every datum (default `service.name`).
    pub resource: Vec<String>,
    /// Whether each series is sent with all its (allowed) labels.
    pub full: bool,
    /// Extra dimension sets: each series is also aggregated across the labels not in the set
    /// (counters summed, gauges and histograms as distributions). `[]` is the metric without
    /// dimensions.
    pub rollups: Vec<Vec<String>>,
}

impl Default for Dimensions {
    fn default() -> Self {
        Dimensions {
            allow: None,
            deny: Vec::new(),
            resource: vec!["service.name".into()],
            full: true,
            rollups: Vec::new(),
        }
    }
}

/// Conversion settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Dimension selection and rollups.
    pub dimensions: Dimensions,
    /// 60 (default) or 1.
    pub storage_resolution: i32,
    /// Most `Values` per histogram series per interval: more non-empty grid cells are merged down
    /// to this many (default 150, one datum per series); above 150 a series is split into several
    /// datums, which CloudWatch aggregates.
    pub max_values_per_series: usize,
    /// Whether counters that did not change are sent (as 0; default true, so alarms see 0
    /// rather than missing data).
    pub send_unchanged_counters: bool,
    /// Whether sonde's own `sonde.*` metrics (series counts, exporter health) are sent too
    /// (default false: each CloudWatch metric is billed, and they are on `/metrics` anyway).
    pub self_metrics: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dimensions: Dimensions::default(),
            storage_resolution: 60,
            max_values_per_series: MAX_VALUES_PER_DATUM,
            send_unchanged_counters: true,
            self_metrics: false,
        }
    }
}

/// Datums of one collection, and what was left out.
#[derive(Debug, Default)]
pub struct Converted {
    /// Valid datums.
    pub datums: Vec<Datum>,
    /// Points left out, by reason (`invalid_value`, `too_many_dimensions`).
    pub dropped: BTreeMap<&'static str, u64>,
}

/// The CloudWatch unit for a family.
pub fn cloudwatch_unit(unit: &Unit, kind: Kind) -> &'static str {
    match unit {
        Unit::Seconds => "Seconds",
        Unit::Milliseconds => "Milliseconds",
        Unit::Bytes => "Bytes",
        Unit::Percent => "Percent",
        Unit::Count(_) => "Count",
        Unit::Custom(s) => match s.as_ref() {
            "us" => "Microseconds",
            "By/s" => "Bytes/Second",
            "bit" => "Bits",
            "bit/s" => "Bits/Second",
            "KiBy" | "kBy" => "Kilobytes",
            "MiBy" | "MBy" => "Megabytes",
            "GiBy" | "GBy" => "Gigabytes",
            s if s.starts_with('{') && s.ends_with("}/s") => "Count/Second",
            _ => "None",
        },
        Unit::None if kind == Kind::Counter => "Count",
        _ => "None",
    }
}

/// Makes a string a valid CloudWatch name or dimension value: ASCII only (others become `_`),
/// at most `max` bytes; `None` when empty.
pub fn sanitize(s: &str, max: usize) -> Option<String> {
    let out = sonde_core::name::cloudwatch_text(s, max);
    (!out.is_empty()).then_some(out)
}

fn valid_value(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

/// The (value, count) pairs of a histogram read: one per non-empty grid cell at its
/// representative value, merged down to `max_pairs`, with the smallest and largest value set to
/// the exact minimum and maximum (a cell holding more than one observation is split).
pub fn histogram_pairs(h: &HistogramPoint, max_pairs: usize) -> Vec<(f64, f64)> {
    if h.count() == 0 {
        return Vec::new();
    }
    // Two pairs are kept free for the exact extremes.
    let mut pairs = h.value_counts(max_pairs.saturating_sub(2).max(1));
    if let Some(min) = h.min()
        && let Some(first) = pairs.first_mut()
        && first.0 != min
    {
        if first.1 > 1 {
            first.1 -= 1;
            pairs.insert(0, (min, 1));
        } else {
            first.0 = min;
        }
    }
    if let Some(max) = h.max()
        && let Some(last) = pairs.last_mut()
        && last.0 != max
    {
        if last.1 > 1 {
            last.1 -= 1;
            pairs.push((max, 1));
        } else {
            last.0 = max;
        }
    }
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(pairs.len());
    for (v, c) in pairs {
        match out.last_mut() {
            Some(last) if last.0 == v => last.1 += c as f64,
            _ => out.push((v, c as f64)),
        }
    }
    out
}

/// Converts a delta snapshot (gauges and up-down counters read as levels).
pub fn convert(snapshot: &Snapshot, resource: &Resource, settings: &Settings) -> Converted {
    let mut out = Converted::default();
    let timestamp_ms = snapshot.time_unix_nanos / 1_000_000;
    let resource_dims: Vec<(String, String)> = settings
        .dimensions
        .resource
        .iter()
        .filter_map(|k| {
            let v = resource.get(k)?;
            Some((sanitize(k, 255)?, sanitize(v, 1024)?))
        })
        .collect();
    for family in &snapshot.families {
        if !settings.self_metrics && family.meta.name().starts_with("sonde.") {
            continue;
        }
        convert_family(
            family,
            snapshot.is_delta(family),
            timestamp_ms,
            &resource_dims,
            settings,
            &mut out,
        );
    }
    out
}

/// A value of one series, ready to aggregate.
enum Sample {
    Number(f64),
    Pairs(Vec<(f64, f64)>),
}

fn convert_family(
    family: &FamilySnapshot,
    delta: bool,
    timestamp_ms: u64,
    resource_dims: &[(String, String)],
    settings: &Settings,
    out: &mut Converted,
) {
    let kind = family.meta.kind();
    let Some(name) = sanitize(family.meta.name(), 255) else {
        return;
    };
    let unit = cloudwatch_unit(family.meta.unit(), kind);
    let dims_cfg = &settings.dimensions;
    // Histograms of a rollup merge their pairs; budget per series before merging.
    let max_pairs = settings.max_values_per_series.max(1);
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<Sample>> = BTreeMap::new();
    for s in &family.series {
        let sample = match &s.point {
            Point::Counter(n) => {
                let v = n.as_f64();
                if delta && v == 0.0 && !settings.send_unchanged_counters {
                    continue;
                }
                Sample::Number(v)
            }
            Point::UpDownCounter(n) | Point::Gauge(n) => Sample::Number(n.as_f64()),
            Point::Histogram(h) => {
                if h.count() == 0 {
                    continue;
                }
                Sample::Pairs(histogram_pairs(h, max_pairs))
            }
        };
        let valid = match &sample {
            Sample::Number(v) => valid_value(*v),
            Sample::Pairs(p) => p.iter().all(|(v, c)| valid_value(*v) && c.is_finite()),
        };
        if !valid {
            *out.dropped.entry("invalid_value").or_default() += 1;
            continue;
        }
        let labels: Vec<(String, String)> = family
            .labels(s)
            .into_iter()
            .filter(|(k, _)| {
                dims_cfg
                    .allow
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|x| x == k))
                    && !dims_cfg.deny.iter().any(|x| x == k)
            })
            .filter_map(|(k, v)| Some((sanitize(k, 255)?, sanitize(v, 1024)?)))
            .collect();
        let mut sets: Vec<Vec<(String, String)>> = Vec::new();
        if dims_cfg.full {
            sets.push(labels.clone());
        }
        for rollup in &dims_cfg.rollups {
            let subset: Vec<_> = labels
                .iter()
                .filter(|(k, _)| rollup.iter().any(|r| r == k))
                .cloned()
                .collect();
            // A series lacking a label of the set does not belong to that rollup.
            if subset.len() == rollup.len() && !sets.contains(&subset) {
                sets.push(subset);
            }
        }
        for mut dims in sets {
            for (k, v) in resource_dims {
                if !dims.iter().any(|(n, _)| n == k) {
                    dims.push((k.clone(), v.clone()));
                }
            }
            if dims.len() > MAX_DIMENSIONS {
                *out.dropped.entry("too_many_dimensions").or_default() += 1;
                continue;
            }
            dims.sort();
            groups.entry(dims).or_default().push(clone_sample(&sample));
        }
    }
    for (dims, samples) in groups {
        let value = match kind {
            // Counters roll up as sums.
            Kind::Counter => DatumValue::Value(
                samples
                    .iter()
                    .map(|s| match s {
                        Sample::Number(v) => *v,
                        Sample::Pairs(_) => 0.0,
                    })
                    .sum(),
            ),
            Kind::Gauge | Kind::UpDownCounter if samples.len() == 1 => match &samples[0] {
                Sample::Number(v) => DatumValue::Value(*v),
                Sample::Pairs(_) => continue,
            },
            // Several gauges, or histograms: a distribution.
            _ => {
                let mut merged: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
                for s in &samples {
                    let pairs: Vec<(f64, f64)> = match s {
                        Sample::Number(v) => vec![(*v, 1.0)],
                        Sample::Pairs(p) => p.clone(),
                    };
                    for (v, c) in pairs {
                        merged.entry(order_key(v)).or_insert((v, 0.0)).1 += c;
                    }
                }
                let pairs: Vec<(f64, f64)> = merged.into_values().collect();
                for chunk in pairs.chunks(MAX_VALUES_PER_DATUM) {
                    out.datums.push(Datum {
                        name: name.clone(),
                        dimensions: dims.clone(),
                        value: DatumValue::Values {
                            values: chunk.iter().map(|p| p.0).collect(),
                            counts: chunk.iter().map(|p| p.1).collect(),
                        },
                        unit,
                        storage_resolution: settings.storage_resolution,
                        timestamp_ms,
                    });
                }
                continue;
            }
        };
        out.datums.push(Datum {
            name: name.clone(),
            dimensions: dims,
            value,
            unit,
            storage_resolution: settings.storage_resolution,
            timestamp_ms,
        });
    }
}

fn clone_sample(s: &Sample) -> Sample {
    match s {
        Sample::Number(v) => Sample::Number(*v),
        Sample::Pairs(p) => Sample::Pairs(p.clone()),
    }
}

/// A key that sorts finite floats in numeric order.
fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Splits datums into PutMetricData requests: at most 1000 datums and 1 MB each, as few as
/// possible (datums keep their order).
pub fn batches(datums: Vec<Datum>, max_bytes: usize) -> Vec<Vec<Datum>> {
    let mut out: Vec<Vec<Datum>> = Vec::new();
    let mut current: Vec<Datum> = Vec::new();
    // Namespace and framing.
    let base = 512;
    let mut bytes = base;
    for d in datums {
        let size = d.encoded_size_bound();
        if !current.is_empty()
            && (current.len() >= MAX_DATUMS_PER_REQUEST || bytes + size > max_bytes)
        {
            out.push(std::mem::take(&mut current));
            bytes = base;
        }
        bytes += size;
        current.push(d);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Writes datums for a durable queue (read back by [`decode_datums`]): lengths and numbers
/// little endian, strings length-prefixed.
pub fn encode_datums(datums: &[Datum], out: &mut Vec<u8>) {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&(datums.len() as u32).to_le_bytes());
    for d in datums {
        text(out, &d.name);
        out.extend_from_slice(&(d.dimensions.len() as u32).to_le_bytes());
        for (k, v) in &d.dimensions {
            text(out, k);
            text(out, v);
        }
        text(out, d.unit);
        out.extend_from_slice(&d.storage_resolution.to_le_bytes());
        out.extend_from_slice(&d.timestamp_ms.to_le_bytes());
        match &d.value {
            DatumValue::Value(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
            DatumValue::Values { values, counts } => {
                out.push(1);
                out.extend_from_slice(&(values.len() as u32).to_le_bytes());
                for v in values.iter().chain(counts) {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
}

/// Reads what [`encode_datums`] wrote; `None` if the bytes are not that. `units` are the
/// unit names a datum may carry (an unknown one becomes `None`).
pub fn decode_datums(bytes: &[u8], units: &'static [&'static str]) -> Option<Vec<Datum>> {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn f64(&mut self) -> Option<f64> {
            Some(f64::from_bits(self.u64()?))
        }
        fn text(&mut self) -> Option<String> {
            let n = self.u32()? as usize;
            String::from_utf8(self.take(n)?.to_vec()).ok()
        }
    }
    let mut r = R(bytes);
    let n = r.u32()? as usize;
    // Every datum takes at least 29 bytes: a corrupt count cannot allocate much.
    let mut out = Vec::with_capacity(n.min(bytes.len() / 29));
    for _ in 0..n {
        let name = r.text()?;
        let ndims = r.u32()? as usize;
        let mut dimensions = Vec::with_capacity(ndims.min(30));
        for _ in 0..ndims {
            dimensions.push((r.text()?, r.text()?));
        }
        let unit = r.text()?;
        let unit = units
            .iter()
            .find(|u| **u == unit)
            .copied()
            .unwrap_or("None");
        let storage_resolution = i32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let timestamp_ms = r.u64()?;
        let value = match r.take(1)?[0] {
            0 => DatumValue::Value(r.f64()?),
            1 => {
                let m = r.u32()? as usize;
                if m > r.0.len() / 16 {
                    return None;
                }
                let values = (0..m).map(|_| r.f64()).collect::<Option<Vec<_>>>()?;
                let counts = (0..m).map(|_| r.f64()).collect::<Option<Vec<_>>>()?;
                DatumValue::Values { values, counts }
            }
            _ => return None,
        };
        out.push(Datum {
            name,
            dimensions,
            value,
            unit,
            storage_resolution,
            timestamp_ms,
        });
    }
    r.0.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_core::{Registry, Temporality};

    #[test]
    fn histogram_pairs_keep_count_and_exact_extremes() {
        let reg = Registry::new();
        let h = reg.histogram("h").build().unwrap().handle();
        let values: Vec<f64> = (1..=5000).map(|i| 0.0001 * f64::from(i) * 1.7).collect();
        for v in &values {
            h.observe(*v);
        }
        let p = h.read();
        for max in [150, 20, 3] {
            let pairs = histogram_pairs(&p, max);
            assert!(pairs.len() <= max, "{} > {max}", pairs.len());
            assert_eq!(pairs.iter().map(|p| p.1).sum::<f64>(), 5000.0);
            assert_eq!(pairs[0].0, values[0]);
            assert_eq!(pairs.last().unwrap().0, *values.last().unwrap());
            assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
            let sum: f64 = pairs.iter().map(|(v, c)| v * c).sum();
            let exact: f64 = values.iter().sum();
            // At full resolution the sum is within the grid's error; merged, it degrades.
            if max == 150 {
                assert!((sum / exact - 1.0).abs() < 0.015, "{max}: {sum} vs {exact}");
            }
        }
    }

    #[test]
    fn datums_are_valid_and_rollups_aggregate() {
        let reg = Registry::new();
        let c = sonde_core::testing::labelled_counter(&reg, "requests", &["route", "code", "bad"]);
        c.with(&["/a", "200", "x"]).add(3);
        c.with(&["/a", "500", "x"]).add(1);
        c.with(&["/b", "200", "ünï"]).add(5);
        let g = reg.gauge_f64("temp").labels(["room"]).build().unwrap();
        g.with(&["a"]).set(f64::NAN);
        g.with(&["b"]).set(20.0);
        let mut reader = reg.reader(Temporality::Delta);
        let snap = reader.collect();
        let mut settings = Settings::default();
        settings.dimensions.deny = vec!["bad".into()];
        settings.dimensions.rollups = vec![vec!["route".into()], vec![]];
        let resource = Resource::empty().with("service.name", "svc");
        let out = convert(&snap, &resource, &settings);
        assert_eq!(out.dropped.get("invalid_value"), Some(&1));
        let find = |name: &str, dims: &[(&str, &str)]| {
            let mut want: Vec<(String, String)> = dims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            want.push(("service.name".into(), "svc".into()));
            want.sort();
            out.datums
                .iter()
                .find(|d| d.name == name && d.dimensions == want)
                .map(|d| d.value.clone())
        };
        assert_eq!(
            find("requests", &[("route", "/a"), ("code", "200")]),
            Some(DatumValue::Value(3.0))
        );
        assert_eq!(
            find("requests", &[("route", "/a")]),
            Some(DatumValue::Value(4.0))
        );
        assert_eq!(find("requests", &[]), Some(DatumValue::Value(9.0)));
        assert_eq!(
            find("temp", &[("room", "b")]),
            Some(DatumValue::Value(20.0))
        );
        for d in &out.datums {
            assert!(d.dimensions.len() <= MAX_DIMENSIONS);
            assert!(
                d.dimensions
                    .iter()
                    .all(|(k, v)| k.is_ascii() && v.is_ascii())
            );
            assert_eq!(
                d.unit,
                if d.name == "requests" {
                    "Count"
                } else {
                    "None"
                }
            );
        }
    }

    #[test]
    fn batches_respect_both_limits() {
        let d = |i: usize, values: usize| Datum {
            name: format!("m{i}"),
            dimensions: vec![("k".into(), "v".repeat(100))],
            value: if values == 0 {
                DatumValue::Value(1.0)
            } else {
                DatumValue::Values {
                    values: (0..values).map(|v| v as f64).collect(),
                    counts: vec![1.0; values],
                }
            },
            unit: "None",
            storage_resolution: 60,
            timestamp_ms: 0,
        };
        let small: Vec<_> = (0..2500).map(|i| d(i, 0)).collect();
        let b = batches(small, MAX_REQUEST_BYTES);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        let big: Vec<_> = (0..1000).map(|i| d(i, 150)).collect();
        let b = batches(big, MAX_REQUEST_BYTES);
        assert!(b.len() >= 3);
        for batch in &b {
            let bytes: usize = batch.iter().map(Datum::encoded_size_bound).sum();
            assert!(bytes + 512 <= MAX_REQUEST_BYTES);
        }
    }

    #[test]
    fn datums_round_trip_through_the_durable_encoding() {
        let datums = vec![
            Datum {
                name: "http.server.request.duration".into(),
                dimensions: vec![
                    ("route".into(), "/a".into()),
                    ("service".into(), "ü".into()),
                ],
                value: DatumValue::Values {
                    values: vec![0.1, 0.25],
                    counts: vec![3.0, 1.0],
                },
                unit: "Seconds",
                storage_resolution: 60,
                timestamp_ms: 1_700_000_000_123,
            },
            Datum {
                name: "up".into(),
                dimensions: vec![],
                value: DatumValue::Value(-1.5),
                unit: "Count",
                storage_resolution: 1,
                timestamp_ms: 5,
            },
        ];
        let units: &'static [&'static str] = &["Count", "Seconds", "None"];
        let mut buf = Vec::new();
        encode_datums(&datums, &mut buf);
        assert_eq!(decode_datums(&buf, units), Some(datums));
        // Cut or padded bytes are not datums.
        for n in 0..buf.len() {
            assert_eq!(decode_datums(&buf[..n], units), None, "cut at {n}");
        }
        buf.push(0);
        assert_eq!(decode_datums(&buf, units), None);
        assert_eq!(decode_datums(&[255, 255, 255, 255], units), None);
    }
}
