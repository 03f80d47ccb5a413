//! Malformed objectives files: every problem is reported, located `file:line:column`, with what
//! to do, several at once, and nothing panics.

use sonde_objectives::{Problem, parse};

const ORIGIN: &str = "objectives.toml";
const EXAMPLE: &str = include_str!("../examples/objectives.toml");

fn problems(text: &str) -> Vec<Problem> {
    match parse(ORIGIN, text) {
        Ok(o) => panic!("expected problems, parsed {o:?}\n--- file\n{text}"),
        Err(p) => p,
    }
}

/// Every problem is located in the file and has a message and a hint.
fn assert_located(ps: &[Problem], text: &str) {
    assert!(!ps.is_empty());
    let lines = text.lines().count().max(1);
    for p in ps {
        let rest = p
            .location
            .strip_prefix(&format!("{ORIGIN}:"))
            .unwrap_or_else(|| panic!("not located in the file: {p}"));
        let (line, col) = rest
            .split_once(':')
            .unwrap_or_else(|| panic!("no column: {p}"));
        let line: usize = line.parse().unwrap_or_else(|_| panic!("bad line: {p}"));
        let col: usize = col.parse().unwrap_or_else(|_| panic!("bad column: {p}"));
        assert!(line >= 1 && line <= lines + 1 && col >= 1, "{p}");
        assert!(!p.message.is_empty() && !p.hint.is_empty(), "{p}");
    }
}

