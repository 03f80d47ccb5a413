//! Names of the self-metrics sonde-statsd registers in the registry it feeds.
//!
//! All are counters except [`QUEUE_SIZE`]. A family that cannot be registered (the name is
//! taken by an incompatible definition) is left out rather than failing ingest.

use sonde_core::{Counter, Family, Gauge, Registry};

/// Datagrams received, by `transport` (`udp`, `unix`).
pub const PACKETS: &str = "sonde.statsd.packets";
/// Lines seen (non-empty lines of received datagrams, well-formed or not).
pub const LINES: &str = "sonde.statsd.lines";
/// Lines rejected, by `reason`: every [`ParseError::reason`](crate::ParseError::reason), plus
/// `type_conflict` (a name seen before with another type, or registered by someone else with
/// another definition), `name_collision` (another family has the same Prometheus name),
/// `bad_name` / `too_long` (a mapped name that is still not a valid metric
/// name) and `bad_tags` (a tag key longer than 255 bytes).
pub const PARSE_ERRORS: &str = "sonde.statsd.parse_errors";
/// Samples or datagrams not recorded, by `reason`: `queue_full` (a datagram: the parser fell
/// behind), `too_many_metrics` (the distinct-name limit), `too_many_labels` (the label limit of
/// a family), `mapping` (a drop rule), `set_full` (a set's distinct-value limit), `non_finite`
/// (a value that would make a total, gauge or sum infinite).
pub const DROPPED: &str = "sonde.statsd.dropped";
/// Times a family was widened with more labels (its series kept), by `metric`.
pub const RELABELS: &str = "sonde.statsd.relabels";
/// DogStatsD lines that are not metrics, by `kind` (`event`, `service_check`), and `|T`
/// timestamps left aside (`timestamp`: the value is recorded at arrival).
pub const IGNORED: &str = "sonde.statsd.ignored";
/// Socket receive errors, by `transport`.
pub const RECEIVE_ERRORS: &str = "sonde.statsd.receive_errors";
/// Datagrams waiting in the queue between the receive threads and the parser thread, read at
/// each collection (with several servers on one registry, the one started last wins).
pub const QUEUE_SIZE: &str = "sonde.statsd.queue.size";

/// Resolved self-metric families.
#[derive(Clone)]
pub(crate) struct Stats {
    pub(crate) lines: Option<Counter>,
    pub(crate) parse_errors: Option<Family<Counter>>,
    pub(crate) dropped: Option<Family<Counter>>,
    pub(crate) relabels: Option<Family<Counter>>,
    pub(crate) ignored: Option<Family<Counter>>,
    pub(crate) packets: Option<Family<Counter>>,
    pub(crate) receive_errors: Option<Family<Counter>>,
    pub(crate) queue_size: Option<Gauge>,
}

fn counter(
    registry: &Registry,
    name: &'static str,
    description: &'static str,
    label: &'static str,
) -> Option<Family<Counter>> {
    registry
        .counter(name)
        .description(description)
        .labels([label])
        .build()
        .ok()
}

impl Stats {
    pub(crate) fn register(registry: &Registry) -> Stats {
        Stats {
            lines: registry
                .counter(LINES)
                .description("StatsD lines seen, well-formed or not.")
                .build()
                .ok()
                .map(|f| f.handle()),
            parse_errors: counter(
                registry,
                PARSE_ERRORS,
                "StatsD lines rejected, by reason.",
                "reason",
            ),
            dropped: counter(
                registry,
                DROPPED,
                "StatsD samples or datagrams not recorded, by reason.",
                "reason",
            ),
            relabels: counter(
                registry,
                RELABELS,
                "StatsD metrics widened with more labels (a new tag key appeared; series kept).",
                "metric",
            ),
            ignored: counter(
                registry,
                IGNORED,
                "DogStatsD events and service checks received and ignored.",
                "kind",
            ),
            packets: counter(
                registry,
                PACKETS,
                "StatsD datagrams received, by transport.",
                "transport",
            ),
            receive_errors: counter(
                registry,
                RECEIVE_ERRORS,
                "StatsD socket receive errors, by transport.",
                "transport",
            ),
            queue_size: registry
                .gauge(QUEUE_SIZE)
                .description("StatsD datagrams waiting for the parser thread.")
                .build()
                .ok()
                .map(|f| f.handle()),
        }
    }

    pub(crate) fn parse_error(&self, reason: &str) {
        if let Some(f) = &self.parse_errors {
            f.with(&[reason]).inc();
        }
    }

    pub(crate) fn dropped(&self, reason: &str, n: u64) {
        if let Some(f) = &self.dropped {
            f.with(&[reason]).add(n);
        }
    }

    pub(crate) fn relabel(&self, metric: &str) {
        if let Some(f) = &self.relabels {
            f.with(&[metric]).inc();
        }
    }

    /// Forgets an expired name's series.
    pub(crate) fn forget(&self, metric: &str) {
        if let Some(f) = &self.relabels {
            f.remove(&[metric]);
        }
    }

    pub(crate) fn ignored(&self, kind: &str) {
        if let Some(f) = &self.ignored {
            f.with(&[kind]).inc();
        }
    }

    pub(crate) fn lines(&self, n: u64) {
        if let Some(c) = &self.lines {
            c.add(n);
        }
    }
}
