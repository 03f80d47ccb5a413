//! sonde's own diagnostics: what its exporters, servers and collectors say about themselves
//! (a handle dropped, an export failing, a source that cannot be read).
//!
//! Lines go through [`tracing`] (target `sonde`) when the application has a subscriber (global
//! or the thread's default), so they land with its own logs; otherwise they go to stderr, so
//! that a service with no logging set up still learns that its metrics are not leaving. Nothing here runs on
//! the recording hot path.
//!
//! [`RateLimit`] keeps a repeating problem to one line per period with the count since the
//! last line, the way an exporter that fails every few seconds should report.
//!
//! ```
//! use std::time::Duration;
//! use sonde_core::diag::RateLimit;
//!
//! let limit = RateLimit::new(Duration::from_secs(60));
//! // The first occurrence is reported at once...
//! assert_eq!(limit.hit(), Some(1));
//! // ...the next ones within the period are counted, then reported together.
//! assert_eq!(limit.hit(), None);
//! assert_eq!(limit.hit(), None);
//! assert_eq!(limit.pending(), 2);
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How serious a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something stopped or went wrong and data may be lost.
    Warn,
    /// A state change worth knowing (a component stopped on request, an exporter recovered).
    Info,
    /// Detail for troubleshooting (a malformed input line).
    Debug,
}

/// Emits one line: through `tracing` when a subscriber is installed, else on stderr (debug
/// lines only through `tracing`).
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    let subscribed =
        tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>());
    if subscribed {
        match level {
            Level::Warn => tracing::warn!(target: "sonde", "{args}"),
            Level::Info => tracing::info!(target: "sonde", "{args}"),
            Level::Debug => tracing::debug!(target: "sonde", "{args}"),
        }
    } else {
        match level {
            Level::Warn => eprintln!("sonde WARN: {args}"),
            Level::Info => eprintln!("sonde INFO: {args}"),
            Level::Debug => {}
        }
    }
}

/// [`emit`] at [`Level::Warn`].
pub fn warn(args: fmt::Arguments<'_>) {
    emit(Level::Warn, args);
}

/// [`emit`] at [`Level::Info`].
pub fn info(args: fmt::Arguments<'_>) {
    emit(Level::Info, args);
}

/// Lets one report through per period: the first occurrence at once, then at most one per
/// `period`, carrying how many occurrences it stands for. Thread-safe; a few nanoseconds of
/// uncontended lock per call, for error paths only.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    last: Option<Instant>,
    pending: u64,
}

impl RateLimit {
    /// A limiter letting one report through per `period`.
    pub const fn new(period: Duration) -> RateLimit {
        RateLimit {
            period,
            state: Mutex::new(LimitState {
                last: None,
                pending: 0,
            }),
        }
    }

    /// Records one occurrence. Returns `Some(n)` when it should be reported now, `n` being the
    /// occurrences this report stands for (this one included); `None` when it is held back.
    pub fn hit(&self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    /// [`hit`](Self::hit) at `now` (a clock that steps back holds reports back, never lets
    /// them all through).
    pub fn hit_at(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.pending += 1;
        let due = st
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.period);
        if !due {
            return None;
        }
        st.last = Some(now);
        Some(std::mem::take(&mut st.pending))
    }

    /// Occurrences held back since the last report.
    pub fn pending(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).pending
    }

    /// Ends the current period early, keeping the held-back occurrences: the next hit is
    /// reported at once, with them.
    pub fn expire(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).last = None;
    }

    /// Forgets the held-back occurrences and the period, returning how many were held back
    /// (for a final "recovered after N failures" line); the next hit is reported at once.
    pub fn reset(&self) -> u64 {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last = None;
        std::mem::take(&mut st.pending)
    }
}