/// The one problem at `at` (`line:col`) whose text contains every fragment.
fn expect(text: &str, at: &str, fragments: &[&str]) {
    let ps = problems(text);
    assert_located(&ps, text);
    let found = ps.iter().any(|p| {
        let s = p.to_string();
        p.location == format!("{ORIGIN}:{at}") && fragments.iter().all(|f| s.contains(f))
    });
    assert!(
        found,
        "no problem at {at} with {fragments:?}; got:\n{}",
        ps.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const GOOD_THRESHOLD: &str = r#"[threshold.api]
metric = "http.server.request.duration"
percentile = "p95"
threshold = "300ms"
window = "5m"
"#;

#[test]
fn invalid_toml() {
    expect(
        "[threshold.api\nmetric = \"x\"\n",
        "1:15",
        &["not valid TOML", "fix the syntax"],
    );
}

#[test]
fn unknown_top_level_key() {
    expect(
        &format!("{GOOD_THRESHOLD}\n[tresholds.x]\nmetric = \"a\"\n"),
        "7:2",
        &["unknown key `tresholds`", "did you mean `threshold`?"],
    );
}

#[test]
fn unknown_key_and_missing_key_together() {
    let text = "[threshold.api]\nmetirc = \"http.server.request.duration\"\npercentile = \"p95\"\nthreshold = \"300ms\"\nwindow = \"5m\"\n";
    expect(
        text,
        "2:1",
        &["unknown key `metirc`", "did you mean `metric`?"],
    );
    expect(text, "1:1", &["has no `metric`", "add it"]);
}

#[test]
fn bad_percentile() {
    expect(
        &GOOD_THRESHOLD.replace("\"p95\"", "\"p100\""),
        "3:14",
        &["`percentile`", "`p100`", "write it like \"p95\""],
    );
}

#[test]
fn threshold_without_unit() {
    expect(
        &GOOD_THRESHOLD.replace("\"300ms\"", "\"300\""),
        "4:13",
        &["`threshold`", "not a latency", "300ms"],
    );
}

#[test]
fn window_over_a_year() {
    // u64::MAX seconds overflowed the generator's arithmetic (found by the mutation test).
    for window in ["400d", "18446744073709551615s"] {
        expect(
            &GOOD_THRESHOLD.replace("\"5m\"", &format!("\"{window}\"")),
            "5:10",
            &["`window`", window, "a year at most"],
        );
    }
}

#[test]
fn window_in_words() {
    expect(
        &GOOD_THRESHOLD.replace("\"5m\"", "\"5 minutes\""),
        "5:10",
        &["`window`", "5 minutes", "5m"],
    );
}

#[test]
fn selector_string_syntax_points_into_the_string() {
    // selector = 'http.route=/x': the quote is at column 12, `/` at column 24.
    expect(
        &format!("{GOOD_THRESHOLD}selector = 'http.route=/x'\n"),
        "6:24",
        &["expected a quoted value", "write matchers like"],
    );
}

#[test]
fn selector_table_bad_regex() {
    expect(
        &format!("{GOOD_THRESHOLD}selector = {{ \"http.route\" = \"=~(\" }}\n"),
        "6:14",
        &["not a regular expression", "RE2"],
    );
}

#[test]
fn invalid_metric_name() {
    expect(
        &GOOD_THRESHOLD.replace("http.server.request.duration", "http server"),
        "2:10",
        &["metric of threshold objective `api`", "OpenTelemetry name"],
    );
}

#[test]
fn misspelt_severity() {
    expect(
        &format!("{GOOD_THRESHOLD}severity = \"critcal\"\n"),
        "6:12",
        &["severity `critcal`", "did you mean \"critical\"?"],
    );
}

#[test]
fn number_instead_of_string() {
    expect(
        &GOOD_THRESHOLD.replace("\"p95\"", "95"),
        "3:14",
        &["must be a string", "percentile = \"p95\""],
    );
}

#[test]
fn objective_name_with_spaces() {
    expect(
        &GOOD_THRESHOLD.replace("[threshold.api]", "[threshold.\"API latency\"]"),
        "1:12",
        &["objective name `API latency`", "lower-case"],
    );
}

const RATIO: &str = r#"[ratio.availability]
target = "99.9%"
window = "30d"
total = { histogram = "http.server.request.duration" }
bad = { selector = 'error.type!=""' }
"#;

#[test]
fn target_above_100_percent() {
    expect(
        &RATIO.replace("99.9%", "150%"),
        "2:10",
        &["`target`", "150%", "99.9%"],
    );
}

#[test]
fn good_and_bad() {
    expect(
        &format!("{RATIO}good = {{ le = \"300ms\" }}\n"),
        "5:1",
        &["both `good` and `bad`", "keep one"],
    );
}

#[test]
fn neither_good_nor_bad() {
    expect(
        &RATIO.replace("bad = { selector = 'error.type!=\"\"' }\n", ""),
        "1:1",
        &["neither `good` nor `bad`", "add good"],
    );
}

#[test]
fn le_on_bad_events() {
    expect(
        &RATIO.replace("bad = { selector", "bad = { le = \"1s\", selector"),
        "5:14",
        &["`le` is only for good events", "move it to `good`"],
    );
}

#[test]
fn compliance_window_too_short() {
    expect(
        &RATIO.replace("\"30d\"", "\"1d\""),
        "3:10",
        &["shorter than the 3 days", "30d"],
    );
}

#[test]
fn counter_and_histogram_in_one_source() {
    expect(
        &RATIO.replace(
            "{ histogram = \"http.server.request.duration\" }",
            "{ counter = \"a\", histogram = \"b\" }",
        ),
        "4:38",
        &["both a counter and a histogram", "keep one"],
    );
}

#[test]
fn duplicate_alert_names() {
    let text = format!(
        "{GOOD_THRESHOLD}alert = \"Slow\"\n\n{}alert = \"Slow\"\n",
        GOOD_THRESHOLD.replace("[threshold.api]", "[threshold.db]")
    );
    let ps = problems(&text);
    assert_located(&ps, &text);
    assert!(ps.iter().any(|p| {
        p.message
            .contains("alert name `Slow` is used by another objective")
    }));
}

#[test]
fn empty_file() {
    expect(
        "# nothing yet\n",
        "1:1",
        &["declares no objective", "[threshold.NAME]"],
    );
}

#[test]
fn many_problems_at_once() {
    let text = "[threshold.api]\nmetric = \"http.server.request.duration\"\npercentile = \"p101\"\nthreshold = \"fast\"\nwindow = \"5m\"\nby = \"instance\"\ncolour = \"red\"\n\n[ratio.x]\ntarget = \"99.9\"\nwindow = \"30d\"\n";
    let ps = problems(text);
    assert_located(&ps, text);
    let locations: Vec<&str> = ps.iter().map(|p| p.location.as_str()).collect();
    for at in ["3:14", "4:13", "6:6", "7:1", "10:10", "9:1"] {
        assert!(
            locations.contains(&format!("{ORIGIN}:{at}").as_str()),
            "{at} missing in {locations:?}"
        );
    }
    assert!(ps.len() >= 7, "{ps:?}");
}

#[test]
fn the_error_text_is_file_line_column_what_and_what_to_do() {
    let e =
        sonde_objectives::Error::Invalid(problems("[threshold.x]\nmetirc = \"a\"\n")).to_string();
    sonde_core::testing::assert_has_line(
        &e,
        "objectives.toml:2:1: unknown key `metirc` in [threshold.x]; did you mean `metric`?",
    );
}

#[test]
fn no_prefix_of_the_example_panics_and_every_problem_is_located() {
    // Every cut of the example file, at every line and in the middle of lines.
    let mut cuts: Vec<usize> = EXAMPLE.match_indices('\n').map(|(i, _)| i + 1).collect();
    cuts.extend(EXAMPLE.match_indices('=').map(|(i, _)| i + 3));
    for cut in cuts {
        let mut end = cut.min(EXAMPLE.len());
        while !EXAMPLE.is_char_boundary(end) {
            end -= 1;
        }
        let text = &EXAMPLE[..end];
        if let Err(ps) = parse(ORIGIN, text) {
            assert_located(&ps, text);
        }
    }
}

#[test]
fn the_example_parses() {
    let o = parse(ORIGIN, EXAMPLE).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(o.thresholds.len(), 4);
    assert_eq!(o.ratios.len(), 4);
    assert_eq!(
        o.required_buckets(),
        vec![
            ("db.client.operation.duration".to_string(), 0.1),
            ("faas.init_duration".to_string(), 0.5),
            ("http.server.request.duration".to_string(), 0.3),
            ("http.server.request.duration".to_string(), 1.5),
        ]
    );
    // A 70 % target leaves the fast burn rates impossible: said, not silently dropped.
    let w = o.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("cache-hits") && w[0].contains("1h/5m"));
}

/// The example with seeded mutations (hostile values, lines dropped, doubled or cut): every
/// outcome is objectives that generate (or refuse to, with an error) or located problems,
/// never a panic.
#[test]
fn mutated_objectives_get_problems_never_a_panic() {
    sonde_testkit::mutate::assert_never_panics(EXAMPLE, 1_000, 0x5eed_0b1e, ORIGIN, 500, |text| {
        match parse(ORIGIN, text) {
            Ok(o) => sonde_objectives::generate(&o)
                .map(drop)
                .map_err(|e| vec![format!("{ORIGIN}: {e}")]),
            Err(ps) => Err(ps.iter().map(ToString::to_string).collect()),
        }
    });
}
