//! The HTTP client of sonde's HTTP push paths (OTLP/HTTP, remote write, the Pushgateway) and
//! fetches (scrape targets, sonde-load's cold starts): `reqwest` on the rustls configuration of
//! [`crate::tls`], following no redirect, with answers read up to a cap. (OTLP/gRPC goes
//! through tonic, CloudWatch through the AWS SDK's own client.)
//!
//! ```no_run
//! use std::time::Duration;
//! use sonde_http1::client::{self, TlsFiles};
//!
//! let http = client::client(&TlsFiles::default(), Duration::from_secs(5), "my-agent/1.0").unwrap();
//! let body = client::block_on(async {
//!     let mut answer = http.get("http://127.0.0.1:9100/metrics").send().await?;
//!     Ok::<_, reqwest::Error>(client::read_capped(&mut answer, 1 << 20).await)
//! })
//! .expect("a runtime");
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::{self, TlsError};

/// What an HTTPS client trusts and presents beyond the platform's roots, as PEM files read
/// when the client is built (so a renewed file is picked up by the next client). The system's
/// own CA store is read once per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate authorities to trust instead of the system's (a private CA).
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (leaf first) and its private key, for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any certificate (a self-signed one on loopback): encrypted but not
    /// authenticated. The handshake signatures are still checked.
    pub insecure_skip_verify: bool,
}

impl TlsFiles {
    /// The rustls configuration these files describe, offering `alpn`; an error names the file
    /// at fault.
    pub fn config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        // A CA file is read even when verification is off, so a wrong path is still reported.
        let roots = match &self.ca_file {
            Some(path) => Some(tls::load_roots(path)?),
            None => None,
        };
        let verify = match (roots, self.insecure_skip_verify) {
            (_, true) => tls::Verify::Insecure,
            (Some(roots), false) => tls::Verify::Roots(roots),
            // Plain http keeps working on a system without CA certificates.
            (None, false) => tls::Verify::PlatformIfAny,
        };
        let client = match &self.client_cert {
            Some((cert, key)) => Some(tls::load_client_cert(cert, key)?),
            None => None,
        };
        tls::client_config_with(verify, client, alpn)
    }

    /// Checks that the files can be read and hold what they should, as building a client would.
    pub fn check(&self) -> Result<(), TlsError> {
        self.config(&[]).map(|_| ())
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS files could not be used; the message names the file.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// reqwest refused the set-up.
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
}

/// The `User-Agent` of sonde's own requests (pushes, OTLP/HTTP).
pub const USER_AGENT: &str = concat!("sonde/", env!("CARGO_PKG_VERSION"));

/// An HTTP/1.1 client that follows no redirect (a redirected POST loses its body, and
/// credentials must not travel to another host), gives up connecting after `connect_timeout`
/// and sends `user_agent`; each request sets its own overall timeout.
pub fn client(
    tls: &TlsFiles,
    connect_timeout: Duration,
    user_agent: &str,
) -> Result<reqwest::Client, ClientError> {
    client_with(tls.config(&[b"http/1.1"])?, connect_timeout, user_agent)
}

/// [`client`] on a rustls configuration built elsewhere (a CA held in memory, say).
pub fn client_with(
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    user_agent: &str,
) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_backend_preconfigured(Arc::unwrap_or_clone(config))
        .connect_timeout(connect_timeout)
        .user_agent(user_agent)
        .tcp_nodelay(true)
        .build()
        .map_err(ClientError::Build)
}

/// A body read up to a cap.
#[derive(Debug, Default)]
pub struct Capped {
    /// The bytes read, at most the cap.
    pub body: Vec<u8>,
    /// The body went on past the cap (the rest was not read).
    pub truncated: bool,
    /// Why the body ended early, if it did: the status already tells what happened, so a
    /// caller that only drains the answer may ignore it.
    pub error: Option<reqwest::Error>,
}

/// Reads `response`'s body, keeping at most `max` bytes: a drained answer lets the connection
/// be reused, and a larger (or endless) body is cut rather than buffered whole.
pub async fn read_capped(response: &mut reqwest::Response, max: usize) -> Capped {
    let mut out = Capped::default();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - out.body.len();
                out.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    out.truncated = true;
                    return out;
                }
            }
            Ok(None) => return out,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
}

/// Runs `future` to completion for a caller without a runtime (a scrape thread, a CLI): on a
/// current-thread runtime of its own, or, when called from inside a runtime (where blocking
/// its thread would stall it), on a scoped thread. The runtime is let go without waiting for
/// its blocking tasks (a name lookup that outlives the request's timeout finishes alone). An
/// error: the runtime could not be built (out of file descriptors).
pub fn block_on<F>(future: F) -> std::io::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let run = || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let out = runtime.block_on(future);
        runtime.shutdown_background();
        Ok(out)
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(run)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    fn serve_once(answer: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        });
        url
    }

    #[test]
    fn bodies_are_cut_at_the_cap_and_redirects_are_not_followed() {
        let http = client(&TlsFiles::default(), Duration::from_secs(5), "t").unwrap();
        let url = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789");
        let capped = block_on(async {
            let mut r = http.get(&url).send().await.unwrap();
            read_capped(&mut r, 4).await
        })
        .unwrap();
        assert_eq!(capped.body, b"0123");
        assert!(capped.truncated);

        let url = serve_once(
            b"HTTP/1.1 301 Moved\r\nlocation: http://example.invalid/\r\ncontent-length: 0\r\n\r\n",
        );
        let status =
            block_on(async { http.get(&url).send().await.unwrap().status().as_u16() }).unwrap();
        assert_eq!(status, 301);
    }

    #[tokio::test]
    async fn block_on_works_inside_a_runtime_too() {
        assert_eq!(block_on(async { 7 }).unwrap(), 7);
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let files = TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let e = client(&files, Duration::from_secs(1), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
