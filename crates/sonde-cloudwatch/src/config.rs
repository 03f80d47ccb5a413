//! The exporters' settings as a configuration file holds them (the agent's
//! `[exporters.cloudwatch]` and `[exporters.emf]`), checked as start-up checks them.

use std::time::Duration;

use serde::Deserialize;
use sonde_settings::{Expect, Problem};

use crate::{CloudWatchBuilder, Destination, EmfBuilder, check_namespace};

const NAMESPACE_HINT: &str = "choose a namespace of your own, such as the service's name";

/// `namespace` as both exporters check it: present, and accepted by CloudWatch.
fn namespace_problem(namespace: Option<&str>) -> Option<Problem> {
    let Some(ns) = namespace else {
        return Some(Problem::new(
            "",
            "needs a `namespace`",
            "for example namespace = \"my-service\"",
        ));
    };
    check_namespace(ns)
        .err()
        .map(|e| Problem::new("namespace", e.to_string(), NAMESPACE_HINT))
}

/// The PutMetricData exporter's settings: namespace, region, interval, resolution, endpoint.
/// The registry, resource, selection and a durable queue are the caller's to add to the
/// [builder](Self::builder).
///
/// ```
/// use sonde_cloudwatch::CloudWatchConfig;
/// use sonde_settings::Settings;
///
/// let config = CloudWatchConfig { namespace: Some("AWS/Foo".into()), ..Default::default() };
/// assert!(config.validate()[0].message.contains("is not accepted by CloudWatch"));
/// ```
// URL credentials stay out of `Debug` output, as in the builder's.
#[derive(custom_debug::Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudWatchConfig {
    /// The metrics' namespace (required; not `AWS/...`).
    pub namespace: Option<String>,
    /// The region (else the AWS configuration chain's).
    pub region: Option<String>,
    /// Export interval (default 60 s).
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
    /// 1-second storage resolution.
    pub high_resolution: bool,
    /// Another endpoint (a VPC endpoint, a local test endpoint).
    #[debug(with = sonde_settings::redact::optional_url)]
    pub endpoint_url: Option<String>,
}

impl Default for CloudWatchConfig {
    fn default() -> Self {
        CloudWatchConfig {
            namespace: None,
            region: None,
            interval: Duration::from_secs(60),
            high_resolution: false,
            endpoint_url: None,
        }
    }
}

impl CloudWatchConfig {
    /// The exporter these settings describe.
    pub fn builder(&self) -> CloudWatchBuilder {
        let mut b = CloudWatchBuilder::new(self.namespace.clone().unwrap_or_default())
            .interval(self.interval)
            .high_resolution(self.high_resolution);
        if let Some(r) = &self.region {
            b = b.region(r.clone());
        }
        if let Some(u) = &self.endpoint_url {
            b = b.endpoint_url(u.clone());
        }
        b
    }
}

impl sonde_settings::Settings for CloudWatchConfig {
    fn expect(key: &str) -> Option<Expect> {
        match key {
            "interval" => Some(Expect::interval(Duration::from_secs(60))),
            "high_resolution" => Some(Expect::Flag),
            _ => None,
        }
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems: Vec<Problem> = [
            Self::within("interval", self.interval),
            namespace_problem(self.namespace.as_deref()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if self.region.as_ref().is_some_and(|r| r.trim().is_empty()) {
            problems.push(Problem {
                key: "region".into(),
                message: "is empty".into(),
                names_key: true,
                hint: "give one like \"us-east-1\", or remove the key to use the AWS configuration chain".into(),
            });
        }
        if let Some(url) = &self.endpoint_url
            && !sonde_push::is_http_url(url)
        {
            problems.push(Problem::new(
                "endpoint_url",
                format!("`{url}` is not an absolute http:// or https:// URL with a host"),
                "for example \"https://monitoring.us-east-1.amazonaws.com\"",
            ));
        }
        problems
    }
}

/// The EMF writer's settings: namespace and destination. The registry, resource and
/// selection are the caller's to add to the [builder](Self::builder).
///
/// ```
/// use sonde_cloudwatch::{Destination, EmfConfig};
/// use sonde_settings::Settings;
///
/// let config: EmfConfig = serde_json::from_str(r#"{"namespace": "app", "destination": "udp://127.0.0.1:25888"}"#)?;
/// assert!(matches!(config.destination, Destination::Udp(_)));
/// assert!(config.validate().is_empty());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmfConfig {
    /// The metrics' namespace (required; not `AWS/...`).
    pub namespace: Option<String>,
    /// Where documents go: `stdout` (default), `file:///path`, `tcp://host:port`,
    /// `udp://host:port`; parsed (and resolved) when read.
    pub destination: Destination,
}

impl Default for EmfConfig {
    fn default() -> Self {
        EmfConfig {
            namespace: None,
            destination: Destination::Stdout,
        }
    }
}

impl EmfConfig {
    /// The writer these settings describe.
    pub fn builder(&self) -> EmfBuilder {
        EmfBuilder::new(self.namespace.clone().unwrap_or_default())
            .destination(self.destination.clone())
    }
}

impl sonde_settings::Settings for EmfConfig {
    fn expect(_key: &str) -> Option<Expect> {
        None
    }

    fn validate(&self) -> Vec<Problem> {
        namespace_problem(self.namespace.as_deref())
            .into_iter()
            .collect()
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Destination::parse(&s).map_err(serde::de::Error::custom)
    }
}
