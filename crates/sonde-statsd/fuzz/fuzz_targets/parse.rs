//! `cargo +nightly fuzz run parse` (from crates/sonde-statsd): the parser and the ingest must
//! never panic, whatever the bytes.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use sonde_core::Registry;
use sonde_statsd::{Ingest, Mapper, MappingRule, Sample, parse_packet};

thread_local! {
    // One ingest across inputs, so widening, limits and the handle cache get exercised with
    // state built up by earlier inputs. Small limits keep memory bounded.
    static INGEST: RefCell<Ingest> = RefCell::new({
        let mapper = Mapper::new([
            MappingRule::new("*.*.*").name("$1.$3").label("mid", "$2"),
            MappingRule::new("drop.*").drop(),
        ])
        .expect("valid rules");
        Ingest::new(Registry::new())
            .mapper(mapper)
            .max_metrics(64)
            .max_series(16)
            .max_labels(8)
    });
}

fuzz_target!(|data: &[u8]| {
    INGEST.with(|ingest| {
        let mut ingest = ingest.borrow_mut();
        parse_packet(data, |r| match r {
            Ok(sample) => {
                if let Sample::Metric(m) = &sample {
                    // Touch every accessor.
                    let _ = m.values().count();
                    let _ = m.tags.iter().count();
                    let _ = m.set_member();
                }
                ingest.record(&sample);
            }
            Err(e) => {
                let _ = e.reason();
                ingest.record_error(e);
            }
        });
        if data.first() == Some(&b'!') {
            ingest.rotate_sets();
            let _ = ingest.registry().snapshot();
        }
    });
});
