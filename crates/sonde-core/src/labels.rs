//! Label values packed into one allocation per series.

use std::hash::{BuildHasher, Hasher};

/// Label values of one series: each value as a LEB128 length followed by its UTF-8 bytes,
/// in one boxed slice so a series costs one allocation for all its values.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct LabelValues(Box<[u8]>);

impl LabelValues {
    pub(crate) fn empty() -> Self {
        LabelValues(Box::new([]))
    }

    pub(crate) fn new<S: AsRef<str>>(values: &[S]) -> Self {
        let len: usize = values
            .iter()
            .map(|v| v.as_ref().len() + varint_len(v.as_ref().len()))
            .sum();
        let mut buf = Vec::with_capacity(len);
        for v in values {
            let v = v.as_ref();
            let mut n = v.len();
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    buf.push(byte);
                    break;
                }
                buf.push(byte | 0x80);
            }
            buf.extend_from_slice(v.as_bytes());
        }
        LabelValues(buf.into_boxed_slice())
    }

    pub(crate) fn iter(&self) -> LabelIter<'_> {
        LabelIter { rest: &self.0 }
    }

    /// Compares with borrowed values without allocating.
    pub(crate) fn eq_values<S: AsRef<str>>(&self, values: &[S]) -> bool {
        let mut it = self.iter();
        for v in values {
            match it.next() {
                Some(s) if s == v.as_ref() => {}
                _ => return false,
            }
        }
        it.next().is_none()
    }
}

fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Iterates over packed label values.
#[derive(Clone)]
pub struct LabelIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let mut n = 0usize;
        let mut shift = 0;
        let mut i = 0;
        loop {
            let byte = *self.rest.get(i)?;
            n |= ((byte & 0x7f) as usize) << shift;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let bytes = self.rest.get(i..i + n)?;
        self.rest = &self.rest[i + n..];
        // Written from `&str`s by `LabelValues::new`, so always valid UTF-8.
        std::str::from_utf8(bytes).ok()
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
