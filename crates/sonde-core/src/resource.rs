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

    /// [`from_env`](Self::from_env) plus what can be detected about where the process runs:
    /// `host.name`, `host.arch`, `os.type`, `process.pid`, `process.executable.name`,
    /// `process.runtime.name`, `service.instance.id` (a random UUID generated once per process,
    /// as the semantic conventions recommend; set it in `OTEL_RESOURCE_ATTRIBUTES` to keep one
    /// across restarts), and on AWS Lambda the FaaS and cloud attributes (`faas.name`,
    /// `faas.version`, `faas.instance`, `faas.max_memory`, `cloud.region`...), with the function
    /// name as `service.name` unless one is configured; in a Kubernetes pod the `k8s.*`
    /// attributes its downward-API variables give ([`kubernetes_from`](Self::kubernetes_from)).
    /// Configured values win over detected ones.
    pub fn detect() -> Self {
        Self::detect_from(&|k: &str| std::env::var(k).ok())
    }

    /// [`detect`](Self::detect) with every environment variable read through `env`.
    pub fn detect_from(env: &dyn Fn(&str) -> Option<String>) -> Self {
        Self::detect_from_with(env, std::iter::empty::<(String, String)>())
    }

    /// [`detect`](Self::detect) with more detected attributes (what a caller found itself,
    /// such as cloud metadata): they override the built-in detection and, like it, lose to
    /// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`.
    pub fn detect_with<K: Into<String>, V: Into<String>>(
        extra: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self::detect_from_with(&|k: &str| std::env::var(k).ok(), extra)
    }

    fn detect_from_with<K: Into<String>, V: Into<String>>(
        env: &dyn Fn(&str) -> Option<String>,
        extra: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut detected = Self::detected_from(env);
        for (k, v) in extra {
            detected = detected.with(k, v);
        }
        let configured = Self::from_vars(
            env("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
            env("OTEL_SERVICE_NAME").as_deref(),
        );
        let service_configured = env("OTEL_SERVICE_NAME").is_some_and(|s| !s.is_empty())
            || env("OTEL_RESOURCE_ATTRIBUTES")
                .as_deref()
                .and_then(parse_key_values)
                .is_some_and(|a| a.iter().any(|(k, _)| k == "service.name"));
        let mut r = detected.clone().merge(&configured);
        if !service_configured && let Some(name) = detected.get("service.name") {
            r = r.with("service.name", name.to_string());
        }
        r
    }

    /// The detected attributes of [`detect`](Self::detect), with environment variables read
    /// through `get`.
    pub fn detected_from(get: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut r = Resource::empty()
            .with("os.type", std::env::consts::OS)
            .with("host.arch", host_arch())
            .with("process.pid", std::process::id().to_string())
            .with("process.runtime.name", "rust")
            .with("service.instance.id", instance_id());
        if let Some(host) = hostname(get) {
            r = r.with("host.name", host);
        }
        if let Some(exe) = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        {
            r = r.with("process.executable.name", exe);
        }
        if let Some(lambda) = Self::lambda_from(get) {
            r = r.merge(&lambda);
        }
        if let Some(k8s) = Self::kubernetes_from(get) {
            r = r.merge(&k8s);
        }
        r
    }

    /// The attributes of a Kubernetes pod, from the variables a pod spec sets through the
    /// downward API (`K8S_NODE_NAME`, `K8S_POD_NAME`, `K8S_NAMESPACE_NAME`, `K8S_POD_UID`, as the
    /// OpenTelemetry Collector's charts name them; `NODE_NAME`, `POD_NAME`, `POD_NAMESPACE`,
    /// `POD_UID` too), the pod name falling back to `HOSTNAME` (the pod's name unless the pod
    /// uses the host's network); `None` outside Kubernetes (no `KUBERNETES_SERVICE_HOST`).
    /// Environment only: nothing is read from the API server or the filesystem.
    pub fn kubernetes_from(get: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        get("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        };
        let mut r = Resource::empty();
        for (key, names) in [
            ("k8s.node.name", &["K8S_NODE_NAME", "NODE_NAME"][..]),
            (
                "k8s.namespace.name",
                &["K8S_NAMESPACE_NAME", "POD_NAMESPACE"][..],
            ),
            ("k8s.pod.uid", &["K8S_POD_UID", "POD_UID"][..]),
            ("k8s.pod.name", &["K8S_POD_NAME", "POD_NAME"][..]),
        ] {
            if let Some(v) = first(names) {
                r = r.with(key, v);
            }
        }
        // HOSTNAME is the node's name with hostNetwork: only a pod name when it is not that.
        if r.get("k8s.pod.name").is_none()
            && let Some(h) = first(&["HOSTNAME"])
            && r.get("k8s.node.name") != Some(h.as_str())
        {
            r = r.with("k8s.pod.name", h);
        }
        Some(r)
    }

    /// The attributes of an AWS Lambda function, from the variables Lambda sets
    /// (`AWS_LAMBDA_FUNCTION_NAME`, `AWS_LAMBDA_FUNCTION_VERSION`, `AWS_REGION`,
    /// `AWS_LAMBDA_LOG_STREAM_NAME`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`) read through `get`;
    /// `None` outside Lambda.
    pub fn lambda_from(get: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        let name = get("AWS_LAMBDA_FUNCTION_NAME").filter(|n| !n.is_empty())?;
        let mut r = Resource::empty()
            .with("cloud.provider", "aws")
            .with("cloud.platform", "aws_lambda")
            .with("faas.name", name.clone())
            .with("service.name", name);
        if let Some(v) = get("AWS_LAMBDA_FUNCTION_VERSION") {
            r = r.with("faas.version", v);
        }
        if let Some(v) = get("AWS_REGION") {
            r = r.with("cloud.region", v);
        }
        if let Some(v) = get("AWS_LAMBDA_LOG_STREAM_NAME") {
            r = r.with("faas.instance", v);
        }
        if let Some(mb) = get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.parse::<u64>().ok())
        {
            r = r.with(
                "faas.max_memory",
                mb.saturating_mul(1024 * 1024).to_string(),
            );
        }
        Some(r)
    }

    /// [`from_env`](Self::from_env) with the variables given explicitly.
    pub fn from_vars(resource_attributes: Option<&str>, service_name: Option<&str>) -> Self {
        let mut r = Resource::empty()
            .with("telemetry.sdk.name", "sonde")
            .with("telemetry.sdk.language", "rust")
            .with("telemetry.sdk.version", env!("CARGO_PKG_VERSION"));
        if let Some(attrs) = resource_attributes.and_then(parse_key_values) {
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

/// The OpenTelemetry `host.arch` value for the architecture compiled for.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

fn hostname(get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| get("HOSTNAME"))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The resource attributes an agent keeps in the `target_info` series of the services it
/// receives from or scrapes: the OpenTelemetry semantic conventions' attributes that SDKs and
/// resource detectors commonly set, other than those that make `job` and `instance`. One list,
/// so every source registers the same `target_info` family (`job`, `instance`, then these);
/// attributes outside it are not kept.
pub const TARGET_INFO_ATTRIBUTES: &[&str] = &[
    "service.version",
    "deployment.environment.name",
    "deployment.environment",
    "telemetry.sdk.name",
    "telemetry.sdk.language",
    "telemetry.sdk.version",
    "host.name",
    "host.arch",
    "os.type",
    "process.pid",
    "process.runtime.name",
    "process.runtime.version",
    "cloud.provider",
    "cloud.platform",
    "cloud.region",
    "cloud.availability_zone",
    "container.id",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.node.name",
    "faas.name",
    "faas.version",
];

/// Parses `key1=value1,key2=value2` with percent-encoded values, the format of
/// `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`. As the specification asks, any
/// malformed entry discards the whole value (`None`).
pub fn parse_key_values(s: &str) -> Option<Vec<(String, String)>> {
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

/// This process's `service.instance.id`: a version 4 UUID drawn once, from the standard
/// library's per-process random hash keys (no extra dependency), the time and the pid.
pub fn instance_id() -> &'static str {
    static ID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let draw = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.write_u32(std::process::id());
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.finish()
        };
        let (a, b) = (draw(1), draw(2));
        // Version 4, variant 10xx.
        let a = (a & !0xF000) | 0x4000;
        let b = (b & !(0xC000 << 48)) | (0x8000 << 48);
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFFF,
            b >> 48,
            b & 0xFFFF_FFFF_FFFF
        )
    });
    &ID
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_a_v4_uuid_drawn_once_and_configurable() {
        let id = instance_id();
        assert_eq!(id.len(), 36, "{id}");
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        assert_eq!(instance_id(), id, "one per process");
        let none = |_: &str| None;
        assert_eq!(
            Resource::detect_from(&none).get("service.instance.id"),
            Some(id)
        );
        let set = |k: &str| {
            (k == "OTEL_RESOURCE_ATTRIBUTES").then(|| "service.instance.id=pod-7".to_owned())
        };
        assert_eq!(
            Resource::detect_from(&set).get("service.instance.id"),
            Some("pod-7")
        );
    }

    #[test]
    fn extra_detected_attributes_override_detection_and_lose_to_configuration() {
        let env =
            |k: &str| (k == "OTEL_RESOURCE_ATTRIBUTES").then(|| "host.type=configured".to_owned());
        let extra = [("host.name", "ip-10-0-0-12"), ("host.type", "m7g.large")];
        let r = Resource::detect_from_with(&env, extra);
        assert_eq!(
            r.get("host.name"),
            Some("ip-10-0-0-12"),
            "over the built-in hostname"
        );
        assert_eq!(
            r.get("host.type"),
            Some("configured"),
            "the configuration wins"
        );
    }

    #[test]
    fn kubernetes_attributes_come_from_the_downward_api_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        // Outside Kubernetes: nothing, whatever else is set.
        let outside = env(&[("K8S_NODE_NAME", "node-1"), ("HOSTNAME", "laptop")]);
        assert_eq!(Resource::kubernetes_from(&outside), None);
        assert_eq!(Resource::detect_from(&outside).get("k8s.node.name"), None);
        // A DaemonSet pod with the chart's variables.
        let daemonset = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("K8S_NODE_NAME", "node-1"),
            ("K8S_POD_NAME", "sonde-agent-x7k2p"),
            ("K8S_NAMESPACE_NAME", "monitoring"),
            ("K8S_POD_UID", "0b6a5c1e-1111-4222-8333-444455556666"),
            ("HOSTNAME", "node-1"),
        ]);
        let r = Resource::detect_from(&daemonset);
        assert_eq!(r.get("k8s.node.name"), Some("node-1"));
        assert_eq!(r.get("k8s.pod.name"), Some("sonde-agent-x7k2p"));
        assert_eq!(r.get("k8s.namespace.name"), Some("monitoring"));
        assert_eq!(
            r.get("k8s.pod.uid"),
            Some("0b6a5c1e-1111-4222-8333-444455556666")
        );
        // The alternative names, the pod name from HOSTNAME, blank values ignored.
        let plain = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("NODE_NAME", "node-2"),
            ("POD_NAMESPACE", " "),
            ("HOSTNAME", "web-5d8f7"),
        ]);
        let r = Resource::kubernetes_from(&plain).unwrap();
        assert_eq!(r.get("k8s.node.name"), Some("node-2"));
        assert_eq!(r.get("k8s.pod.name"), Some("web-5d8f7"));
        assert_eq!(r.get("k8s.namespace.name"), None);
        // With hostNetwork, HOSTNAME is the node: not taken for the pod.
        let host_network = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("K8S_NODE_NAME", "node-3"),
            ("HOSTNAME", "node-3"),
        ]);
        let r = Resource::kubernetes_from(&host_network).unwrap();
        assert_eq!(r.get("k8s.pod.name"), None);
    }

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

    #[test]
    fn detection_fills_host_process_and_lambda_but_configuration_wins() {
        let vars = |extra: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                [
                    ("AWS_LAMBDA_FUNCTION_NAME", "resize"),
                    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
                    ("AWS_REGION", "eu-west-1"),
                    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
                ]
                .iter()
                .chain(extra)
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
            }
        };
        let r = Resource::detect_from(&vars(&[]));
        assert_eq!(r.get("service.name"), Some("resize"));
        assert_eq!(r.get("faas.name"), Some("resize"));
        assert_eq!(r.get("faas.max_memory"), Some("134217728"));
        assert_eq!(r.get("cloud.region"), Some("eu-west-1"));
        assert_eq!(r.get("os.type"), Some(std::env::consts::OS));
        assert_eq!(
            r.get("process.pid"),
            Some(std::process::id().to_string().as_str())
        );
        assert!(r.get("host.name").is_some());
        assert_eq!(r.get("telemetry.sdk.name"), Some("sonde"));
        let r = Resource::detect_from(&vars(&[
            ("OTEL_SERVICE_NAME", "thumbnails"),
            ("OTEL_RESOURCE_ATTRIBUTES", "cloud.region=us-east-1"),
        ]));
        assert_eq!(r.get("service.name"), Some("thumbnails"));
        assert_eq!(r.get("cloud.region"), Some("us-east-1"));
        let r = Resource::detect_from(&|_: &str| None);
        assert!(
            r.get("service.name")
                .unwrap()
                .starts_with("unknown_service:")
        );
        assert_eq!(r.get("faas.name"), None);
    }
}
