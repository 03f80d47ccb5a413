//! `cargo +nightly fuzz run answer` (from crates/sonde-http1): what a server answers, however
//! malformed, delivered in pieces of any size, is read as answers or refused with an error,
//! never a panic, and a reader never reports more body than it was sent.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use sonde_http1::AnswerReader;
use tokio::io::{AsyncRead, ReadBuf};

/// The server's bytes, handed out at most `piece` at a time.
struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.piece.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, piece], wire)) = data.split_first_chunk::<2>() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut io = Pieces {
            data: wire,
            piece: usize::from(piece).max(1),
        };
        let mut reader = AnswerReader::new(1024);
        if mode & 1 != 0 {
            reader = reader.max_body(u64::from(mode >> 1));
        }
        // Answers one after another, as on a kept-alive connection, until one fails.
        for _ in 0..64 {
            match reader.read(&mut io, mode & 0x80 != 0, || {}).await {
                Ok(answer) => {
                    // The reader reads ahead, so only the whole wire bounds one body.
                    assert!(answer.body_bytes <= wire.len() as u64, "{answer:?}");
                    if !answer.reusable {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
});
