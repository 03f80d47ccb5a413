//! Reading a section of a TOML document, with environment overrides, into a component's
//! [`Settings`], every mistake reported with its place.
//!
//! ```
//! use sonde_settings::toml::{read, Entry};
//! # use serde::Deserialize;
//! # use sonde_settings::{Expect, Problem, Settings};
//! # #[derive(Debug, Default, Deserialize)]
//! # #[serde(default, deny_unknown_fields)]
//! # struct Queue { size: usize, name: String }
//! # impl Settings for Queue {
//! #     fn expect(key: &str) -> Option<Expect> {
//! #         (key == "size").then(|| Expect::count(1..=1024, 64))
//! #     }
//! #     fn validate(&self) -> Vec<Problem> { Self::within("size", self.size).into_iter().collect() }
//! # }
//! let doc: toml_edit::Document<String> = "size = \"big\"\nname = 5\n".parse().unwrap();
//! let entries = doc.as_table().iter().map(|(k, v)| (k.to_owned(), Entry::File(v.clone())));
//! let (queue, mistakes) = read::<Queue>(entries.collect());
//! // Both keys are reported, not only the first.
//! assert_eq!(mistakes.len(), 2);
//! assert_eq!(mistakes[0].problem.to_string(), "`size` must be a whole number from 1 to 1024 (for example 64)");
//! assert_eq!(mistakes[1].problem.to_string(), "`name` must be a string (check the value's type and spelling)");
//! assert_eq!(queue.size, 0); // the default, as neither key could be read
//! ```

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::forward_to_deserialize_any;

use crate::{EnvValue, Problem, Settings};

/// Where a key's value comes from.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The file's item (its spans locate the mistakes).
    File(toml_edit::Item),
    /// An environment variable's text.
    Env(String),
}

/// A key that could not be read, or that start-up would refuse.
#[derive(Debug, Clone, PartialEq)]
pub struct Mistake {
    /// What is wrong, at which key.
    pub problem: Problem,
    /// Where in the file, when the parser knows it more closely than the key's value (a bad
    /// element of a list).
    pub span: Option<Range<usize>>,
}

