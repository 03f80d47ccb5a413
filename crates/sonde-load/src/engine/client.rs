//! HTTP connections: one TCP (or TLS) connection per load connection or user, TCP_NODELAY,
//! keep-alive, reconnect when closed. HTTP/1.1 on the raw stream (one write per request, the
//! answer read by `sonde-http1`), HTTP/2 on hyper's low-level client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sonde_http1::tls::{TlsError, Verify};
use sonde_http1::{AnswerError, AnswerReader};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
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
    /// The whole HTTP/1.1 request as it goes on the wire, serialized once (as wrk does):
    /// sending it is one write.
    wire_h1: Bytes,
    /// Absolute URI for HTTP/2 (`:scheme` and `:authority` come from it).
    uri_h2: Uri,
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
            let mut headers_h2 = HeaderMap::with_capacity(spec.headers.len());
            for (n, v) in &spec.headers {
                headers_h2.append(n.clone(), v.clone());
            }
            let wire_h1 = wire_h1(spec, &path, authority.as_str())?;
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
                wire_h1,
                uri_h2: spec.url.clone(),
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
                    let retry = reused && attempt == 0 && e.retryable(p.idempotent);
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
                if h2 {
                    handshake_h2(stream).await
                } else {
                    Ok(Conn::h1(Stream::Tls(Box::new(stream))))
                }
            }
            _ if self.http2 => handshake_h2(tcp).await,
            _ => Ok(Conn::h1(Stream::Plain(tcp))),
        }
    }
}

