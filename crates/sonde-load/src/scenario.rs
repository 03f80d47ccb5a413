//! Scenario files (TOML): named requests with weights, headers and bodies; stages; thresholds.
//!
//! Every problem in a file is reported at once, each located by `file:line:column` and followed
//! by what to do (`unknown key `wieght`; did you mean `weight`?`). `sonde-load check FILE`
//! validates a file without sending anything.
//!
//! # Format
//!
//! ```toml
//! # What to send, how hard, and what must hold.
//! [run]
//! base_url = "http://127.0.0.1:8080"  # joined with each request's `path`
//! model = "open"          # "open": arrival rate (default); "closed": virtual users
//! connections = 64        # connections kept open (default: derived from the load)
//! timeout = "10s"         # per request (default 10s)
//! warmup = "5s"           # load sent before measuring, recorded nowhere (default 0s)
//! http2 = false           # HTTP/2 (prior knowledge on http://, ALPN on https://)
//! insecure = false        # accept any TLS certificate (self-signed test servers only)
//! thresholds = ["p99<1.5s", "errors<1%"]   # over all requests; exit 1 when one fails
//! # Instead of [[stages]], one holding stage may be written here:
//! #   rate = 500, duration = "30s"    (open model)
//! #   users = 10, duration = "30s"    (closed model)
//!
//! # The load over time: each stage moves linearly from the previous stage's target (0 before
//! # the first) to its own `target` (requests per second, or users in the closed model) over
//! # `duration`; `hold = true` jumps to `target` at the stage's start instead.
//! [[stages]]
//! duration = "10s"
//! target = 200            # ramp up 0 → 200/s
//! [[stages]]
//! duration = "30s"
//! target = 200            # hold
//! [[stages]]
//! duration = "5s"
//! target = 0              # ramp down
//!
//! # The requests, picked at random in proportion to their weights.
//! [[requests]]
//! name = "list-users"     # used by reports and thresholds (default: "METHOD path")
//! method = "GET"          # default GET
//! path = "/api/users?page=1"
//! weight = 3              # default 1
//! headers = { "x-api-key" = "test-key", accept = "application/json" }
//! thresholds = ["p95<300ms"]
//!
//! [[requests]]
//! name = "create-user"
//! method = "POST"
//! url = "http://127.0.0.1:8080/api/users"  # an absolute URL instead of base_url + path
//! headers = { "content-type" = "application/json" }
//! body = '{"name": "ada"}'  # or body_file = "user.json" (relative to this file)
//! thresholds = ["p99<500ms", "errors<0.1%"]
//! ```
//!
//! Durations are strings with a unit (`500ms`, `30s`, `2m`, `1h`); thresholds are written as
//! for `--threshold` (see [`crate::threshold`]). Unknown keys are errors, with the closest known
//! key suggested; request names are unique (and not `total`, the name of all requests together).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use toml_edit::{Document, Item, TableLike, Value};

use sonde_core::diag::{Lines, closest, location, shorten};

use crate::plan::{Model, Plan, RequestSpec, Stage};
use crate::threshold::{Threshold, parse_seconds};

/// Everything wrong with a scenario file, each problem located.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ScenarioError {
    /// One line per problem: `file:line:column: what is wrong; what to do`.
    pub problems: Vec<String>,
}

/// Scenario files larger than this are refused: big bodies belong in `body_file`.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// A `body_file` larger than this is refused (every request holds the whole body).
pub const MAX_BODY_BYTES: u64 = 64 << 20;

/// At most this many problems are listed (a garbled file would print thousands).
const MAX_PROBLEMS: usize = 50;

/// The longest duration a stage, warm-up or timeout may have (as on the command line).
const MAX_SECONDS: f64 = 365.0 * 86400.0;

const ROOT_KEYS: &[&str] = &["run", "stages", "requests"];
const RUN_KEYS: &[&str] = &[
    "base_url",
    "model",
    "connections",
    "timeout",
    "warmup",
    "http2",
    "insecure",
    "thresholds",
    "rate",
    "users",
    "duration",
];
const STAGE_KEYS: &[&str] = &["duration", "target", "hold"];
const REQUEST_KEYS: &[&str] = &[
    "name",
    "method",
    "path",
    "url",
    "weight",
    "headers",
    "body",
    "body_file",
    "thresholds",
];
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
];

