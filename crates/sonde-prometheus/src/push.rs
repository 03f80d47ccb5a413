//! Pushgateway pushes for batch jobs: the registry's text exposition sent on demand with
//! [`PushgatewayBuilder::push`] (replace the group) or [`push_add`](PushgatewayBuilder::push_add)
//! (replace only the families pushed), removed with [`delete`](PushgatewayBuilder::delete), and
//! pushed at exit by the [`PushOnDrop`] guard.
//!
//! ```no_run
//! use sonde_core::Registry;
//! use sonde_prometheus::PushgatewayBuilder;
//!
//! let registry = Registry::new();
//! // Pushed when `_push` goes out of scope at the end of main, whatever way main returns.
//! let _push = PushgatewayBuilder::new("http://127.0.0.1:9091")
//!     .job("nightly-backup")
//!     .grouping_label("instance", "db-1")
//!     .registry(registry.clone())
//!     .push_on_drop();
//! registry.counter("backup.files").build()?.handle().add(1200);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The calls are synchronous (a batch job waits for them on purpose), each bounded by a timeout,
//! with a couple of retries on network errors and 5xx. They drive the workspace's async HTTP
//! client on a short-lived thread and runtime of their own, so they may be called from async
//! code too (they block that task's thread meanwhile, like any blocking call).

use std::time::Duration;

use base64::Engine as _;
use sonde_core::name::is_prometheus_label_name;
use sonde_core::{Registry, Resource};

use crate::Error;
use crate::client::{self, Outcome};
use crate::{Format, encode};
use sonde_push::telemetry::Backoff;

/// Where and what to push: the Pushgateway's base URL, the grouping key (`job` and labels), the
/// registry and resource. Defaults: the global registry, the job from `OTEL_SERVICE_NAME` or
/// else the executable's name, no `target_info` (the grouping key identifies the job), a 10 s
/// timeout per attempt, 2 retries.
#[must_use = "call .push(), .push_add(), .delete() or .push_on_drop()"]
// `Debug` keeps header values and URL credentials out of logs.
#[derive(Clone, custom_debug::Debug)]
pub struct PushgatewayBuilder {
    #[debug(with = sonde_settings::redact::url)]
    url: String,
    job: Option<String>,
    grouping: Vec<(String, String)>,
    #[debug(skip)]
    registry: Registry,
    #[debug(skip)]
    resource: Option<Resource>,
    timeout: Duration,
    max_retries: u32,
    #[debug(with = sonde_settings::redact::headers)]
    headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Put,
    Post,
    Delete,
}

impl PushgatewayBuilder {
    /// Pushes to the Pushgateway at `url`, its base address (`http://127.0.0.1:9091`).
    pub fn new(url: impl Into<String>) -> Self {
        PushgatewayBuilder {
            url: url.into(),
            job: None,
            grouping: Vec::new(),
            registry: Registry::global().clone(),
            resource: None,
            timeout: Duration::from_secs(10),
            max_retries: 2,
            headers: Vec::new(),
        }
    }

    sonde_push::builder_setters! {
        /// The `job` of the grouping key.
        job: Some(impl Into<String>);
    }

