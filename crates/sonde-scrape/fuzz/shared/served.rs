//! What the fuzz targets that fill a registry share (included by path from
//! sonde-otlp-receiver's fuzz target too): the registry an input starts with, the steps it is
//! cut into, and the check that what sonde serves reads back.

use sonde_core::{MemoryBudget, Registry};
use sonde_prometheus::{Format, encode_registry};

/// What separates the steps of one input (not a sequence a body needs).
pub const STEP: &[u8] = b"\n\x00\xffSTEP\xff\x00\n";

/// An input: an empty registry (under a 64 KiB memory budget with bit 0 of the first byte: a
/// few dozen series, so the refusals and give-backs of a full budget are reached), and the
/// steps in the rest.
pub fn input(data: &[u8]) -> Option<(Registry, impl Iterator<Item = (u8, &[u8])>)> {
    let (&header, rest) = data.split_first()?;
    Some((registry(header), steps(rest)))
}

fn registry(header: u8) -> Registry {
    if header & 1 != 0 {
        Registry::with_budget(
            sonde_core::DEFAULT_MAX_SERIES,
            MemoryBudget::new(usize::MAX, 64 << 10),
        )
    } else {
        Registry::new()
    }
}

/// The steps of an input: `(mode byte, body)` each, split at [`STEP`]; an empty one is
/// skipped.
fn steps(data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let data = rest?;
        let (step, next) = match data.windows(STEP.len()).position(|w| w == STEP) {
            Some(at) => (&data[..at], Some(&data[at + STEP.len()..])),
            None => (data, None),
        };
        rest = next;
        Some(step)
    })
    .filter_map(|step| step.split_first().map(|(&mode, body)| (mode, body)))
}

/// Encodes `registry` as `/metrics` does, in the text formats and the protobuf one, and
/// reads each back: no line may be skipped, nothing may fail to decode.
pub fn assert_served_reads_back(registry: &Registry) {
    for format in [Format::Text, Format::OpenMetrics] {
        let mut out = Vec::new();
        encode_registry(registry, None, format, &mut out);
        let text = String::from_utf8(out).expect("expositions are UTF-8");
        let back = sonde_scrape::parse(&text).expect("sonde's exposition parses");
        assert!(
            back.skipped.is_empty(),
            "sonde served lines it cannot read back: {:?}\n{text}",
            back.skipped
        );
    }
    let mut out = Vec::new();
    encode_registry(registry, None, Format::Protobuf, &mut out);
    sonde_scrape::parse_protobuf(&out).expect("sonde's protobuf exposition decodes");
}
