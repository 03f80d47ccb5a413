//! Metric and label name validation.

use crate::Error;

/// Longest accepted metric name, as in the OpenTelemetry API.
pub const MAX_NAME_LEN: usize = 255;

/// Checks a metric (instrument) name: `[A-Za-z][A-Za-z0-9_.\-/]*`, at most 255 bytes.
pub fn validate_metric_name(name: &str) -> Result<(), Error> {
    let bad = |problem: String| Error::InvalidMetricName {
        name: name.to_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(bad("the name is empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!("it is {} bytes long", name.len())));
    }
    for (pos, ch) in name.char_indices() {
        let ok = if pos == 0 {
            ch.is_ascii_alphabetic()
        } else {
            ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-' | '/')
        };
        if !ok {
            return Err(bad(format!(
                "character {ch:?} at byte {pos} is not allowed"
            )));
        }
    }
    Ok(())
}

/// Checks a label (attribute) name: `[A-Za-z_][A-Za-z0-9_.]*`, not starting with `__`
/// (reserved by Prometheus), and not `le`/`quantile` on kinds that render them.
pub fn validate_label_name(metric: &str, label: &str, reserved: &[&str]) -> Result<(), Error> {
    let bad = |problem: String| Error::InvalidLabelName {
        metric: metric.to_owned(),
        label: label.to_owned(),
        problem,
    };
    if label.is_empty() {
        return Err(bad("the name is empty".into()));
    }
    if label.len() > MAX_NAME_LEN {
        return Err(bad(format!("it is {} bytes long", label.len())));
    }
    if label.starts_with("__") {
        return Err(bad(
            "names starting with '__' are reserved by Prometheus".into()
        ));
    }
    if reserved.contains(&label) {
        return Err(bad(format!(
            "{label:?} is reserved for this kind of metric (it is added when rendering)"
        )));
    }
    for (pos, ch) in label.char_indices() {
        let ok = if pos == 0 {
            ch.is_ascii_alphabetic() || ch == '_'
        } else {
            ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.')
        };
        if !ok {
            return Err(bad(format!(
                "character {ch:?} at byte {pos} is not allowed"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        for ok in ["a", "http.server.request.duration", "x_1-2/3", "A9"] {
            assert!(validate_metric_name(ok).is_ok(), "{ok}");
        }
        let err = validate_metric_name("http server").unwrap_err().to_string();
        assert!(err.contains("' '") && err.contains("byte 4"), "{err}");
        assert!(validate_metric_name("1abc").is_err());
        assert!(validate_metric_name("").is_err());
        assert!(validate_metric_name(&"a".repeat(256)).is_err());
        let err = validate_metric_name("héllo").unwrap_err().to_string();
        assert!(err.contains("'é'"), "{err}");
    }

    #[test]
    fn label_names() {
        assert!(validate_label_name("m", "http.route", &[]).is_ok());
        assert!(validate_label_name("m", "_x", &[]).is_ok());
        assert!(validate_label_name("m", "__name__", &[]).is_err());
        assert!(validate_label_name("m", "le", &["le"]).is_err());
        let err = validate_label_name("m", "a-b", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'-'") && err.contains("byte 1"), "{err}");
    }
}
