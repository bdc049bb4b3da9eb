//! Addresses and offsets as the JSON has them: strings of hex (`"0x55d0c0a1b2c3"`), which
//! JSON readers cannot round to a double as they would a large number.

use serde::{Deserialize, Deserializer, Serializer};

fn parse<E: serde::de::Error>(s: &str) -> Result<u64, E> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    u64::from_str_radix(digits, 16).map_err(|_| E::custom(format!("{s:?} is not a hex number")))
}

pub mod word {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        parse(&std::borrow::Cow::<str>::deserialize(d)?)
    }
}

pub mod optional {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => word::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<std::borrow::Cow<str>>::deserialize(d)?
            .map(|s| parse(&s))
            .transpose()
    }
}