/// Reads `entries` into `T`. Each key is read alone first, so every key that does not fit is
/// reported, not only the first; the keys that fit are then read together, and the result is
/// [validated](Settings::validate). A key that does not fit keeps its default. The caller
/// passes only `T`'s [keys](crate::keys) (and reports the others as unknown, with its own
/// suggestions).
pub fn read<T: Settings>(entries: Vec<(String, Entry)>) -> (T, Vec<Mistake>) {
    let mut mistakes = Vec::new();
    let mut fit = Vec::new();
    // For each list read element by element: the original position of each element kept.
    let mut kept_at: Vec<(String, Vec<usize>)> = Vec::new();
    for (key, entry) in entries {
        let Err(e) = read_key::<T>(&key, entry.clone()) else {
            fit.push((key, entry));
            continue;
        };
        // Element by element only where the key takes a list (an empty one reads).
        let takes_list = read_key::<T>(&key, list(&[])).is_ok();
        let Some(elements) = elements(&entry).filter(|_| takes_list) else {
            mistakes.push(key_mistake::<T>(
                &key,
                e.or_at(entry_span(&entry)),
                text(&entry),
            ));
            continue;
        };
        let told = mistakes.len();
        // A list: each element alone, so one bad entry neither hides the others' mistakes
        // nor takes the good ones with it.
        let mut kept = Vec::new();
        let mut at = Vec::new();
        // An entry that reads as an empty table (its keys all have defaults) is read key by
        // key too, so each bad key of it is told and the others kept.
        let by_key = read_key::<T>(&key, list(&[table(&[])])).is_ok();
        for (i, element) in elements.iter().enumerate() {
            let Err(e) = read_key::<T>(&key, list(std::slice::from_ref(element))) else {
                kept.push(element.clone());
                at.push(i);
                continue;
            };
            // The list read here is made anew: a mistake without a place is at its entry.
            let e = e.or_at(element.span());
            let Some(fields) = fields(element).filter(|_| by_key) else {
                mistakes.push(key_mistake::<T>(&format!("{key}.{i}"), e, None));
                continue;
            };
            let mut good = Vec::new();
            for (field, value) in fields {
                let one = table(&[(field.clone(), value.clone())]);
                match read_key::<T>(&key, list(&[one])) {
                    Ok(()) => good.push((field, value)),
                    Err(e) => mistakes.push(key_mistake::<T>(
                        &format!("{key}.{i}.{field}"),
                        e.or_at(value.span()),
                        value.as_str(),
                    )),
                }
            }
            kept.push(table(&good));
            at.push(i);
        }
        // A list of a million bad entries is not a million messages.
        if mistakes.len() - told > MAX_LIST_MISTAKES {
            let more = mistakes.len() - told - MAX_LIST_MISTAKES;
            mistakes.truncate(told + MAX_LIST_MISTAKES);
            mistakes.push(Mistake {
                problem: Problem::new(
                    &key,
                    format!("and {more} more mistakes in `{key}`"),
                    "fix the ones above first",
                ),
                span: entry_span(&entry),
            });
        }
        fit.push((key.clone(), list(&kept)));
        kept_at.push((key, at));
    }
    let value = match T::deserialize(Entries::new(fit)) {
        Ok(v) => v,
        // Keys that fit alone and not together: the struct's own rule, told as it is.
        Err(e) => {
            mistakes.push(Mistake {
                problem: Problem::new("", e.message, "check the section's keys together"),
                span: e.span,
            });
            T::default()
        }
    };
    // A key that could not be read is told once, not again for the default it kept. The
    // checks of the entry it belongs to are still told: they may be about other keys of it.
    let unread: Vec<String> = mistakes.iter().map(|m| m.problem.key.clone()).collect();
    let told = |key: &str| unread.iter().any(|u| u == key);
    for mut problem in value.validate() {
        // `mappings.1` of the elements kept is the element at its place in the file.
        if let Some(key) = renumbered(&problem.key, &kept_at) {
            problem.key = key;
        }
        if told(&problem.key) {
            continue;
        }
        mistakes.push(Mistake {
            problem,
            span: None,
        });
    }
    (value, mistakes)
}

/// `key` (`mappings.1.name`) with its element's index among those kept replaced by its place
/// in the file, for a list read element by element.
fn renumbered(key: &str, kept_at: &[(String, Vec<usize>)]) -> Option<String> {
    let (list_key, rest) = key.split_once('.')?;
    let (_, at) = kept_at.iter().find(|(k, _)| k == list_key)?;
    let (index, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let original = at.get(index.parse::<usize>().ok()?)?;
    Some(match tail {
        "" => format!("{list_key}.{original}"),
        tail => format!("{list_key}.{original}.{tail}"),
    })
}

/// Reads `T` from `key` alone.
fn read_key<T: Settings>(key: &str, entry: Entry) -> Result<(), Error> {
    T::deserialize(Entries::new(vec![(key.to_owned(), entry)])).map(drop)
}

/// Most mistakes told of one list; the rest are counted in one more.
const MAX_LIST_MISTAKES: usize = 20;

/// What a key's value should have been, from serde's message, without the value itself
/// (which may be a secret, or a megabyte): "invalid type: integer `5`, expected a string"
/// becomes "must be a string"; another message is cut to 200 bytes.
fn unreadable(message: &str) -> String {
    match message.split_once(", expected ") {
        Some((what, expected)) if what.starts_with("invalid ") => {
            // serde names Rust shapes; the file has tables and lists.
            let expected = match expected {
                e if e.starts_with("struct ") || e == "a map" => "a table",
                "a sequence" => "a list",
                e => e,
            };
            format!("must be {}", sonde_core::diag::shorten(expected, 200))
        }
        _ => format!(
            "cannot be read: {}",
            sonde_core::diag::shorten(message, 200)
        ),
    }
}

/// Where an entry stands in the file.
fn entry_span(entry: &Entry) -> Option<Range<usize>> {
    match entry {
        Entry::File(item) => item.span(),
        Entry::Env(_) => None,
    }
}

/// The text of a value written as text.
fn text(entry: &Entry) -> Option<&str> {
    match entry {
        Entry::Env(t) => Some(t),
        Entry::File(item) => item.as_str(),
    }
}

/// The field and the keys it could have been, from serde's message for an unknown field
/// ("unknown field `nmae`, expected one of `name`, `pattern`").
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    Some((field, rest.split('`').skip(1).step_by(2).collect()))
}

