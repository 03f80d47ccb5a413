//! The check every fuzz target that fills a registry ends with (included by path from
//! sonde-otlp-receiver's fuzz target too): what sonde serves must read back.

use sonde_core::Registry;
use sonde_prometheus::{Format, encode_registry};

/// Encodes `registry` as `/metrics` does, in the text formats and (with `protobuf`) the
/// protobuf one, and parses each back: no line may be skipped, nothing may fail to decode.
pub fn assert_served_reads_back(registry: &Registry, protobuf: bool) {
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
    if protobuf {
        let mut out = Vec::new();
        encode_registry(registry, None, Format::Protobuf, &mut out);
        sonde_scrape::parse_protobuf(&out).expect("sonde's protobuf exposition decodes");
    }
}
