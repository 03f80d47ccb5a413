//! A setting given as text (an environment variable): read as whatever the field takes.

use serde::de::value::{Error, MapDeserializer, SeqDeserializer};
use serde::de::{self, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

/// A value written as text, as an environment variable gives it: `"1024"` fills a number,
/// `"true"`/`"1"` a flag, `"a, b"` a list (comma-separated), `"k=v,k2=v2"` a table (as
/// `OTEL_EXPORTER_OTLP_HEADERS` writes headers), anything a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValue(pub String);

impl EnvValue {
    fn number<T: std::str::FromStr>(&self) -> Option<T> {
        self.0.trim().parse().ok()
    }
}

macro_rules! numbers {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.number::<$ty>() {
                Some(n) => visitor.$visit(n),
                None => visitor.visit_str(&self.0),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for EnvValue {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_string(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.trim() {
            "true" | "1" => visitor.visit_bool(true),
            "false" | "0" => visitor.visit_bool(false),
            _ => visitor.visit_str(&self.0),
        }
    }

    numbers! {
        deserialize_u8 => visit_u64: u64,
        deserialize_u16 => visit_u64: u64,
        deserialize_u32 => visit_u64: u64,
        deserialize_u64 => visit_u64: u64,
        deserialize_i8 => visit_i64: i64,
        deserialize_i16 => visit_i64: i64,
        deserialize_i32 => visit_i64: i64,
        deserialize_i64 => visit_i64: i64,
        deserialize_f32 => visit_f64: f64,
        deserialize_f64 => visit_f64: f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let items: Vec<EnvValue> = self
            .0
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| EnvValue(s.to_owned()))
            .collect();
        visitor.visit_seq(SeqDeserializer::new(items.into_iter()))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut pairs = Vec::new();
        for item in self.0.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            // Not quoted back: the item may hold a secret (`Authorization: Bearer ...`).
            let Some((k, v)) = item.split_once('=') else {
                return Err(de::Error::custom(
                    "an item has no `=`; write a table as k=v,k2=v2",
                ));
            };
            pairs.push((EnvValue(k.trim().to_owned()), EnvValue(v.trim().to_owned())));
        }
        visitor.visit_map(MapDeserializer::new(pairs.into_iter()))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct tuple tuple_struct struct
        identifier ignored_any
    }
}

impl<'de> IntoDeserializer<'de, Error> for EnvValue {
    type Deserializer = EnvValue;
    fn into_deserializer(self) -> EnvValue {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    enum Mode {
        #[serde(rename = "fast")]
        Fast,
    }

    #[test]
    fn text_fills_whatever_the_field_takes() {
        let v = |s: &str| EnvValue(s.into());
        assert_eq!(usize::deserialize(v(" 1024 ")).ok(), Some(1024));
        assert!(usize::deserialize(v("lots")).is_err());
        assert_eq!(bool::deserialize(v("1")).ok(), Some(true));
        assert_eq!(bool::deserialize(v("false")).ok(), Some(false));
        assert!(bool::deserialize(v("yes")).is_err());
        assert_eq!(
            Vec::<String>::deserialize(v("a, b,,c")).ok(),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            Option::<String>::deserialize(v("x")).ok(),
            Some(Some("x".into()))
        );
        assert_eq!(Mode::deserialize(v("fast")).ok(), Some(Mode::Fast));
        assert_eq!(
            crate::duration::deserialize(v("2m")).ok(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(crate::size::deserialize(v("4096")).ok(), Some(4096));
        assert_eq!(
            crate::pairs::deserialize(v("x-tenant=a, authorization = Bearer t")).ok(),
            Some(vec![
                ("x-tenant".into(), "a".into()),
                ("authorization".into(), "Bearer t".into())
            ])
        );
        assert!(crate::pairs::deserialize(v("no-equals")).is_err());
    }
}