/// The mistake of `key` (`mappings.2` for a list's entry, `mappings.2.name` for a key of it)
/// that did not fit, given `text`.
fn key_mistake<T: Settings>(key: &str, e: Error, text: Option<&str>) -> Mistake {
    if let Some((field, known)) = unknown_field(&e.message) {
        let (message, hint) = sonde_core::diag::unknown_key(field, &known, None);
        let key = match key.rsplit_once('.') {
            // The unknown key is the entry's own, not one of its (valid) names.
            Some((entry, last)) if last == field => format!("{entry}.{field}"),
            _ => format!("{key}.{field}"),
        };
        return Mistake {
            problem: Problem::new(&key, message, hint),
            span: e.span,
        };
    }
    // What the key takes, asked without the list indices (`mappings.name`).
    let plain: Vec<&str> = key
        .split('.')
        .filter(|k| k.parse::<usize>().is_err())
        .collect();
    let expect = T::expect(&plain.join("."));
    Mistake {
        problem: match expect {
            Some(expect) => expect.refused(key, text),
            None => Problem {
                key: key.to_owned(),
                message: unreadable(&e.message),
                names_key: true,
                hint: "check the value's type and spelling".into(),
            },
        },
        span: e.span,
    }
}

/// The elements of a list from the file (`[[key]]` tables or an array).
fn elements(entry: &Entry) -> Option<Vec<toml_edit::Item>> {
    match entry {
        Entry::File(toml_edit::Item::ArrayOfTables(a)) => {
            Some(a.iter().cloned().map(toml_edit::Item::Table).collect())
        }
        Entry::File(toml_edit::Item::Value(toml_edit::Value::Array(a))) => {
            Some(a.iter().cloned().map(toml_edit::Item::Value).collect())
        }
        _ => None,
    }
}

/// The keys of a table entry.
fn fields(item: &toml_edit::Item) -> Option<Vec<(String, toml_edit::Item)>> {
    match item {
        toml_edit::Item::Table(t) => {
            Some(t.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect())
        }
        toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => Some(
            t.iter()
                .map(|(k, v)| (k.to_owned(), toml_edit::Item::Value(v.clone())))
                .collect(),
        ),
        _ => None,
    }
}

/// A table entry of these keys.
fn table(fields: &[(String, toml_edit::Item)]) -> toml_edit::Item {
    let mut t = toml_edit::Table::new();
    for (k, v) in fields {
        t.insert(k, v.clone());
    }
    toml_edit::Item::Table(t)
}

/// A list of `items` (tables or values) as the file would hold it.
fn list(items: &[toml_edit::Item]) -> Entry {
    let mut array = toml_edit::Array::new();
    for item in items {
        let value = match item.clone() {
            toml_edit::Item::Table(t) => toml_edit::Value::InlineTable(t.into_inline_table()),
            other => match other.into_value() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        array.push_formatted(value);
    }
    Entry::File(toml_edit::Item::Value(toml_edit::Value::Array(array)))
}

/// The error of reading one key: the parser's message and, from the file, its place.
#[derive(Debug)]
struct Error {
    message: String,
    span: Option<Range<usize>>,
}

impl Error {
    /// This error, placed at `span` if it has no place of its own.
    fn or_at(mut self, span: Option<Range<usize>>) -> Self {
        self.span = self.span.or(span);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            span: None,
        }
    }
}

