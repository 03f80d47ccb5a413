//! Answers framed every way RFC 9112 allows, read whole and in one-byte pieces.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

use std::pin::Pin;
use std::task::{Context, Poll};

use sonde_http1::{Answer, AnswerError, AnswerReader, Framing};
use tokio::io::{AsyncRead, ReadBuf};

/// A stream that hands out its data at most `piece` bytes a read, then ends, or fails with
/// `then_fails` when that is set.
struct Pieces {
    data: Vec<u8>,
    at: usize,
    piece: usize,
    then_fails: Option<std::io::ErrorKind>,
}

impl Pieces {
    /// `data` at most `piece` bytes a read, then the end.
    fn new(data: impl Into<Vec<u8>>, piece: usize) -> Self {
        Pieces {
            data: data.into(),
            at: 0,
            piece,
            then_fails: None,
        }
    }

    /// `data` as fast as it is read, then an error of `kind`.
    fn then_fails(data: impl Into<Vec<u8>>, kind: std::io::ErrorKind) -> Self {
        Pieces {
            then_fails: Some(kind),
            ..Pieces::new(data, usize::MAX)
        }
    }
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(kind) = self.then_fails
            && self.at == self.data.len()
        {
            return Poll::Ready(Err(kind.into()));
        }
        let n = self
            .piece
            .min(self.data.len() - self.at)
            .min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Reads `answers` answers from `wire`, in pieces of 1 byte and of 64 KiB: both must agree.
fn read_all(wire: &[u8], answers: usize, head: bool) -> Vec<Result<Answer, String>> {
    let mut by_piece = Vec::new();
    for piece in [1, 65536] {
        let mut io = Pieces::new(wire.to_vec(), piece);
        let mut reader = AnswerReader::new(4096);
        let mut out = Vec::new();
        for _ in 0..answers {
            let r = block_on(reader.read(&mut io, head, || {}));
            let failed = r.is_err();
            out.push(r.map_err(|e| e.to_string()));
            if failed {
                break;
            }
        }
        by_piece.push(out);
    }
    // The same answers, or errors of the same kind (a malformed head is quoted as far as it
    // had arrived).
    let kind = |r: &Result<Answer, String>| {
        r.clone()
            .map_err(|e| e.split([':', '(']).next().unwrap_or_default().to_owned())
    };
    assert_eq!(
        by_piece[0].iter().map(kind).collect::<Vec<_>>(),
        by_piece[1].iter().map(kind).collect::<Vec<_>>(),
        "one-byte reads and whole reads differ"
    );
    by_piece.pop().unwrap()
}

fn ok(status: u16, framing: Framing, body: u64, reusable: bool) -> Result<Answer, String> {
    Ok(Answer {
        status,
        framing,
        body_bytes: body,
        truncated: false,
        reusable,
    })
}

#[test]
fn lengths_chunks_and_empty_bodies_leave_the_connection_reusable() {
    let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
        HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n\
        HTTP/1.1 204 No Content\r\n\r\n\
        HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\n\r\n\
        HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n\
        HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        read_all(wire, 5, false),
        vec![
            ok(200, Framing::Length(5), 5, true),
            ok(200, Framing::Chunked, 11, true),
            ok(204, Framing::None, 0, true),
            ok(304, Framing::None, 0, true),
            ok(201, Framing::Length(0), 0, true),
        ]
    );
}

#[test]
fn head_requests_have_no_body_whatever_the_head_says() {
    let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
    assert_eq!(
        read_all(wire, 2, true),
        vec![
            ok(200, Framing::None, 0, true),
            ok(200, Framing::None, 0, true)
        ]
    );
}

#[test]
fn closing_answers_are_read_and_the_connection_is_not_reused() {
    assert_eq!(
        read_all(b"HTTP/1.0 200 OK\r\n\r\nthe whole rest", 1, false),
        vec![ok(200, Framing::UntilClose, 14, false)]
    );
    assert_eq!(
        read_all(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
            1,
            false
        ),
        vec![ok(200, Framing::Length(1), 1, true)]
    );
    assert_eq!(
        read_all(
            b"HTTP/1.1 503 No\r\nConnection: close\r\ncontent-length: 2\r\n\r\nno",
            1,
            false
        ),
        vec![ok(503, Framing::Length(2), 2, false)]
    );
    assert_eq!(
        read_all(b"HTTP/1.1 101 Switching\r\nupgrade: x\r\n\r\n", 1, false),
        vec![ok(101, Framing::None, 0, false)]
    );
}

