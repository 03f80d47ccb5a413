//! What a run sends, and how: built from command-line flags or from a scenario file.

use std::time::Duration;

use crate::threshold::Threshold;

/// One kind of request a run sends.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// The name reports and thresholds use (`default` for a command-line run).
    pub name: String,
    /// HTTP method.
    pub method: http::Method,
    /// Absolute `http://` or `https://` URL.
    pub url: http::Uri,
    /// Extra headers, in order.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Request body (empty for none).
    pub body: bytes::Bytes,
    /// Relative weight among the plan's requests (> 0).
    pub weight: u32,
    /// Thresholds that apply to this request only.
    pub thresholds: Vec<Threshold>,
}

impl RequestSpec {
    /// A request of weight 1 with no headers, body or thresholds of its own.
    pub fn new(name: impl Into<String>, method: http::Method, url: http::Uri) -> RequestSpec {
        RequestSpec {
            name: name.into(),
            method,
            url,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            weight: 1,
            thresholds: Vec::new(),
        }
    }
}

/// How load is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Constant arrival rate (requests per second, set by the stages): requests are scheduled on
    /// a timeline and latency is measured from the scheduled start.
    Open,
    /// A number of virtual users (set by the stages), each sending its next request when the
    /// previous one completes.
    Closed,
}

/// One stage: the load moves linearly from the previous stage's target (or 0 for the first,
/// unless it is a hold) to `target` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the stage lasts.
    pub duration: Duration,
    /// Requests per second (open model) or users (closed model) at the end of the stage.
    pub target: f64,
    /// The stage holds `target` from its start instead of ramping to it.
    pub hold: bool,
}

/// Everything a run needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Requests to send, picked by weight.
    pub requests: Vec<RequestSpec>,
    /// Open or closed model.
    pub model: Model,
    /// The load over time (a command-line run is one holding stage).
    pub stages: Vec<Stage>,
    /// Load sent before measuring starts (recorded nowhere).
    pub warmup: Duration,
    /// Connections kept open (open model: the pool requests are spread over).
    pub connections: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Use HTTP/2 (prior knowledge on `http://`, ALPN on `https://`).
    pub http2: bool,
    /// Accept any TLS certificate (for self-signed test servers).
    pub insecure: bool,
    /// Thresholds over the whole run (a threshold may still name a request).
    pub thresholds: Vec<Threshold>,
}

impl Plan {
    /// A plan that sends `requests` over `stages` with the defaults of a run: the open model, no
    /// warm-up, connections derived from the load (0), a 10 s timeout, HTTP/1.1, certificates
    /// checked and no thresholds.
    pub fn new(requests: Vec<RequestSpec>, stages: Vec<Stage>) -> Plan {
        Plan {
            requests,
            model: Model::Open,
            stages,
            warmup: Duration::ZERO,
            connections: 0,
            timeout: Duration::from_secs(10),
            http2: false,
            insecure: false,
            thresholds: Vec::new(),
        }
    }

    /// Total measured duration (the stages, without warm-up).
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The target (rate or users) at `t` into the measured part of the run.
    pub fn target_at(&self, t: Duration) -> f64 {
        let mut start = Duration::ZERO;
        let mut from = 0.0;
        for s in &self.stages {
            let end = start + s.duration;
            if t < end {
                if s.hold || s.duration.is_zero() {
                    return s.target;
                }
                let f = (t - start).as_secs_f64() / s.duration.as_secs_f64();
                return from + (s.target - from) * f;
            }
            from = s.target;
            start = end;
        }
        self.stages.last().map_or(0.0, |s| s.target)
    }
}