/// Reads and validates a scenario file (a `body_file` is relative to the file's directory).
pub fn load(path: &Path) -> Result<Plan, ScenarioError> {
    let origin = path.display().to_string();
    let one = |msg: String| ScenarioError {
        problems: vec![msg],
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        one(format!(
            "{origin}: cannot read the scenario ({e}); check the path"
        ))
    })?;
    if meta.is_dir() {
        return Err(one(format!(
            "{origin}: this is a directory; give the scenario file (a .toml file)"
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(one(format!(
            "{origin}: the file is {} MiB, more than a scenario can be ({} MiB); put large bodies in a body_file",
            meta.len() >> 20,
            MAX_FILE_BYTES >> 20
        )));
    }
    let bytes = read_bounded(path, MAX_FILE_BYTES).map_err(|e| {
        one(format!(
            "{origin}: cannot read the scenario ({e}); {}",
            if e.kind() == std::io::ErrorKind::FileTooLarge {
                "a scenario is a small TOML file: put large bodies in a body_file"
            } else {
                "check the path and its permissions"
            }
        ))
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            return Err(one(format!(
                "{}: this is not UTF-8 text; a scenario is a TOML file (see `sonde-load check --help`)",
                location(&origin, &prefix, valid)
            )));
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &origin, dir)
}

/// Validates scenario `text` (named `origin` in messages); `body_file`s are relative to `dir`.
pub fn parse(text: &str, origin: &str, dir: &Path) -> Result<Plan, ScenarioError> {
    let doc = match Document::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            let message = e.message().trim().replace('\n', " ");
            return Err(ScenarioError {
                problems: vec![format!(
                    "{}: this is not valid TOML ({}); check quotes, brackets and `key = value` syntax",
                    location(origin, text, at),
                    shorten(&message, 200)
                )],
            });
        }
    };
    let mut r = Reader {
        origin,
        dir,
        lines: Lines::new(text),
        problems: Vec::new(),
    };
    let plan = r.plan(doc.as_table());
    if r.problems.is_empty() {
        Ok(plan)
    } else {
        let n = r.problems.len();
        // Locations are worked out only for the problems shown.
        let mut problems: Vec<String> = r
            .problems
            .iter()
            .take(MAX_PROBLEMS)
            .map(|(at, msg)| format!("{}: {msg}", r.locate(*at)))
            .collect();
        if n > MAX_PROBLEMS {
            problems.push(format!(
                "{origin}: … and {} more problems; fix the ones above first",
                n - MAX_PROBLEMS
            ));
        }
        Err(ScenarioError { problems })
    }
}

/// The file's bytes, refusing more than `max` (a device such as /dev/zero never ends).
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("more than {} MiB", max >> 20),
        ));
    }
    Ok(out)
}

type Span = Option<std::ops::Range<usize>>;

struct Reader<'a> {
    origin: &'a str,
    dir: &'a Path,
    /// Where each line starts (files may be large, with many problems to locate).
    lines: Lines<'a>,
    /// `(byte offset, "what is wrong; what to do")`.
    problems: Vec<(usize, String)>,
}

/// `[run]` as read, before the stages are settled.
struct RunSection {
    base_url: Option<(http::Uri, Span)>,
    model: Option<(Model, Span)>,
    thresholds: Vec<Threshold>,
    rate: Option<(f64, Span)>,
    users: Option<(f64, Span)>,
    duration: Option<(Duration, Span)>,
}

impl<'a> Reader<'a> {
    /// `file:line:column` of byte offset `at`.
    fn locate(&self, at: usize) -> String {
        self.lines.location(self.origin, at)
    }

    fn problem(&mut self, span: Span, what: impl std::fmt::Display, todo: impl std::fmt::Display) {
        let mut msg = String::new();
        let _ = write!(msg, "{what}; {todo}");
        self.problems.push((span.map_or(0, |s| s.start), msg));
    }

    /// Reports keys of `table` not in `known`.
    fn unknown_keys(&mut self, table: &dyn TableLike, section: &str, known: &[&str]) {
        for (key, item) in table.iter() {
            if known.contains(&key) {
                continue;
            }
            let span = table
                .key(key)
                .and_then(|k| k.span())
                .or_else(|| item.span());
            let (what, todo) = sonde_core::diag::unknown_key(key, known, Some(section));
            self.problem(span, what, todo);
        }
    }

