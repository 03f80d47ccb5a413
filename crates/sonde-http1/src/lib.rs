//! # sonde-http1
//!
//! The HTTP/1.1 client pieces that sonde's synthetic probes and its load generator share, so
//! the wire is framed one way in one place:
//!
//! - [`AnswerReader`] reads one answer from any async stream: the head parsed with `httparse`
//!   (the parser hyper itself uses), interim `1xx` answers skipped, and the body delimited as
//!   RFC 9112 section 6.3 says (none, `content-length`, `chunked` with extensions and trailers,
//!   or until the connection closes) and read to its last byte without being kept, in a buffer
//!   allocated once.
//! - [`tls::client_config`] builds rustls client configurations: the platform's roots, a
//!   private CA, or any certificate (`--insecure`, `insecure_skip_verify`; handshake
//!   signatures are still checked).
//! - With the `client` feature, [`client`]: a `reqwest` client built on those
//!   configurations, with capped reads, used by the OTLP/HTTP exporters (metrics and spans),
//!   Prometheus remote write and the Pushgateway client, scrapes (sonde-scrape) and sonde-load's
//!   cold-start runs. OTLP/gRPC has tonic's client.
//! - With the `aws` feature, [`aws::http_client`]: the AWS SDK's client
//!   (`aws-smithy-http-client`, rustls) with every answer's body capped, used by CloudWatch and
//!   the AWS credential lookups of SigV4 remote write.
//!
//! A caller writes its request bytes itself (a load generator serializes each request once):
//!
//! ```
//! use sonde_http1::{AnswerReader, Framing};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut wire: &[u8] =
//!     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
//!       5\r\nhello\r\n0\r\n\r\n";
//! let mut reader = AnswerReader::new(16 * 1024);
//! let answer = reader.read(&mut wire, false, || {}).await.unwrap();
//! assert_eq!(answer.status, 200);
//! assert_eq!(answer.framing, Framing::Chunked);
//! assert_eq!(answer.body_bytes, 5);
//! assert!(answer.reusable, "the connection can carry the next request");
//! # });
//! ```

#![warn(missing_docs)]

mod answer;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "client")]
pub mod client;
pub mod tls;

pub use answer::{Answer, AnswerError, AnswerReader, Framing, Head};
