//! Cloud resource detection at start (`[agent] resource_detectors`): EC2 through the instance
//! metadata service (IMDSv2, a session token first) and ECS through the task metadata endpoint
//! (v4). Each detector gets a short deadline and failing is not an error: off EC2 or ECS the
//! detector finds nothing, says so once in the log, and start-up goes on.

use std::time::Duration;

use serde_json::Value;
use tracing::{debug, info};

/// A cloud environment to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// EC2: the instance identity document (IMDSv2).
    Ec2,
    /// ECS: the task and container metadata (`ECS_CONTAINER_METADATA_URI_V4`).
    Ecs,
}

impl Detector {
    /// The detector a configuration names (`ec2`, `ecs`).
    pub fn parse(name: &str) -> Option<Detector> {
        match name {
            "ec2" => Some(Detector::Ec2),
            "ecs" => Some(Detector::Ecs),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Detector::Ec2 => "ec2",
            Detector::Ecs => "ecs",
        }
    }
}

/// The names a configuration may give.
pub const DETECTOR_NAMES: [&str; 2] = ["ec2", "ecs"];

/// Runs `detectors` side by side, each within `timeout`; the attributes found (the later
/// detector's win where both give one, ECS over EC2 for the region).
pub fn detect(detectors: &[Detector], timeout: Duration) -> Vec<(String, String)> {
    if detectors.is_empty() {
        return Vec::new();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            info!("resource detection skipped: cannot start its runtime: {e}");
            return Vec::new();
        }
    };
    runtime.block_on(async {
        let client = match client(timeout) {
            Ok(c) => c,
            Err(e) => {
                info!("resource detection skipped: {e}");
                return Vec::new();
            }
        };
        // Side by side: each a task on this runtime, each with its own deadline.
        let runs: Vec<_> = detectors
            .iter()
            .map(|&d| {
                let client = client.clone();
                (
                    d,
                    tokio::spawn(
                        async move { tokio::time::timeout(timeout, run(d, &client)).await },
                    ),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (d, task) in runs {
            match task.await {
                Ok(Ok(Ok(attrs))) => {
                    debug!(
                        detector = d.name(),
                        attributes = attrs.len(),
                        "resource detected"
                    );
                    out.extend(attrs);
                }
                Ok(Ok(Err(why))) => info!("resource detector {}: {why}", d.name()),
                Ok(Err(_)) => info!(
                    "resource detector {}: no answer within {timeout:?} (not running there?)",
                    d.name()
                ),
                Err(e) => info!("resource detector {}: {e}", d.name()),
            }
        }
        out
    })
}

fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    // rustls with ring, as everywhere in the workspace; the metadata endpoints are plain HTTP.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The whole detector has one deadline (around it); a connection that cannot even be made
    // fails at once.
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

async fn run(d: Detector, client: &reqwest::Client) -> Result<Vec<(String, String)>, String> {
    match d {
        Detector::Ec2 => ec2(client).await,
        Detector::Ecs => ecs(client).await,
    }
}

/// Bodies past this are not metadata.
const MAX_BODY: usize = 64 * 1024;

async fn text(response: Result<reqwest::Response, reqwest::Error>) -> Result<String, String> {
    let r = response.map_err(|e| e.without_url().to_string())?;
    let status = r.status();
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let bytes = r.bytes().await.map_err(|e| e.without_url().to_string())?;
    if bytes.len() > MAX_BODY {
        return Err("answered with more than 64 KiB".into());
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| "answered with non-UTF-8 text".into())
}

async fn json(response: Result<reqwest::Response, reqwest::Error>) -> Result<Value, String> {
    serde_json::from_str(&text(response).await?)
        .map_err(|e| format!("answered with invalid JSON: {e}"))
}

/// The attributes every AWS platform starts with: the provider and `platform`.
fn on_aws(platform: &str) -> Vec<(String, String)> {
    vec![
        ("cloud.provider".to_owned(), "aws".to_owned()),
        ("cloud.platform".to_owned(), platform.to_owned()),
    ]
}

fn put(out: &mut Vec<(String, String)>, key: &str, v: Option<&str>) {
    if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
        out.push((key.to_owned(), v.to_owned()));
    }
}

/// Copies string fields of a metadata `document` as they are: `(attribute, field)` each.
fn put_fields(out: &mut Vec<(String, String)>, document: &Value, fields: &[(&str, &str)]) {
    for (key, field) in fields {
        put(out, key, document.get(field).and_then(Value::as_str));
    }
}

/// EC2: a session token (IMDSv2), then the instance identity document and the hostname.
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves the service (as for the AWS SDKs),
/// `AWS_EC2_METADATA_DISABLED=true` turns the detector off.
async fn ec2(client: &reqwest::Client) -> Result<Vec<(String, String)>, String> {
    if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err("AWS_EC2_METADATA_DISABLED is set".into());
    }
    let base = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|_| "http://169.254.169.254".into());
    let base = base.trim_end_matches('/');
    let token = text(
        client
            .put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
            .send()
            .await,
    )
    .await
    .map_err(|e| format!("no IMDSv2 token: {e}"))?;
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("X-aws-ec2-metadata-token", token.trim())
            .send()
    };
    let doc = json(get("/latest/dynamic/instance-identity/document").await)
        .await
        .map_err(|e| format!("instance identity document: {e}"))?;
    let mut out = on_aws("aws_ec2");
    put_fields(
        &mut out,
        &doc,
        &[
            ("cloud.account.id", "accountId"),
            ("cloud.region", "region"),
            ("cloud.availability_zone", "availabilityZone"),
            ("host.id", "instanceId"),
            ("host.type", "instanceType"),
            ("host.image.id", "imageId"),
        ],
    );
    if let Ok(name) = text(get("/latest/meta-data/hostname").await).await {
        put(&mut out, "host.name", Some(name.trim()));
    }
    Ok(out)
}

