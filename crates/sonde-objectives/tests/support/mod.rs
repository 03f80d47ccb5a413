//! Shared by the tests of the `sonde-objectives` binary: running it and reading what it
//! printed.

// Each test file uses only some of these.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `sonde-objectives ARGS` in the test's own directory.
pub fn run(args: &[&str]) -> Output {
    output(Command::new(env!("CARGO_BIN_EXE_sonde-objectives")).args(args))
}

/// Runs `sonde-objectives ARGS` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    output(
        Command::new(env!("CARGO_BIN_EXE_sonde-objectives"))
            .args(args)
            .current_dir(dir),
    )
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{e}"))
}

/// What it printed: standard output, then standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