#[test]
fn malformed_cut_and_oversized_answers_are_errors_that_say_what() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "without responding"),
        (
            b"HTTP/1.1 200 OK\r\nA: b\r\n".to_vec(),
            "middle of the response headers",
        ),
        (b"garbage\r\n\r\n".to_vec(), "not an HTTP/1.x response head"),
        (
            b"HTCPCP/1.0 418 Teapot\r\n\r\n".to_vec(),
            "not an HTTP/1.x response head",
        ),
        (
            b"HTTP/1.1 20 OK\r\n\r\n".to_vec(),
            "not an HTTP/1.x response head",
        ),
        (b"HTTP/1.1 999 Huh\r\n\r\n".to_vec(), "out of range"),
        (
            b"HTTP/2 200\r\n\r\n".to_vec(),
            "not an HTTP/1.x response head",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec(),
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\ncut".to_vec(),
            "before its 50 bytes",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "bad chunked body",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX".to_vec(),
            "missing CRLF",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n".to_vec(),
            "bad chunked body",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
            "before its last chunk",
        ),
        (
            format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(5000)).into_bytes(),
            "exceed 4 KiB",
        ),
        (
            "HTTP/1.1 100 Continue\r\n\r\n".repeat(17).into_bytes(),
            "more than 16 informational",
        ),
    ];
    for (wire, says) in cases {
        let got = read_all(&wire, 1, false);
        let err = got[0].as_ref().expect_err("an error");
        assert!(
            err.contains(says),
            "{:?}: {err:?} should say {says:?}",
            String::from_utf8_lossy(&wire[..wire.len().min(60)])
        );
    }
}

#[test]
fn a_body_past_the_limit_is_cut_short_and_the_connection_dropped() {
    let wire = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 10000\r\n\r\n{}",
        "b".repeat(10000)
    );
    let mut io = Pieces::new(wire.into_bytes(), 1000);
    let mut reader = AnswerReader::new(4096).max_body(2500);
    let a = block_on(reader.read(&mut io, false, || {})).unwrap();
    assert_eq!((a.status, a.truncated, a.reusable), (200, true, false));
    assert!((2500..10000).contains(&a.body_bytes), "{}", a.body_bytes);
}

#[test]
fn first_byte_is_reported_once_and_leftovers_are_seen() {
    let mut io = Pieces::new(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nextra".to_vec(),
        3,
    );
    let mut reader = AnswerReader::new(4096);
    let mut calls = 0;
    let a = block_on(reader.read(&mut io, false, || calls += 1)).unwrap();
    assert_eq!((a.status, calls), (200, 1));
    // Bytes the server sent past its answer are there before any next request.
    let mut rest = Pieces::new(Vec::new(), 1);
    let _ = block_on(reader.read(&mut rest, false, || {}));
    let mut reader = AnswerReader::new(4096);
    let mut io = Pieces::new(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP".to_vec(),
        4096,
    );
    block_on(reader.read(&mut io, false, || {})).unwrap();
    assert!(reader.pending());
    let e: AnswerError = block_on(reader.read(&mut io, false, || {})).unwrap_err();
    assert!(matches!(e, AnswerError::ClosedInHead), "{e}");
}

/// A kept-alive connection the server had closed may answer the next request with a reset
/// instead of an end of stream (whichever the client sees first): before any byte of the
/// answer a reset is told apart, so a client can retry it as it retries a close; once the
/// answer has begun a reset is an I/O error.
#[test]
fn a_reset_before_the_answer_is_told_apart() {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, PermissionDenied};
    for kind in [ConnectionReset, ConnectionAborted] {
        let mut io = Pieces::then_fails(Vec::new(), kind);
        let r = block_on(AnswerReader::new(4096).read(&mut io, false, || {}));
        assert!(
            matches!(r, Err(AnswerError::ResetBeforeAnswer(_))),
            "{kind:?}: {r:?}"
        );
    }
    let mut io = Pieces::then_fails(b"HTTP/1.1 200 OK\r\n".to_vec(), ConnectionReset);
    let r = block_on(AnswerReader::new(4096).read(&mut io, false, || {}));
    assert!(matches!(r, Err(AnswerError::Io(_))), "{r:?}");
    let mut io = Pieces::then_fails(Vec::new(), PermissionDenied);
    let r = block_on(AnswerReader::new(4096).read(&mut io, false, || {}));
    assert!(matches!(r, Err(AnswerError::Io(_))), "{r:?}");
}
