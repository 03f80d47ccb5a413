//! Small test helpers with no sonde dependency, for the crates' own tests (the heavy peers and
//! end-to-end helpers are in `sonde-tests`, which re-exports these): a raw HTTP/1.1 request, a
//! child process to observe, a loopback Tokio runtime, `promtool`, fake `/proc` trees and
//! files, and seeded mutations of TOML files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub mod mutate;
pub mod procfs;
pub mod sleeper;

/// How to install promtool, for the message when it is missing.
const PROMTOOL_INSTALL: &str = "apt-get install -y prometheus";

/// Finds a program on the PATH or in the usual Debian locations, or panics with how to install it.
pub fn require_program(name: &str, install: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in dirs.iter().map(PathBuf::as_path).chain([
        std::path::Path::new("/usr/bin"),
        std::path::Path::new("/usr/local/bin"),
    ]) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} is not installed; this test needs the real program: {install} (scripts/test does this)"
    );
}

/// Runs `promtool args...` in `dir` (e.g. `check rules` or `test rules` on the files there);
/// returns its combined output, panicking if it exits non-zero.
pub fn promtool(dir: &Path, args: &[&str]) -> String {
    let bin = require_program("promtool", PROMTOOL_INSTALL);
    let out = Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("could not start {}: {e}; {PROMTOOL_INSTALL}", bin.display()));
    succeeded(
        &format!("promtool {} in {}", args.join(" "), dir.display()),
        &out,
    )
}

/// The combined output (stdout, then stderr) of `what`, panicking with it unless `what`
/// succeeded.
pub fn succeeded(what: &str, out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

/// The head of an HTTP/1.1 message written by hand, for a test client or server below any HTTP
/// library: the `start` line (`POST /v1/metrics HTTP/1.1`, `HTTP/1.1 503 X`), `Content-Length:
/// body_len`, `Connection: close`, each of `headers`, and the blank line that ends the head.
pub fn http_head<V: std::fmt::Display>(
    start: &str,
    body_len: usize,
    headers: &[(&str, V)],
) -> String {
    use std::fmt::Write as _;
    let mut head = format!("{start}\r\nContent-Length: {body_len}\r\nConnection: close\r\n");
    for (name, value) in headers {
        // Writing to a String cannot fail.
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head
}

/// `method path` with an empty body over a new HTTP/1.1 connection to `addr`, written and read
/// by hand (`Connection: close`, read to the end), `timeout` for connecting and for each read:
/// for checking a server below any HTTP client. Returns the status and the body; an answer that
/// is not HTTP is an `InvalidData` error.
pub fn raw_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    // A GET or HEAD goes as browsers send it, without a body length; other methods say 0.
    let length = if matches!(method, "GET" | "HEAD") {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{length}Connection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {out:?}"),
        )
    })?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// A multi-threaded Tokio runtime with `workers` worker threads and a listener it owns on a free
/// 127.0.0.1 port, with that port's address: for a test server spawned on the runtime, which
/// serves as long as the runtime lives.
pub fn loopback_runtime(
    workers: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (runtime, listener, addr)
}

/// The route templates of the axum example (`crates/sonde-example-axum`); `""` is the one
/// series of requests that matched no route.
pub const AXUM_ROUTES: [&str; 6] = [
    "",
    "/users/{id}",
    "/orders",
    "/checkout",
    "/report",
    "/health",
];
