//! The keys of a settings struct, asked of its `Deserialize` implementation.

use std::cell::Cell;

use serde::de::value::Error;
use serde::de::{self, DeserializeOwned, Error as _, Visitor};
use serde::forward_to_deserialize_any;

/// The keys `T` reads (its field names as serde sees them, renames included), in order; empty
/// for a type that is not a struct. One list serves the unknown-key check, the environment
/// variable names and the documentation, so none of them can fall behind the struct.
pub fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let seen = Cell::new(None);
    let _ = T::deserialize(Probe(&seen));
    seen.get().unwrap_or(&[])
}

/// A deserializer that only notes the field list it is asked for.
struct Probe<'a>(&'a Cell<Option<&'static [&'static str]>>);

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.set(Some(fields));
        Err(Error::custom("keys noted"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