    /// Adds a label to the grouping key (`instance`, `shard`...); setting a name again replaces
    /// its value. Values may contain any character, `/` included.
    pub fn grouping_label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        sonde_push::set_label(&mut self.grouping, name.into(), value.into());
        self
    }

    sonde_push::builder_setters! {
        /// Pushes this registry instead of the global one.
        registry: Registry;
        /// Also pushes this resource as `target_info` (default: none; [`Resource::from_env`]
        /// reads the `OTEL_*` variables).
        resource: Some(Resource);
    }

    /// Time allowed for each attempt, connection included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        // Capped at a day: a longer wait is no timeout, and deadlines must not overflow.
        self.timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self
    }

    sonde_push::builder_setters! {
        /// Attempts after a network error or 5xx (default 2; other statuses are not retried).
        max_retries: u32;
    }

    /// Adds an HTTP header to every request (such as `Authorization`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces every metric of the group with the registry's current values (HTTP `PUT`).
    pub fn push(&self) -> Result<(), Error> {
        self.send(Method::Put)
    }

    /// Replaces only the families being pushed, keeping the group's others (HTTP `POST`).
    pub fn push_add(&self) -> Result<(), Error> {
        self.send(Method::Post)
    }

    /// Deletes the group from the Pushgateway (HTTP `DELETE`).
    pub fn delete(&self) -> Result<(), Error> {
        self.send(Method::Delete)
    }

    /// A guard that [`push`](Self::push)es when dropped: bind it at the top of a batch job's
    /// `main` (`let _push = ...;`) to push at exit, error or not. An error at that point is
    /// printed to stderr; call [`PushOnDrop::finish`] to handle it instead. Nothing runs on
    /// `std::process::exit`, which skips destructors.
    pub fn push_on_drop(self) -> PushOnDrop {
        PushOnDrop { pusher: Some(self) }
    }

    /// The URL of the group: `{base}/metrics/job/{job}{/name/value}`, each segment
    /// percent-encoded, values with `/` (or empty) in the `@base64` form.
    pub fn group_url(&self) -> Result<String, Error> {
        client::check_url(&self.url, "http://127.0.0.1:9091")?;
        let job = match &self.job {
            Some(j) => j.clone(),
            None => default_job(),
        };
        if job.is_empty() {
            return Err(Error::Config(
                "the Pushgateway job name is empty; set one with PushgatewayBuilder::job".into(),
            ));
        }
        let mut url = self.url.trim_end_matches('/').to_owned();
        url.push_str("/metrics");
        segment(&mut url, "job", &job);
        for (name, value) in &self.grouping {
            if !is_prometheus_label_name(name) || name == "job" {
                return Err(Error::Config(format!(
                    "grouping label name {name:?} is invalid; use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __ and not job (set with PushgatewayBuilder::job)"
                )));
            }
            segment(&mut url, name, value);
        }
        Ok(url)
    }

    /// Runs the request on a thread of its own with a current-thread runtime, so the call works
    /// the same from plain code and from inside an async runtime (where blocking on another
    /// runtime would panic), and the caller's runtime, if any, is left alone.
    fn send(&self, method: Method) -> Result<(), Error> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sonde-pushgateway".into())
                .spawn_scoped(scope, || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(Error::Start)?;
                    runtime.block_on(self.send_async(method))
                })
                .map_err(Error::Start)?
                .join()
                .unwrap_or_else(|_| {
                    Err(Error::Transport {
                        url: sonde_push::redact_url(&self.url).into_owned(),
                        reason: "the push thread panicked".into(),
                    })
                })
        })
    }

    async fn send_async(&self, method: Method) -> Result<(), Error> {
        let url = self.group_url()?;
        let headers = client::header_map(&self.headers)?;
        let body = match method {
            Method::Delete => Vec::new(),
            Method::Put | Method::Post => {
                let mut body = Vec::new();
                encode(
                    &self.registry.snapshot(),
                    self.resource.as_ref(),
                    Format::Text,
                    &mut body,
                );
                body
            }
        };
        let body = bytes::Bytes::from(body);
        let client = client::client(self.timeout, &client::TlsFiles::default())?;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempt = 0;
        loop {
            let request = match method {
                Method::Delete => client.delete(&url),
                Method::Put => client.put(&url),
                Method::Post => client.post(&url),
            };
            let mut request = request.timeout(self.timeout).headers(headers.clone());
            if !matches!(method, Method::Delete) {
                request = request
                    .header("Content-Type", Format::Text.content_type())
                    .body(body.clone());
            }
            match client::outcome(&url, request.send().await, hint).await {
                Outcome::Success => return Ok(()),
                Outcome::Fail(e) => return Err(e),
                Outcome::Retry { error, retry_after } => {
                    if attempt >= self.max_retries {
                        return Err(error);
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff.next(retry_after)).await;
                }
            }
        }
    }
}

/// Pushes when dropped; see [`PushgatewayBuilder::push_on_drop`].
#[derive(Debug)]
#[must_use = "bind the guard to a variable (`let _push = ...`): `let _ = ...` drops, and pushes, at once"]
pub struct PushOnDrop {
    pusher: Option<PushgatewayBuilder>,
}

impl PushOnDrop {
    /// Pushes now (HTTP `PUT`), keeping the guard armed for the push at drop.
    pub fn push_now(&self) -> Result<(), Error> {
        match &self.pusher {
            Some(p) => p.push(),
            None => Ok(()),
        }
    }

    /// Pushes now and disarms the guard, returning the push's result.
    pub fn finish(mut self) -> Result<(), Error> {
        match self.pusher.take() {
            Some(p) => p.push(),
            None => Ok(()),
        }
    }

    /// Disarms the guard without pushing.
    pub fn cancel(mut self) {
        self.pusher = None;
    }
}

impl Drop for PushOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.pusher.take()
            && let Err(e) = p.push()
        {
            eprintln!("sonde: the push to the Pushgateway at exit failed: {e}");
        }
    }
}

fn default_job() -> String {
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        return name;
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "sonde".to_owned())
}

/// Appends `/name/value`, or `/name@base64/<base64url>` when the value is empty or has a `/`
/// (which the Pushgateway cannot take percent-encoded).
fn segment(url: &mut String, name: &str, value: &str) {
    url.push('/');
    url.push_str(name);
    if value.is_empty() {
        url.push_str("@base64/=");
    } else if value.contains('/') {
        url.push_str("@base64/");
        base64url(value.as_bytes(), url);
    } else {
        url.push('/');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                url.push(b as char);
            } else {
                url.push_str(&format!("%{b:02X}"));
            }
        }
    }
}

