//! One run of a probe: resolve, connect, TLS, HTTP/1.1 exchange, each phase timed.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sonde_http1::{AnswerError, AnswerReader};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::HttpSpec;
use crate::tls::TlsSetup;

/// Bytes of status line plus headers accepted before giving up.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Body bytes read before the check stops reading (the check still succeeds).
pub(crate) const MAX_BODY: u64 = 1024 * 1024;

/// Why a check failed: the `error.type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Timeout,
    Dns,
    ConnectionRefused,
    ConnectionReset,
    Unreachable,
    Tls,
    Status,
    Protocol,
    Io,
}

impl ErrorType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorType::Timeout => "timeout",
            ErrorType::Dns => "dns",
            ErrorType::ConnectionRefused => "connection_refused",
            ErrorType::ConnectionReset => "connection_reset",
            ErrorType::Unreachable => "unreachable",
            ErrorType::Tls => "tls",
            ErrorType::Status => "status",
            ErrorType::Protocol => "protocol",
            ErrorType::Io => "io",
        }
    }
}

/// A failed check: its type and a message for people.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub kind: ErrorType,
    pub message: String,
}

impl Failure {
    fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// Classifies an I/O error from anywhere after the handshake.
    fn io(e: &io::Error, during: &str) -> Self {
        use io::ErrorKind as K;
        let kind = match e.kind() {
            K::TimedOut => ErrorType::Timeout,
            K::ConnectionRefused => ErrorType::ConnectionRefused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ErrorType::ConnectionReset,
            K::HostUnreachable | K::NetworkUnreachable => ErrorType::Unreachable,
            K::UnexpectedEof => ErrorType::Protocol,
            _ if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => ErrorType::Tls,
            _ => ErrorType::Io,
        };
        Failure::new(kind, format!("{during}: {e}"))
    }
}

/// Phase end times, measured from the start of the check (curl style: cumulative).
#[derive(Debug)]
pub(crate) struct Phases {
    start: Instant,
    pub list: Vec<(&'static str, Duration)>,
}

impl Phases {
    pub(crate) fn new() -> Self {
        Phases {
            start: Instant::now(),
            list: Vec::with_capacity(5),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        self.list.push((phase, self.start.elapsed()));
    }

    pub(crate) fn finish(&mut self) {
        self.mark("total");
    }

    /// The last phase completed, for timeout messages.
    pub(crate) fn reached(&self) -> &'static str {
        self.list.last().map_or("start", |p| p.0)
    }
}

/// What an HTTP check learned before it ended, successfully or not.
#[derive(Debug, Default)]
pub(crate) struct HttpInfo {
    pub status: Option<u16>,
    pub cert_not_after: Option<i64>,
}

/// Resolves `host` and connects to its addresses in turn; marks `dns` and `connect`.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    phases: &mut Phases,
) -> Result<TcpStream, Failure> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Failure::new(ErrorType::Dns, format!("cannot resolve {host:?}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Failure::new(
            ErrorType::Dns,
            format!("{host:?} resolved to no address"),
        ));
    }
    phases.mark("dns");
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                phases.mark("connect");
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(Failure::io(&e, &format!("cannot connect to {addr}"))),
        }
    }
    Err(last.unwrap_or_else(|| Failure::new(ErrorType::Io, "no address to connect to")))
}

/// A TCP probe: resolve and connect.
pub(crate) async fn tcp(host: &str, port: u16, phases: &mut Phases) -> Result<(), Failure> {
    let stream = connect(host, port, phases).await?;
    drop(stream);
    Ok(())
}

/// An HTTP probe up to the end of the body; returns the final status. The caller checks the
/// status against the expectation.
pub(crate) async fn http(
    spec: &HttpSpec,
    request: &[u8],
    tls: Option<&TlsSetup>,
    phases: &mut Phases,
    info: &mut HttpInfo,
) -> Result<u16, Failure> {
    let tcp = connect(&spec.url.host, spec.url.port, phases).await?;
    let head_only = spec.method == "HEAD";
    match tls {
        None => exchange(tcp, request, head_only, phases, info).await,
        Some(setup) => {
            let config = setup
                .as_ref()
                .map_err(|e| Failure::new(ErrorType::Tls, e.clone()))?;
            let name = crate::tls::server_name(&spec.url.host)
                .map_err(|e| Failure::new(ErrorType::Tls, e))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    let kind = if e.kind() == io::ErrorKind::TimedOut {
                        ErrorType::Timeout
                    } else {
                        ErrorType::Tls
                    };
                    Failure::new(kind, format!("TLS handshake failed: {e}"))
                })?;
            phases.mark("tls");
            info.cert_not_after = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::tls::not_after(c));
            exchange(stream, request, head_only, phases, info).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    head_only: bool,
    phases: &mut Phases,
    info: &mut HttpInfo,
) -> Result<u16, Failure> {
    stream
        .write_all(request)
        .await
        .map_err(|e| Failure::io(&e, "cannot send the request"))?;
    stream
        .flush()
        .await
        .map_err(|e| Failure::io(&e, "cannot send the request"))?;
    let mut reader = AnswerReader::new(MAX_HEAD).max_body(MAX_BODY);
    let head = reader
        .head(&mut stream, head_only, || phases.mark("first_byte"))
        .await
        .map_err(failure)?;
    // Known even if the body then fails.
    info.status = Some(head.status);
    let answer = reader.body(&mut stream, head).await.map_err(failure)?;
    Ok(answer.status)
}

fn failure(e: AnswerError) -> Failure {
    match e {
        AnswerError::Io(e) | AnswerError::ResetBeforeAnswer(e) => {
            Failure::io(&e, "cannot read the response")
        }
        other => Failure::new(ErrorType::Protocol, other.to_string()),
    }
}