/// The candidate closest to `word` by edit distance, for "did you mean" hints in error
/// messages: at most 3 edits, and fewer than `word` has characters (so `x` suggests nothing).
///
/// ```
/// use sonde_core::diag::closest;
/// assert_eq!(closest("wieght", &["weight", "name", "headers"]), Some("weight"));
/// assert_eq!(closest("zzz", &["weight"]), None);
/// ```
pub fn closest<'a, S: AsRef<str>>(word: &str, candidates: &'a [S]) -> Option<&'a str> {
    // Keys are short: a long word is nowhere near any (and would cost len × len to compare).
    if word.len() > 64 {
        return None;
    }
    let chars = word.chars().count();
    candidates
        .iter()
        .map(|c| (edit_distance(word, c.as_ref()), c.as_ref()))
        .filter(|(d, _)| *d <= 3 && *d < chars)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// What a reader of a configuration file says about a key it does not know: the message
/// (``unknown key `k` in {what}``, the key cut to 64 bytes) and the hint (``did you mean
/// `known`?`` for a near miss, else the list of the keys of `what`). `what` names the table,
/// such as `[run]`; `None` where the message is already keyed to it.
///
/// ```
/// use sonde_core::diag::unknown_key;
/// let known = ["weight", "name"];
/// assert_eq!(
///     unknown_key("wieght", &known, Some("[[requests]]")),
///     ("unknown key `wieght` in [[requests]]".to_owned(), "did you mean `weight`?".to_owned())
/// );
/// assert_eq!(unknown_key("zzz", &known, None).1, "the keys are: weight, name");
/// ```
pub fn unknown_key<S: AsRef<str>>(key: &str, known: &[S], what: Option<&str>) -> (String, String) {
    let key_text = shorten(key, 64);
    let hint = match closest(key, known) {
        Some(k) => format!("did you mean `{k}`?"),
        None => {
            let keys: Vec<&str> = known.iter().map(AsRef::as_ref).collect();
            match what {
                Some(what) => format!("the keys of {what} are: {}", keys.join(", ")),
                None => format!("the keys are: {}", keys.join(", ")),
            }
        }
    };
    match what {
        Some(what) => (format!("unknown key `{key_text}` in {what}"), hint),
        None => (format!("unknown key `{key_text}`"), hint),
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `s` cut to at most `max` bytes (on a character boundary, with `…`), so a message never
/// repeats a megabyte of its input.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Where each line of a text starts, to locate byte offsets in it as `file:line:column` (the
/// way configuration errors are reported): lines and columns count from 1, columns in
/// characters. Building it reads the text once; each lookup is then a binary search, for
/// readers that locate many problems in a large file.
#[derive(Debug)]
pub struct Lines<'a> {
    text: &'a str,
    /// Byte offset where each line starts (the first at 0).
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    /// The line index of `text`.
    pub fn new(text: &'a str) -> Lines<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { text, starts }
    }

    /// Line and column of byte offset `at`: an offset past the end is the end, one inside a
    /// character is that character.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= at).max(1);
        let col = self.text[self.starts[line - 1]..at].chars().count() + 1;
        (line, col)
    }

    /// `origin:line:column` of byte offset `at`, `origin` naming the file.
    pub fn location(&self, origin: &str, at: usize) -> String {
        let (line, col) = self.line_col(at);
        format!("{origin}:{line}:{col}")
    }
}

/// `origin:line:column` of byte offset `at` in `text`, for one location (see [`Lines`] for
/// many).
///
/// ```
/// use sonde_core::diag::location;
/// // The `?` at byte 10 is the fifth character of line 2.
/// assert_eq!(location("a.toml", "x = 1\ny = ?\n", 10), "a.toml:2:5");
/// ```
pub fn location(origin: &str, text: &str, at: usize) -> String {
    Lines::new(text).location(origin, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_period_with_the_count_since() {
        let limit = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.hit_at(t0), Some(1));
        for s in 1..60 {
            assert_eq!(limit.hit_at(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(limit.pending(), 59);
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(60)), Some(60));
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(61)), None);
        assert_eq!(limit.reset(), 1);
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(62)), Some(1));
        // A clock that steps back does not let everything through.
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(50)), None);
        limit.expire();
        assert_eq!(limit.hit_at(t0 + Duration::from_secs(50)), Some(2));
    }
}
