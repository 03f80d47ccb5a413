//! The README's Rust snippets (extracted by `build.rs`), each run in a process of its own, as
//! a user would run it, by `tests/tests/readme.rs`: `readme_snippets NAME`.
//!
//! A statement snippet runs to its end, where it prints `READY` and waits for a line on stdin
//! while everything it bound is still alive (the test checks `/metrics` meanwhile), then
//! returns; `quick_start` then prints what its histogram holds. A program snippet's `main` runs.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, Write as _};

mod quick_start {
    include!(concat!(env!("OUT_DIR"), "/readme/quick_start.rs"));
}
mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/readme/prometheus.rs"));
}
mod otlp {
    include!(concat!(env!("OUT_DIR"), "/readme/otlp.rs"));
}
mod instrumenting {
    include!(concat!(env!("OUT_DIR"), "/readme/instrumenting.rs"));
}

/// Says the snippet reached its end, then waits for the test to be done looking.
fn pause() {
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    match name.as_str() {
        "quick_start" => {
            quick_start::run(&mut pause).unwrap();
            let snap = sonde::Registry::global().snapshot();
            let h = snap
                .point(
                    "http.server.request.duration",
                    &[("http.request.method", "GET"), ("http.route", "/users/:id")],
                )
                .and_then(|p| p.histogram())
                .unwrap();
            println!("count={}", h.count());
        }
        "prometheus" => prometheus::run(&mut pause).unwrap(),
        "otlp" => otlp::run(&mut pause).unwrap(),
        "instrumenting" => println!("{:?}", instrumenting::run_main()),
        other => {
            eprintln!("unknown snippet {other:?}");
            std::process::exit(2);
        }
    }
}
