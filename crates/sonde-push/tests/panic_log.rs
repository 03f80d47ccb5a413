//! A panic inside an exporter is logged through `sonde_core::diag` (here, a global `tracing`
//! subscriber: the engine logs from its own thread, which a thread-local capture cannot see).

use std::time::Duration;

use sonde_push::{Outcome, PushConfig, Sink, Source};

struct One;
impl Source for One {
    type Batch = Vec<u64>;
    fn collect(&mut self) -> Vec<Vec<u64>> {
        vec![vec![1]]
    }
}

struct PanicsOnce(bool);
impl Sink for PanicsOnce {
    type Batch = Vec<u64>;
    async fn send(&mut self, _: &Vec<u64>, _: Duration) -> Outcome {
        if !std::mem::replace(&mut self.0, true) {
            panic!("boom in send");
        }
        Outcome::Success {
            rejected: 0,
            message: String::new(),
        }
    }
}

#[test]
fn a_caught_panic_is_logged_as_a_warning() {
    let lines = sonde_core::testing::capture_global_diagnostics().unwrap();
    let reg = sonde_core::Registry::new();
    let mut config = PushConfig::new("paniclog");
    config.interval = Duration::from_secs(3600);
    let e = sonde_push::start(&reg, config, One, || async {
        Ok::<_, ()>(PanicsOnce(false))
    })
    .unwrap();
    assert!(e.flush(Duration::from_secs(5)).is_err());
    e.flush(Duration::from_secs(5)).unwrap();
    e.shutdown(Duration::from_secs(5)).unwrap();
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l
            == "WARN paniclog exporter: sending a request panicked: boom in send; the exporter keeps running (repeats are reported at most once a minute)"),
        "{lines:#?}"
    );
}
