//! `sonde-load check SCENARIO`: a good file passes, every bad one is refused with located
//! messages (`file:line:column: what; what to do`) and exit code 2, and nothing panics, whatever
//! the bytes. Nothing is sent anywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn sonde_load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sonde-load"))
        .args(args)
        .output()
        .expect("sonde-load runs")
}

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check_path(path: &Path) -> Checked {
    let out = sonde_load(&["check", &path.display().to_string()]);
    let c = Checked {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !c.stderr.contains("panicked"),
        "{}: panicked:\n{}",
        path.display(),
        c.stderr
    );
    c
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("a scenario file");
    p
}

/// The file is refused with exit 2, every message located in it, and `wants` in the output.
fn refused(dir: &Path, name: &str, content: &str, wants: &[&str]) -> String {
    let p = write(dir, name, content.as_bytes());
    let c = check_path(&p);
    assert_eq!(c.code, Some(2), "{name}: accepted:\n{}", c.stdout);
    let prefix = format!("{}:", p.display());
    let mut lines = c.stderr.lines();
    let first = lines.next().expect("a message");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    for line in std::iter::once(first).chain(lines) {
        let rest = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{name}: not located in the file: {line:?}"));
        let mut parts = rest.splitn(3, ':');
        let (l, col) = (parts.next(), parts.next());
        assert!(
            l.is_some_and(|l| l.parse::<u32>().is_ok_and(|v| v >= 1))
                && col.is_some_and(|c| c.parse::<u32>().is_ok_and(|v| v >= 1)),
            "{name}: no line:column in {line:?}"
        );
        // Each problem says what to do after what is wrong.
        assert!(line.contains("; "), "{name}: no advice in {line:?}");
    }
    for w in wants {
        let w = w.replace("FILE", &p.display().to_string());
        assert!(
            c.stderr.contains(&w),
            "{name}: missing {w:?} in:\n{}",
            c.stderr
        );
    }
    c.stderr
}

const GOOD: &str = r#"
[run]
base_url = "http://127.0.0.1:9"
model = "open"
timeout = "2s"
warmup = "1s"
thresholds = ["p99<1.5s", "errors<1%"]

[[stages]]
duration = "5s"
target = 100
[[stages]]
duration = "10s"
target = 100
hold = true

[[requests]]
name = "list"
path = "/api/users"
weight = 3
headers = { "x-api-key" = "k" }
thresholds = ["p95<300ms"]

[[requests]]
name = "create"
method = "POST"
path = "/api/users"
body_file = "user.json"
[requests.headers]
content-type = "application/json"
"#;