/// ECS: the container's and the task's metadata (v4 endpoint).
async fn ecs(client: &reqwest::Client) -> Result<Vec<(String, String)>, String> {
    let uri = std::env::var("ECS_CONTAINER_METADATA_URI_V4")
        .map_err(|_| "ECS_CONTAINER_METADATA_URI_V4 is not set (not an ECS task)".to_owned())?;
    let uri = uri.trim_end_matches('/');
    let container = json(client.get(uri).send().await)
        .await
        .map_err(|e| format!("container metadata: {e}"))?;
    let task = json(client.get(format!("{uri}/task")).send().await)
        .await
        .map_err(|e| format!("task metadata: {e}"))?;
    let c = |k: &str| container.get(k).and_then(Value::as_str);
    let t = |k: &str| task.get(k).and_then(Value::as_str);
    let mut out = on_aws("aws_ecs");
    put_fields(
        &mut out,
        &task,
        &[
            ("aws.ecs.cluster.arn", "Cluster"),
            ("aws.ecs.task.arn", "TaskARN"),
            ("aws.ecs.task.family", "Family"),
            ("aws.ecs.task.revision", "Revision"),
        ],
    );
    put(
        &mut out,
        "aws.ecs.launchtype",
        t("LaunchType").map(str::to_ascii_lowercase).as_deref(),
    );
    put(&mut out, "cloud.availability_zone", t("AvailabilityZone"));
    // arn:aws:ecs:<region>:<account>:task/...
    let arn: Vec<&str> = t("TaskARN").unwrap_or_default().split(':').collect();
    if arn.len() > 5 && arn[0] == "arn" {
        put(&mut out, "cloud.region", Some(arn[3]));
        put(&mut out, "cloud.account.id", Some(arn[4]));
    }
    put_fields(
        &mut out,
        &container,
        &[
            ("aws.ecs.container.arn", "ContainerARN"),
            ("container.id", "DockerId"),
            ("container.name", "Name"),
        ],
    );
    if let Some(image) = c("Image") {
        // The tag is after the last ':' past the last '/' (a registry port has a ':' too).
        let (name, tag) = match image.rfind(':') {
            Some(i) if !image[i..].contains('/') => (&image[..i], Some(&image[i + 1..])),
            _ => (image, None),
        };
        put(&mut out, "container.image.name", Some(name));
        put(&mut out, "container.image.tags", tag);
    }
    Ok(out)
}
