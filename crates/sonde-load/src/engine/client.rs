//! HTTP connections on hyper's low-level client: one TCP (or TLS) connection per load
//! connection or user, TCP_NODELAY, keep-alive, HTTP/1.1 or HTTP/2, reconnect when closed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio_rustls::TlsConnector;

use super::EngineError;
use crate::plan::RequestSpec;

/// How a request ended; the index into the per-request histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Answered with 1xx–3xx.
    Ok = 0,
    /// The TCP connection could not be made.
    Connect = 1,
    /// No complete answer before the deadline.
    Timeout = 2,
    /// The TLS handshake failed.
    Tls = 3,
    /// A 4xx answer.
    Http4xx = 4,
    /// A 5xx answer.
    Http5xx = 5,
    /// The connection broke or the answer was malformed.
    Other = 6,
}

/// Every class, in index order.
pub(crate) const CLASSES: [Class; 7] = [
    Class::Ok,
    Class::Connect,
    Class::Timeout,
    Class::Tls,
    Class::Http4xx,
    Class::Http5xx,
    Class::Other,
];

impl Class {
    /// The `error.type` label value (empty for a success).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Class::Ok => "",
            Class::Connect => "connect",
            Class::Timeout => "timeout",
            Class::Tls => "tls",
            Class::Http4xx => "http_4xx",
            Class::Http5xx => "http_5xx",
            Class::Other => "other",
        }
    }

    fn of_status(status: u16) -> Class {
        match status {
            100..=399 => Class::Ok,
            400..=499 => Class::Http4xx,
            500..=599 => Class::Http5xx,
            _ => Class::Other,
        }
    }
}

/// What a request was doing, so a timeout can be told apart: a connect that never completes is
/// a connect error (an unreachable host), a handshake that never completes a TLS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// Sending and waiting for the answer.
    Request,
}

impl Phase {
    /// The class of a timeout in this phase.
    pub(crate) fn timeout_class(self) -> Class {
        match self {
            Phase::Connect => Class::Connect,
            Phase::Tls => Class::Tls,
            Phase::Request => Class::Timeout,
        }
    }
}

/// Where requests go: one per distinct scheme, host and port.
#[derive(Debug)]
pub(crate) struct Origin {
    https: bool,
    server_name: ServerName<'static>,
    addr: SocketAddr,
}

/// A request ready to send: its parts are cloned per send (cheap: `Bytes`, shared `Uri`).
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Index of its name in the stats.
    pub(crate) name: usize,
    origin: usize,
    method: Method,
    idempotent: bool,
    /// Origin-form target for HTTP/1.1 (`/path?query`).
    uri_h1: Uri,
    /// Absolute URI for HTTP/2 (`:scheme` and `:authority` come from it).
    uri_h2: Uri,
    headers_h1: HeaderMap,
    headers_h2: HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// Index of the origin it goes to.
    pub(crate) fn origin(&self) -> usize {
        self.origin
    }
}

/// Everything the load tasks share about where and what to send.
pub(crate) struct Client {
    pub(crate) requests: Vec<Prepared>,
    origins: Vec<Origin>,
    tls: Option<TlsConnector>,
    http2: bool,
}

