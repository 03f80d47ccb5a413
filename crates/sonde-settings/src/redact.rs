//! Keeping credentials out of `Debug` output, logs and error messages: URLs without their
//! `user:password@` part, headers without their values, secrets without their value.
//!
//! The formatters [`url`], [`optional_url`], [`headers`] and [`secret`] go on a settings
//! field with custom_debug's `#[debug(with = ...)]`, as [`duration`](crate::duration) goes on
//! one with serde's `#[serde(with = ...)]` (not compiled here: custom_debug is the user's
//! dependency):
//!
//! ```ignore
//! #[derive(custom_debug::Debug)]
//! struct Endpoint {
//!     #[debug(with = sonde_settings::redact::url)]
//!     url: String,
//!     #[debug(with = sonde_settings::redact::headers)]
//!     headers: Vec<(String, String)>,
//!     #[debug(with = sonde_settings::redact::secret)]
//!     token: Option<String>,
//! }
//! ```
//!
//! ```
//! use sonde_settings::redact::{redact_url, redacted_headers};
//!
//! assert_eq!(redact_url("https://user:hunter2@host/path"), "https://<redacted>@host/path");
//! let headers = [("x-api-key".to_owned(), "hunter2".to_owned())];
//! assert_eq!(format!("{:?}", redacted_headers(&headers)), r#"{"x-api-key": "<redacted>"}"#);
//! ```

use std::borrow::Cow;
use std::fmt;

/// What `Debug` output shows instead of a header value or a secret.
pub const REDACTED: &str = "<redacted>";

/// `url` without the credentials of its `user:password@` part, for `Debug` output, logs and
/// error messages: `https://<redacted>@host/path`. Anything that is not `scheme://...` is
/// returned as is.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..start], &rest[at..]).into(),
        None => url.into(),
    }
}

/// `Debug` of configured headers: their names, every value shown as [`REDACTED`] (tokens and
/// API keys stay out of logs).
pub fn redacted_headers(headers: &[(String, String)]) -> impl fmt::Debug + '_ {
    struct Headers<'a>(&'a [(String, String)]);
    impl fmt::Debug for Headers<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_map()
                .entries(self.0.iter().map(|(k, _)| (k, REDACTED)))
                .finish()
        }
    }
    Headers(headers)
}

// The formatters are generic because `with = ` hands over the field's own type (`&String`,
// `&Vec<_>`, `&Option<Credentials>`).

/// A URL field, its credentials redacted ([`redact_url`]).
pub fn url(url: &impl AsRef<str>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    fmt::Debug::fmt(&redact_url(url.as_ref()), f)
}

/// An optional URL field, its credentials redacted ([`redact_url`]).
pub fn optional_url(url: &Option<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    fmt::Debug::fmt(&url.as_deref().map(redact_url), f)
}

/// A headers field: their names, every value redacted ([`redacted_headers`]).
pub fn headers(
    headers: &impl AsRef<[(String, String)]>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    fmt::Debug::fmt(&redacted_headers(headers.as_ref()), f)
}

/// An optional secret field (a password, a token, credentials): whether it is set, never what
/// it is.
pub fn secret<T>(secret: &Option<T>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    fmt::Debug::fmt(&secret.as_ref().map(|_| REDACTED), f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:hunter2@collector:4318/v1/metrics?x=@"),
            "https://<redacted>@collector:4318/v1/metrics?x=@"
        );
        assert_eq!(redact_url("http://tok@h"), "http://<redacted>@h");
        assert_eq!(redact_url("http://a@b:c@h/p"), "http://<redacted>@h/p");
        assert_eq!(redact_url("http://h:4318/v1/a@b"), "http://h:4318/v1/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
