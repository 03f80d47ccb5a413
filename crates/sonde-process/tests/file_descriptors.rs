//! Open file descriptors of the current process, against a listing of `/proc/self/fd`.

#![cfg(target_os = "linux")] // compared with /proc
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::fs::File;

use common::{current_value_is, install_current_gauge, open_fds, value};
use sonde_core::Unit;
use sonde_process::OPEN_FILE_DESCRIPTORS;

#[test]
fn open_file_descriptors_follow_opened_files() {
    let (registry, _process, before) = install_current_gauge(
        OPEN_FILE_DESCRIPTORS,
        Unit::Count("{file_descriptor}".into()),
        || open_fds() as f64,
    );
    assert!(before >= 3.0, "stdin, stdout and stderr at least: {before}");

    let files: Vec<File> = (0..10).map(|_| File::open("/dev/null").unwrap()).collect();
    let during = current_value_is(&registry, OPEN_FILE_DESCRIPTORS, || open_fds() as f64);
    assert_eq!(during, before + 10.0);

    drop(files);
    assert_eq!(
        value(&registry.snapshot(), OPEN_FILE_DESCRIPTORS, &[]),
        before
    );
}
