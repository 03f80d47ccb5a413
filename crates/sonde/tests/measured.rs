//! `#[sonde::measured]` on sync, async, fallible and early-returning functions.
#![allow(clippy::unwrap_used)] // tests panic on failure by design
#![cfg(feature = "macros")]

use sonde::testing::{assert_counter, block_on};
use sonde::{Point, Registry};

#[sonde::measured]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[sonde::measured]
fn parse(s: &str) -> Result<u32, std::num::ParseIntError> {
    let n: u32 = s.parse()?;
    if n == 0 {
        return Ok(1);
    }
    Ok(n * 2)
}

#[sonde::measured]
async fn fetch(id: u32) -> Result<String, String> {
    if id == 0 {
        Err("missing".into())
    } else {
        Ok(format!("item {id}"))
    }
}

struct Svc {
    base: u32,
}

impl Svc {
    #[sonde::measured]
    fn scaled(&self, x: u32) -> u32 {
        self.base * x
    }
}

#[test]
fn measured_functions_record_calls_errors_and_durations() {
    assert_eq!(add(2, 3), 5);
    assert_eq!(add(1, 1), 2);
    assert_eq!(parse("21").unwrap(), 42);
    assert_eq!(parse("0").unwrap(), 1);
    assert!(parse("x").is_err());
    assert_eq!(block_on(fetch(7)).unwrap(), "item 7");
    assert!(block_on(fetch(0)).is_err());
    assert_eq!(Svc { base: 3 }.scaled(4), 12);

    let snap = Registry::global().snapshot();
    let m = module_path!();
    let calls = |f: &'static str, r: &'static str| [("function", f), ("module", m), ("result", r)];
    assert_counter(&snap, "function.calls", &calls("add", "ok"), 2.0);
    assert_counter(&snap, "function.calls", &calls("parse", "ok"), 2.0);
    assert_counter(&snap, "function.calls", &calls("parse", "error"), 1.0);
    assert_counter(&snap, "function.calls", &calls("fetch", "ok"), 1.0);
    assert_counter(&snap, "function.calls", &calls("fetch", "error"), 1.0);
    assert_counter(&snap, "function.calls", &calls("scaled", "ok"), 1.0);
    let duration = snap
        .point("function.duration", &[("function", "parse"), ("module", m)])
        .and_then(Point::histogram)
        .unwrap();
    assert_eq!(duration.count(), 3);
}