#[test]
fn a_good_scenario_passes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    write(dir.path(), "user.json", br#"{"name":"ada"}"#);
    let p = write(dir.path(), "good.toml", GOOD.as_bytes());
    let c = check_path(&p);
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    assert!(c.stdout.contains(": ok"), "{}", c.stdout);
    assert!(c.stdout.contains("2 requests, 2 stages"), "{}", c.stdout);
    // Checked from another working directory: body_file is relative to the scenario.
    let out = Command::new(env!("CARGO_BIN_EXE_sonde-load"))
        .args(["check", "good.toml"])
        .current_dir(dir.path())
        .output()
        .expect("sonde-load runs");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn malformed_scenarios_are_located_and_explained() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    let head = "[run]\nrate = 10\nduration = \"1s\"\n";
    refused(
        d,
        "typo.toml",
        &format!("{head}[[requests]]\nurl = \"http://127.0.0.1:9/\"\nwieght = 2\n"),
        &["FILE:6:1: unknown key `wieght` in [[requests]]; did you mean `weight`?"],
    );
    refused(
        d,
        "toml.toml",
        "[run\nrate = 10\n",
        &["FILE:1:", "not valid TOML"],
    );
    refused(
        d,
        "duplicate.toml",
        &format!(
            "{head}[[requests]]\nname = \"a\"\nurl = \"http://h/\"\n[[requests]]\nname = \"a\"\nurl = \"http://h/b\"\n"
        ),
        &["FILE:8:8: a request named \"a\" already exists (at FILE:5:8)"],
    );
    refused(
        d,
        "weight.toml",
        &format!("{head}[[requests]]\nurl = \"http://h/\"\nweight = 0\n"),
        &["FILE:6:10: `weight` is 0"],
    );
    refused(
        d,
        "url.toml",
        &format!("{head}[[requests]]\nurl = \"ftp://h/\"\n"),
        &["FILE:5:7: url \"ftp://h/\" is not an absolute http:// or https:// URL"],
    );
    refused(
        d,
        "method.toml",
        &format!("{head}[[requests]]\nurl = \"http://h/\"\nmethod = \"PSOT\"\n"),
        &["FILE:6:10: method \"PSOT\"", "did you mean POST?"],
    );
    refused(
        d,
        "header.toml",
        &format!(
            "{head}[[requests]]\nurl = \"http://h/\"\nheaders = {{ \"a b\" = \"v\", ok = \"line\\nbreak\" }}\n"
        ),
        &[
            "FILE:6:13: \"a b\" is not a header name",
            "`ok` has characters",
        ],
    );
    refused(
        d,
        "threshold.toml",
        &format!("{head}thresholds = [\"p95 300ms\", 5]\n[[requests]]\nurl = \"http://h/\"\n"),
        &[
            "FILE:4:15: threshold \"p95 300ms\"",
            "FILE:4:28: a threshold must be a string",
        ],
    );
    refused(
        d,
        "duration.toml",
        "[run]\nrate = 10\nduration = \"30\"\ntimeout = 5\n[[requests]]\nurl = \"http://h/\"\n",
        &[
            "FILE:3:12: `duration` = \"30\" is not a duration",
            "FILE:4:11: `timeout` must be a duration",
            "like \"5s\"",
        ],
    );
    refused(
        d,
        "body_file.toml",
        &format!("{head}[[requests]]\nurl = \"http://h/\"\nbody_file = \"missing.json\"\n"),
        &[
            "FILE:6:13: body_file",
            "missing.json",
            "relative to the scenario's directory",
        ],
    );
    refused(
        d,
        "no_requests.toml",
        head,
        &["FILE:1:1: the scenario has no requests"],
    );
    refused(
        d,
        "no_stages.toml",
        "[run]\nbase_url = \"http://h\"\n[[requests]]\npath = \"/\"\n",
        &["FILE:1:1: the scenario has no load"],
    );
    refused(
        d,
        "conflicts.toml",
        "[run]\nrate = 10\nusers = 3\n[[stages]]\nduration = \"1s\"\ntarget = 1\n[[requests]]\npath = \"x\"\n",
        &["both `rate` and `users`", "`path` needs [run] base_url"],
    );
    // Several problems at once, in file order within each section.
    let all = refused(
        d,
        "many.toml",
        "[run]\nmodle = \"open\"\n[[stages]]\ndurration = \"1s\"\ntarget = 5\n[[requests]]\nname = \"total\"\nurl = \"http://h/\"\n",
        &[
            "FILE:2:1: unknown key `modle` in [run]; did you mean `model`?",
            "FILE:4:1: unknown key `durration`",
            "this stage has no `duration`",
            "FILE:7:8: `total` is the name reports give",
        ],
    );
    assert!(all.lines().count() >= 4, "{all}");
}

