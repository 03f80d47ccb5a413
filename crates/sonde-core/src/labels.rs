//! Label values packed into one allocation per series.

use std::hash::{BuildHasher, Hasher};

/// Label values of one series in one allocation: each value preceded by its length in
/// 6-bit groups (low groups first; `0x40` marks "more follows"). Every length byte is ASCII, so
/// the whole is a `str` and values are sliced out without re-validating UTF-8.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct LabelValues(Box<str>);

impl LabelValues {
    pub(crate) fn empty() -> Self {
        LabelValues(Box::from(""))
    }

    pub(crate) fn new<S: AsRef<str>>(values: &[S]) -> Self {
        // Exact, so `into_boxed_str` does not reallocate.
        let len: usize = values
            .iter()
            .map(|v| {
                let n = v.as_ref().len();
                n + 1 + (usize::BITS - n.leading_zeros()).saturating_sub(1) as usize / 6
            })
            .sum();
        let mut buf = String::with_capacity(len);
        for v in values {
            let v = v.as_ref();
            let mut n = v.len();
            while n >= 0x40 {
                buf.push(char::from(0x40 | (n & 0x3f) as u8));
                n >>= 6;
            }
            buf.push(char::from(n as u8));
            buf.push_str(v);
        }
        debug_assert_eq!(buf.len(), len);
        LabelValues(buf.into_boxed_str())
    }

    pub(crate) fn iter(&self) -> LabelIter<'_> {
        LabelIter { rest: &self.0 }
    }

    /// Compares with borrowed values without allocating.
    #[inline]
    pub(crate) fn eq_values<S: AsRef<str>>(&self, values: &[S]) -> bool {
        let mut it = self.iter();
        for v in values {
            match it.next() {
                Some(s) if s == v.as_ref() => {}
                _ => return false,
            }
        }
        it.rest.is_empty()
    }
}

/// Iterates over packed label values.
#[derive(Clone)]
pub struct LabelIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.rest.as_bytes();
        let mut n = 0usize;
        let mut shift = 0;
        let mut i = 0;
        loop {
            let b = *bytes.get(i)?;
            n |= ((b & 0x3f) as usize) << shift;
            i += 1;
            if b & 0x40 == 0 {
                break;
            }
            shift += 6;
        }
        let value = self.rest.get(i..i + n)?;
        self.rest = self.rest.get(i + n..)?;
        Some(value)
    }
}

/// Hashes label values; the packed and the borrowed forms hash the same way.
pub(crate) fn hash_values<'a, H: BuildHasher>(
    state: &H,
    values: impl Iterator<Item = &'a str>,
) -> u64 {
    let mut h = state.build_hasher();
    for v in values {
        h.write_usize(v.len());
        h.write(v.as_bytes());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let long = "x".repeat(300);
        let vals = ["GET", "", "/users/:id", long.as_str(), "é✓"];
        let lv = LabelValues::new(&vals);
        assert_eq!(lv.iter().collect::<Vec<_>>(), vals);
        assert!(lv.eq_values(&vals));
        assert!(!lv.eq_values(&vals[..4]));
        assert!(!lv.eq_values(&["GET", "", "/users/:id", long.as_str(), "e"]));
        assert_eq!(LabelValues::empty().iter().count(), 0);
        assert!(LabelValues::empty().eq_values::<&str>(&[]));
    }
}
