//! A real Prometheus Pushgateway (the Debian `prometheus-pushgateway` package) on a loopback
//! port, without persistence, read back through its own `/metrics`.

use crate::http;
use crate::peer::Peer;
use crate::prometheus::Sample;
use std::collections::BTreeMap;
use std::net::SocketAddr;

const INSTALL: &str = "apt-get install -y prometheus-pushgateway";

/// One sample line of an exposition, with its metric name.
#[derive(Debug, Clone)]
pub struct Line {
    /// The sample name (`foo_total`, `foo_bucket`...).
    pub name: String,
    /// The sample, labels without `__name__`.
    pub sample: Sample,
}

/// A running Pushgateway; killed on drop.
pub struct Pushgateway {
    peer: Peer,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Pushgateway {
    /// Starts the Pushgateway and waits until it is ready.
    pub fn start() -> Pushgateway {
        let peer = Peer::start(
            "prometheus-pushgateway",
            INSTALL,
            |addr, _| {
                vec![
                    format!("--web.listen-address={addr}"),
                    // Empty: no persistence file (Debian's default points under /var/lib).
                    "--persistence.file=".to_owned(),
                    "--log.level=warn".to_owned(),
                ]
            },
            "/-/ready",
        );
        Pushgateway {
            addr: peer.addr,
            peer,
        }
    }

    /// The base URL to push to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log, for failure messages.
    pub fn log(&self) -> String {
        self.peer.log()
    }

    /// Every sample line of its `/metrics` (its own metrics included).
    pub fn metrics(&self) -> Vec<Line> {
        let reply = http::get(&format!("http://{}/metrics", self.addr), &[]);
        assert_eq!(reply.status, 200, "{}", reply.text());
        parse_text(&reply.text())
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<Sample> {
        self.metrics()
            .into_iter()
            .filter(|l| {
                l.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.sample.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|l| l.sample)
            .collect()
    }
}

/// Parses the sample lines of a Prometheus text exposition (`name{k="v",...} value [ts]`),
/// unescaping label values. Panics on a malformed line.
pub fn parse_text(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let mut end = None;
            loop {
                // name
                let mut key = String::new();
                for (i, c) in chars.by_ref() {
                    match c {
                        '=' => break,
                        '}' => {
                            end = Some(i);
                            break;
                        }
                        ',' | ' ' => {}
                        c => key.push(c),
                    }
                }
                if end.is_some() {
                    break;
                }
                assert_eq!(chars.next().map(|c| c.1), Some('"'), "bad line {line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|c| c.1) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => panic!("bad escape in {line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                if let Some(&(i, '}')) = chars.peek() {
                    end = Some(i);
                    break;
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated labels in {line}"));
            rest = &r[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value in {line}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line}: {e}")),
        };
        out.push(Line {
            name,
            sample: Sample { labels, value },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples() {
        let lines = parse_text(
            "# HELP x y\nx_total{a=\"1\",b=\"q\\\"u\\\\o,}\\n\"} 3\nup 1 1700000000\nh_bucket{le=\"+Inf\",} 2\n",
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].name, "x_total");
        assert_eq!(lines[0].sample.labels["b"], "q\"u\\o,}\n");
        assert_eq!(lines[0].sample.value, 3.0);
        assert_eq!(lines[1].name, "up");
        assert!(lines[1].sample.labels.is_empty());
        assert_eq!(lines[2].sample.labels["le"], "+Inf");
    }
}
