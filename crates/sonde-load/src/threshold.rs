//! Thresholds, k6 style: `p95<300ms`, `p99<1.5s`, `errors<1%`, `rate>=490`, `max<2s`, `mean<100ms`.
//!
//! A latency without a unit is in milliseconds (as in k6, whose `p(95)<200` form is accepted too);
//! `errors` is a ratio (`1%` or `0.01`); `rate` is completed requests per second.

use std::fmt;
use std::str::FromStr;

use crate::result::{RunResult, ThresholdOutcome};

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// A latency quantile (`p95` is 0.95).
    Quantile(f64),
    /// Largest latency.
    Max,
    /// Smallest latency.
    Min,
    /// Mean latency.
    Mean,
    /// Failed requests over all requests.
    Errors,
    /// Completed requests per second.
    Rate,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The text it was parsed from, trimmed.
    pub text: String,
    /// What is measured.
    pub measure: Measure,
    /// How it is compared.
    pub op: Op,
    /// The limit: seconds for latencies, a ratio for errors, requests per second for rate.
    pub limit: f64,
}

/// A threshold that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "threshold {text:?}: {problem}; write it like 'p95<300ms', 'p99<1.5s', 'errors<1%' or 'rate>=490'"
)]
pub struct ThresholdError {
    /// The text given.
    pub text: String,
    /// What is wrong.
    pub problem: String,
}

/// Parses a duration: `300ms`, `1.5s`, `2m`, `250us`, `1h`; a bare number is `default_unit`
/// seconds per unit (1e-3 for milliseconds).
pub fn parse_seconds(s: &str, default_unit: f64) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.replace('_', "").parse().ok()?;
    let scale = match unit.trim() {
        "" => default_unit,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let v = n * scale;
    (v.is_finite() && v >= 0.0).then_some(v)
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim().to_owned();
        let err = |problem: &str| ThresholdError {
            text: text.clone(),
            problem: problem.to_owned(),
        };
        let at = text
            .find(['<', '>'])
            .ok_or_else(|| err("no comparison (<, <=, > or >=)"))?;
        let (lhs, rest) = text.split_at(at);
        let (op, rhs) = if let Some(r) = rest.strip_prefix("<=") {
            (Op::Le, r)
        } else if let Some(r) = rest.strip_prefix(">=") {
            (Op::Ge, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Op::Lt, r)
        } else {
            (Op::Gt, &rest[1..])
        };
        let lhs = lhs.trim().to_ascii_lowercase();
        let measure = match lhs.as_str() {
            "max" => Measure::Max,
            "min" => Measure::Min,
            "mean" | "avg" => Measure::Mean,
            "errors" | "error_rate" | "error_ratio" => Measure::Errors,
            "rate" | "rps" => Measure::Rate,
            "med" | "median" => Measure::Quantile(0.5),
            other => {
                let digits = other
                    .strip_prefix("p(")
                    .and_then(|r| r.strip_suffix(')'))
                    .or_else(|| other.strip_prefix('p'))
                    .ok_or_else(|| err(&format!("unknown measure {other:?}")))?;
                let p: f64 = digits
                    .parse()
                    .map_err(|_| err(&format!("unknown measure {other:?}")))?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(err("a percentile must be above 0 and at most 100"));
                }
                Measure::Quantile(p / 100.0)
            }
        };
        let rhs = rhs.trim();
        if rhs.is_empty() {
            return Err(err("no limit after the comparison"));
        }
        let limit = match measure {
            Measure::Errors => if let Some(pct) = rhs.strip_suffix('%') {
                pct.trim().parse::<f64>().ok().map(|v| v / 100.0)
            } else {
                rhs.parse::<f64>().ok()
            }
            .filter(|v| (0.0..=1.0).contains(v))
            .ok_or_else(|| err("an error limit is a percentage (1%) or a ratio (0.01)"))?,
            Measure::Rate => rhs
                .trim_end_matches("/s")
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| err("a rate limit is requests per second (490)"))?,
            _ => parse_seconds(rhs, 1e-3).ok_or_else(|| {
                err("a latency limit is a duration (300ms, 1.5s; a bare number is milliseconds)")
            })?,
        };
        Ok(Threshold {
            text,
            measure,
            op,
            limit,
        })
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Threshold {
    /// The measured value this threshold compares, for one request name (`None`: all), or `None`
    /// when nothing was measured.
    pub fn observe(&self, result: &RunResult, request: Option<&str>) -> Option<f64> {
        let r = result.request(request)?;
        match self.measure {
            Measure::Quantile(q) => r.latency.quantile(q),
            Measure::Max => r.latency.parts.max,
            Measure::Min => r.latency.parts.min,
            Measure::Mean => r.latency.mean(),
            Measure::Errors => (r.count > 0).then(|| r.error_ratio()),
            Measure::Rate => Some(r.rate),
        }
    }

    /// Evaluates the threshold; a threshold with nothing to measure fails.
    pub fn evaluate(&self, result: &RunResult, request: Option<&str>) -> ThresholdOutcome {
        let observed = self.observe(result, request);
        ThresholdOutcome {
            threshold: self.text.clone(),
            request: request.map(str::to_owned),
            observed,
            passed: observed.is_some_and(|v| self.op.holds(v, self.limit)),
        }
    }

    /// The comparison operator as written.
    pub fn op_str(&self) -> &'static str {
        self.op.as_str()
    }
}

/// Evaluates global thresholds over all requests and each request's own thresholds.
pub fn evaluate_all(
    global: &[Threshold],
    per_request: &[(String, Vec<Threshold>)],
    result: &RunResult,
) -> Vec<ThresholdOutcome> {
    let mut out: Vec<ThresholdOutcome> = global.iter().map(|t| t.evaluate(result, None)).collect();
    for (name, ts) in per_request {
        out.extend(ts.iter().map(|t| t.evaluate(result, Some(name))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_write() {
        let t: Threshold = "p95<300ms".parse().unwrap();
        assert_eq!((t.measure, t.op), (Measure::Quantile(0.95), Op::Lt));
        assert!((t.limit - 0.3).abs() < 1e-12);
        let t: Threshold = "p99<1.5s".parse().unwrap();
        assert!((t.limit - 1.5).abs() < 1e-12);
        let t: Threshold = "p(95) < 200".parse().unwrap();
        assert!((t.limit - 0.2).abs() < 1e-12);
        let t: Threshold = "errors<1%".parse().unwrap();
        assert_eq!(t.measure, Measure::Errors);
        assert!((t.limit - 0.01).abs() < 1e-12);
        let t: Threshold = "rate>=490".parse().unwrap();
        assert_eq!((t.measure, t.op, t.limit), (Measure::Rate, Op::Ge, 490.0));
        let t: Threshold = "p99.9<=2s".parse().unwrap();
        assert_eq!(t.op, Op::Le);
        assert!(matches!(t.measure, Measure::Quantile(q) if (q - 0.999).abs() < 1e-12));
    }

    #[test]
    fn refuses_with_a_hint() {
        for bad in [
            "p95",
            "p95<",
            "p0<1s",
            "p101<1s",
            "errors<150%",
            "lat<1s",
            "p95<fast",
            "rate>x",
        ] {
            let e = bad.parse::<Threshold>().unwrap_err();
            assert!(e.to_string().contains("p95<300ms"), "{e}");
        }
    }
}
