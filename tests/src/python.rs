//! The Python `prometheus_client` parsers: an implementation independent of ours and of
//! Prometheus's, for both the text and the OpenMetrics format.

use serde_json::Value;

use crate::require_program;

const SCRIPT: &str = r#"
import json, math, sys
fmt = sys.argv[1]
text = sys.stdin.read()
if fmt == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        v = s.value
        out.append({"family": fam.name, "type": fam.type, "unit": getattr(fam, "unit", ""),
                    "name": s.name, "labels": s.labels,
                    "value": "NaN" if math.isnan(v) else ("+Inf" if v == math.inf else ("-Inf" if v == -math.inf else v))})
print(json.dumps(out))
"#;

/// Parses an exposition with `prometheus_client` (`format` is `text` or `openmetrics`) and
/// returns its samples as JSON objects (`family`, `type`, `unit`, `name`, `labels`, `value`).
/// Panics with the parser's error if it rejects the input.
pub fn parse(format: &str, exposition: &str) -> Vec<Value> {
    let python = require_program("python3", "apt-get install -y python3");
    let out = crate::run_with_stdin(&python, &["-c", SCRIPT, format], exposition);
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'prometheus_client'") {
        panic!(
            "the Python package prometheus-client is not installed: pip install prometheus-client (scripts/test does this)"
        );
    }
    assert!(
        out.status.success(),
        "prometheus_client rejected the {format} exposition:\n{err}"
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}