impl From<toml_edit::de::Error> for Error {
    fn from(e: toml_edit::de::Error) -> Self {
        Error {
            message: e.message().to_owned(),
            span: e.span(),
        }
    }
}

impl From<de::value::Error> for Error {
    fn from(e: de::value::Error) -> Self {
        de::Error::custom(e)
    }
}

/// The section's entries as a map.
struct Entries {
    items: std::vec::IntoIter<(String, Entry)>,
    value: Option<Entry>,
}

impl Entries {
    fn new(items: Vec<(String, Entry)>) -> Self {
        Entries {
            items: items.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, entry)) = self.items.next() else {
            return Ok(None);
        };
        self.value = Some(entry);
        let key: de::value::StringDeserializer<Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(Entry::Env(text)) => Ok(seed.deserialize(EnvValue(text))?),
            Some(Entry::File(item)) => {
                let span = item.span();
                let value = match item.into_value() {
                    Ok(v) => v,
                    Err(_) => return Err(de::Error::custom("this key holds no value")),
                };
                seed.deserialize(value.into_deserializer()).map_err(|e| {
                    let mut e = Error::from(e);
                    e.span = e.span.or(span);
                    e
                })
            }
            None => Err(de::Error::custom("a value without its key")),
        }
    }
}

impl<'de> de::Deserializer<'de> for Entries {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::Expect;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        pattern: String,
        #[serde(default)]
        weight: usize,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Section {
        #[serde(with = "crate::duration")]
        every: Duration,
        rules: Vec<Rule>,
    }

    impl Default for Section {
        fn default() -> Self {
            Section {
                every: Duration::from_secs(10),
                rules: Vec::new(),
            }
        }
    }

    impl Settings for Section {
        fn expect(key: &str) -> Option<Expect> {
            (key == "every").then(|| {
                Expect::duration(
                    Duration::from_secs(1)..=Duration::from_secs(60),
                    Duration::from_secs(10),
                )
            })
        }
        fn validate(&self) -> Vec<Problem> {
            let mut problems: Vec<Problem> =
                Self::within("every", self.every).into_iter().collect();
            for (i, r) in self.rules.iter().enumerate() {
                if r.weight > 9 {
                    problems.push(Problem::new(
                        &format!("rules.{i}"),
                        "too heavy",
                        "at most 9",
                    ));
                }
            }
            problems
        }
    }

    fn file(text: &str) -> Vec<(String, Entry)> {
        let doc: toml_edit::Document<String> = text.parse().unwrap();
        doc.as_table()
            .iter()
            .map(|(k, v)| (k.to_owned(), Entry::File(v.clone())))
            .collect()
    }

