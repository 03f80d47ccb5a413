//! Stand-ins for the cloud metadata services the agent's resource detectors ask (no EC2 or ECS
//! here): an instance metadata service that demands an IMDSv2 session token, and an ECS task
//! metadata (v4) endpoint, answering what AWS documents them to answer. Also an endpoint that
//! accepts connections and never answers.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;

/// The IMDSv2 session token the fake hands out and then requires.
pub const TOKEN: &str = "AQAEAFakeSessionToken==";

/// A running fake; stops on drop.
pub struct Metadata {
    /// Where it listens.
    pub addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

impl Metadata {
    /// EC2's instance metadata service: `PUT /latest/api/token` (with a TTL header) gives
    /// [`TOKEN`]; the identity document and the hostname answer only with it (401 without).
    pub fn ec2() -> Metadata {
        Self::start(|method, path, token| match (method, path) {
            (Method::PUT, "/latest/api/token") => reply(StatusCode::OK, TOKEN),
            (Method::GET, _) if token != Some(TOKEN) => reply(StatusCode::UNAUTHORIZED, ""),
            (Method::GET, "/latest/dynamic/instance-identity/document") => reply(
                StatusCode::OK,
                r#"{"accountId":"123456789012","architecture":"x86_64","availabilityZone":"eu-west-1b","imageId":"ami-0abcdef1234567890","instanceId":"i-0123456789abcdef0","instanceType":"m7g.large","pendingTime":"2026-12-01T10:00:00Z","privateIp":"10.0.0.12","region":"eu-west-1","version":"2017-09-30"}"#,
            ),
            (Method::GET, "/latest/meta-data/hostname") => {
                reply(StatusCode::OK, "ip-10-0-0-12.eu-west-1.compute.internal")
            }
            _ => reply(StatusCode::NOT_FOUND, ""),
        })
    }

    /// ECS's task metadata endpoint v4 under `/v4/abc`: the container, then `/task`.
    pub fn ecs() -> Metadata {
        Self::start(|method, path, _| match (method, path) {
            (Method::GET, "/v4/abc") => reply(
                StatusCode::OK,
                r#"{"DockerId":"ea32192c8553fbff06c9340478a2ff089b2bb5646fb718b4ee206641c9086d66","Name":"checkout","DockerName":"ecs-checkout-5-checkout","Image":"registry.example:5000/shop/checkout:1.4.2","ImageID":"sha256:2ae3","ContainerARN":"arn:aws:ecs:us-west-2:111122223333:container/prod/0206b271b1ad4ac8b5b9f7b3d3ec2d8a/9a4b1f0c","Labels":{},"Limits":{"CPU":256,"Memory":512}}"#,
            ),
            (Method::GET, "/v4/abc/task") => reply(
                StatusCode::OK,
                r#"{"Cluster":"arn:aws:ecs:us-west-2:111122223333:cluster/prod","TaskARN":"arn:aws:ecs:us-west-2:111122223333:task/prod/0206b271b1ad4ac8b5b9f7b3d3ec2d8a","Family":"checkout","Revision":"5","DesiredStatus":"RUNNING","KnownStatus":"RUNNING","AvailabilityZone":"us-west-2a","LaunchType":"FARGATE","Containers":[]}"#,
            ),
            _ => reply(StatusCode::NOT_FOUND, ""),
        })
    }

    fn start(
        answer: impl Fn(Method, &str, Option<&str>) -> Response<Full<Bytes>>
        + Clone
        + Send
        + Sync
        + 'static,
    ) -> Metadata {
        let (runtime, listener, addr) = crate::serve::loopback_runtime(1);
        runtime.spawn(async move {
            crate::serve::serve_http(listener, move |req| {
                let answer = answer.clone();
                async move {
                    let token = req
                        .headers()
                        .get("x-aws-ec2-metadata-token")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    answer(req.method().clone(), req.uri().path(), token.as_deref())
                }
            });
        });
        Metadata {
            addr,
            _runtime: runtime,
        }
    }
}

/// A listener that takes connections into its backlog and never answers them (a metadata
/// address that hangs).
pub fn silent() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}