    /// The value at `key`, or a problem when it is a table.
    fn value<'t>(
        &mut self,
        table: &'t dyn TableLike,
        key: &str,
        section: &str,
    ) -> Option<&'t Value> {
        match table.get(key)? {
            Item::Value(v) => Some(v),
            Item::None => None,
            other => {
                self.problem(
                    other.span(),
                    format_args!("`{key}` in {section} must be a value, not a table"),
                    format_args!("write it as `{key} = ...` inside {section}"),
                );
                None
            }
        }
    }

    fn string<'t>(
        &mut self,
        table: &'t dyn TableLike,
        key: &str,
        section: &str,
    ) -> Option<(&'t str, Span)> {
        let v = self.value(table, key, section)?;
        match v.as_str() {
            Some(s) => Some((s, v.span())),
            None => {
                self.problem(
                    v.span(),
                    format_args!("`{key}` must be a string, not {}", v.type_name()),
                    "put the value in double quotes",
                );
                None
            }
        }
    }

    fn bool(&mut self, table: &dyn TableLike, key: &str, section: &str) -> Option<bool> {
        let v = self.value(table, key, section)?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.problem(
                    v.span(),
                    format_args!("`{key}` must be true or false, not {}", v.type_name()),
                    "write true or false, without quotes",
                );
                None
            }
        }
    }

    /// A number (integer or float) that `ok` accepts; `what` says what an acceptable one is.
    fn number(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        section: &str,
        what: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<(f64, Span)> {
        let v = self.value(table, key, section)?;
        let n = v.as_integer().map(|i| i as f64).or_else(|| v.as_float());
        match n {
            Some(n) if n.is_finite() && ok(n) => Some((n, v.span())),
            Some(n) => {
                self.problem(
                    v.span(),
                    format_args!("`{key}` is {n}"),
                    format_args!("give {what}"),
                );
                None
            }
            None => {
                self.problem(
                    v.span(),
                    format_args!("`{key}` must be a number, not {}", v.type_name()),
                    format_args!("give {what}, without quotes"),
                );
                None
            }
        }
    }

    /// A duration written as a string with a unit.
    fn duration(
        &mut self,
        table: &dyn TableLike,
        key: &str,
        section: &str,
    ) -> Option<(Duration, Span)> {
        let v = self.value(table, key, section)?;
        let Some(s) = v.as_str() else {
            let todo = match v.as_integer().map(|i| i as f64).or_else(|| v.as_float()) {
                Some(n) => format!("write it as a string with a unit, like \"{n}s\""),
                None => "write it as a string with a unit, like \"30s\" or \"500ms\"".to_owned(),
            };
            self.problem(
                v.span(),
                format_args!("`{key}` must be a duration, not {}", v.type_name()),
                todo,
            );
            return None;
        };
        let has_unit = s.trim().ends_with(|c: char| c.is_alphabetic());
        match parse_seconds(s, 1.0).filter(|_| has_unit) {
            Some(secs) if secs <= MAX_SECONDS => Some((Duration::from_secs_f64(secs), v.span())),
            Some(_) => {
                self.problem(
                    v.span(),
                    format_args!("`{key}` = {:?} is more than a year", shorten(s, 64)),
                    "give a shorter duration",
                );
                None
            }
            None => {
                self.problem(
                    v.span(),
                    format_args!("`{key}` = {:?} is not a duration", shorten(s, 64)),
                    "write a number and a unit, like \"30s\", \"500ms\", \"2m\" or \"1h\"",
                );
                None
            }
        }
    }

    fn thresholds(&mut self, table: &dyn TableLike, section: &str) -> Vec<Threshold> {
        let Some(v) = self.value(table, "thresholds", section) else {
            return Vec::new();
        };
        let Some(arr) = v.as_array() else {
            self.problem(
                v.span(),
                format_args!(
                    "`thresholds` must be a list of strings, not {}",
                    v.type_name()
                ),
                "write it like thresholds = [\"p95<300ms\", \"errors<1%\"]",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in arr.iter() {
            match t.as_str() {
                Some(s) => match s.parse::<Threshold>() {
                    Ok(th) => out.push(th),
                    Err(e) => self.problem(
                        t.span(),
                        format_args!(
                            "threshold {:?}: {}",
                            shorten(&e.text, 64),
                            shorten(&e.problem, 200)
                        ),
                        "write it like \"p95<300ms\", \"p99<1.5s\", \"errors<1%\" or \"rate>=490\"",
                    ),
                },
                None => self.problem(
                    t.span(),
                    format_args!("a threshold must be a string, not {}", t.type_name()),
                    "put it in double quotes, like \"p95<300ms\"",
                ),
            }
        }
        out
    }

    /// The tables of an array of tables (`[[key]]`, or `key = [{...}, ...]`).
    fn tables<'t>(&mut self, root: &'t dyn TableLike, key: &str) -> Vec<(&'t dyn TableLike, Span)> {
        let Some(item) = root.get(key) else {
            return Vec::new();
        };
        match item {
            Item::ArrayOfTables(a) => a.iter().map(|t| (t as &dyn TableLike, t.span())).collect(),
            Item::Value(Value::Array(a)) => {
                let mut out = Vec::new();
                for v in a.iter() {
                    match v.as_inline_table() {
                        Some(t) => out.push((t as &dyn TableLike, t.span())),
                        None => self.problem(
                            v.span(),
                            format_args!("each of `{key}` must be a table, not {}", v.type_name()),
                            format_args!("write each as a [[{key}]] section"),
                        ),
                    }
                }
                out
            }
            other => {
                self.problem(
                    other.span(),
                    format_args!("`{key}` must be a list of [[{key}]] sections"),
                    format_args!("write each as a [[{key}]] section"),
                );
                Vec::new()
            }
        }
    }

    fn plan(&mut self, root: &dyn TableLike) -> Plan {
        self.unknown_keys(root, "the file", ROOT_KEYS);
        let run_table = match root.get("run") {
            None => None,
            Some(item) => match item.as_table_like() {
                Some(t) => Some(t),
                None => {
                    self.problem(
                        item.span(),
                        "`run` must be a table",
                        "write it as a [run] section",
                    );
                    None
                }
            },
        };
        let mut plan = Plan::new(Vec::new(), Vec::new());
        let run = match run_table {
            Some(t) => self.run_section(t, &mut plan),
            None => RunSection {
                base_url: None,
                model: None,
                thresholds: Vec::new(),
                rate: None,
                users: None,
                duration: None,
            },
        };
        plan.thresholds = run.thresholds.clone();
        self.stages(root, &run, &mut plan);
        self.requests(root, &run, &mut plan);
        plan
    }

    fn run_section(&mut self, t: &dyn TableLike, plan: &mut Plan) -> RunSection {
        const S: &str = "[run]";
        self.unknown_keys(t, S, RUN_KEYS);
        let base_url = self
            .string(t, "base_url", S)
            .and_then(|(s, span)| match absolute_url(s) {
                Ok(u) => Some((u, span)),
                Err(why) => {
                    self.problem(
                        span,
                        format_args!("base_url {:?} {why}", shorten(s, 100)),
                        "write it like \"http://127.0.0.1:8080\"",
                    );
                    None
                }
            });
        let model = self.string(t, "model", S).and_then(|(s, span)| {
            match s.trim().to_ascii_lowercase().as_str() {
                "open" => Some((Model::Open, span)),
                "closed" => Some((Model::Closed, span)),
                _ => {
                    self.problem(
                        span,
                        format_args!("model {:?} is not a load model", shorten(s, 64)),
                        "write \"open\" (an arrival rate) or \"closed\" (virtual users)",
                    );
                    None
                }
            }
        });
        if let Some((m, _)) = model {
            plan.model = m;
        }
        if let Some((c, _)) = self.number(
            t,
            "connections",
            S,
            "a whole number of connections from 1 to 100000",
            |n| n.fract() == 0.0 && (1.0..=100_000.0).contains(&n),
        ) {
            plan.connections = c as usize;
        }
        if let Some((d, span)) = self.duration(t, "timeout", S) {
            if d.is_zero() {
                self.problem(span, "timeout is 0", "give a timeout above 0, like \"10s\"");
            } else {
                plan.timeout = d;
            }
        }
        if let Some((d, _)) = self.duration(t, "warmup", S) {
            plan.warmup = d;
        }
        if let Some(b) = self.bool(t, "http2", S) {
            plan.http2 = b;
        }
        if let Some(b) = self.bool(t, "insecure", S) {
            plan.insecure = b;
        }
        let thresholds = self.thresholds(t, S);
        let rate = self.number(t, "rate", S, "a rate above 0 (requests per second)", |n| {
            n > 0.0 && n <= 1e9
        });
        let users = self.number(
            t,
            "users",
            S,
            "a whole number of users from 1 to 1000000",
            |n| n.fract() == 0.0 && (1.0..=1e6).contains(&n),
        );
        let duration = self.duration(t, "duration", S);
        RunSection {
            base_url,
            model,
            thresholds,
            rate,
            users,
            duration,
        }
    }

    fn stages(&mut self, root: &dyn TableLike, run: &RunSection, plan: &mut Plan) {
        let before = self.problems.len();
        let stages = self.tables(root, "stages");
        let stages_reported = self.problems.len() > before;
        let shorthand = run.rate.is_some() || run.users.is_some();
        let model_span = run.model.as_ref().and_then(|(_, s)| s.clone());
        if let (Some((_, rs)), Some(_)) = (&run.rate, &run.users) {
            self.problem(
                rs.clone(),
                "[run] has both `rate` and `users`",
                "keep `rate` for the open model or `users` for the closed model",
            );
            return;
        }
        if shorthand {
            let (target, span, model, name) = match (&run.rate, &run.users) {
                (Some((r, s)), _) => (*r, s.clone(), Model::Open, "rate"),
                (_, Some((u, s))) => (*u, s.clone(), Model::Closed, "users"),
                _ => return,
            };
            if let Some((m, _)) = &run.model
                && *m != model
            {
                self.problem(
                    model_span,
                    format_args!(
                        "model = {:?} does not go with `{name}`",
                        if *m == Model::Open { "open" } else { "closed" }
                    ),
                    "`rate` is the open model's load and `users` the closed model's; remove one",
                );
            }
            plan.model = model;
            if let Some((_, first)) = stages.first() {
                self.problem(
                    first.clone(),
                    format_args!("[[stages]] and [run] `{name}` both set the load"),
                    format_args!("remove `{name}` from [run], or remove the stages"),
                );
                return;
            }
            match &run.duration {
                Some((d, dspan)) => {
                    if d.is_zero() {
                        self.problem(
                            dspan.clone(),
                            "duration is 0",
                            "give the measured duration, like \"30s\"",
                        );
                    }
                    plan.stages.push(Stage {
                        duration: *d,
                        target,
                        hold: true,
                    });
                }
                None => self.problem(
                    span,
                    format_args!("`{name}` is set but [run] has no `duration`"),
                    "add duration = \"30s\" to [run]",
                ),
            }
            return;
        }
        if let Some((_, dspan)) = &run.duration {
            self.problem(
                dspan.clone(),
                "[run] `duration` without `rate` or `users`",
                "add rate = 500 (open model) or users = 10 (closed model) to [run], or describe the load with [[stages]]",
            );
            return;
        }
        if stages.is_empty() {
            if !stages_reported {
                self.problem(
                    None,
                    "the scenario has no load",
                    "add [[stages]] (duration = \"30s\", target = 500), or rate = 500 and duration = \"30s\" in [run]",
                );
            }
            return;
        }
        let mut any_load = false;
        let n = stages.len();
        for (t, span) in stages {
            const S: &str = "[[stages]]";
            self.unknown_keys(t, S, STAGE_KEYS);
            let duration = self.duration(t, "duration", S);
            if duration.is_none() && t.get("duration").is_none() {
                self.problem(
                    span.clone(),
                    "this stage has no `duration`",
                    "add duration = \"30s\"",
                );
            }
            let closed = plan.model == Model::Closed;
            let target = if closed {
                self.number(
                    t,
                    "target",
                    S,
                    "a whole number of users of 0 or more",
                    |n| n.fract() == 0.0 && (0.0..=1e6).contains(&n),
                )
            } else {
                self.number(
                    t,
                    "target",
                    S,
                    "a rate of 0 or more (requests per second)",
                    |n| (0.0..=1e9).contains(&n),
                )
            };
            if target.is_none() && t.get("target").is_none() {
                self.problem(
                    span.clone(),
                    "this stage has no `target`",
                    if closed {
                        "add target = 10 (users at the end of the stage)"
                    } else {
                        "add target = 500 (requests per second at the end of the stage)"
                    },
                );
            }
            let hold = self.bool(t, "hold", S).unwrap_or(false);
            if let (Some((d, _)), Some((target, _))) = (duration, target) {
                any_load |= target > 0.0 && !d.is_zero();
                plan.stages.push(Stage {
                    duration: d,
                    target,
                    hold,
                });
            }
        }
        // The totals mean something only when every stage was read.
        if plan.stages.len() == n {
            if plan.duration().is_zero() {
                self.problem(
                    None,
                    "the stages last 0 s in total",
                    "give the stages durations, like duration = \"30s\"",
                );
            } else if !any_load {
                self.problem(
                    None,
                    "every stage has target = 0: nothing would be sent",
                    "give a stage a target above 0",
                );
            }
        }
    }

    fn requests(&mut self, root: &dyn TableLike, run: &RunSection, plan: &mut Plan) {
        let before = self.problems.len();
        let tables = self.tables(root, "requests");
        // `requests = []` is as empty as no key; `requests = 5` was reported already.
        if tables.is_empty() && self.problems.len() == before {
            self.problem(
                None,
                "the scenario has no requests",
                "add a [[requests]] section with path = \"/\" (and base_url in [run]) or url = \"http://...\"",
            );
            return;
        }
        // Name → offset of its first use.
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (t, span) in tables {
            let Some(spec) = self.request(t, span.clone(), run) else {
                continue;
            };
            let at = t.get("name").and_then(Item::span).or(span);
            if let Some(first) = seen.get(&spec.name) {
                let first = self.locate(*first);
                self.problem(
                    at,
                    format_args!(
                        "a request named {:?} already exists (at {first})",
                        shorten(&spec.name, 64)
                    ),
                    "give each request its own name",
                );
                continue;
            }
            seen.insert(spec.name.clone(), at.map_or(0, |s| s.start));
            plan.requests.push(spec);
        }
    }

    fn request(&mut self, t: &dyn TableLike, span: Span, run: &RunSection) -> Option<RequestSpec> {
        const S: &str = "[[requests]]";
        let before = self.problems.len();
        self.unknown_keys(t, S, REQUEST_KEYS);
        let method = match self.string(t, "method", S) {
            None => Some(http::Method::GET),
            Some((m, mspan)) => {
                let upper = m.trim().to_ascii_uppercase();
                if METHODS.contains(&upper.as_str()) {
                    http::Method::from_bytes(upper.as_bytes()).ok()
                } else {
                    let todo = match closest(&upper, METHODS) {
                        Some(k) => format!("did you mean {k}?"),
                        None => format!("use one of {}", METHODS.join(", ")),
                    };
                    self.problem(
                        mspan,
                        format_args!(
                            "method {:?} is not an HTTP method sonde-load sends",
                            shorten(m, 64)
                        ),
                        todo,
                    );
                    None
                }
            }
        };
        let path = self.string(t, "path", S);
        let url = self.string(t, "url", S);
        let uri = match (path, url) {
            (Some((_, ps)), Some(_)) => {
                self.problem(
                    ps,
                    "the request has both `path` and `url`",
                    "keep `path` (joined to [run] base_url) or `url` (absolute), not both",
                );
                None
            }
            (Some((p, ps)), None) => match &run.base_url {
                None => {
                    self.problem(
                        ps,
                        "`path` needs [run] base_url",
                        "add base_url = \"http://host:port\" to [run], or write an absolute url = \"http://...\"",
                    );
                    None
                }
                Some((base, _)) => {
                    if !p.starts_with('/') {
                        self.problem(
                            ps,
                            format_args!("path {:?} does not start with /", shorten(p, 100)),
                            format_args!("write it like \"/{}\"", shorten(p, 100)),
                        );
                        None
                    } else {
                        match join(base, p) {
                            Ok(u) => Some(u),
                            Err(why) => {
                                self.problem(
                                    ps,
                                    format_args!("path {:?} {why}", shorten(p, 100)),
                                    "percent-encode spaces and special characters (%20)",
                                );
                                None
                            }
                        }
                    }
                }
            },
            (None, Some((u, us))) => match absolute_url(u) {
                Ok(u) => Some(u),
                Err(why) => {
                    self.problem(
                        us,
                        format_args!("url {:?} {why}", shorten(u, 100)),
                        "write it like \"http://127.0.0.1:8080/api/users\"",
                    );
                    None
                }
            },
            (None, None) => {
                if t.get("path").is_none() && t.get("url").is_none() {
                    self.problem(
                        span.clone(),
                        "this request has neither `path` nor `url`",
                        "add path = \"/api/...\" (joined to [run] base_url) or url = \"http://...\"",
                    );
                }
                None
            }
        };
        let name = match self.string(t, "name", S) {
            Some((n, nspan)) => {
                let n = n.trim();
                if n.is_empty() || n.len() > 200 || n.chars().any(char::is_control) {
                    self.problem(
                        nspan,
                        "a request name must be 1 to 200 characters, without control characters",
                        "give it a short name, like \"list-users\"",
                    );
                    None
                } else if n == "total" {
                    self.problem(
                        nspan,
                        "`total` is the name reports give all requests together",
                        "give this request another name",
                    );
                    None
                } else {
                    Some(n.to_owned())
                }
            }
            None => uri.as_ref().zip(method.as_ref()).map(|(u, m)| {
                let pq = u.path_and_query().map_or("/", |p| p.as_str());
                format!("{m} {pq}")
            }),
        };
        let weight = match self.number(
            t,
            "weight",
            S,
            "a whole number of 1 or more (requests are picked in proportion to their weights); remove the request to stop sending it",
            |n| n.fract() == 0.0 && (1.0..=u32::MAX as f64).contains(&n),
        ) {
            Some((w, _)) => w as u32,
            None => 1,
        };
        let headers = self.headers(t);
        let body = self.body(t);
        let thresholds = self.thresholds(t, S);
        if self.problems.len() > before {
            return None;
        }
        Some(RequestSpec {
            name: name?,
            method: method?,
            url: uri?,
            headers,
            body: body?,
            weight,
            thresholds,
        })
    }

    fn headers(&mut self, t: &dyn TableLike) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let Some(item) = t.get("headers") else {
            return Vec::new();
        };
        let Some(h) = item.as_table_like() else {
            self.problem(
                item.span(),
                format_args!("`headers` must be a table, not {}", item.type_name()),
                "write it like headers = { \"x-api-key\" = \"...\" }",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in h.iter() {
            let kspan = h.key(k).and_then(|k| k.span()).or_else(|| v.span());
            let name = match http::HeaderName::from_bytes(k.as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    self.problem(
                        kspan,
                        format_args!("{:?} is not a header name", shorten(k, 64)),
                        "use letters, digits and - only, like \"x-api-key\"",
                    );
                    continue;
                }
            };
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                self.problem(
                    kspan,
                    format_args!("the `{name}` header is set by sonde-load from the body"),
                    "remove it",
                );
                continue;
            }
            let Some(s) = v.as_str() else {
                self.problem(
                    v.span(),
                    format_args!("header `{name}` must be a string, not {}", v.type_name()),
                    "put the value in double quotes",
                );
                continue;
            };
            match http::HeaderValue::from_str(s) {
                Ok(val) => out.push((name, val)),
                Err(_) => self.problem(
                    v.span(),
                    format_args!("header `{name}` has characters a header value cannot carry"),
                    "use printable ASCII only: no line breaks, control characters or non-ASCII letters",
                ),
            }
        }
        out
    }

    fn body(&mut self, t: &dyn TableLike) -> Option<bytes::Bytes> {
        const S: &str = "[[requests]]";
        let body = self.string(t, "body", S);
        let file = self.string(t, "body_file", S);
        match (body, file) {
            (Some(_), Some((_, fs))) => {
                self.problem(
                    fs,
                    "the request has both `body` and `body_file`",
                    "keep one of them",
                );
                None
            }
            (Some((b, _)), None) => Some(bytes::Bytes::from(b.to_owned())),
            (None, Some((f, fs))) => {
                let p = self.dir.join(f);
                match read_bounded(&p, MAX_BODY_BYTES) {
                    Ok(b) => Some(bytes::Bytes::from(b)),
                    Err(e) => {
                        self.problem(
                            fs,
                            format_args!("body_file {}: {e}", p.display()),
                            format_args!(
                                "give a file that exists, relative to the scenario's directory, of at most {} MiB",
                                MAX_BODY_BYTES >> 20
                            ),
                        );
                        None
                    }
                }
            }
            (None, None) => Some(bytes::Bytes::new()),
        }
    }
}

