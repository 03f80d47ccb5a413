//! The resource: attributes that describe the process emitting metrics (`service.name`, host,
//! FaaS...), shared by every exporter (Prometheus `target_info`, OTLP `Resource`, CloudWatch
//! dimensions).

/// Attributes of the entity producing telemetry, sorted by key.
///
/// Precedence follows OpenTelemetry: values set explicitly beat `OTEL_SERVICE_NAME`, which beats
/// `service.name` inside `OTEL_RESOURCE_ATTRIBUTES`, which beats the default
/// `unknown_service:<executable>`.
///
/// ```
/// let r = sonde_core::Resource::from_env().with("service.name", "checkout").with("deployment.environment.name", "prod");
/// assert_eq!(r.get("service.name"), Some("checkout"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resource {
    attrs: Vec<(String, String)>,
}

impl Resource {
    /// An empty resource.
    pub fn empty() -> Self {
        Resource::default()
    }

    /// Reads `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` and adds `service.name`
    /// (defaulting to `unknown_service:<executable>`) and `telemetry.sdk.*`.
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok().as_deref(),
            std::env::var("OTEL_SERVICE_NAME").ok().as_deref(),
        )
    }

    /// [`from_env`](Self::from_env) with the variables given explicitly.
    pub fn from_vars(resource_attributes: Option<&str>, service_name: Option<&str>) -> Self {
        let mut r = Resource::empty()
            .with("telemetry.sdk.name", "sonde")
            .with("telemetry.sdk.language", "rust")
            .with("telemetry.sdk.version", env!("CARGO_PKG_VERSION"));
        if let Some(attrs) = resource_attributes.and_then(parse_attributes) {
            for (k, v) in attrs {
                r = r.with(k, v);
            }
        }
        if let Some(name) = service_name.filter(|s| !s.is_empty()) {
            r = r.with("service.name", name);
        }
        if r.get("service.name").is_none() {
            let exe = std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_default();
            r = r.with("service.name", format!("unknown_service:{exe}"));
        }
        r
    }

    /// Sets an attribute, replacing any earlier value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        match self.attrs.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => self.attrs[i].1 = value,
            Err(i) => self.attrs.insert(i, (key, value)),
        }
        self
    }

    /// Adds every attribute of `other`, whose values win.
    pub fn merge(mut self, other: &Resource) -> Self {
        for (k, v) in &other.attrs {
            self = self.with(k.clone(), v.clone());
        }
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.attrs[i].1.as_str())
    }

    /// Attributes sorted by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }
}

/// Parses `key1=value1,key2=value2` with percent-encoded values. As the specification asks,
/// any malformed entry discards the whole value.
fn parse_attributes(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        let k = k.trim();
        if k.is_empty() {
            return None;
        }
        out.push((k.to_owned(), percent_decode(v.trim())?));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_parsing() {
        let r = Resource::from_vars(
            Some("service.name=a, deployment.environment.name=prod%20eu ,k=v%2Cw"),
            None,
        );
        assert_eq!(r.get("service.name"), Some("a"));
        assert_eq!(r.get("deployment.environment.name"), Some("prod eu"));
        assert_eq!(r.get("k"), Some("v,w"));
        let r = Resource::from_vars(Some("service.name=a"), Some("b")).with("service.name", "c");
        assert_eq!(r.get("service.name"), Some("c"));
        // A malformed entry discards the whole variable.
        let r = Resource::from_vars(Some("a=1,broken"), None);
        assert_eq!(r.get("a"), None);
        assert!(
            r.get("service.name")
                .unwrap()
                .starts_with("unknown_service:")
        );
        assert_eq!(Resource::from_vars(Some("x=%zz"), None).get("x"), None);
    }
}
