//! Open file descriptors of the current process, against a listing of `/proc/self/fd`.

#![cfg(target_os = "linux")] // compared with /proc
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::fs::File;

use common::{open_fds, value};
use sonde_core::{Kind, Registry, Unit};
use sonde_process::{OPEN_FILE_DESCRIPTORS, ProcessCollector};

#[test]
fn open_file_descriptors_follow_opened_files() {
    let registry = Registry::new();
    let _process = ProcessCollector::current()
        .registry(&registry)
        .install()
        .unwrap();

    let s0 = registry.snapshot();
    let meta = &s0.family(OPEN_FILE_DESCRIPTORS).unwrap().meta;
    assert_eq!(
        (meta.kind(), meta.unit()),
        (Kind::Gauge, &Unit::Count("{file_descriptor}".into()))
    );
    let before = value(&s0, OPEN_FILE_DESCRIPTORS, &[]);
    assert_eq!(before, open_fds() as f64);
    assert!(before >= 3.0, "stdin, stdout and stderr at least: {before}");

    let files: Vec<File> = (0..10).map(|_| File::open("/dev/null").unwrap()).collect();
    let during = value(&registry.snapshot(), OPEN_FILE_DESCRIPTORS, &[]);
    assert_eq!(during, open_fds() as f64);
    assert_eq!(during, before + 10.0);

    drop(files);
    assert_eq!(
        value(&registry.snapshot(), OPEN_FILE_DESCRIPTORS, &[]),
        before
    );
}