/// An absolute `http://` or `https://` URL with a host.
fn absolute_url(s: &str) -> Result<http::Uri, &'static str> {
    let u: http::Uri = s.trim().parse().map_err(|_| "is not a valid URL")?;
    match u.scheme_str() {
        Some("http" | "https") if u.host().is_some_and(|h| !h.is_empty()) => Ok(u),
        Some("http" | "https") => Err("has no host"),
        _ => Err("is not an absolute http:// or https:// URL"),
    }
}

/// `base` (which may carry a path prefix) joined with `path` (starting with `/`).
fn join(base: &http::Uri, path: &str) -> Result<http::Uri, &'static str> {
    let prefix = base.path().trim_end_matches('/');
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}{prefix}{path}")
        .parse()
        .map_err(|_| "does not make a valid URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Plan {
        match parse(text, "s.toml", Path::new(".")) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_err(text: &str) -> Vec<String> {
        match parse(text, "s.toml", Path::new(".")) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => e.problems,
        }
    }

    /// `text` is refused with one problem for each of `starts`, each beginning with it.
    fn assert_problems_start(text: &str, starts: &[&str]) {
        let p = parse_err(text);
        assert_eq!(p.len(), starts.len(), "{p:?}");
        for (problem, start) in p.iter().zip(starts) {
            assert!(problem.starts_with(start), "{p:?}");
        }
    }

    /// The example in the module documentation parses, and means what it says.
    #[test]
    fn the_documented_example_parses() {
        let src = include_str!("scenario.rs");
        let start = src.find("//! ```toml\n").expect("the example starts") + 12;
        let end = start + src[start..].find("//! ```\n").expect("the example ends");
        let example: String = src[start..end]
            .lines()
            .map(|l| {
                l.strip_prefix("//!")
                    .unwrap_or(l)
                    .strip_prefix(' ')
                    .unwrap_or("")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let plan = parse_ok(&example);
        assert_eq!(plan.model, Model::Open);
        assert_eq!(plan.connections, 64);
        assert_eq!(plan.timeout, Duration::from_secs(10));
        assert_eq!(plan.warmup, Duration::from_secs(5));
        assert_eq!(plan.thresholds.len(), 2);
        assert_eq!(plan.stages.len(), 3);
        assert_eq!(plan.duration(), Duration::from_secs(45));
        assert!((plan.target_at(Duration::from_secs(5)) - 100.0).abs() < 1e-9);
        assert_eq!(plan.requests.len(), 2);
        let list = &plan.requests[0];
        assert_eq!(list.name, "list-users");
        assert_eq!(
            list.url.to_string(),
            "http://127.0.0.1:8080/api/users?page=1"
        );
        assert_eq!(list.weight, 3);
        assert_eq!(list.headers.len(), 2);
        assert_eq!(list.thresholds[0].text, "p95<300ms");
        let create = &plan.requests[1];
        assert_eq!(create.method, http::Method::POST);
        assert_eq!(&create.body[..], br#"{"name": "ada"}"#);
        assert_eq!(create.thresholds.len(), 2);
    }

    #[test]
    fn shorthand_is_one_holding_stage() {
        let plan = parse_ok(
            "[run]\nusers = 10\nduration = \"1m\"\n[[requests]]\nurl = \"http://h:1/x\"\n",
        );
        assert_eq!(plan.model, Model::Closed);
        assert_eq!(
            plan.stages,
            vec![Stage {
                duration: Duration::from_secs(60),
                target: 10.0,
                hold: true
            }]
        );
        assert_eq!(plan.requests[0].name, "GET /x");
        let plan = parse_ok(
            "[run]\nrate = 50\nduration = \"2s\"\nbase_url = \"http://h:1/api/\"\n[[requests]]\npath = \"/users\"\n",
        );
        assert_eq!(plan.model, Model::Open);
        assert_eq!(plan.requests[0].url.to_string(), "http://h:1/api/users");
    }

    #[test]
    fn typos_get_a_suggestion_and_a_location() {
        let p = parse_err(
            "[run]\nrate = 5\nduration = \"1s\"\n[[requests]]\nurl = \"http://h/\"\nwieght = 2\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0],
            "s.toml:6:1: unknown key `wieght` in [[requests]]; did you mean `weight`?"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = parse_err(concat!(
            "[run]\n",
            "base_url = \"ftp://x\"\n",
            "thresholds = [\"p95<fast\"]\n",
            "[[stages]]\n",
            "duration = \"10\"\n",
            "target = -1\n",
            "[[requests]]\n",
            "name = \"a\"\n",
            "url = \"http://h/\"\n",
            "weight = 0\n",
            "method = \"GTE\"\n",
            "[[requests]]\n",
            "name = \"a\"\n",
            "url = \"http://h/\"\n",
            "headers = { \"bad header\" = \"v\" }\n",
        ));
        let all = p.join("\n");
        sonde_core::testing::assert_contains_all(
            &all,
            &[
                "s.toml:2:12: base_url",
                "s.toml:3:15: threshold",
                "s.toml:5:12: `duration`",
                "s.toml:6:10: `target` is -1",
                "s.toml:10:10: `weight` is 0",
                "did you mean GET?",
                "s.toml:15:13: \"bad header\" is not a header name",
            ],
        );
    }

    #[test]
    fn duplicate_names_point_at_the_first() {
        assert_problems_start(
            concat!(
                "[run]\nrate = 5\nduration = \"1s\"\n",
                "[[requests]]\nname = \"a\"\nurl = \"http://h/\"\n",
                "[[requests]]\nname = \"a\"\nurl = \"http://h/b\"\n",
            ),
            &["s.toml:8:8: a request named \"a\" already exists (at s.toml:5:8)"],
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let p = parse_err("");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("no load"));
        assert!(p[1].contains("no requests"));
        let p = parse_err("stages = []\nrequests = []\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert_problems_start(
            "stages = 5\nrequests = [1]\n",
            &[
                "s.toml:1:10: `stages` must be a list",
                "s.toml:2:13: each of `requests` must be a table",
            ],
        );
        let p = parse_err("[run]\nrate = 5\n[[requests]]\npath = \"/x\"\n");
        let all = p.join("\n");
        assert!(all.contains("no `duration`"), "{all}");
        assert!(all.contains("needs [run] base_url"), "{all}");
    }

    #[test]
    fn body_file_is_relative_to_the_scenario() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("b.json"), b"{}").expect("write");
        let text = "[run]\nrate = 5\nduration = \"1s\"\n[[requests]]\nmethod = \"post\"\nurl = \"http://h/\"\nbody_file = \"b.json\"\n";
        let plan = parse(text, "s.toml", dir.path()).expect("valid");
        assert_eq!(&plan.requests[0].body[..], b"{}");
        assert_eq!(plan.requests[0].method, http::Method::POST);
        let e = parse(text, "s.toml", Path::new("/nonexistent")).expect_err("missing file");
        assert!(e.problems[0].starts_with("s.toml:7:13: body_file"), "{e}");
        // A device that never ends is cut short, not read forever.
        let endless = text.replace("b.json", "/dev/zero");
        let e = parse(&endless, "s.toml", dir.path()).expect_err("an endless body");
        assert!(e.problems[0].contains("more than 64 MiB"), "{e}");
    }

    #[test]
    fn locations_count_characters() {
        // `x` is the second character of line 2 (µ takes two bytes)...
        assert_eq!(location("f", "ab\nµx", 5), "f:2:2");
        // ...and an offset inside µ is µ's column.
        assert_eq!(location("f", "ab\nµx", 4), "f:2:1");
        assert_eq!(location("f", "", 10), "f:1:1");
    }
}
