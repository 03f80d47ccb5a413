//! The open model's arrival timeline and the weighted request mix.

use std::time::Duration;

use crate::plan::Plan;

/// One piece of the timeline: the rate moves linearly from `from` to `to` over `seconds`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    seconds: f64,
    from: f64,
    to: f64,
    /// Arrivals before this segment.
    before: f64,
}

impl Segment {
    fn arrivals(&self) -> f64 {
        self.seconds * (self.from + self.to) / 2.0
    }
}

/// Arrival times of an open-model run, warm-up first: arrival `k` is at the time `t` where the
/// integral of the rate from 0 to `t` equals `k` (so a hold at 200/s sends one every 5 ms and a
/// ramp speeds up smoothly).
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    segments: Vec<Segment>,
    total: u64,
    /// Seconds of warm-up at the start of the timeline.
    pub(crate) warmup: f64,
}

impl Timeline {
    /// The plan's stages behind a warm-up at the first stage's target.
    pub(crate) fn new(plan: &Plan) -> Timeline {
        let mut pieces = Vec::new();
        let warmup = plan.warmup.as_secs_f64();
        if warmup > 0.0
            && let Some(first) = plan.stages.first()
        {
            pieces.push((warmup, first.target, first.target));
        }
        let mut from = 0.0;
        for s in &plan.stages {
            let start_rate = if s.hold { s.target } else { from };
            pieces.push((s.duration.as_secs_f64(), start_rate, s.target));
            from = s.target;
        }
        let mut segments = Vec::with_capacity(pieces.len());
        let (mut start, mut before) = (0.0, 0.0);
        for (seconds, from, to) in pieces {
            let seg = Segment {
                start,
                seconds,
                from: from.max(0.0),
                to: to.max(0.0),
                before,
            };
            start += seconds;
            before += seg.arrivals();
            segments.push(seg);
        }
        // Arrivals k = 0, 1, ... while k < the integral over the whole timeline.
        let total = if before > 0.0 {
            (before - 1e-9).ceil().max(0.0) as u64
        } else {
            0
        };
        Timeline {
            segments,
            total,
            warmup,
        }
    }

    /// Number of arrivals (warm-up included).
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Seconds from the timeline's start to arrival `k` (`k < total`).
    pub(crate) fn arrival(&self, k: u64) -> f64 {
        let k = k as f64;
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| s.before <= k && s.arrivals() > 0.0)
            .or(self.segments.first());
        let Some(s) = seg else { return 0.0 };
        let rem = k - s.before;
        let slope = (s.to - s.from) / s.seconds;
        // Solve from*x + slope/2*x² = rem, in the form that stays stable when slope is ~0.
        let x = if rem <= 0.0 {
            0.0
        } else if slope.abs() < 1e-12 {
            rem / s.from
        } else {
            let disc = (s.from * s.from + 2.0 * slope * rem).max(0.0);
            2.0 * rem / (s.from + disc.sqrt())
        };
        s.start + x.clamp(0.0, s.seconds)
    }

    /// The mean target rate over the measured part.
    pub(crate) fn mean_measured_rate(&self) -> f64 {
        let (n, secs) = self
            .segments
            .iter()
            .filter(|s| s.start >= self.warmup)
            .fold((0.0, 0.0), |(n, t), s| (n + s.arrivals(), t + s.seconds));
        if secs > 0.0 { n / secs } else { 0.0 }
    }

    /// The target rate at `t` seconds into the timeline.
    pub(crate) fn rate_at(&self, t: f64) -> f64 {
        for s in &self.segments {
            if t < s.start + s.seconds {
                let f = ((t - s.start) / s.seconds).clamp(0.0, 1.0);
                return s.from + (s.to - s.from) * f;
            }
        }
        self.segments.last().map_or(0.0, |s| s.to)
    }
}

/// The plan's requests in a smooth weighted round-robin order (nginx's algorithm: weights 3:1
/// give a a b a, not a a a b), so any stretch of the run has the planned mix. Weights are scaled
/// down when their sum is above 10,000, keeping every request at least once.
pub(crate) fn weighted_order(weights: &[u32]) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let scale = if sum > 10_000 {
        10_000.0 / sum as f64
    } else {
        1.0
    };
    let w: Vec<i64> = weights
        .iter()
        .map(|&w| ((f64::from(w.max(1)) * scale).round() as i64).max(1))
        .collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .unwrap_or((0, &0));
        current[best] -= total;
        order.push(best as u32);
    }
    if order.is_empty() {
        order.push(0);
    }
    order
}

/// The closed model's number of users at `t` into the timeline (warm-up first).
pub(crate) fn users_at(plan: &Plan, t: Duration) -> usize {
    let target = if t < plan.warmup {
        plan.stages.first().map_or(0.0, |s| s.target)
    } else {
        plan.target_at(t - plan.warmup)
    };
    target.max(0.0).round() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Stage;

    fn plan(stages: Vec<Stage>, warmup: Duration) -> Plan {
        Plan {
            warmup,
            connections: 1,
            timeout: Duration::from_secs(1),
            ..Plan::new(Vec::new(), stages)
        }
    }

    #[test]
    fn a_hold_spaces_arrivals_evenly() {
        let p = plan(
            vec![Stage {
                duration: Duration::from_secs(3),
                target: 200.0,
                hold: true,
            }],
            Duration::ZERO,
        );
        let t = Timeline::new(&p);
        assert_eq!(t.total(), 600);
        assert!((t.arrival(1) - 0.005).abs() < 1e-12);
        assert!((t.arrival(599) - 2.995).abs() < 1e-9);
        assert!((t.mean_measured_rate() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn a_ramp_accelerates_and_warmup_comes_first() {
        let p = plan(
            vec![
                Stage {
                    duration: Duration::from_secs(10),
                    target: 100.0,
                    hold: false,
                },
                Stage {
                    duration: Duration::from_secs(10),
                    target: 100.0,
                    hold: true,
                },
            ],
            Duration::from_secs(1),
        );
        let t = Timeline::new(&p);
        // Warm-up: 100 at 100/s; ramp 0→100 over 10 s: 500; hold: 1000.
        assert_eq!(t.total(), 1600);
        assert!(t.arrival(99) < 1.0 && t.arrival(100) >= 1.0);
        // Half the ramp's arrivals come in its last ~29 % (integral of a linear ramp).
        let mid = t.arrival(100 + 250) - 1.0;
        assert!((mid - 10.0 * 0.5f64.sqrt()).abs() < 1e-6, "{mid}");
        let times: Vec<f64> = (0..t.total()).map(|k| t.arrival(k)).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!((t.mean_measured_rate() - 75.0).abs() < 1e-9);
    }

    #[test]
    fn weighted_order_is_smooth_and_exact() {
        let o = weighted_order(&[3, 1]);
        assert_eq!(o, vec![0, 0, 1, 0]);
        let o = weighted_order(&[5, 3, 2]);
        assert_eq!(o.len(), 10);
        assert_eq!(o.iter().filter(|&&i| i == 1).count(), 3);
        // Scaled to about 10,000 entries, the light request kept once.
        let o = weighted_order(&[100_000, 1]);
        assert_eq!(o.len(), 10_001);
        assert_eq!(o.iter().filter(|&&i| i == 1).count(), 1);
    }
}
