//! # sonde-settings
//!
//! The settings of sonde's components, typed and owned by each component: a plain struct with
//! public fields, `Default`, serde's `Deserialize`, and [`Settings`], which says what each key
//! takes ([`Expect`]) and checks everything start-up would refuse ([`Settings::validate`]).
//! The agent only composes them: it reads each section of its file into the component's
//! struct (with the `toml` feature, [`toml::read`] collects every mistake with its place), and
//! the component starts from that same struct, so what `check-config` accepts starts.
//!
//! ```
//! use std::time::Duration;
//! use serde::Deserialize;
//! use sonde_settings::{Expect, Problem, Settings};
//!
//! #[derive(Debug, Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Queue {
//!     size: usize,
//!     #[serde(with = "sonde_settings::duration")]
//!     linger: Duration,
//! }
//!
//! impl Default for Queue {
//!     fn default() -> Self {
//!         Queue { size: 64, linger: Duration::from_secs(1) }
//!     }
//! }
//!
//! impl Settings for Queue {
//!     fn expect(key: &str) -> Option<Expect> {
//!         match key {
//!             "size" => Some(Expect::count(1..=1024, 64)),
//!             "linger" => Some(Expect::duration(
//!                 Duration::from_millis(10)..=Duration::from_secs(60),
//!                 Duration::from_secs(1),
//!             )),
//!             _ => None,
//!         }
//!     }
//!     fn validate(&self) -> Vec<Problem> {
//!         [Self::within("size", self.size), Self::within("linger", self.linger)]
//!             .into_iter()
//!             .flatten()
//!             .collect()
//!     }
//! }
//!
//! let q = Queue { size: 0, ..Queue::default() };
//! let problems = q.validate();
//! assert_eq!(problems[0].to_string(), "`size` must be a whole number from 1 to 1024 (for example 64)");
//! assert_eq!(sonde_settings::keys::<Queue>(), ["size", "linger"]);
//! ```
#![warn(missing_docs)]

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::de::DeserializeOwned;

mod env;
mod keys;
pub mod redact;
#[cfg(feature = "toml")]
pub mod toml;
mod value;

pub use env::EnvValue;
pub use keys::keys;
pub use value::{
    address, duration, pairs, parse_duration, parse_size, show_duration, show_size, size,
};

/// What a setting takes: named in messages (for a value of the wrong type as for one out of
/// range, so both read the same) and checked by [`Settings::within`].
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// A whole number in `range`.
    Count {
        /// The numbers accepted.
        range: RangeInclusive<usize>,
        /// Shown in the hint.
        example: usize,
    },
    /// A duration (`"10s"`, `"500ms"`) in `range`.
    Duration {
        /// The durations accepted.
        range: RangeInclusive<Duration>,
        /// Shown in the hint.
        example: Duration,
    },
    /// A size in bytes (`"8MiB"` or a number) in `range`.
    Size {
        /// The sizes accepted.
        range: RangeInclusive<usize>,
        /// Shown in the hint.
        example: usize,
    },
    /// `true` or `false`.
    Flag,
    /// `ip:port`, or `"off"`.
    Address {
        /// Shown in the hint.
        example: &'static str,
    },
    /// One of these names (`"gzip"`, `"none"`).
    OneOf(&'static [&'static str]),
}

impl Expect {
    /// A whole number in `range`.
    pub const fn count(range: RangeInclusive<usize>, example: usize) -> Expect {
        Expect::Count { range, example }
    }

    /// A duration in `range`.
    pub const fn duration(range: RangeInclusive<Duration>, example: Duration) -> Expect {
        Expect::Duration { range, example }
    }

    /// A collection or export interval: from 100 ms (below, the loop would spin) to a day,
    /// `example` in the hint. Every component's `interval` key takes this range.
    pub const fn interval(example: Duration) -> Expect {
        Expect::duration(
            Duration::from_millis(100)..=Duration::from_secs(24 * 3600),
            example,
        )
    }

    /// A size in bytes in `range`.
    pub const fn size(range: RangeInclusive<usize>, example: usize) -> Expect {
        Expect::Size { range, example }
    }

    /// An address (`ip:port`, or `"off"`), with an `example` for the hint.
    pub const fn address(example: &'static str) -> Expect {
        Expect::Address { example }
    }

    /// What follows "`key` must be".
    pub fn must_be(&self) -> String {
        match self {
            Expect::Count { range, .. } if *range.end() == usize::MAX => {
                format!("a whole number of at least {}", range.start())
            }
            Expect::Count { range, .. } => {
                format!("a whole number from {} to {}", range.start(), range.end())
            }
            Expect::Duration { range, .. } => format!(
                "a duration from {} to {}",
                show_duration(*range.start()),
                show_duration(*range.end())
            ),
            Expect::Size { range, .. } => format!(
                "a size from {} to {}",
                show_size(*range.start()),
                show_size(*range.end())
            ),
            Expect::Flag => "true or false".into(),
            Expect::Address { .. } => "an address (ip:port) or \"off\"".into(),
            Expect::OneOf(names) => format!("one of {}", quoted(names)),
        }
    }

