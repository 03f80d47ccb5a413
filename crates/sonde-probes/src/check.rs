//! One run of a probe: resolve, connect, TLS, HTTP/1.1 exchange, each phase timed.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::HttpSpec;
use crate::tls::TlsSetup;

/// Bytes of status line plus headers accepted before giving up.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Body bytes read before the check stops reading (the check still succeeds).
pub(crate) const MAX_BODY: u64 = 1024 * 1024;
/// Informational (1xx) responses skipped before the final one.
const MAX_INFORMATIONAL: usize = 16;

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

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
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

    let mut chunk = vec![0u8; 16 * 1024];
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut scanned = 0;
    let mut first = true;
    let mut informational = 0;
    let head = loop {
        if let Some(end) = find_head_end(&buf, scanned) {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end);
            scanned = 0;
            if (100..200).contains(&head.status) && head.status != 101 {
                informational += 1;
                if informational > MAX_INFORMATIONAL {
                    return Err(Failure::new(
                        ErrorType::Protocol,
                        format!("more than {MAX_INFORMATIONAL} informational (1xx) responses"),
                    ));
                }
                continue;
            }
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(Failure::new(
                ErrorType::Protocol,
                format!("the response headers exceed {} KiB", MAX_HEAD / 1024),
            ));
        }
        scanned = buf.len().saturating_sub(3);
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Failure::io(&e, "cannot read the response"))?;
        if first && n > 0 {
            first = false;
            phases.mark("first_byte");
        }
        if n == 0 {
            let what = if first {
                "the server closed the connection without responding"
            } else {
                "the server closed the connection in the middle of the response headers"
            };
            return Err(Failure::new(ErrorType::Protocol, what));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    info.status = Some(head.status);

    let body = if head_only || matches!(head.status, 101 | 204 | 304) {
        Body::None
    } else if head.chunked {
        Body::Chunked
    } else if let Some(n) = head.content_length {
        Body::Length(n)
    } else {
        Body::UntilClose
    };
    let mut decoder = Chunked::default();
    let mut read: u64 = 0;
    let mut feed = |data: &[u8]| -> Result<bool, Failure> {
        read += data.len() as u64;
        let done = match body {
            Body::None => true,
            Body::Length(n) => read >= n,
            Body::Chunked => decoder
                .feed(data)
                .map_err(|e| Failure::new(ErrorType::Protocol, format!("bad chunked body: {e}")))?,
            Body::UntilClose => false,
        };
        Ok(done || read >= MAX_BODY)
    };
    if feed(&buf)? {
        return Ok(head.status);
    }
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // TLS peers that close without close_notify: the end of a close-delimited body.
            Err(e) if body == Body::UntilClose && e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(Failure::io(&e, "cannot read the response body")),
        };
        if n == 0 {
            return match body {
                Body::Length(len) => Err(Failure::new(
                    ErrorType::Protocol,
                    format!("the response body ended before its {len} bytes"),
                )),
                Body::Chunked => Err(Failure::new(
                    ErrorType::Protocol,
                    "the chunked response body ended before its last chunk",
                )),
                Body::None | Body::UntilClose => Ok(head.status),
            };
        }
        if feed(&chunk[..n])? {
            return Ok(head.status);
        }
    }
}

/// The end of the head (just past the blank line) in `buf`, scanning from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn parse_head(head: &[u8]) -> Result<Head, Failure> {
    let bad = |what: String| Failure::new(ErrorType::Protocol, what);
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let shown = || {
        let s = String::from_utf8_lossy(&status_line[..status_line.len().min(80)]).into_owned();
        format!("{s:?}")
    };
    let Some(rest) = status_line.strip_prefix(b"HTTP/1.") else {
        return Err(bad(format!(
            "the response does not start with an HTTP/1.x status line: {}",
            shown()
        )));
    };
    let status = match rest {
        [v, b' ', a, b, c, tail @ ..]
            if v.is_ascii_digit()
                && [a, b, c].iter().all(|d| d.is_ascii_digit())
                && (tail.is_empty() || tail[0] == b' ') =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(bad(format!("malformed status line {}", shown()))),
    };
    if !(100..=599).contains(&status) {
        return Err(bad(format!("status {status} is out of range: {}", shown())));
    }
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue; // blank terminator, obsolete folding or junk: ignored like browsers do
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(value)
                    ))
                })?;
            if content_length.is_some_and(|c| c != n) {
                return Err(bad("conflicting Content-Length headers".into()));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// Finds the end of a chunked body without keeping it.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the size line: value so far, hex digits seen, bytes after the digits.
    #[default]
    SizeStart,
    Size {
        value: u64,
        digits: u32,
        extension: usize,
    },
    Data(u64),
    /// After the data: expecting CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one.
    Trailer {
        line: usize,
        total: usize,
    },
    Done,
}

