//! Prometheus text 0.0.4 and OpenMetrics 1.0 encoders, and the protobuf one (length-delimited
//! `MetricFamily`, with native histograms).

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sonde_core::{
    FamilyMeta, FamilySnapshot, Kind, Number, Point, Registry, Resource, SeriesSnapshot, Snapshot,
    Visitor,
};

use crate::naming::{family_name, label_name};

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text (`_created`, `# UNIT`, `# EOF`).
    OpenMetrics,
    /// Length-delimited protobuf `MetricFamily` messages, with native histograms.
    Protobuf,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => crate::proto::CONTENT_TYPE,
        }
    }

    /// Picks the format a scraper asked for in its `Accept` header, by its `q` weights:
    /// protobuf (which Prometheus prefers when native histograms are enabled), OpenMetrics (its
    /// default preference), or text 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut best = (Format::Text, -1.0f32);
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let params: Vec<&str> = parts.collect();
            let q = params
                .iter()
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let format = match media.as_str() {
                "application/vnd.google.protobuf"
                    if params.iter().any(|p| {
                        p.eq_ignore_ascii_case("proto=io.prometheus.client.MetricFamily")
                    }) && params
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case("encoding=delimited")) =>
                {
                    Format::Protobuf
                }
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" | "*/*" | "text/*" => Format::Text,
                _ => continue,
            };
            if q > best.1 {
                best = (format, q);
            }
        }
        best.0
    }
}

/// Encodes a cumulative snapshot, plus `target_info` for the resource, appending to `out`.
///
/// Families are written in name order and series in creation order, so output is deterministic
/// for a deterministic program. Families without series are left out.
pub fn encode(snapshot: &Snapshot, resource: Option<&Resource>, format: Format, out: &mut Vec<u8>) {
    if format == Format::Protobuf {
        return crate::proto::encode_protobuf(snapshot, resource, out);
    }
    let mut writer = Writer::start(resource, format, None, out);
    for family in &snapshot.families {
        if !family.series.is_empty() {
            writer.write_family(family);
        }
    }
    writer.finish();
}

/// Like [`encode`], but streams straight from the registry: each series is read right before it
/// is written, so the registry is never copied into a snapshot (faster and smaller for large
/// registries). Runs the registry's collect hooks like any collection.
pub fn encode_registry(
    registry: &Registry,
    resource: Option<&Resource>,
    format: Format,
    out: &mut Vec<u8>,
) {
    if format == Format::Protobuf {
        let names = Names::new(
            resource.is_some_and(|r| !r.is_empty()),
            format,
            Some(registry),
        );
        return crate::proto::encode_protobuf_with(&registry.snapshot(), resource, out, names);
    }
    let mut writer = Writer::start(resource, format, Some(registry), out);
    registry.visit(&mut writer);
    writer.finish();
}

/// Families skipped by an encoder because an earlier family of the exposition had their
/// Prometheus name; see [`Names`].
static SKIPPED_COLLISIONS: AtomicU64 = AtomicU64::new(0);
static COLLISION_LOG: sonde_core::diag::RateLimit =
    sonde_core::diag::RateLimit::new(Duration::from_secs(60));

/// How many families the encoders of this process skipped because their Prometheus name was
/// already taken in the same exposition.
#[cfg(test)]
pub(crate) fn skipped_collisions() -> u64 {
    SKIPPED_COLLISIONS.load(Relaxed)
}

/// The Prometheus names written so far in one exposition. The registry refuses families that
/// render alike, but an exposition can still meet two (`target_info` from the resource and a
/// family of that name, snapshots merged from several registries): two `# TYPE` blocks for one
/// name make Prometheus fail the whole scrape, so the later family is skipped, counted and
/// logged instead.
#[derive(Default)]
pub(crate) struct Names {
    taken: HashSet<String>,
    registry: Option<Registry>,
}

impl Names {
    pub(crate) fn new(target_info: bool, format: Format, registry: Option<&Registry>) -> Names {
        let mut taken = HashSet::new();
        if target_info {
            taken.insert("target_info".to_owned());
            if format == Format::OpenMetrics {
                // OpenMetrics names the info family without its `_info` suffix.
                taken.insert("target".to_owned());
            }
        }
        Names {
            taken,
            registry: registry.cloned(),
        }
    }

    /// Whether the family whose Prometheus name is `prometheus` may be written: false, counted
    /// in `sonde.instrumentation.errors{reason="name_collision"}` and logged, if it is taken.
    pub(crate) fn admit(&mut self, prometheus: &str, meta: &FamilyMeta) -> bool {
        if !self.taken.contains(prometheus) {
            self.taken.insert(prometheus.to_owned());
            return true;
        }
        SKIPPED_COLLISIONS.fetch_add(1, Relaxed);
        if let Some(registry) = &self.registry
            && let Ok(errors) = registry
                .counter(sonde_core::INSTRUMENTATION_ERRORS)
                .labels(["metric", "reason"])
                .build()
        {
            errors.with(&[meta.name(), "name_collision"]).inc();
        }
        if let Some(n) = COLLISION_LOG.hit() {
            sonde_core::diag::warn(format_args!(
                "metric {:?} was left out of the Prometheus exposition: an earlier family has its Prometheus name {prometheus:?} ({n} such omission(s) since the last report); rename one of them",
                meta.name()
            ));
        }
        false
    }
}

#[derive(Default)]
struct Scratch {
    /// Prometheus names already written in this exposition.
    names_taken: Names,
    buckets: Vec<u64>,
    /// `{k="v",k2="v2"` of the current series (no closing brace), rendered once per series.
    labels: Vec<u8>,
    /// `le` values of the current family, formatted once per family.
    le: Vec<String>,
    names: Vec<String>,
    /// `name_bucket{labels,le="` of the current series.
    prefix: Vec<u8>,
    /// The Prometheus name of the current family.
    name: String,
    /// Whether the current family is skipped (no series, or its name is taken).
    skip: bool,
    /// Where the resource's `target_info` sample ends in the output, if one was written.
    info_at: Option<usize>,
    /// Whether the current family is a `target_info` gauge whose series join the resource's
    /// (what the agent received or scraped from other services), written to `info_tail`.
    into_info: bool,
    info_tail: Vec<u8>,
}

impl Scratch {
    /// Puts the series of a `target_info` gauge family after the resource's own sample, so
    /// the exposition has one `target_info` family (a second `# TYPE` fails a scrape).
    fn merge_info(&mut self, out: &mut Vec<u8>) {
        if let Some(at) = self.info_at
            && !self.info_tail.is_empty()
        {
            out.splice(at..at, self.info_tail.drain(..));
        }
    }
}

/// Whether a family's series belong in the resource's `target_info` family: a `target_info`
/// gauge that names its targets (`job` and `instance`, as the agent's OTLP receiver and
/// scrapes register it); anything else of that name is a collision.
pub(crate) fn is_target_info(name: &str, meta: &FamilyMeta) -> bool {
    name == "target_info"
        && matches!(meta.kind(), Kind::Gauge)
        && meta.label_names().any(|l| l == "job")
        && meta.label_names().any(|l| l == "instance")
}

fn write_target_info(r: &Resource, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Text | Format::Protobuf => out.extend_from_slice(
            b"# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info",
        ),
        Format::OpenMetrics => {
            out.extend_from_slice(b"# TYPE target info\n# HELP target Target metadata\ntarget_info")
        }
    }
    out.push(b'{');
    for (i, (k, v)) in r.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(label_name(k).as_bytes());
        out.extend_from_slice(b"=\"");
        escape_label_value(v, out);
        out.push(b'"');
    }
    out.extend_from_slice(b"} 1\n");
}

/// One text or OpenMetrics exposition being written, from a snapshot or straight from a
/// registry: the format, the output and the buffers reused from series to series.
struct Writer<'a> {
    format: Format,
    out: &'a mut Vec<u8>,
    scratch: Scratch,
}

impl<'a> Writer<'a> {
    /// Starts with the resource's `target_info` (its name then taken), if there is one.
    /// `registry` counts the families left out for a taken name.
    fn start(
        resource: Option<&Resource>,
        format: Format,
        registry: Option<&Registry>,
        out: &'a mut Vec<u8>,
    ) -> Writer<'a> {
        let resource = resource.filter(|r| !r.is_empty());
        let mut scratch = Scratch {
            names_taken: Names::new(resource.is_some(), format, registry),
            ..Scratch::default()
        };
        if let Some(r) = resource {
            write_target_info(r, format, out);
            scratch.info_at = Some(out.len());
        }
        Writer {
            format,
            out,
            scratch,
        }
    }

    /// Ends the exposition: the `target_info` series of other families joined to the
    /// resource's, and OpenMetrics' `# EOF`.
    fn finish(self) {
        let Writer {
            format,
            out,
            mut scratch,
        } = self;
        scratch.merge_info(out);
        if format == Format::OpenMetrics {
            out.extend_from_slice(b"# EOF\n");
        }
    }

    /// A family of a snapshot, header and series.
    fn write_family(&mut self, family: &FamilySnapshot) {
        self.scratch.skip = false;
        self.write_header(&family.meta);
        if self.scratch.skip {
            return;
        }
        for series in &family.series {
            self.place_series(series);
        }
    }

    /// [`write_series`] into the output, or after the resource's `target_info` sample when
    /// the family merges into it.
    fn place_series(&mut self, series: &SeriesSnapshot) {
        let scratch = &mut self.scratch;
        if scratch.into_info {
            let mut tail = std::mem::take(&mut scratch.info_tail);
            write_series(series, self.format, &mut tail, scratch);
            scratch.info_tail = tail;
        } else {
            write_series(series, self.format, self.out, scratch);
        }
    }

    /// `# TYPE`/`# UNIT`/`# HELP`, and the family's names into the scratch buffers; sets
    /// `scratch.skip` instead if the family's Prometheus name is taken.
    fn write_header(&mut self, meta: &FamilyMeta) {
        let scratch = &mut self.scratch;
        let name = family_name(meta);
        // A `target_info` gauge joins the resource's family, whose header is written already.
        scratch.into_info = scratch.info_at.is_some() && is_target_info(&name, meta);
        if !scratch.into_info {
            if !scratch.names_taken.admit(&name, meta) {
                scratch.skip = true;
                return;
            }
            write_header_lines(&name, meta, self.format, self.out);
        }
        scratch.names.clear();
        scratch.names.extend(meta.label_names().map(label_name));
        // A family's series share one layout, so its `le` strings are formatted once.
        scratch.le.clear();
        scratch.name = name;
    }
}

/// Straight from a registry: each series is written as the registry reads it.
impl Visitor for Writer<'_> {
    fn family(&mut self, meta: &Arc<FamilyMeta>, series: usize) {
        self.scratch.skip = series == 0;
        if !self.scratch.skip {
            self.write_header(meta);
        }
    }

    fn series(&mut self, _: &Arc<FamilyMeta>, series: &SeriesSnapshot) {
        if !self.scratch.skip {
            self.place_series(series);
        }
    }
}

/// `# TYPE`/`# UNIT`/`# HELP` of a family whose Prometheus name is `name`.
fn write_header_lines(name: &str, meta: &FamilyMeta, format: Format, out: &mut Vec<u8>) {
    let (type_word, sample_suffix) = match meta.kind() {
        Kind::Counter => ("counter", "_total"),
        Kind::Histogram => ("histogram", ""),
        Kind::Gauge | Kind::UpDownCounter => ("gauge", ""),
    };
    // Text 0.0.4 names a counter family with its `_total`; OpenMetrics without.
    let meta_name = match format {
        Format::Text | Format::Protobuf => format!("{name}{sample_suffix}"),
        Format::OpenMetrics => name.to_owned(),
    };
    if format == Format::OpenMetrics {
        let _ = writeln!(out, "# TYPE {meta_name} {type_word}");
        if let Some(word) = crate::naming::unit_word(meta.unit(), meta.kind())
            && name.ends_with(&format!("_{word}"))
        {
            let _ = writeln!(out, "# UNIT {meta_name} {word}");
        }
    }
    // Always a HELP line (linters ask for one); without a description, the OpenTelemetry name
    // tells the reader where the series comes from.
    let _ = write!(out, "# HELP {meta_name} ");
    escape_help(
        if meta.description().is_empty() {
            meta.name()
        } else {
            meta.description()
        },
        out,
    );
    out.push(b'\n');
    if format == Format::Text {
        let _ = writeln!(out, "# TYPE {meta_name} {type_word}");
    }
}

/// The lines of one series of the family whose header was written last.
fn write_series(series: &SeriesSnapshot, format: Format, out: &mut Vec<u8>, scratch: &mut Scratch) {
    let name = std::mem::take(&mut scratch.name);
    {
        let name = name.as_bytes();
        series_labels(series, &scratch.names, &mut scratch.labels);
        let labels = &scratch.labels[..];
        match &series.point {
            Point::Counter(n) => {
                line(out, name, b"_total", labels, None);
                write_number(out, *n);
                out.push(b'\n');
                if format == Format::OpenMetrics {
                    write_created(out, name, labels, series);
                }
            }
            Point::Gauge(n) | Point::UpDownCounter(n) => {
                line(out, name, b"", labels, None);
                write_number(out, *n);
                out.push(b'\n');
            }
            Point::Histogram(h) => {
                h.cumulative_into(&mut scratch.buckets);
                let bounds = h.layout().explicit_bounds();
                if scratch.le.is_empty() {
                    scratch.le.extend(bounds.iter().map(|b| format!("{b:?}")));
                    scratch.le.push("+Inf".to_owned());
                }
                // Bucket lines differ only in `le` and the count: render the rest once.
                scratch.prefix.clear();
                scratch.prefix.extend_from_slice(name);
                scratch.prefix.extend_from_slice(b"_bucket");
                if labels.is_empty() {
                    scratch.prefix.extend_from_slice(b"{le=\"");
                } else {
                    scratch.prefix.extend_from_slice(labels);
                    scratch.prefix.extend_from_slice(b",le=\"");
                }
                for (i, count) in scratch.buckets.iter().enumerate() {
                    out.extend_from_slice(&scratch.prefix);
                    out.extend_from_slice(scratch.le[i].as_bytes());
                    out.extend_from_slice(b"\"} ");
                    write_u64(out, *count);
                    if format == Format::OpenMetrics
                        && let Some(e) = h.exemplars().get(i).copied().flatten()
                    {
                        write_exemplar(out, &e);
                    }
                    out.push(b'\n');
                }
                line(out, name, b"_sum", labels, None);
                write_f64(out, h.sum());
                out.push(b'\n');
                line(out, name, b"_count", labels, None);
                write_u64(out, h.count());
                out.push(b'\n');
                if format == Format::OpenMetrics {
                    write_created(out, name, labels, series);
                }
            }
        }
    }
    scratch.name = name;
}

/// Renders `{k="v",...` (without the closing brace; empty without labels) for a series.
fn series_labels(series: &SeriesSnapshot, names: &[String], out: &mut Vec<u8>) {
    out.clear();
    let mut pair = |k: &str, v: &str| {
        out.push(if out.is_empty() { b'{' } else { b',' });
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_label_value(v, out);
        out.push(b'"');
    };
    if series.is_overflow() {
        pair("otel_metric_overflow", "true");
    } else {
        for (k, v) in names.iter().zip(series.label_values()) {
            pair(k, v);
        }
    }
}

/// Writes `name suffix {labels[,le="x"]} ` up to the value.
#[inline]
fn line(out: &mut Vec<u8>, name: &[u8], suffix: &[u8], labels: &[u8], le: Option<&[u8]>) {
    out.extend_from_slice(name);
    out.extend_from_slice(suffix);
    match (labels.is_empty(), le) {
        (true, None) => {}
        (true, Some(le)) => {
            out.extend_from_slice(b"{le=\"");
            out.extend_from_slice(le);
            out.extend_from_slice(b"\"}");
        }
        (false, None) => {
            out.extend_from_slice(labels);
            out.push(b'}');
        }
        (false, Some(le)) => {
            out.extend_from_slice(labels);
            out.extend_from_slice(b",le=\"");
            out.extend_from_slice(le);
            out.extend_from_slice(b"\"}");
        }
    }
    out.push(b' ');
}

fn write_created(out: &mut Vec<u8>, name: &[u8], labels: &[u8], series: &SeriesSnapshot) {
    line(out, name, b"_created", labels, None);
    write_f64(out, series.start_unix_nanos as f64 / 1e9);
    out.push(b'\n');
}

/// ` # {trace_id="…",span_id="…"} value timestamp`, as OpenMetrics appends to a bucket line.
fn write_exemplar(out: &mut Vec<u8>, e: &sonde_core::Exemplar) {
    let _ = write!(
        out,
        " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
        e.trace_id_hex(),
        e.span_id_hex()
    );
    write_f64(out, e.value);
    out.push(b' ');
    write_f64(out, e.unix_nanos as f64 / 1e9);
}

#[inline]
fn escape_label_value(v: &str, out: &mut Vec<u8>) {
    let bytes = v.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

fn escape_help(v: &str, out: &mut Vec<u8>) {
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b => out.push(b),
        }
    }
}

fn write_number(out: &mut Vec<u8>, n: Number) {
    match n {
        Number::U64(v) => write_u64(out, v),
        Number::I64(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Number::F64(v) => write_f64(out, v),
    }
}

#[inline]
fn write_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Floats as Prometheus parses them: `NaN`, `+Inf`, `-Inf`, integers without a fraction, the
/// shortest round-trip form otherwise.
fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::assert_contains_all;
    use sonde_core::{Registry, Unit, testing};

    fn render(format: Format) -> String {
        let reg = Registry::new();
        let c = testing::family(
            reg.counter("http.server.requests")
                .description("Requests.\nSecond \\ line.")
                .labels(["http.request.method", "path"]),
        );
        c.with(&["GET", "a\"b\\c\nd"]).add(3);
        crate::fixtures::request_durations(&reg, &[], &[]);
        crate::fixtures::temperature(&reg, f64::NAN);
        let mut out = Vec::new();
        let resource = Resource::empty().with("service.name", "svc");
        encode(&reg.snapshot(), Some(&resource), format, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_format() {
        let t = render(Format::Text);
        assert_contains_all(
            &t,
            &[
                "# HELP http_server_requests_total Requests.\\nSecond \\\\ line.\n",
                "# TYPE http_server_requests_total counter\n",
                "http_server_requests_total{http_request_method=\"GET\",path=\"a\\\"b\\\\c\\nd\"} 3\n",
                "http_server_request_duration_seconds_bucket{le=\"0.1\"} 1\n",
                "http_server_request_duration_seconds_bucket{le=\"1.0\"} 2\n",
                "http_server_request_duration_seconds_bucket{le=\"+Inf\"} 3\n",
                "http_server_request_duration_seconds_sum 2.55\n",
                "http_server_request_duration_seconds_count 3\n",
                "temp_celsius NaN\n",
            ],
        );
        assert!(t.starts_with("# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{service_name=\"svc\"} 1\n"), "{t}");
        assert!(!t.contains("# EOF"));
    }

    #[test]
    fn openmetrics_format() {
        let t = render(Format::OpenMetrics);
        assert_contains_all(
            &t,
            &[
                "# TYPE http_server_requests counter\n",
                "http_server_requests_total{",
                "http_server_requests_created{",
                "# TYPE http_server_request_duration_seconds histogram\n# UNIT http_server_request_duration_seconds seconds\n",
                "# TYPE target info\n",
            ],
        );
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    /// Two families with one Prometheus name, which one registry refuses but an exposition can
    /// still meet: the resource's `target_info` and a family of that name, or snapshots of two
    /// registries. The later family is left out in every format, and counted.
    #[test]
    fn a_second_family_with_a_taken_prometheus_name_is_left_out() {
        let first = Registry::new();
        first.counter("a.b").build().unwrap().handle().add(7);
        let second = Registry::new();
        second.counter("a_b").build().unwrap().handle().add(1);
        // A counter cannot join the resource's `target_info` gauge family (a gauge can: see
        // the next test).
        second
            .counter("target.info")
            .build()
            .unwrap()
            .handle()
            .add(5);
        let mut merged = first.snapshot();
        merged.families.extend(second.snapshot().families);
        let resource = Resource::empty().with("service.name", "svc");
        let skipped = skipped_collisions();
        for format in [Format::Text, Format::OpenMetrics] {
            let mut out = Vec::new();
            encode(&merged, Some(&resource), format, &mut out);
            let t = String::from_utf8(out).unwrap();
            assert_eq!(t.matches("# TYPE a_b").count(), 1, "{t}");
            assert!(t.contains("\na_b_total 7\n"), "{t}");
            assert!(!t.contains("a_b_total 1"), "{t}");
            assert!(!t.contains("target_info_total 5"), "{t}");
            assert_eq!(t.matches("# TYPE target").count(), 1, "{t}");
        }
        // Per format `a_b` and `target_info`, plus the second registry's own `sonde.*` families.
        assert!(skipped_collisions() - skipped >= 4);
        let mut out = Vec::new();
        crate::proto::encode_protobuf(&merged, Some(&resource), &mut out);
        let mut names = Vec::new();
        for f in crate::fixtures::decode_families(&out) {
            if f.name.as_deref() == Some("a_b_total") {
                assert_eq!(f.metric[0].counter.as_ref().unwrap().value, Some(7.0));
            }
            names.push(f.name.unwrap());
        }
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "{names:?}");
        assert!(names.contains(&"a_b_total".to_owned()), "{names:?}");

        // Streaming from a registry counts the skipped family in the registry itself.
        for format in [Format::Text, Format::Protobuf] {
            let mut out = Vec::new();
            encode_registry(&second, Some(&resource), format, &mut out);
            if format == Format::Text {
                let t = String::from_utf8(out).unwrap();
                assert!(!t.contains("target_info_total 5"), "{t}");
                assert_eq!(t.matches("# TYPE target_info").count(), 1, "{t}");
            }
        }
        let snap = second.snapshot();
        let errors = snap
            .point(
                sonde_core::INSTRUMENTATION_ERRORS,
                &[("metric", "target.info"), ("reason", "name_collision")],
            )
            .unwrap();
        assert_eq!(errors.number().unwrap().as_f64(), 2.0);
    }

    /// What an agent received or scraped as `target_info` (a gauge with job and instance)
    /// joins the resource's own `target_info` family in every format and encoder, right after
    /// the resource's sample: one family, never a second `# TYPE`.
    #[test]
    fn received_target_info_joins_the_resources_family() {
        let registry = Registry::new();
        registry.counter("zz.last").build().unwrap().handle().add(1);
        let info = testing::family(registry.gauge("target_info").labels([
            "job",
            "instance",
            "service.version",
        ]));
        info.with(&["checkout", "pod-1", "2.1.0"]).set(1);
        info.with(&["cart", "pod-2", "0.9"]).set(1);
        let resource = Resource::empty().with("service.name", "agent");
        let expected_text = "target_info{service_name=\"agent\"} 1\n\
             target_info{job=\"checkout\",instance=\"pod-1\",service_version=\"2.1.0\"} 1\n\
             target_info{job=\"cart\",instance=\"pod-2\",service_version=\"0.9\"} 1\n";
        for format in [Format::Text, Format::OpenMetrics] {
            let mut streamed = Vec::new();
            encode_registry(&registry, Some(&resource), format, &mut streamed);
            let mut snapshot = Vec::new();
            encode(&registry.snapshot(), Some(&resource), format, &mut snapshot);
            for out in [streamed, snapshot] {
                let t = String::from_utf8(out).unwrap();
                assert_eq!(t.matches("# TYPE target").count(), 1, "{t}");
                assert!(t.contains(expected_text), "{t}");
                assert!(t.contains("zz_last_total 1\n"), "{t}");
            }
        }
        // Without a resource the family is an ordinary gauge.
        let mut out = Vec::new();
        encode_registry(&registry, None, Format::Text, &mut out);
        let t = String::from_utf8(out).unwrap();
        assert_eq!(t.matches("# TYPE target_info gauge").count(), 1, "{t}");
        assert_eq!(t.matches("target_info{").count(), 2, "{t}");
        // Protobuf: one family holding the three.
        let mut out = Vec::new();
        encode_registry(&registry, Some(&resource), Format::Protobuf, &mut out);
        let infos: Vec<usize> = crate::fixtures::decode_families(&out)
            .into_iter()
            .filter(|f| f.name.as_deref() == Some("target_info"))
            .map(|f| f.metric.len())
            .collect();
        assert_eq!(infos, [3]);
    }

    #[test]
    fn streaming_matches_the_snapshot_encoder() {
        let reg = Registry::new();
        let c = reg
            .counter("a.requests")
            .labels(["route"])
            .max_series(2)
            .build()
            .unwrap();
        for r in ["/x", "/y", "/z"] {
            c.with(&[r]).inc();
        }
        reg.gauge("empty.family").labels(["k"]).build().unwrap();
        let h = reg
            .histogram("b.latency")
            .unit(Unit::Seconds)
            .labels(["op"])
            .build()
            .unwrap();
        h.with(&["get"]).observe(0.2);
        h.with(&["put"]).observe(3.0);
        for format in [Format::Text, Format::OpenMetrics] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            encode(&reg.snapshot(), None, format, &mut a);
            encode_registry(&reg, None, format, &mut b);
            assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        }
    }

    #[test]
    fn negotiation() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        // What Prometheus 2.42 sends with --enable-feature=native-histograms.
        assert_eq!(
            Format::negotiate(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.8,application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
            )),
            Format::Protobuf
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/vnd.google.protobuf;proto=other;encoding=delimited"
            )),
            Format::Text
        );
    }
}
