//! Turning `metrics` names and label keys, which are arbitrary strings, into valid sonde names.

use std::borrow::Cow;

use sonde_core::name::{self, LongName, MAX_NAME_LEN};

/// What [`sanitize_metric_name`] puts in front of a name that does not start with a letter.
pub const METRIC_NAME_PREFIX: &str = "m_";

/// The sonde family name for a `metrics` key name, or `None` for an empty name.
///
/// sonde metric names match `[A-Za-z][A-Za-z0-9_.\-/]*` and are at most 255 bytes. A valid name is
/// used as it is (`http_requests_total`, `my.lib.latency`, `foo-bar`); otherwise every character
/// outside that set becomes `_` (one `_` per character, so `héllo wörld` becomes `h_llo_w_rld`),
/// a name that does not start with a letter gets the prefix `m_` (`9lives` becomes `m_9lives`,
/// `_private` becomes `m__private`), and the result is cut to 255 bytes. Different names can end
/// up the same (`a b` and `a_b`); they then share one family.
///
/// ```
/// use sonde_recorder::sanitize_metric_name;
/// assert_eq!(sanitize_metric_name("my.lib.latency").as_deref(), Some("my.lib.latency"));
/// assert_eq!(sanitize_metric_name("http requests").as_deref(), Some("http_requests"));
/// assert_eq!(sanitize_metric_name("9lives").as_deref(), Some("m_9lives"));
/// assert_eq!(sanitize_metric_name(""), None);
/// ```
pub fn sanitize_metric_name(name: &str) -> Option<Cow<'_, str>> {
    // Cut rather than refused: every `metrics` name has to land in some family.
    (!name.is_empty())
        .then(|| name::sanitize_metric_name(name, METRIC_NAME_PREFIX, LongName::Truncate))
}

/// The sonde label name for a `metrics` label key.
///
/// sonde label names match `[A-Za-z_][A-Za-z0-9_.]*`, are at most 255 bytes, do not start with
/// `__` (reserved by Prometheus), and on histograms are not `le` or `quantile` (`reserved`). A
/// valid key is used as it is; otherwise every character outside that set becomes `_`, a key
/// starting with a digit or `.` gets a leading `_`, an empty key becomes `_` (these two steps
/// are [`sonde_core::name::sanitize_label_chars`]), a leading run of underscores is shortened
/// to one (`__name__` becomes `_name__`), a reserved key gets a trailing `_` (`le` becomes
/// `le_`), and the result is cut to 255 bytes.
///
/// ```
/// use sonde_recorder::sanitize_label_name;
/// assert_eq!(sanitize_label_name("http.method", &[]), "http.method");
/// assert_eq!(sanitize_label_name("content-type", &[]), "content_type");
/// assert_eq!(sanitize_label_name("2xx", &[]), "_2xx");
/// assert_eq!(sanitize_label_name("le", &["le", "quantile"]), "le_");
/// ```
pub fn sanitize_label_name<'a>(key: &'a str, reserved: &[&str]) -> Cow<'a, str> {
    let mut out = name::sanitize_label_chars(key);
    if out.starts_with("__") {
        // Keep one `_` of the run, so `__x` stays apart from `x`.
        let rest = out.trim_start_matches('_').len();
        let cut = out.len() - rest - 1;
        out.to_mut().drain(..cut);
    }
    if reserved.contains(&out.as_ref()) {
        out.to_mut().push('_');
    }
    if out.len() > MAX_NAME_LEN {
        // Sanitized names are ASCII: any byte is a character boundary.
        out.to_mut().truncate(MAX_NAME_LEN);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_core::name::{validate_label_name, validate_metric_name};

    #[test]
    fn metric_names() {
        for (input, want) in [
            ("http_requests_total", "http_requests_total"),
            ("my.lib.latency", "my.lib.latency"),
            ("foo-bar", "foo-bar"),
            ("a/b", "a/b"),
            ("http requests", "http_requests"),
            ("héllo", "h_llo"),
            ("9lives", "m_9lives"),
            ("_private", "m__private"),
            ("é", "m__"),
            ("ns::metric", "ns__metric"),
        ] {
            let got = sanitize_metric_name(input).unwrap();
            assert_eq!(got, want, "{input}");
            assert!(validate_metric_name(&got).is_ok(), "{got}");
        }
        assert!(matches!(
            sanitize_metric_name("already.valid"),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(sanitize_metric_name(""), None);
        let long = sanitize_metric_name(&"x".repeat(300)).unwrap().into_owned();
        assert_eq!(long.len(), MAX_NAME_LEN);
        let long = sanitize_metric_name(&"é".repeat(300)).unwrap().into_owned();
        assert_eq!(long.len(), MAX_NAME_LEN);
        assert!(validate_metric_name(&long).is_ok());
    }

    #[test]
    fn label_names() {
        let reserved = &["le", "quantile"];
        for (input, want) in [
            ("method", "method"),
            ("http.method", "http.method"),
            ("_x", "_x"),
            ("content-type", "content_type"),
            ("2xx", "_2xx"),
            ("", "_"),
            ("__name__", "_name__"),
            ("___", "_"),
            ("-x", "_x"),
            ("--x", "_x"),
            ("le", "le_"),
            ("quantile", "quantile_"),
            ("lé", "l_"),
            (".x", "_.x"),
        ] {
            let got = sanitize_label_name(input, reserved);
            assert_eq!(got, want, "{input:?}");
            assert!(validate_label_name("m", &got, reserved).is_ok(), "{got}");
        }
        assert_eq!(sanitize_label_name("le", &[]), "le");
        let long = sanitize_label_name(&"-".repeat(300), reserved).into_owned();
        assert!(validate_label_name("m", &long, reserved).is_ok(), "{long}");
    }
}