impl Client {
    /// Resolves every origin once (a name that does not resolve stops the run: nothing could
    /// be sent) and prepares the requests.
    pub(crate) async fn new(
        specs: &[RequestSpec],
        names: &[String],
        http2: bool,
        insecure: bool,
    ) -> Result<Client, EngineError> {
        let mut keys: Vec<(bool, String, u16)> = Vec::new();
        let mut origins = Vec::new();
        let mut requests = Vec::with_capacity(specs.len());
        for spec in specs {
            let https = match spec.url.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => {
                    return Err(EngineError::Plan(format!(
                        "request {:?}: {} is not an http:// or https:// URL",
                        spec.name, spec.url
                    )));
                }
            };
            let Some(authority) = spec.url.authority().cloned() else {
                return Err(EngineError::Plan(format!(
                    "request {:?}: {} has no host",
                    spec.name, spec.url
                )));
            };
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
            let key = (https, host.to_owned(), port);
            let origin = match keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    let addr = resolve(host, port).await?;
                    let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
                        EngineError::Plan(format!(
                            "request {:?}: {host:?} cannot be a TLS server name: {e}",
                            spec.name
                        ))
                    })?;
                    origins.push(Origin {
                        https,
                        server_name,
                        addr,
                    });
                    keys.push(key);
                    origins.len() - 1
                }
            };
            let path = spec
                .url
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let uri_h1: Uri = path.parse().map_err(|e| {
                EngineError::Plan(format!("request {:?}: path {path:?}: {e}", spec.name))
            })?;
            let mut headers_h2 = HeaderMap::with_capacity(spec.headers.len());
            for (n, v) in &spec.headers {
                headers_h2.append(n.clone(), v.clone());
            }
            let mut headers_h1 = headers_h2.clone();
            if !headers_h1.contains_key(HOST) {
                let v = HeaderValue::from_str(authority.as_str()).map_err(|e| {
                    EngineError::Plan(format!("request {:?}: host: {e}", spec.name))
                })?;
                headers_h1.insert(HOST, v);
            }
            // HTTP/2 carries the authority in `:authority`; a Host header there is an error.
            headers_h2.remove(HOST);
            let name = names.iter().position(|n| *n == spec.name).unwrap_or(0);
            requests.push(Prepared {
                name,
                origin,
                idempotent: matches!(
                    spec.method,
                    Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
                ),
                method: spec.method.clone(),
                uri_h1,
                uri_h2: spec.url.clone(),
                headers_h1,
                headers_h2,
                body: spec.body.clone(),
            });
        }
        let tls = if origins.iter().any(|o| o.https) {
            Some(TlsConnector::from(tls_config(http2, insecure)?))
        } else {
            None
        };
        Ok(Client {
            requests,
            origins,
            tls,
            http2,
        })
    }

    /// Number of origins (a load task keeps one connection per origin).
    pub(crate) fn origin_count(&self) -> usize {
        self.origins.len()
    }

    /// Sends request `idx` on `conns` (opening or replacing the origin's connection as needed)
    /// and reads the whole answer. The caller bounds it with the timeout.
    pub(crate) async fn send(
        &self,
        conns: &mut [Option<Conn>],
        idx: usize,
        phase: &mut Phase,
    ) -> (Class, u16) {
        let p = &self.requests[idx];
        let slot = &mut conns[p.origin];
        for attempt in 0..2 {
            let reused = match slot {
                Some(c) if c.usable() => true,
                _ => {
                    *slot = None;
                    match self.connect(p.origin, phase).await {
                        Ok(c) => *slot = Some(c),
                        Err(class) => return (class, 0),
                    }
                    false
                }
            };
            let Some(conn) = slot.as_mut() else {
                return (Class::Other, 0);
            };
            *phase = Phase::Request;
            match conn.request(p).await {
                Ok(status) => return (Class::of_status(status), status),
                Err(e) => {
                    *slot = None;
                    // A kept-alive connection the server closed just as we sent: try once on
                    // a fresh one (only when the request was not sent, or may be repeated).
                    let retry = reused
                        && attempt == 0
                        && match &e {
                            SendError::NotSent => true,
                            SendError::Failed(e) => {
                                e.is_canceled() || (e.is_incomplete_message() && p.idempotent)
                            }
                        };
                    if !retry {
                        return (Class::Other, 0);
                    }
                }
            }
        }
        (Class::Other, 0)
    }

    async fn connect(&self, origin: usize, phase: &mut Phase) -> Result<Conn, Class> {
        let o = &self.origins[origin];
        *phase = Phase::Connect;
        let tcp = TcpStream::connect(o.addr)
            .await
            .map_err(|_| Class::Connect)?;
        let _ = tcp.set_nodelay(true);
        match (&self.tls, o.https) {
            (Some(tls), true) => {
                *phase = Phase::Tls;
                let stream = tls
                    .connect(o.server_name.clone(), tcp)
                    .await
                    .map_err(|_| Class::Tls)?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                handshake(stream, h2).await
            }
            _ => handshake(tcp, self.http2).await,
        }
    }
}

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

