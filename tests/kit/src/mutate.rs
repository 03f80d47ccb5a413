//! Seeded mutations of a TOML file, for tests that bad input of any kind gets errors and never
//! a panic: values swapped for hostile ones, lines dropped, doubled or cut anywhere. The same
//! seed gives the same texts, so a failure repeats.

/// Values that break assumptions: out-of-range and non-finite numbers, durations and sizes
/// past every limit, broken addresses, URLs and patterns, control and combining characters,
/// and arrays and tables where scalars go.
pub const HOSTILE_VALUES: &[&str] = &[
    "\"\"",
    "0",
    "-1",
    "1e309",
    "-0.0",
    "nan",
    "inf",
    "18446744073709551616",
    "9223372036854775807",
    "\"0s\"",
    "\"1ns\"",
    "\"99999999999d\"",
    "\"18446744073709551615s\"",
    "\"1e400ms\"",
    "\"0B\"",
    "\"16EiB\"",
    "\"99999999999999999999KiB\"",
    "\"off\"",
    "\"::\"",
    "\"[::1]:0\"",
    "\"256.0.0.1:1\"",
    "\"127.0.0.1:99999\"",
    "\"http://\"",
    "\"http://[::1\"",
    "\"file:///etc/passwd\"",
    "\"\\u0000\"",
    "\"é\u{301}\"",
    "\"(\"",
    "\"[a-\"",
    "\"*\"",
    "\"100%\"",
    "\"-5%\"",
    "\"p0\"",
    "\"p100.5\"",
    "\"a=b,=c,d\"",
    "\"AWS/Foo\"",
    "true",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
];

/// `rounds` mutations of `original`, each of one to four changes: a setting's value replaced
/// (half of the changes: the change that reaches the settings' own checks; one in forty a
/// 70,000-byte string), a line dropped, doubled, or cut at any character.
pub fn toml_texts(original: &str, rounds: usize, seed: u64) -> impl Iterator<Item = String> + '_ {
    let lines: Vec<&str> = original.lines().collect();
    let mut state = seed | 1;
    let mut next = move |n: usize| {
        // xorshift64*: a fixed sequence, no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    };
    let long = format!("\"{}\"", "x".repeat(70_000));
    (0..rounds).map(move |_| {
        let mut text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for _ in 0..1 + next(4) {
            if text.is_empty() {
                break;
            }
            let i = next(text.len());
            match next(6) {
                0..=2 => {
                    // The next setting from `i` on (comments hold " = " too).
                    let n = text.len();
                    let setting = (0..n).map(|k| (i + k) % n).find(|&j| {
                        !text[j].trim_start().starts_with('#') && text[j].contains(" = ")
                    });
                    if let Some(j) = setting
                        && let Some(eq) = text[j].find(" = ")
                    {
                        let value = if next(40) == 0 {
                            long.as_str()
                        } else {
                            HOSTILE_VALUES[next(HOSTILE_VALUES.len())]
                        };
                        text[j] = format!("{}{value}", &text[j][..eq + 3]);
                    }
                }
                3 => {
                    text.remove(i);
                }
                4 => {
                    let line = text[i].clone();
                    text.insert(i, line);
                }
                _ => {
                    let cut = next(text[i].len() + 1);
                    if text[i].is_char_boundary(cut) {
                        text[i].truncate(cut);
                    }
                }
            }
        }
        text.join("\n")
    })
}

/// Parses `rounds` mutations of `original` with `parse` (`Ok` for accepted, or the problems
/// as `location: message` lines) and asserts that none panics, that every refusal says at
/// least one problem, each starting with `prefix` (the file's name, as the messages locate
/// it), and that at least `min_checked` rounds got past the TOML syntax (no problem says
/// "not valid TOML") to the parser's own checks. Returns how many did.
pub fn assert_never_panics(
    original: &str,
    rounds: usize,
    seed: u64,
    prefix: &str,
    min_checked: usize,
    parse: impl Fn(&str) -> Result<(), Vec<String>>,
) -> usize {
    let mut checked = 0;
    for (round, text) in toml_texts(original, rounds, seed).enumerate() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&text)));
        let Ok(outcome) = outcome else {
            panic!("round {round}: parsing panicked on:\n{text}");
        };
        if let Err(problems) = outcome {
            assert!(
                !problems.is_empty(),
                "round {round}: refused, no problem said"
            );
            for p in &problems {
                assert!(p.starts_with(prefix), "round {round}: not located: {p}");
            }
            if problems.iter().any(|p| p.contains("not valid TOML")) {
                continue;
            }
        }
        checked += 1;
    }
    eprintln!("{checked} of {rounds} mutated files reached the parser's own checks");
    assert!(
        checked >= min_checked,
        "only {checked} of {rounds} rounds got past the TOML syntax"
    );
    checked
}