/// The request line, headers and body of an HTTP/1.1 request, as hyper would write them:
/// `Host` first (unless the user set one), a `content-length` when there is a body or the
/// method expects one.
fn wire_h1(spec: &RequestSpec, path: &str, authority: &str) -> Result<Bytes, EngineError> {
    let mut w = Vec::with_capacity(64 + path.len() + spec.body.len());
    w.extend_from_slice(spec.method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(path.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\n");
    let has = |name: &http::header::HeaderName| spec.headers.iter().any(|(n, _)| n == name);
    if !has(&HOST) {
        HeaderValue::from_str(authority)
            .map_err(|e| EngineError::Plan(format!("request {:?}: host: {e}", spec.name)))?;
        w.extend_from_slice(b"host: ");
        w.extend_from_slice(authority.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    for (n, v) in &spec.headers {
        w.extend_from_slice(n.as_str().as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(v.as_bytes());
        w.extend_from_slice(b"\r\n");
    }
    let framed = has(&http::header::CONTENT_LENGTH) || has(&http::header::TRANSFER_ENCODING);
    let expects_body = matches!(spec.method, Method::POST | Method::PUT | Method::PATCH);
    if !framed && (!spec.body.is_empty() || expects_body) {
        w.extend_from_slice(format!("content-length: {}\r\n", spec.body.len()).as_bytes());
    }
    w.extend_from_slice(b"\r\n");
    w.extend_from_slice(&spec.body);
    Ok(Bytes::from(w))
}

/// A connection's byte stream: plain TCP or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(data).await,
            Stream::Tls(s) => {
                s.write_all(data).await?;
                // rustls holds records until flushed.
                s.flush().await
            }
        }
    }
}

/// Bytes read per system call, and the largest answer head accepted (wrk reads 8 KiB).
const READ_BUF: usize = 16 * 1024;

/// HTTP/1.1 on a raw stream, one request at a time: the prepared bytes go out in one write,
/// the answer is read by `sonde_http1` (framed with `httparse`, the body read to the last
/// byte and discarded) in a buffer allocated once per connection. Driven inside the task that
/// sends, so an answer wakes that task directly.
struct H1 {
    io: Stream,
    reader: AnswerReader,
    /// False once the server said it closes, or the connection broke.
    open: bool,
}

impl H1 {
    /// Sends `p` and reads its whole answer; the status code.
    async fn exchange(&mut self, p: &Prepared) -> Result<u16, SendError> {
        if self.reader.pending() {
            // Bytes nobody asked for: the previous answer was framed wrong.
            self.open = false;
            return Err(SendError::NotSent);
        }
        if self.io.write_all(&p.wire_h1).await.is_err() {
            self.open = false;
            return Err(SendError::NotSent);
        }
        let head = p.method == Method::HEAD;
        let read = match &mut self.io {
            Stream::Plain(s) => self.reader.read(s, head, || {}).await,
            Stream::Tls(s) => self.reader.read(s.as_mut(), head, || {}).await,
        };
        match read {
            Ok(answer) => {
                self.open = answer.reusable;
                Ok(answer.status)
            }
            Err(e) => {
                self.open = false;
                Err(match e {
                    AnswerError::ClosedBeforeAnswer | AnswerError::ResetBeforeAnswer(_) => {
                        SendError::Closed
                    }
                    _ => SendError::Broken,
                })
            }
        }
    }
}

enum Link {
    /// HTTP/1.1, plain or over TLS.
    H1(H1),
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
    fn h1(io: Stream) -> Conn {
        Conn {
            link: Link::H1(H1 {
                io,
                reader: AnswerReader::new(READ_BUF),
                open: true,
            }),
        }
    }

    fn usable(&self) -> bool {
        match &self.link {
            Link::H1(h1) => h1.open,
            Link::H2 { sender, .. } => !sender.is_closed(),
        }
    }

    async fn request(&mut self, p: &Prepared) -> Result<u16, SendError> {
        match &mut self.link {
            Link::H1(h1) => h1.exchange(p).await,
            Link::H2 { sender, .. } => {
                let mut req = Request::new(Full::new(p.body.clone()));
                *req.method_mut() = p.method.clone();
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

enum SendError {
    /// The connection was closed before the request went out.
    NotSent,
    /// The connection closed before any byte of the answer (a kept-alive connection the
    /// server closed as the request went out).
    Closed,
    /// The connection broke in the middle of the answer, or the answer was malformed.
    Broken,
    /// HTTP/2: sending or reading the answer failed.
    Failed(hyper::Error),
}

impl SendError {
    /// Whether the request may be sent again on a fresh connection: when it never went out,
    /// or when it may be repeated and nothing came back.
    fn retryable(&self, idempotent: bool) -> bool {
        match self {
            SendError::NotSent => true,
            SendError::Closed => idempotent,
            SendError::Broken => false,
            SendError::Failed(e) => e.is_canceled() || (e.is_incomplete_message() && idempotent),
        }
    }
}

impl From<hyper::Error> for SendError {
    fn from(e: hyper::Error) -> Self {
        SendError::Failed(e)
    }
}

async fn handshake_h2<IO>(io: IO) -> Result<Conn, Class>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|_| Class::Other)?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    })
    .abort_handle();
    Ok(Conn {
        link: Link::H2 { sender, task },
    })
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

fn tls_config(http2: bool, insecure: bool) -> Result<Arc<ClientConfig>, EngineError> {
    let verify = if insecure {
        Verify::Insecure
    } else {
        Verify::Platform
    };
    let alpn: &[&[u8]] = if http2 {
        &[b"h2", b"http/1.1"]
    } else {
        &[b"http/1.1"]
    };
    sonde_http1::tls::client_config(verify, alpn).map_err(|e| match e {
        TlsError::PlatformRoots(_) => EngineError::Tls(format!(
            "{e}; install them, or pass --insecure for a test server"
        )),
        TlsError::Setup(_) | TlsError::File(_) => EngineError::Tls(e.to_string()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests panic on failure by design
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;

    /// A server on loopback that answers each request of a connection with the next canned
    /// answer of `answers` (written in pieces of `piece` bytes, flushed, to split reads), and
    /// reports every request head it got with its connection's number. A connection ends
    /// after its answers run out.
    fn server(
        answers: Vec<Vec<&'static [u8]>>,
        piece: usize,
    ) -> (String, mpsc::Receiver<(usize, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (n, conn_answers) in answers.into_iter().enumerate() {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                s.set_nodelay(true).unwrap();
                for answer in conn_answers {
                    // Read one request head (and a body by its content-length).
                    let mut got = Vec::new();
                    let mut b = [0u8; 1];
                    while !got.ends_with(b"\r\n\r\n") {
                        if s.read(&mut b).unwrap_or(0) == 0 {
                            return;
                        }
                        got.push(b[0]);
                    }
                    let head = String::from_utf8_lossy(&got).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    let mut body = vec![0u8; len];
                    s.read_exact(&mut body).unwrap();
                    tx.send((n, head + &String::from_utf8_lossy(&body)))
                        .unwrap();
                    for part in answer.chunks(piece) {
                        s.write_all(part).unwrap();
                        s.flush().unwrap();
                    }
                }
            }
        });
        (format!("http://{addr}/p?q=1"), rx)
    }

    fn spec(url: &str, method: Method, body: &'static [u8]) -> RequestSpec {
        RequestSpec {
            name: "default".to_owned(),
            method,
            url: url.parse().unwrap(),
            headers: vec![(
                http::header::HeaderName::from_static("x-test"),
                HeaderValue::from_static("1"),
            )],
            body: Bytes::from_static(body),
            weight: 1,
            thresholds: Vec::new(),
        }
    }

    /// Sends `n` requests on one slot; each (class, status) and whether a connection is
    /// left open after it.
    fn send(spec: RequestSpec, n: usize) -> Vec<(Class, u16, bool)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = Client::new(&[spec], &["default".to_owned()], false, false)
                .await
                .unwrap();
            let mut conns: Vec<Option<Conn>> = vec![None];
            let mut out = Vec::new();
            for _ in 0..n {
                let mut phase = Phase::Connect;
                let sent = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.send(&mut conns, 0, &mut phase),
                )
                .await
                .expect("an answer within 5 s");
                out.push((sent.0, sent.1, conns[0].as_ref().is_some_and(Conn::usable)));
            }
            out
        })
    }

    use std::time::Duration;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

    #[test]
    fn a_kept_alive_connection_carries_every_request_and_the_wire_is_what_hyper_sends() {
        let (url, seen) = server(vec![vec![OK, OK, OK]], 1);
        let got = send(spec(&url, Method::POST, b"abc"), 3);
        assert_eq!(got, vec![(Class::Ok, 200, true); 3]);
        let heads: Vec<(usize, String)> = seen.try_iter().collect();
        assert_eq!(heads.len(), 3);
        assert!(
            heads.iter().all(|(conn, _)| *conn == 0),
            "one connection: {heads:?}"
        );
        let host = url.trim_start_matches("http://").trim_end_matches("/p?q=1");
        assert_eq!(
            heads[0].1,
            format!(
                "POST /p?q=1 HTTP/1.1\r\nhost: {host}\r\nx-test: 1\r\ncontent-length: 3\r\n\r\nabc"
            )
        );
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers_are_read_to_the_end() {
        const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: t\r\n\r\n";
        // Written one byte at a time, then as a whole: the parser resumes across reads.
        for piece in [1, 4096] {
            let (url, _seen) = server(vec![vec![CHUNKED, OK]], piece);
            let got = send(spec(&url, Method::GET, b""), 2);
            assert_eq!(got, vec![(Class::Ok, 200, true); 2], "piece {piece}");
        }
    }

    #[test]
    fn bodies_without_framing_end_with_the_connection_and_close_is_honoured() {
        const UNTIL_CLOSE: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nthe whole rest";
        const CLOSE: &[u8] = b"HTTP/1.1 503 No\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno";
        let (url, seen) = server(vec![vec![UNTIL_CLOSE], vec![CLOSE], vec![OK]], 4096);
        let got = send(spec(&url, Method::GET, b""), 3);
        assert_eq!(
            got,
            vec![
                (Class::Ok, 200, false),
                (Class::Http5xx, 503, false),
                (Class::Ok, 200, true)
            ]
        );
        let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
        assert_eq!(
            conns,
            vec![0, 1, 2],
            "a new connection after each closing answer"
        );
    }

    #[test]
    fn interim_answers_head_requests_and_bodiless_statuses_are_framed() {
        const CONTINUE: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 1\r\n\r\nx";
        const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        let (url, _seen) = server(vec![vec![CONTINUE, NO_CONTENT]], 3);
        let got = send(spec(&url, Method::GET, b""), 2);
        assert_eq!(got, vec![(Class::Ok, 201, true), (Class::Ok, 204, true)]);

        // A HEAD answer announces a length but has no body.
        const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
        let (url, _seen) = server(vec![vec![HEAD, HEAD]], 4096);
        let got = send(spec(&url, Method::HEAD, b""), 2);
        assert_eq!(got, vec![(Class::Ok, 200, true); 2]);
    }

    #[test]
    fn malformed_or_oversized_answers_are_errors_and_the_connection_is_dropped() {
        let huge: &'static [u8] = Box::leak(
            format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(READ_BUF))
                .into_bytes()
                .into_boxed_slice(),
        );
        let answers: [&'static [u8]; 5] = [
            b"HTCPCP/1.0 418 Teapot\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\ncut short",
            huge,
        ];
        for answer in answers {
            let (url, _seen) = server(vec![vec![answer]], 4096);
            let got = send(spec(&url, Method::GET, b""), 1);
            assert_eq!(
                got,
                vec![(Class::Other, 0, false)],
                "{:?}",
                String::from_utf8_lossy(&answer[..40.min(answer.len())])
            );
        }
    }

    #[test]
    fn a_kept_alive_connection_the_server_closed_is_retried_once_on_a_new_one() {
        // The first connection answers once, then closes without saying so.
        let (url, seen) = server(vec![vec![OK], vec![OK]], 4096);
        let got = send(spec(&url, Method::GET, b""), 2);
        assert_eq!(got, vec![(Class::Ok, 200, true); 2]);
        let conns: Vec<usize> = seen.try_iter().map(|(c, _)| c).collect();
        assert_eq!(conns, vec![0, 1]);

        // Not for a POST: it may have been acted on.
        let (url, _seen) = server(vec![vec![OK], vec![OK]], 4096);
        let got = send(spec(&url, Method::POST, b"x"), 2);
        assert_eq!(got, vec![(Class::Ok, 200, true), (Class::Other, 0, false)]);
    }
}