/// RFC 4648 base64 with the URL and filename safe alphabet, padded (padding is optional for
/// the Pushgateway; padded is what client_python sends).
fn base64url(data: &[u8], out: &mut String) {
    base64::engine::general_purpose::URL_SAFE.encode_string(data, out);
}

fn hint(status: u16) -> &'static str {
    match status {
        400 => {
            "the Pushgateway rejected the metrics (invalid, or inconsistent with metrics it holds from other groups); see its message"
        }
        404 | 405 => {
            "check the Pushgateway URL: give its base address, such as http://127.0.0.1:9091"
        }
        401 | 403 => "the Pushgateway wants credentials: add them with PushgatewayBuilder::header",
        s if s >= 500 => "the Pushgateway failed; see its logs",
        _ => "check the Pushgateway URL and its logs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648() {
        let enc = |s: &str| {
            let mut out = String::new();
            base64url(s.as_bytes(), &mut out);
            out
        };
        assert_eq!(enc("f"), "Zg==");
        assert_eq!(enc("fo"), "Zm8=");
        assert_eq!(enc("foo"), "Zm9v");
        assert_eq!(enc("foob"), "Zm9vYg==");
        assert_eq!(enc("/var/tmp"), "L3Zhci90bXA=");
        assert_eq!(enc("\u{ff}\u{fe}"), "w7_Dvg==");
    }

    #[test]
    fn group_urls() {
        let p = PushgatewayBuilder::new("http://127.0.0.1:9091/")
            .job("batch job")
            .grouping_label("instance", "a/b")
            .grouping_label("empty", "")
            .grouping_label("x", "é");
        assert_eq!(
            p.group_url().unwrap(),
            "http://127.0.0.1:9091/metrics/job/batch%20job/instance@base64/YS9i/empty@base64/=/x/%C3%A9"
        );
        let p = PushgatewayBuilder::new("http://h:1").job("a/b");
        assert_eq!(p.group_url().unwrap(), "http://h:1/metrics/job@base64/YS9i");
        let e = PushgatewayBuilder::new("http://h:1")
            .job("j")
            .grouping_label("job", "x")
            .group_url()
            .unwrap_err();
        assert!(e.to_string().contains("PushgatewayBuilder::job"), "{e}");
        assert!(
            PushgatewayBuilder::new("http://h:1")
                .job("")
                .group_url()
                .is_err()
        );
        assert!(PushgatewayBuilder::new("h:1").job("j").group_url().is_err());
    }

    /// A loopback server that answers each of `n` requests 200 and returns their heads.
    fn gateway(n: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead as _, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for _ in 0..n {
                let (conn, _) = listener.accept().unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = std::io::BufReader::new(conn);
                let (mut head, mut len) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .unwrap();
                heads.push(head);
            }
            heads
        });
        (url, server)
    }

    #[tokio::test]
    async fn pushes_work_from_inside_an_async_runtime() {
        // Blocking on a second runtime from inside this one would panic; the push runs on a
        // thread of its own instead, and the guard's push at drop too.
        let (url, server) = gateway(2);
        let pusher = PushgatewayBuilder::new(url)
            .job("j")
            .registry(Registry::new())
            .header("Authorization", "Bearer t0k");
        pusher.push_add().unwrap();
        drop(pusher.push_on_drop());
        let heads = server.join().unwrap();
        assert!(
            heads[0].starts_with("POST /metrics/job/j HTTP/1.1"),
            "{heads:?}"
        );
        assert!(
            heads[1].starts_with("PUT /metrics/job/j HTTP/1.1"),
            "{heads:?}"
        );
        for head in &heads {
            let head = head.to_ascii_lowercase();
            assert!(head.contains("authorization: bearer t0k"), "{head}");
            assert!(head.contains("user-agent: sonde/"), "{head}");
            assert!(
                head.contains("content-type: text/plain; version=0.0.4"),
                "{head}"
            );
        }
    }

    #[test]
    fn invalid_headers_are_configuration_errors() {
        let e = PushgatewayBuilder::new("http://127.0.0.1:9")
            .job("j")
            .registry(Registry::new())
            .header("bad header", "v")
            .push()
            .unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
        assert!(e.to_string().contains("HTTP header"), "{e}");
    }

    #[test]
    fn unreachable_gateway_is_a_transport_error() {
        // A port that was free a moment ago: connection refused, retried, then reported.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = PushgatewayBuilder::new(format!("http://127.0.0.1:{port}"))
            .job("j")
            .registry(Registry::new())
            .max_retries(1)
            .timeout(Duration::from_secs(2))
            .push()
            .unwrap_err();
        assert!(matches!(e, Error::Transport { .. }), "{e}");
        assert!(e.to_string().contains("reachable"), "{e}");
    }
}
