//! The HTTP client sonde gives the AWS SDK (CloudWatch's PutMetricData, and the credential
//! lookups of CloudWatch and SigV4 remote write): `aws-smithy-http-client` on rustls, with
//! every answer's body capped. The SDK reads an answer whole before it decodes it, so an
//! endpoint (or a proxy, or an `endpoint_url` pointed at the wrong server) that streams an
//! endless body would otherwise grow the process by gigabytes until the attempt times out.
//!
//! ```
//! let http = sonde_http1::aws::http_client(sonde_http1::aws::MAX_ANSWER_BYTES);
//! // aws_config::defaults(BehaviorVersion::latest()).http_client(http)...
//! # drop(http);
//! ```

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// The default cap on an answer's body: AWS answers to PutMetricData and to credential
/// lookups are a few kilobytes at most.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// An HTTPS (and plain HTTP, for local endpoints) client for the AWS SDK whose answers'
/// bodies fail past `max_answer_bytes`: the request then fails as a response error, the
/// connection is dropped, and nothing past the cap is held.
pub fn http_client(max_answer_bytes: usize) -> SharedHttpClient {
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    SharedHttpClient::new(CappedClient {
        inner,
        max: max_answer_bytes,
    })
}

/// The inner client, its connectors' answers capped; everything else (its configuration check,
/// the metadata the SDK puts in its user agent) is the inner client's. (It checks nothing in
/// `validate_final_config`, left to the default.)
#[derive(Debug)]
struct CappedClient {
    inner: SharedHttpClient,
    max: usize,
}

impl HttpClient for CappedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Capped {
            inner: self.inner.http_connector(settings, components),
            max: self.max,
        })
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_base_client_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

/// A connector whose answers' bodies are limited to `max` bytes.
#[derive(Debug)]
struct Capped {
    inner: SharedHttpConnector,
    max: usize,
}

impl HttpConnector for Capped {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let answer = self.inner.call(request);
        let max = self.max;
        HttpConnectorFuture::new(async move {
            use http_body_util::BodyExt as _;
            let mut answer = answer.await?;
            let limited = http_body_util::Limited::new(answer.take_body(), max).map_err(move |e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Box::new(TooLong(max)) as aws_smithy_types::body::Error
                } else {
                    e
                }
            });
            *answer.body_mut() = SdkBody::from_body_1_x(limited);
            Ok(answer)
        })
    }
}

/// An answer's body went past the cap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the answer's body is over {0} bytes, more than any AWS answer: is the endpoint an AWS service?"
)]
struct TooLong(usize);
