//! Extracts the README's Rust snippets so that `tests/readme.rs` compiles and runs them exactly
//! as written. Each ```rust block must be preceded by `<!-- snippet: NAME -->`; the block
//! becomes `$OUT_DIR/readme/NAME.rs`:
//! - a block with `fn main` is a whole program, written as is, with `pub fn run_main()`
//!   calling its `main`;
//! - any other block is statements, wrapped in
//!   `pub fn run(check: &mut dyn FnMut()) -> Result<(), Box<dyn std::error::Error>>`, with
//!   `check()` called at its end, while everything the snippet bound is still alive.
//!
//! `$OUT_DIR/readme/names.txt` lists the names, and `unmarked.txt` the first line of every
//! ```rust block without a marker, which the test reports as a failure.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme).unwrap_or_default();
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("readme");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let mut names = String::new();
    let mut unmarked = String::new();
    let mut pending: Option<String> = None;
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let t = line.trim();
        if let Some(name) = t
            .strip_prefix("<!-- snippet:")
            .and_then(|r| r.strip_suffix("-->"))
        {
            pending = Some(name.trim().to_owned());
            continue;
        }
        if t != "```rust" {
            if !t.is_empty() {
                pending = None;
            }
            continue;
        }
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        let Some(name) = pending.take() else {
            let _ = writeln!(
                unmarked,
                "README.md:{}: {}",
                n + 1,
                body.lines().next().unwrap_or("")
            );
            continue;
        };
        let code = if body.contains("fn main(") {
            format!(
                "{body}\n/// The program's `main`, for the test to call.\npub fn run_main() -> impl std::fmt::Debug {{\n    main()\n}}\n"
            )
        } else {
            format!(
                "#[allow(unused_variables)]\npub fn run(check: &mut dyn FnMut()) -> Result<(), Box<dyn std::error::Error>> {{\n{body}check();\nOk(())\n}}\n"
            )
        };
        std::fs::write(out.join(format!("{name}.rs")), code).unwrap_or_else(|e| panic!("{e}"));
        let _ = writeln!(names, "{name}");
    }
    std::fs::write(out.join("names.txt"), names).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(out.join("unmarked.txt"), unmarked).unwrap_or_else(|e| panic!("{e}"));
}