#[test]
fn no_input_makes_it_panic() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    // Random bytes (not UTF-8), located at the first bad byte.
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..20 {
        let len = rng.random_range(1..4096);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let c = check_path(&write(d, &format!("random{i}.toml"), &bytes));
        assert_eq!(c.code, Some(2), "random bytes accepted");
    }
    let mut bytes = b"[run]\nrate = 1\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    let c = check_path(&write(d, "latin.toml", &bytes));
    assert!(
        c.stderr.contains("latin.toml:3:1: this is not UTF-8 text"),
        "{}",
        c.stderr
    );
    // Random printable text, and random mixes of TOML's own tokens.
    let tokens = [
        "[run]",
        "[[requests]]",
        "[[stages]]",
        "=",
        "\"",
        "'",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\n",
        "rate",
        "url",
        "target",
        "1e400",
        "-0",
        "\"\"\"",
        "#",
        ".",
        "true",
        "nan",
        "inf",
        "weight",
        "headers",
        "\\u0000",
        "🙂",
    ];
    for i in 0..40 {
        let mut s = String::new();
        for _ in 0..rng.random_range(1..60) {
            if rng.random_bool(0.2) {
                s.push(rng.random_range(' '..='~'));
            } else {
                s.push_str(tokens[rng.random_range(0..tokens.len())]);
                s.push(' ');
            }
        }
        let c = check_path(&write(d, &format!("tokens{i}.toml"), s.as_bytes()));
        assert!(matches!(c.code, Some(0) | Some(2)), "{s:?}: {:?}", c.code);
    }
    // Deep nesting.
    let deep = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let c = check_path(&write(d, "deep.toml", deep.as_bytes()));
    assert_eq!(c.code, Some(2));
    let deep = format!("x = {}1{}", "{a = ".repeat(5_000), "}".repeat(5_000));
    assert_eq!(
        check_path(&write(d, "deep2.toml", deep.as_bytes())).code,
        Some(2)
    );
    // Not a file at all.
    let c = check_path(d);
    assert_eq!(c.code, Some(2));
    assert!(c.stderr.contains("directory"), "{}", c.stderr);
    let c = check_path(&d.join("absent.toml"));
    assert_eq!(c.code, Some(2));
    assert!(c.stderr.contains("cannot read"), "{}", c.stderr);
}

#[test]
fn huge_files_are_refused_or_summarised() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    // Beyond the size limit: refused before parsing.
    let big = vec![b'#'; 17 << 20];
    let c = check_path(&write(d, "big.toml", &big));
    assert_eq!(c.code, Some(2));
    assert!(c.stderr.contains("body_file"), "{}", c.stderr);
    // A device that never ends is cut short, not read until memory runs out.
    if Path::new("/dev/zero").exists() {
        let c = check_path(Path::new("/dev/zero"));
        assert_eq!(c.code, Some(2));
        assert!(c.stderr.contains("more than 16 MiB"), "{}", c.stderr);
    }
    // Large and wrong everywhere: the first problems, and a count of the rest.
    let mut s = String::from("[run]\nrate = 1\nduration = \"1s\"\n");
    for i in 0..20_000 {
        s.push_str(&format!(
            "[[requests]]\nname = \"r{i}\"\nurl = \"http://h/\"\nwieght = 1\n"
        ));
    }
    let c = check_path(&write(d, "many.toml", s.as_bytes()));
    assert_eq!(c.code, Some(2));
    assert!(
        c.stderr.lines().count() <= 52,
        "{} lines",
        c.stderr.lines().count()
    );
    assert!(
        c.stderr.contains("… and 19950 more problems"),
        "{}",
        &c.stderr[..500]
    );
    // Large and right: 5,000 requests pass.
    let mut s = String::from("[run]\nrate = 1\nduration = \"1s\"\n");
    for i in 0..5_000 {
        s.push_str(&format!(
            "[[requests]]\nname = \"r{i}\"\nurl = \"http://h/{i}\"\n"
        ));
    }
    let c = check_path(&write(d, "large.toml", s.as_bytes()));
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    assert!(c.stdout.contains("5000 requests"), "{}", c.stdout);
}

#[test]
fn run_refuses_a_bad_scenario_before_sending() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let p = write(
        dir.path(),
        "bad.toml",
        b"[run]\nrate = 1\nduration = \"1s\"\n[[requests]]\nurl = \"http://127.0.0.1:9/\"\nwieght = 1\n",
    );
    let out = sonde_load(&[
        "run",
        "--scenario",
        &p.display().to_string(),
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `weight`?"), "{stderr}");
}

/// The good scenario with seeded mutations (hostile values, lines dropped, doubled or cut):
/// every outcome is a plan or located problems, never a panic.
#[test]
fn mutated_scenarios_get_problems_never_a_panic() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("user.json"), "{}").expect("a body file");
    let dir = dir.path();
    sonde_testkit::mutate::assert_never_panics(
        GOOD,
        2_000,
        0x10ad,
        "scenario.toml:",
        800,
        |text| {
            sonde_load::scenario::parse(text, "scenario.toml", dir)
                .map(drop)
                .map_err(|e| e.problems)
        },
    );
}