    /// How to write it.
    pub fn hint(&self) -> String {
        match self {
            Expect::Count { example, .. } => format!("for example {example}"),
            Expect::Duration { example, .. } => format!(
                "write it as a string like \"{}\", \"500ms\", \"2m\" or \"1h\"",
                show_duration(*example)
            ),
            Expect::Size { example, .. } => format!(
                "write it like \"{}\", \"64KiB\" or a number of bytes",
                show_size(*example)
            ),
            Expect::Flag => "write true or false, without quotes".into(),
            Expect::Address { example } => format!(
                "write it as ip:port, like \"{example}\" or \"[::1]:8125\"; \"off\" disables it"
            ),
            Expect::OneOf(names) => format!("use {}", quoted(names)),
        }
    }

    /// Whether `value` is accepted.
    pub fn admits(&self, value: impl Into<Given>) -> bool {
        match (self, value.into()) {
            (Expect::Count { range, .. } | Expect::Size { range, .. }, Given::Number(n)) => {
                range.contains(&n)
            }
            (Expect::Duration { range, .. }, Given::Duration(d)) => range.contains(&d),
            // Typed values that reached the struct are of the right shape.
            (Expect::Flag | Expect::Address { .. } | Expect::OneOf(_), _) => true,
            _ => false,
        }
    }

    /// The problem of `key` not holding what this expects.
    pub fn problem(&self, key: &str) -> Problem {
        Problem {
            key: key.to_owned(),
            message: format!("must be {}", self.must_be()),
            names_key: true,
            hint: self.hint(),
        }
    }

    /// The problem of `key` given `text` (as written, when it is text) that could not be read
    /// as what this expects: a name or an address is quoted back.
    pub fn refused(&self, key: &str, text: Option<&str>) -> Problem {
        let short = |t: &str| sonde_core::diag::shorten(t, 64);
        match (self, text) {
            (Expect::OneOf(_), Some(t)) => {
                Problem::new(key, format!("unknown {key} `{}`", short(t)), self.hint())
            }
            (Expect::Address { .. }, Some(t)) => Problem::new(
                key,
                format!("`{}` is not an address", short(t)),
                self.hint(),
            ),
            _ => self.problem(key),
        }
    }
}

/// `"a", "b" or "c"`.
fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match q.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A value to check against an [`Expect`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Given {
    /// A count or a size.
    Number(usize),
    /// A duration.
    Duration(Duration),
}

impl From<usize> for Given {
    fn from(n: usize) -> Given {
        Given::Number(n)
    }
}

impl From<Duration> for Given {
    fn from(d: Duration) -> Given {
        Given::Duration(d)
    }
}

/// One thing start-up would refuse, about one key of a component's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key (`queue`), relative to the component's section; empty for the whole section.
    pub key: String,
    /// What is wrong. With `names_key`, it follows the key's name ("must be a whole number
    /// from 1 to 10"); else it is a sentence of its own.
    pub message: String,
    /// Whether `message` reads after the key's name.
    pub names_key: bool,
    /// What to do about it.
    pub hint: String,
}

impl Problem {
    /// A problem told in a sentence of its own.
    pub fn new(key: &str, message: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem {
            key: key.to_owned(),
            message: message.into(),
            names_key: false,
            hint: hint.into(),
        }
    }

    /// The message with the key named as `path` (`statsd.queue`) where it reads after it.
    pub fn message_for(&self, path: &str) -> String {
        if self.names_key {
            format!("`{path}` {}", self.message)
        } else {
            self.message.clone()
        }
    }
}

impl Problem {
    /// The problem of a listener's `tls_cert_file` and `tls_key_file`, if any: both are given or
    /// neither, and both load as the component loads them (`load`, whose error names the file
    /// and what is wrong with it).
    pub fn tls_files<E: fmt::Display>(
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
        load: impl FnOnce(&std::path::Path, &std::path::Path) -> Result<(), E>,
    ) -> Option<Problem> {
        match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => load(cert, key).err().map(|e| {
                Problem::new(
                    "tls_cert_file",
                    e.to_string(),
                    "tls_cert_file and tls_key_file must be readable PEM files: the certificate chain (leaf first) and its private key",
                )
            }),
            // Named by the one given, so the message points at its line.
            (cert, _) => Some(Problem::new(
                if cert.is_some() {
                    "tls_cert_file"
                } else {
                    "tls_key_file"
                },
                "TLS needs both tls_cert_file and tls_key_file",
                "set both, or neither to serve without TLS",
            )),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message_for(&self.key), self.hint)
    }
}

impl std::error::Error for Problem {}

/// A component's settings: what each key takes, and every check start-up makes.
pub trait Settings: Default + DeserializeOwned {
    /// What `key` takes, for the keys with a shape or range worth naming.
    fn expect(key: &str) -> Option<Expect>;

    /// Everything start-up would refuse, each problem at its key. Empty: it starts.
    fn validate(&self) -> Vec<Problem>;

    /// The problem of `key` holding `value`, if [`expect`](Self::expect) does not admit it.
    fn within(key: &str, value: impl Into<Given>) -> Option<Problem> {
        let expect = Self::expect(key)?;
        (!expect.admits(value)).then(|| expect.problem(key))
    }
}