enum Link {
    /// HTTP/1.1: the connection is driven inside the task that sends on it, so an answer wakes
    /// that task directly instead of passing from a connection task to it (possibly across
    /// threads, at the cost of a wake-up). `None` once the connection has ended.
    H1 {
        sender: http1::SendRequest<Full<Bytes>>,
        driver: Option<Driver>,
    },
    /// HTTP/2: hyper's multiplexing connection runs as its own task.
    H2 {
        sender: http2::SendRequest<Full<Bytes>>,
        task: AbortHandle,
    },
}

/// An open connection; dropping it closes it (an HTTP/2 connection's task is aborted, so a
/// server that never answers cannot pile up connections).
pub(crate) struct Conn {
    link: Link,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Link::H2 { task, .. } = &self.link {
            task.abort();
        }
    }
}

impl Conn {
    fn usable(&self) -> bool {
        match &self.link {
            Link::H1 { sender, driver } => driver.is_some() && !sender.is_closed(),
            Link::H2 { sender, .. } => !sender.is_closed(),
        }
    }

    async fn request(&mut self, p: &Prepared) -> Result<u16, SendError> {
        let mut req = Request::new(Full::new(p.body.clone()));
        *req.method_mut() = p.method.clone();
        match &mut self.link {
            Link::H1 { sender, driver } => {
                *req.uri_mut() = p.uri_h1.clone();
                *req.headers_mut() = p.headers_h1.clone();
                let exchange = async {
                    sender.ready().await.map_err(|_| SendError::NotSent)?;
                    let res = sender.send_request(req).await?;
                    Ok(read_answer(res).await?)
                };
                drive(exchange, driver).await
            }
            Link::H2 { sender, .. } => {
                *req.uri_mut() = p.uri_h2.clone();
                *req.headers_mut() = p.headers_h2.clone();
                *req.version_mut() = Version::HTTP_2;
                sender.ready().await.map_err(|_| SendError::NotSent)?;
                let res = sender.send_request(req).await?;
                Ok(read_answer(res).await?)
            }
        }
    }
}

/// The status, once the whole body has been read (latency is to the last byte).
async fn read_answer(res: http::Response<hyper::body::Incoming>) -> Result<u16, hyper::Error> {
    let status = res.status().as_u16();
    let mut body = res.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(status)
}

/// Runs `exchange` while driving the connection in the same task; a connection that ends is
/// dropped (`None`) and the exchange learns it from hyper on its next poll.
async fn drive<F: Future>(exchange: F, driver: &mut Option<Driver>) -> F::Output {
    let mut exchange = std::pin::pin!(exchange);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = exchange.as_mut().poll(cx) {
            return Poll::Ready(out);
        }
        if let Some(d) = driver.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            *driver = None;
            return exchange.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

enum SendError {
    /// The connection was closed before the request went out.
    NotSent,
    /// Sending or reading the answer failed.
    Failed(hyper::Error),
}

impl From<hyper::Error> for SendError {
    fn from(e: hyper::Error) -> Self {
        SendError::Failed(e)
    }
}

async fn handshake<IO>(io: IO, h2: bool) -> Result<Conn, Class>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|_| Class::Other)?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        })
        .abort_handle();
        Ok(Conn {
            link: Link::H2 { sender, task },
        })
    } else {
        // Headers and body go out in one buffer: one plain write per request, which TLS streams
        // (no vectored writes) need and small plain requests do not mind.
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(io)
            .await
            .map_err(|_| Class::Other)?;
        let driver: Driver = Box::pin(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            link: Link::H1 {
                sender,
                driver: Some(driver),
            },
        })
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, EngineError> {
    let unresolved = |detail: String| EngineError::Resolve {
        host: host.to_owned(),
        detail,
    };
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| unresolved(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| unresolved("no address".to_owned()))
}

fn provider() -> Arc<CryptoProvider> {
    // ring, as everywhere in the workspace (no C/cmake toolchain for aws-lc).
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(http2: bool, insecure: bool) -> Result<Arc<ClientConfig>, EngineError> {
    let tls_err = |e: String| EngineError::Tls(e);
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(format!("TLS setup failed: {e}")))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider()).map_err(|e| {
            tls_err(format!(
                "cannot load the system's CA certificates ({e}); install them, or pass --insecure for a test server"
            ))
        })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate is accepted, but the handshake signatures are still checked
/// (the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