    #[test]
    fn each_bad_element_of_a_list_is_told_at_its_place_and_the_good_ones_are_kept() {
        let text = "[[rules]]\npattern = \"a\"\n\n[[rules]]\npattern = 5\n\n[[rules]]\npattern = \"c\"\nweight = 12\n\n[[rules]]\npattern = \"d\"\n";
        let (section, mistakes) = read::<Section>(file(text));
        let keys: Vec<&str> = mistakes.iter().map(|m| m.problem.key.as_str()).collect();
        // Element 1 cannot be read; element 2 is refused by `validate`, numbered as in the
        // file (it is the second of the elements kept).
        assert_eq!(keys, ["rules.1", "rules.2"]);
        let span = mistakes[0].span.clone().unwrap();
        assert_eq!(&text[span], "5");
        // What it should have been, not the value (which may be a secret).
        assert_eq!(mistakes[0].problem.message, "must be a string");
        let patterns: Vec<&str> = section.rules.iter().map(|r| r.pattern.as_str()).collect();
        assert_eq!(patterns, ["a", "c", "d"]);
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Target {
        job: String,
        #[serde(with = "crate::duration")]
        every: Duration,
        fast: bool,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Targets {
        target: Vec<Target>,
    }

    impl Settings for Targets {
        fn expect(key: &str) -> Option<Expect> {
            (key == "target.fast").then_some(Expect::Flag)
        }
        fn validate(&self) -> Vec<Problem> {
            let jobless = self.target.iter().position(|t| t.job.is_empty());
            jobless
                .map(|i| Problem::new(&format!("target.{i}"), "needs a `job`", "name it"))
                .into_iter()
                .collect()
        }
    }

    #[test]
    fn each_bad_key_of_an_entry_is_told_and_its_good_keys_are_kept() {
        let text = "[[target]]\njob = \"a\"\nfast = \"yes\"\nevrey = \"1s\"\nevery = \"2s\"\n";
        let (targets, mistakes) = read::<Targets>(file(text));
        let told: Vec<(String, String, String)> = mistakes
            .iter()
            .map(|m| {
                let p = &m.problem;
                (p.key.clone(), p.message.clone(), p.hint.clone())
            })
            .collect();
        assert_eq!(
            told,
            [
                (
                    "target.0.fast".to_owned(),
                    "must be true or false".to_owned(),
                    "write true or false, without quotes".to_owned()
                ),
                (
                    "target.0.evrey".to_owned(),
                    "unknown key `evrey`".to_owned(),
                    "did you mean `every`?".to_owned()
                ),
            ]
        );
        assert_eq!(&text[mistakes[1].span.clone().unwrap()], "\"1s\"");
        // The entry is kept with what could be read, so `validate` sees it (its job is there).
        assert_eq!(
            targets.target,
            [Target {
                job: "a".into(),
                every: Duration::from_secs(2),
                fast: false
            }]
        );
    }

    #[test]
    fn a_mistake_is_told_once_and_a_long_list_of_them_is_cut() {
        // A list where one value goes: one mistake at the key, the other keys still read.
        let text = "every = [\"1s\", \"2s\"]\n[[rules]]\npattern = \"a\"\n";
        let (section, mistakes) = read::<Section>(file(text));
        let keys: Vec<&str> = mistakes.iter().map(|m| m.problem.key.as_str()).collect();
        assert_eq!(keys, ["every"]);
        assert_eq!(&text[mistakes[0].span.clone().unwrap()], "[\"1s\", \"2s\"]");
        assert_eq!(section.rules.len(), 1);
        // A key of an entry that cannot be read is told, and so are the entry's own checks
        // (here about that key, elsewhere about others of the entry).
        let (_, mistakes) = read::<Targets>(file("[[target]]\njob = 5\n"));
        let keys: Vec<&str> = mistakes.iter().map(|m| m.problem.key.as_str()).collect();
        assert_eq!(keys, ["target.0.job", "target.0"]);
        // Thirty bad entries: twenty told, the rest counted.
        let text = "rules = [".to_owned() + &"1, ".repeat(30) + "]\n";
        let (_, mistakes) = read::<Section>(file(&text));
        assert_eq!(mistakes.len(), 21);
        assert_eq!(
            mistakes[20].problem.message,
            "and 10 more mistakes in `rules`"
        );
    }

    #[test]
    fn the_environment_is_read_as_the_field_takes_it() {
        let (section, mistakes) = read::<Section>(vec![("every".into(), Entry::Env("30s".into()))]);
        assert!(mistakes.is_empty(), "{mistakes:?}");
        assert_eq!(section.every, Duration::from_secs(30));
        let (section, mistakes) = read::<Section>(vec![("every".into(), Entry::Env("2h".into()))]);
        assert_eq!(
            mistakes[0].problem.to_string(),
            "`every` must be a duration from 1s to 1m (write it as a string like \"10s\", \"500ms\", \"2m\" or \"1h\")"
        );
        // Read, out of range: told once, by `validate`, and the value is kept as read.
        assert_eq!(mistakes.len(), 1);
        assert_eq!(section.every, Duration::from_secs(7200));
    }
}
