//! AWS Signature Version 4 for remote write (Amazon Managed Service for Prometheus, service
//! `aps`): each request signed with the `aws-sigv4` crate, credentials from the AWS default
//! chain (environment, profile, web identity, ECS, EC2 instance role) or given explicitly,
//! refreshed before they expire.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;

use crate::Error;

/// The service name of Amazon Managed Service for Prometheus.
pub const DEFAULT_SERVICE: &str = "aps";

/// How long before their expiry credentials are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// The SigV4 settings of a remote writer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Setting {
    pub(crate) region: Option<String>,
    pub(crate) service: Option<String>,
    /// Access key, secret key, session token; `None`: the default chain.
    pub(crate) credentials: Option<(String, String, Option<String>)>,
}

/// The headers that sign one request (`authorization`, `x-amz-date`, and
/// `x-amz-security-token` with temporary credentials), for `method`, `url`, the `headers` sent
/// (all of them are signed) and `body`, at `time`.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // one argument per input of the SigV4 algorithm
pub fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, Error> {
    let identity: Identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Error::Config(format!("SigV4: {e}")))?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| Error::Config(format!("SigV4: cannot sign a request to this URL: {e}")))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| Error::Config(format!("SigV4: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The region named by an Amazon Managed Service for Prometheus URL
/// (`https://aps-workspaces.<region>.amazonaws.com/...`).
pub(crate) fn region_from_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
    let rest = host.strip_prefix("aps-workspaces.")?;
    let region = rest.split('.').next()?;
    (!region.is_empty()).then(|| region.to_owned())
}

/// Signs requests on the exporter's runtime, with credentials cached until shortly before
/// they expire.
pub(crate) struct Signer {
    region: String,
    service: String,
    provider: SharedCredentialsProvider,
    cached: Option<Credentials>,
}

impl Signer {
    /// Resolves the region (given, from the URL, or the AWS configuration) and the
    /// credentials provider. Runs on the exporter's runtime (the default chain may ask the
    /// instance metadata service).
    pub(crate) async fn new(
        setting: Setting,
        url: &str,
        timeout: Duration,
    ) -> Result<Signer, Error> {
        let explicit_region = setting.region.clone().or_else(|| region_from_url(url));
        let (region, provider) = match setting.credentials {
            Some((key, secret, token)) => (
                explicit_region,
                SharedCredentialsProvider::new(Credentials::new(
                    key,
                    secret,
                    token,
                    None,
                    "sonde-config",
                )),
            ),
            None => {
                // Answers capped, as for CloudWatch: credential lookups read whole answers.
                let http = sonde_http1::aws::http_client(sonde_http1::aws::MAX_ANSWER_BYTES);
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .http_client(http)
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .connect_timeout(timeout)
                            .operation_attempt_timeout(timeout)
                            .build(),
                    );
                // A known region spares the region chain (which asks the instance metadata
                // service, waiting on it off EC2).
                if let Some(r) = &explicit_region {
                    loader = loader.region(aws_config::Region::new(r.clone()));
                }
                let sdk = loader.load().await;
                let provider = sdk.credentials_provider().ok_or_else(|| {
                    Error::Config("SigV4: no AWS credentials provider could be set up".into())
                })?;
                (
                    explicit_region.or_else(|| sdk.region().map(|r| r.to_string())),
                    provider,
                )
            }
        };
        let region = region.filter(|r| !r.trim().is_empty()).ok_or_else(|| {
            Error::Config(
                "SigV4: no AWS region: give sigv4_region, use an aps-workspaces.<region>.amazonaws.com URL, or set AWS_REGION".into(),
            )
        })?;
        Ok(Signer {
            region,
            service: setting
                .service
                .unwrap_or_else(|| DEFAULT_SERVICE.to_owned()),
            provider,
            cached: None,
        })
    }

    /// The signing headers for a request; an error (no credentials now) is worth a retry.
    pub(crate) async fn sign(
        &mut self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, String> {
        let fresh = self.cached.as_ref().is_some_and(|c| {
            c.expiry()
                .is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE)
        });
        if !fresh {
            match self.provider.provide_credentials().await {
                Ok(c) => self.cached = Some(c),
                // A refresh that fails while the cached credentials are still valid: go on
                // with them (the next request tries again).
                Err(_)
                    if self
                        .cached
                        .as_ref()
                        .is_some_and(|c| c.expiry().is_none_or(|e| e > SystemTime::now())) => {}
                Err(e) => return Err(format!("SigV4: no AWS credentials: {e}")),
            }
        }
        let Some(credentials) = &self.cached else {
            return Err("SigV4: no AWS credentials".into());
        };
        sign_headers(
            "POST",
            url,
            headers,
            body,
            credentials,
            &self.region,
            &self.service,
            SystemTime::now(),
        )
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_amp_url() {
        assert_eq!(
            region_from_url(
                "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"
            )
            .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_from_url("https://mimir.example/api/v1/push"), None);
        assert_eq!(region_from_url("not a url"), None);
    }

    /// No credentials when a request is to be sent (the chain has none yet, nothing cached):
    /// the attempt is a retry, not a drop, and nothing goes out unsigned.
    #[test]
    fn no_credentials_at_send_time_is_a_retry() {
        use aws_credential_types::credential_fn::provide_credentials_fn;
        use aws_credential_types::provider::error::CredentialsError;
        use sonde_push::Sink as _;
        let none = provide_credentials_fn(|| async {
            Err(CredentialsError::not_loaded("none in this test"))
        });
        let mut sender = super::super::Sender {
            client: crate::client::client(Duration::from_secs(1), &Default::default()).unwrap(),
            // Nobody listens: a request sent unsigned would fail with another error.
            url: "http://127.0.0.1:9/api/v1/write".into(),
            headers: Default::default(),
            auth: super::super::Auth::None,
            signer: Some(Signer {
                region: "us-east-1".into(),
                service: DEFAULT_SERVICE.into(),
                provider: SharedCredentialsProvider::new(none),
                cached: None,
            }),
        };
        let batch = sonde_push::Encoded {
            body: bytes::Bytes::from_static(b"samples"),
            points: 1,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match runtime.block_on(sender.send(&batch, Duration::from_secs(1))) {
            sonde_push::Outcome::Retry { error, after } => {
                assert!(error.starts_with("SigV4: no AWS credentials"), "{error}");
                assert_eq!(after, None);
            }
            other => panic!("not a retry: {other:?}"),
        }
    }
}
