//! The Prometheus protobuf exposition (`application/vnd.google.protobuf;
//! proto=io.prometheus.client.MetricFamily; encoding=delimited`): length-delimited
//! `MetricFamily` messages, the one format that carries native histograms. Decoded with the
//! message types sonde's own exporter encodes with, into the same [`Exposition`] the text
//! parser gives.

use std::collections::BTreeMap;

use prost::Message;
use sonde_prometheus::proto::pb;

use crate::text::{Exposition, Family, Kind, Labels, Native, Series, Unreadable};

/// Parses a delimited `MetricFamily` stream. A message that does not decode ends the reading
/// (the framing is lost after it): what came before is kept and the rest is reported in
/// `skipped`; a body of which nothing decodes is an error.
pub fn parse_protobuf(body: &[u8]) -> Result<Exposition, String> {
    parse_protobuf_at_most(body, usize::MAX).map_err(|e| e.to_string())
}

/// [`parse_protobuf`], stopping at the first family that brings the samples (as Prometheus
/// counts them: a bucket, `_sum` and `_count` each) past `max_samples`.
pub(crate) fn parse_protobuf_at_most(
    mut body: &[u8],
    max_samples: usize,
) -> Result<Exposition, Unreadable> {
    let mut out = Exposition::default();
    let mut samples = 0usize;
    let mut index = 0usize;
    while !body.is_empty() {
        // Count the family's metrics before decoding it: one message of millions of empty
        // metrics would otherwise be held whole before the limit could say no. A metric field
        // takes at least 2 bytes, so only a message long enough to hold more than the room
        // left is walked: a body within the limit is not read twice.
        let room = max_samples.saturating_sub(samples);
        let mut framing = body;
        let long =
            prost::encoding::decode_varint(&mut framing).is_ok_and(|len| len / 2 > room as u64);
        if long && metrics_in_next(body).is_some_and(|n| n > room) {
            return Err(Unreadable::TooManySamples(max_samples));
        }
        let family = match pb::MetricFamily::decode_length_delimited(&mut body) {
            Ok(f) => f,
            Err(e) if index == 0 => {
                return Err(Unreadable::Invalid(format!(
                    "the protobuf body does not decode: {e}"
                )));
            }
            Err(e) => {
                out.skipped_count += 1;
                out.skipped.push(format!(
                    "message {}: does not decode ({e}); the rest of the body was not read",
                    index + 1
                ));
                break;
            }
        };
        index += 1;
        let Some(name) = family.name.clone().filter(|n| !n.is_empty()) else {
            skip(&mut out, index, "a family without a name");
            continue;
        };
        let kind = match family.r#type.map(pb::MetricType::try_from) {
            Some(Ok(pb::MetricType::Counter)) => Kind::Counter,
            Some(Ok(pb::MetricType::Gauge)) => Kind::Gauge,
            Some(Ok(pb::MetricType::Summary)) => Kind::Summary,
            // A gauge histogram's buckets are read as a histogram's, as the text parser does.
            Some(Ok(pb::MetricType::Histogram | pb::MetricType::GaugeHistogram)) => Kind::Histogram,
            Some(Ok(pb::MetricType::Untyped)) | None => Kind::Untyped,
            Some(Err(_)) => {
                skip(
                    &mut out,
                    index,
                    "a family of a type this reader does not know",
                );
                continue;
            }
        };
        if out.families.contains_key(&name) {
            skip(&mut out, index, "a second family of the same name");
            continue;
        }
        samples = samples.saturating_add(family.metric.iter().map(samples_of).sum());
        if samples > max_samples {
            return Err(Unreadable::TooManySamples(max_samples));
        }
        let mut series: BTreeMap<Labels, Series> = BTreeMap::new();
        for m in family.metric {
            let mut labels: Labels = m
                .label
                .into_iter()
                .map(|l| (l.name.unwrap_or_default(), l.value.unwrap_or_default()))
                .collect();
            labels.sort();
            let s = match kind {
                Kind::Counter => Series {
                    value: m.counter.and_then(|c| c.value),
                    ..Series::default()
                },
                Kind::Gauge => Series {
                    value: m.gauge.and_then(|g| g.value),
                    ..Series::default()
                },
                Kind::Untyped => Series {
                    value: m
                        .untyped
                        .and_then(|u| u.value)
                        .or(m.gauge.and_then(|g| g.value)),
                    ..Series::default()
                },
                Kind::Summary => {
                    let q = m.summary.unwrap_or_default();
                    Series {
                        quantiles: q
                            .quantile
                            .iter()
                            .filter_map(|q| Some((q.quantile?, q.value?)))
                            .collect(),
                        count: q.sample_count.map(|c| c as f64),
                        sum: q.sample_sum,
                        ..Series::default()
                    }
                }
                Kind::Histogram => histogram(m.histogram.unwrap_or_default()),
            };
            series.insert(labels, s);
        }
        out.families.insert(
            name,
            Family {
                kind,
                help: family.help,
                unit: family.unit.filter(|u| !u.is_empty()),
                series,
            },
        );
    }
    // Counters are named without `_total`, as OpenMetrics names their family (the Prometheus
    // encoders add it back), so a target reads the same in every format; unless a family of
    // that name exists too (Go's `go_memstats_alloc_bytes` gauge and `_total` counter).
    let renames: Vec<(String, String)> = out
        .families
        .iter()
        .filter(|(_, f)| f.kind == Kind::Counter)
        .filter_map(|(name, _)| {
            let base = name.strip_suffix("_total").filter(|b| !b.is_empty())?;
            (!out.families.contains_key(base)).then(|| (name.clone(), base.to_owned()))
        })
        .collect();
    for (from, to) in renames {
        if let Some(f) = out.families.remove(&from) {
            out.families.insert(to, f);
        }
    }
    Ok(out)
}

