//! Checking objectives against a service's live `/metrics` page (Prometheus text format).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Events, Objectives, Subset, TARGET_LABELS, prometheus_label};
use crate::selector::Selector;

/// Series found on a `/metrics` page: name → the label sets of its samples.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Exposition {
    /// Reads the Prometheus text format (comments and malformed lines are skipped).
    pub fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line
                .find(|c: char| c == '{' || c.is_whitespace())
                .unwrap_or(line.len());
            let name = &line[..name_end];
            let mut labels = BTreeMap::new();
            if line[name_end..].starts_with('{') {
                let mut rest = &line[name_end + 1..];
                loop {
                    rest = rest.trim_start_matches([',', ' ']);
                    if rest.starts_with('}') || rest.is_empty() {
                        break;
                    }
                    let Some(eq) = rest.find('=') else { break };
                    let key = rest[..eq].trim().to_string();
                    rest = &rest[eq + 1..];
                    if !rest.starts_with('"') {
                        break;
                    }
                    let mut value = String::new();
                    let mut chars = rest[1..].char_indices();
                    let mut end = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c)) => value.push(c),
                                None => break,
                            },
                            '"' => {
                                end = Some(i + 2);
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    let Some(end) = end else { break };
                    labels.insert(key, value);
                    rest = &rest[end..];
                }
            }
            out.series.entry(name.to_string()).or_default().push(labels);
        }
        out
    }

    /// The label sets of series `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[BTreeMap<String, String>]> {
        self.series.get(name).map(Vec::as_slice)
    }
}

/// Checks that every metric, label and bucket boundary the objectives name exists on the page;
/// returns one message per problem.
pub fn check(o: &Objectives, page: &Exposition) -> Vec<String> {
    let mut out = Vec::new();
    for t in &o.thresholds {
        let what = format!(
            "{}: threshold objective `{}`",
            t.common.location, t.common.name
        );
        let family = t.family();
        let bucket = format!("{family}_bucket");
        check_series(
            &mut out,
            &what,
            &t.metric,
            &bucket,
            page,
            &t.selector,
            &t.common.by,
        );
        if let Some(series) = page.get(&bucket)
            && !series
                .iter()
                .any(|l| l.get("le").is_some_and(|le| *le == t.threshold.le()))
        {
            out.push(format!(
                "{what}: {bucket} has no bucket boundary at {} (le=\"{}\"); the percentile near the threshold is interpolated: add {} to the histogram's boundaries",
                t.threshold.text,
                t.threshold.le(),
                t.threshold.seconds
            ));
        }
    }
    for r in &o.ratios {
        let what = format!("{}: ratio objective `{}`", r.common.location, r.common.name);
        let mut sources: Vec<(&str, &Events)> = vec![("total", &r.total)];
        match &r.subset {
            Subset::Good(e) => sources.push(("good", e)),
            Subset::Bad(e) => sources.push(("bad", e)),
        }
        for (key, e) in sources {
            let name = e.series_name();
            check_series(
                &mut out,
                &format!("{what} ({key})"),
                &e.metric,
                &name,
                page,
                &e.selector,
                &r.common.by,
            );
            if let (Some(le), Some(series)) = (&e.le, page.get(&name))
                && !series
                    .iter()
                    .any(|l| l.get("le").is_some_and(|v| *v == le.le()))
            {
                out.push(format!(
                    "{what} ({key}): {name} has no bucket boundary at {} (le=\"{}\"), so the good events cannot be counted: add {} to the histogram's boundaries",
                    le.text,
                    le.le(),
                    le.seconds
                ));
            }
        }
    }
    out
}

fn check_series(
    out: &mut Vec<String>,
    what: &str,
    metric: &str,
    name: &str,
    page: &Exposition,
    selector: &Selector,
    by: &[String],
) {
    let Some(series) = page.get(name) else {
        out.push(format!(
            "{what}: the service exports no `{name}` (metric {metric}); check the metric's name and kind, or that the service records it"
        ));
        return;
    };
    let present: BTreeSet<&str> = series
        .iter()
        .flat_map(|l| l.keys().map(String::as_str))
        .collect();
    let mut labels: Vec<&str> = selector.labels();
    for b in by {
        if !labels.contains(&b.as_str()) {
            labels.push(b);
        }
    }
    for l in labels {
        if TARGET_LABELS.contains(&l) {
            continue;
        }
        let p = prometheus_label(l);
        if !present.contains(p.as_str()) {
            let known: Vec<&str> = present.iter().copied().filter(|k| *k != "le").collect();
            out.push(format!(
                "{what}: `{name}` has no label `{l}` ({p}); its labels are: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
}

/// Fetches `url` (a `/metrics` page) as a scrape does (`sonde_scrape::Request`: at most
/// 64 MiB, a non-2xx answer is an error).
pub fn fetch(url: &str) -> Result<String, crate::Error> {
    sonde_scrape::Request::new(
        url,
        std::time::Duration::from_secs(60),
        concat!("sonde-objectives/", env!("CARGO_PKG_VERSION")),
    )
    .text()
    .map_err(|e| crate::Error::Fetch {
        url: url.to_string(),
        message: e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let page = Exposition::parse(
            "# HELP x y\nhttp_server_request_duration_seconds_bucket{http_route=\"/a\\\"b\",le=\"0.5\"} 3\nup 1\n",
        );
        let s = page
            .get("http_server_request_duration_seconds_bucket")
            .unwrap();
        assert_eq!(s[0].get("http_route").unwrap(), "/a\"b");
        assert_eq!(s[0].get("le").unwrap(), "0.5");
        assert!(page.get("up").is_some());
    }
}