impl Chunked {
    /// Consumes `data`; true once the terminating chunk and trailers have been seen.
    fn feed(&mut self, mut data: &[u8]) -> Result<bool, &'static str> {
        use ChunkState as S;
        while let Some((&b, rest)) = data.split_first() {
            self.state = match self.state {
                S::Done => return Ok(true),
                S::Data(n) => {
                    let take = data.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 { S::DataEnd } else { S::Data(left) };
                    continue;
                }
                S::SizeStart => match hex(b) {
                    Some(d) => S::Size {
                        value: d,
                        digits: 1,
                        extension: 0,
                    },
                    None => return Err("missing chunk size"),
                },
                S::Size {
                    value,
                    digits,
                    extension,
                } => match (b, hex(b)) {
                    (b'\n', _) if value == 0 => S::Trailer { line: 0, total: 0 },
                    (b'\n', _) => S::Data(value),
                    (_, Some(d)) if extension == 0 => {
                        if digits >= 15 {
                            return Err("chunk size too large");
                        }
                        S::Size {
                            value: value * 16 + d,
                            digits: digits + 1,
                            extension,
                        }
                    }
                    _ if extension >= 4096 => return Err("chunk size line too long"),
                    _ => S::Size {
                        value,
                        digits,
                        extension: extension + 1,
                    },
                },
                S::DataEnd => match b {
                    b'\r' => S::DataEnd,
                    b'\n' => S::SizeStart,
                    _ => return Err("missing CRLF after chunk data"),
                },
                S::Trailer { line, total } => match b {
                    b'\n' if line == 0 => S::Done,
                    b'\n' => S::Trailer { line: 0, total },
                    b'\r' => S::Trailer { line, total },
                    _ if total >= MAX_HEAD => return Err("trailers too long"),
                    _ => S::Trailer {
                        line: line + 1,
                        total: total + 1,
                    },
                },
            };
            data = rest;
        }
        Ok(self.state == S::Done)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n\r\nbody", 0), Some(19));
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\n\nbody", 0), Some(17));
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n", 0), None);
    }

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: Some(12),
                chunked: false
            }
        );
        let h = parse_head(b"HTTP/1.0 404\r\ntransfer-encoding: gzip, Chunked\r\n\r\n").unwrap();
        assert_eq!((h.status, h.chunked), (404, true));
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 999 Huh\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"",
        ] {
            let e = parse_head(bad).unwrap_err();
            assert_eq!(e.kind, ErrorType::Protocol, "{}", e.message);
        }
    }

    #[test]
    fn chunked() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
        let mut d = Chunked::default();
        assert!(d.feed(body).unwrap());
        // Byte by byte.
        let mut d = Chunked::default();
        let done: Vec<bool> = body.iter().map(|b| d.feed(&[*b]).unwrap()).collect();
        assert!(done[..done.len() - 1].iter().all(|d| !d) && done[done.len() - 1]);
        let mut d = Chunked::default();
        assert!(!d.feed(b"A\r\n0123456789\r\n").unwrap());
        assert!(d.feed(b"0\r\n\r\n").unwrap());
        assert!(Chunked::default().feed(b"zz\r\n").is_err());
        assert!(Chunked::default().feed(b"5\r\nhelloXX").is_err());
        assert!(Chunked::default().feed(b"ffffffffffffffffff\r\n").is_err());
    }
}