/// How many `metric` fields (4) the next length-delimited `MetricFamily` of `body` holds,
/// walking its fields without decoding them; `None` where the framing does not read (the
/// decoder then reports it).
fn metrics_in_next(mut body: &[u8]) -> Option<usize> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let len = usize::try_from(decode_varint(&mut body).ok()?).ok()?;
    let mut message = body.get(..len)?;
    let mut metrics = 0usize;
    while !message.is_empty() {
        let (tag, wire) = decode_key(&mut message).ok()?;
        let skip = match wire {
            WireType::Varint => {
                decode_varint(&mut message).ok()?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => usize::try_from(decode_varint(&mut message).ok()?).ok()?,
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        message = message.get(skip..)?;
        metrics += usize::from(tag == 4 && wire == WireType::LengthDelimited);
    }
    Some(metrics)
}

/// The samples of one metric as the text format would write them.
fn samples_of(m: &pb::Metric) -> usize {
    match (&m.histogram, &m.summary) {
        // A native-only histogram is one sample, as in Prometheus; classic buckets are
        // written with `+Inf` (not in the message), `_sum` and `_count`.
        (Some(h), _) if h.bucket.is_empty() && h.schema.is_some() => 1,
        (Some(h), _) => h.bucket.len() + 3,
        (None, Some(s)) => s.quantile.len() + 2,
        (None, None) => 1,
    }
}

fn skip(out: &mut Exposition, index: usize, what: &str) {
    out.skipped_count += 1;
    if out.skipped.len() < 5 {
        out.skipped.push(format!("message {index}: {what}"));
    }
}

/// A histogram's classic buckets (cumulative, `+Inf` last) and its native form if it has one.
fn histogram(h: pb::Histogram) -> Series {
    let count = h
        .sample_count_float
        .filter(|c| *c != 0.0)
        .or(h.sample_count.map(|c| c as f64));
    let mut buckets: Vec<(f64, f64)> = h
        .bucket
        .iter()
        .filter_map(|b| {
            let n = b
                .cumulative_count_float
                .filter(|c| *c != 0.0)
                .or(b.cumulative_count.map(|c| c as f64))?;
            Some((b.upper_bound?, n))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !buckets.is_empty()
        && buckets.last().is_some_and(|b| b.0 != f64::INFINITY)
        && let Some(c) = count
    {
        // The protobuf format leaves the `+Inf` bucket implicit: it is the count.
        buckets.push((f64::INFINITY, c));
    }
    // Native when a schema is set (a native histogram without observations still has one).
    let native = h.schema.and_then(|schema| {
        Some(Native {
            schema,
            zero_count: h
                .zero_count_float
                .filter(|c| *c != 0.0)
                .or(h.zero_count.map(|c| c as f64))
                .unwrap_or(0.0),
            positive: spans(&h.positive_span, &h.positive_delta, &h.positive_count)?,
            negative: spans(&h.negative_span, &h.negative_delta, &h.negative_count)?,
        })
    });
    Series {
        buckets,
        count,
        sum: h.sample_sum,
        native,
        ..Series::default()
    }
}

/// `(index, count)` of each bucket the spans describe: the first span's offset is its first
/// index, later ones the gap after the previous span; counts are delta-encoded integers or
/// absolute floats. `None` when the spans promise more buckets than there are counts.
fn spans(spans: &[pb::BucketSpan], deltas: &[i64], floats: &[f64]) -> Option<Vec<(i32, f64)>> {
    let mut out = Vec::new();
    let mut index: i32 = 0;
    let mut count: i64 = 0;
    let mut k = 0usize;
    for span in spans {
        index = index.checked_add(span.offset.unwrap_or(0))?;
        for _ in 0..span.length.unwrap_or(0) {
            let c = if floats.is_empty() {
                count = count.checked_add(*deltas.get(k)?)?;
                if count < 0 {
                    return None;
                }
                count as f64
            } else {
                *floats.get(k)?
            };
            out.push((index, c));
            index = index.checked_add(1)?;
            k += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delimited family `name` of one `metric`.
    fn family(name: &str, metric: pb::Metric, kind: pb::MetricType) -> Vec<u8> {
        pb::MetricFamily {
            name: Some(name.into()),
            help: None,
            r#type: Some(kind as i32),
            metric: vec![metric],
            unit: None,
        }
        .encode_length_delimited_to_vec()
    }

    /// A histogram metric of one classic bucket (`le=bound`), without labels.
    fn one_bucket(count: u64, sum: f64, in_bucket: u64, bound: f64) -> pb::Metric {
        pb::Metric {
            histogram: Some(pb::Histogram {
                sample_count: Some(count),
                sample_sum: Some(sum),
                bucket: vec![pb::Bucket {
                    cumulative_count: Some(in_bucket),
                    upper_bound: Some(bound),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A counter metric at `value`, without labels.
    fn counter(value: f64) -> pb::Metric {
        pb::Metric {
            counter: Some(pb::Counter {
                value: Some(value),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reading_stops_at_the_sample_limit_in_both_formats() {
        // Two families of one counter each, then a histogram of one bucket: 1 + 1 + 4 samples
        // (its bucket, `+Inf`, `_sum` and `_count`), as in the text below.
        let mut body = family("a_total", counter(1.0), pb::MetricType::Counter);
        body.extend(family("b_total", counter(2.0), pb::MetricType::Counter));
        body.extend(family(
            "h",
            one_bucket(1, 0.5, 1, 1.0),
            pb::MetricType::Histogram,
        ));
        assert_eq!(parse_protobuf_at_most(&body, 6).unwrap().families.len(), 3);
        assert_eq!(
            parse_protobuf_at_most(&body, 5),
            Err(Unreadable::TooManySamples(5))
        );
        let text = "a_total 1\nb_total 2\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
        assert_eq!(
            crate::text::parse_at_most(text, 6).unwrap().families.len(),
            3
        );
        assert_eq!(
            crate::text::parse_at_most(text, 5),
            Err(Unreadable::TooManySamples(5))
        );
        // A family of a million empty metrics (2 bytes each) is refused from its framing.
        let empty = pb::MetricFamily {
            name: Some("many".into()),
            metric: vec![pb::Metric::default(); 1_000_000],
            ..Default::default()
        }
        .encode_length_delimited_to_vec();
        assert_eq!(metrics_in_next(&empty), Some(1_000_000));
        assert_eq!(
            parse_protobuf_at_most(&empty, 1000),
            Err(Unreadable::TooManySamples(1000))
        );
        // The text reader stops where the limit is passed, not at the end of a huge body.
        let huge: String = (0..100_000).map(|i| format!("junk_{i} 1\n")).collect();
        assert_eq!(
            crate::text::parse_at_most(&huge, 10),
            Err(Unreadable::TooManySamples(10))
        );
    }

    #[test]
    fn spans_and_deltas_decode_to_indexes_and_counts() {
        let span = |offset, length| pb::BucketSpan {
            offset: Some(offset),
            length: Some(length),
        };
        // Buckets -2, -1 and then 3 (a gap of 3): counts 1, 3, 2.
        let got = spans(&[span(-2, 2), span(3, 1)], &[1, 2, -1], &[]).unwrap();
        assert_eq!(got, [(-2, 1.0), (-1, 3.0), (3, 2.0)]);
        // Float counts are absolute.
        assert_eq!(spans(&[span(0, 1)], &[], &[2.5]).unwrap(), [(0, 2.5)]);
        // More buckets promised than counts given, or a count below zero: refused.
        assert_eq!(spans(&[span(0, u32::MAX)], &[1], &[]), None);
        assert_eq!(spans(&[span(0, 2)], &[1, -2], &[]), None);
        assert_eq!(spans(&[span(i32::MAX, 2)], &[1, 1], &[]), None);
    }

    #[test]
    fn every_kind_reads_and_bad_bodies_are_reported() {
        let mut body = family(
            "requests_total",
            pb::Metric {
                label: vec![pb::LabelPair {
                    name: Some("code".into()),
                    value: Some("200".into()),
                }],
                ..counter(7.0)
            },
            pb::MetricType::Counter,
        );
        body.extend(family(
            "rpc",
            pb::Metric {
                summary: Some(pb::Summary {
                    sample_count: Some(4),
                    sample_sum: Some(2.0),
                    quantile: vec![pb::Quantile {
                        quantile: Some(0.5),
                        value: Some(0.4),
                    }],
                    created_timestamp: None,
                }),
                ..Default::default()
            },
            pb::MetricType::Summary,
        ));
        body.extend(family(
            "lat",
            one_bucket(3, 1.5, 2, 0.5),
            pb::MetricType::Histogram,
        ));
        // A gauge named like a counter without its `_total` keeps the counter's full name.
        body.extend(family("bytes_total", counter(1.0), pb::MetricType::Counter));
        body.extend(family(
            "bytes",
            pb::Metric {
                gauge: Some(pb::Gauge { value: Some(2.0) }),
                ..Default::default()
            },
            pb::MetricType::Gauge,
        ));
        let e = parse_protobuf(&body).unwrap();
        assert_eq!(e.families["bytes_total"].kind, Kind::Counter);
        assert_eq!(e.families["bytes"].kind, Kind::Gauge);
        assert_eq!(e.skipped_count, 0);
        let counter = &e.families["requests"];
        assert_eq!(counter.kind, Kind::Counter);
        let key = vec![("code".to_owned(), "200".to_owned())];
        assert_eq!(counter.series[&key].value, Some(7.0));
        let summary = e.families["rpc"].series.values().next().unwrap();
        assert_eq!(summary.quantiles, [(0.5, 0.4)]);
        assert_eq!((summary.count, summary.sum), (Some(4.0), Some(2.0)));
        let h = e.families["lat"].series.values().next().unwrap();
        assert_eq!(h.buckets, [(0.5, 2.0), (f64::INFINITY, 3.0)]);
        assert_eq!(h.native, None);

        // A cut body keeps what decoded and reports the rest.
        let cut = &body[..body.len() - 3];
        let e = parse_protobuf(cut).unwrap();
        assert_eq!(e.families.len(), 4);
        assert_eq!(e.skipped_count, 1, "{:?}", e.skipped);
        // Garbage is an error, never a panic.
        assert!(parse_protobuf(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").is_err());
        for seed in 0..2000u32 {
            let junk: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
                .collect();
            let _ = parse_protobuf(&junk);
        }
    }

    #[test]
    fn native_values_stand_each_bucket_at_its_middle() {
        let n = Native {
            schema: 0,
            zero_count: 2.0,
            positive: vec![(1, 3.0), (2, 0.0)],
            negative: vec![(1, 1.0)],
        };
        // Prometheus bucket 1 at schema 0 is (1, 2]: its middle is sqrt(2).
        let v = n.values().unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], (0.0, 2));
        assert!((v[1].0 - 2f64.sqrt()).abs() < 1e-12 && v[1].1 == 3);
        assert!((v[2].0 + 2f64.sqrt()).abs() < 1e-12 && v[2].1 == 1);
        assert_eq!(
            Native {
                schema: 9,
                ..n.clone()
            }
            .values(),
            None
        );
        assert_eq!(
            Native {
                positive: vec![(0, f64::NAN)],
                ..n
            }
            .values(),
            None
        );
    }
}
