//! Reading one HTTP/1.1 answer: head, interim answers, body framing.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Header fields parsed in one answer head; more is a malformed answer.
const MAX_HEADERS: usize = 100;

/// How an answer's body is delimited (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a `HEAD` request, or a `1xx`, `204` or `304` answer.
    None,
    /// `content-length` bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// The final head of an answer, before its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body that follows is delimited.
    pub framing: Framing,
    /// The server asked to close the connection after this answer.
    pub close: bool,
}

/// An answer read to the end of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The final status code (interim `1xx` answers are skipped; `101` is final).
    pub status: u16,
    /// How the body was delimited.
    pub framing: Framing,
    /// Body bytes read (decoded size for chunked bodies).
    pub body_bytes: u64,
    /// The body was longer than the reader's limit and was not read to its end.
    pub truncated: bool,
    /// The connection can carry another request: the server did not ask to close it, the
    /// body was delimited and read to its end, and it was not switched to another protocol.
    pub reusable: bool,
}

/// Why an answer could not be read. The connection must not be used again after any of them.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The connection ended before the first byte of the answer (often a kept-alive
    /// connection the server closed as the request went out).
    #[error("the server closed the connection without responding")]
    ClosedBeforeAnswer,
    /// The connection ended inside the head.
    #[error("the server closed the connection in the middle of the response headers")]
    ClosedInHead,
    /// The head did not fit the reader's buffer.
    #[error("the response headers exceed {} KiB", .0 / 1024)]
    HeadTooLarge(usize),
    /// Not an HTTP/1.x answer head, or one with contradictory framing.
    #[error("{0}")]
    Malformed(String),
    /// Too many interim answers before the final one.
    #[error("more than {0} informational (1xx) responses")]
    TooManyInformational(usize),
    /// The connection ended before the announced body length.
    #[error("the response body ended before its {0} bytes")]
    BodyCut(u64),
    /// The connection ended before the last chunk.
    #[error("the chunked response body ended before its last chunk")]
    ChunkedCut,
    /// A malformed chunked body.
    #[error("bad chunked body: {0}")]
    BadChunk(&'static str),
    /// Reading failed.
    #[error("cannot read the response: {0}")]
    Io(#[source] io::Error),
    /// The connection was reset before the first byte of the answer: for a kept-alive
    /// connection, the server had closed it and the reset reached the client before the end
    /// of stream did (the same case as [`ClosedBeforeAnswer`](Self::ClosedBeforeAnswer)).
    #[error("the server reset the connection without responding: {0}")]
    ResetBeforeAnswer(#[source] io::Error),
}

/// Reads answers from a stream, one at a time, in a buffer allocated once; bodies are
/// counted and discarded. One reader per connection: bytes read past an answer stay for the
/// next one.
#[derive(Debug)]
pub struct AnswerReader {
    buf: Box<[u8]>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    max_body: u64,
    max_informational: usize,
}

impl AnswerReader {
    /// A reader whose buffer (and so the largest head accepted) is `buffer` bytes, at least
    /// 1 KiB. Bodies are read whole, and up to 16 interim answers skipped.
    pub fn new(buffer: usize) -> AnswerReader {
        AnswerReader {
            buf: vec![0; buffer.max(1024)].into_boxed_slice(),
            start: 0,
            end: 0,
            max_body: u64::MAX,
            max_informational: 16,
        }
    }

    /// Stops reading a body after `bytes` (the answer is then `truncated`, and the
    /// connection not reusable): a probe needs the status, not a whole download.
    pub fn max_body(mut self, bytes: u64) -> AnswerReader {
        self.max_body = bytes;
        self
    }

    /// Bytes received and not yet part of an answer. Before a request is sent there should
    /// be none: any means the server sent more than it framed, and the connection is not to
    /// be trusted.
    pub fn pending(&self) -> bool {
        self.start != self.end
    }

    /// Reads the answer to a request just sent (`head_request` for `HEAD`: no body whatever
    /// the head says). `first_byte` is called once, when its first bytes arrive.
    pub async fn read<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        head_request: bool,
        first_byte: impl FnMut(),
    ) -> Result<Answer, AnswerError> {
        let head = self.head(io, head_request, first_byte).await?;
        self.body(io, head).await
    }

    /// Reads the final head of the answer to a request just sent (skipping interim `1xx`
    /// ones); [`AnswerReader::body`] reads the rest. For callers that report the status even
    /// when the body then fails.
    pub async fn head<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        head_request: bool,
        mut first_byte: impl FnMut(),
    ) -> Result<Head, AnswerError> {
        let mut received = self.pending();
        if received {
            first_byte();
        }
        let mut informational = 0;
        loop {
            match self.parse_head(head_request)? {
                Some((status, framing, close)) => {
                    if (100..200).contains(&status) && status != 101 {
                        informational += 1;
                        if informational > self.max_informational {
                            return Err(AnswerError::TooManyInformational(self.max_informational));
                        }
                        continue;
                    }
                    return Ok(Head {
                        status,
                        framing,
                        close,
                    });
                }
                None => {
                    if self.end - self.start == self.buf.len() {
                        return Err(AnswerError::HeadTooLarge(self.buf.len()));
                    }
                    let filled = match self.fill(io).await {
                        // A kept-alive connection the server had closed answers the request
                        // with a reset rather than an end of stream when the reset arrives
                        // first.
                        Err(AnswerError::Io(e)) if !received && is_reset(&e) => {
                            return Err(AnswerError::ResetBeforeAnswer(e));
                        }
                        other => other?,
                    };
                    if filled == 0 {
                        return Err(if received {
                            AnswerError::ClosedInHead
                        } else {
                            AnswerError::ClosedBeforeAnswer
                        });
                    }
                    if !received {
                        received = true;
                        first_byte();
                    }
                }
            }
        }
    }

    /// Reads the body that `head` announced, to its end (or the body limit).
    pub async fn body<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        head: Head,
    ) -> Result<Answer, AnswerError> {
        let Head {
            status,
            framing,
            close,
        } = head;
        let mut body = 0u64;
        let complete = match framing {
            Framing::None => true,
            Framing::Length(n) => {
                let done = self.consume(io, n, &mut body).await?;
                if done.is_none() {
                    return Err(AnswerError::BodyCut(n));
                }
                done == Some(true)
            }
            Framing::Chunked => self.chunked(io, &mut body).await?,
            Framing::UntilClose => {
                self.consume(io, u64::MAX, &mut body).await?;
                false
            }
        };
        let truncated = body >= self.max_body && !(complete && framing != Framing::UntilClose);
        Ok(Answer {
            status,
            framing,
            body_bytes: body,
            truncated,
            reusable: complete && !truncated && !close && status != 101,
        })
    }

    /// Parses a head from the buffer: `None` when it is not complete yet.
    fn parse_head(
        &mut self,
        head_request: bool,
    ) -> Result<Option<(u16, Framing, bool)>, AnswerError> {
        if self.start == self.end {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut headers);
        let data = &self.buf[self.start..self.end];
        let n = match res.parse(data) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
                let line = String::from_utf8_lossy(&line[..line.len().min(80)]);
                return Err(AnswerError::Malformed(format!(
                    "not an HTTP/1.x response head ({e}): {:?}",
                    line.trim_end()
                )));
            }
        };
        let bad = |what: String| AnswerError::Malformed(what);
        let status = res.code.ok_or_else(|| bad("no status code".to_owned()))?;
        if !(100..=599).contains(&status) {
            return Err(bad(format!("status {status} is out of range")));
        }
        let mut length = None;
        let mut chunked = false;
        // HTTP/1.0 closes unless it says keep-alive.
        let mut close = res.version == Some(0);
        for h in res.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "invalid Content-Length {:?}",
                            String::from_utf8_lossy(h.value)
                        ))
                    })?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting Content-Length headers".to_owned()));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
        }
        self.start += n;
        let framing = if head_request || matches!(status, 100..=199 | 204 | 304) {
            Framing::None
        } else if chunked {
            // Chunked wins over a content-length (RFC 9112, 6.3).
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        Ok(Some((status, framing, close)))
    }

    /// Reads more, after moving unread bytes to the front; 0 at the end of the stream (a TLS
    /// peer that closes without `close_notify` counts as an end too).
    async fn fill<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
    ) -> Result<usize, AnswerError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match io.read(&mut self.buf[self.end..]).await {
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(AnswerError::Io(e)),
        }
    }

    /// Consumes up to `n` body bytes, counting them in `body`: `Some(true)` when all were
    /// read, `Some(false)` when the body limit stopped it, `None` at an early end of stream.
    async fn consume<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        mut n: u64,
        body: &mut u64,
    ) -> Result<Option<bool>, AnswerError> {
        loop {
            let have = ((self.end - self.start) as u64).min(n);
            self.start += have as usize;
            n -= have;
            *body += have;
            if n == 0 {
                return Ok(Some(true));
            }
            if *body >= self.max_body {
                return Ok(Some(false));
            }
            self.start = 0;
            self.end = 0;
            if self.fill(io).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Consumes a chunked body, its trailer fields and the final empty line; false when the
    /// body limit stopped it.
    async fn chunked<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        io: &mut S,
        body: &mut u64,
    ) -> Result<bool, AnswerError> {
        loop {
            let (n, size) = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete(c)) => break c,
                    Ok(httparse::Status::Partial) => {
                        if self.end - self.start == self.buf.len() {
                            return Err(AnswerError::BadChunk("chunk size line too long"));
                        }
                        if self.fill(io).await? == 0 {
                            return Err(AnswerError::ChunkedCut);
                        }
                    }
                    Err(_) => return Err(AnswerError::BadChunk("invalid chunk size")),
                }
            };
            self.start += n;
            if size == 0 {
                break;
            }
            match self.consume(io, size, body).await? {
                None => return Err(AnswerError::ChunkedCut),
                Some(false) => return Ok(false),
                Some(true) => {}
            }
            // The data's line end.
            while self.end - self.start < 2 {
                if self.fill(io).await? == 0 {
                    return Err(AnswerError::ChunkedCut);
                }
            }
            match &self.buf[self.start..self.start + 2] {
                b"\r\n" => self.start += 2,
                [b'\n', _] => self.start += 1,
                _ => return Err(AnswerError::BadChunk("missing CRLF after chunk data")),
            }
        }
        // Trailer fields, one a line, then an empty line.
        loop {
            let data = &self.buf[self.start..self.end];
            match data.iter().position(|b| *b == b'\n') {
                Some(i) if data[..i].iter().all(|b| *b == b'\r') => {
                    self.start += i + 1;
                    return Ok(true);
                }
                Some(i) => self.start += i + 1,
                None => {
                    if self.end - self.start == self.buf.len() {
                        return Err(AnswerError::BadChunk("trailers too long"));
                    }
                    if self.fill(io).await? == 0 {
                        return Err(AnswerError::ChunkedCut);
                    }
                }
            }
        }
    }
}

/// A connection the peer reset or aborted.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
