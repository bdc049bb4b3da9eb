//! The schema number every JSON document of fdguard starts with (`"fdguard": 1`): reports,
//! bad-close events, `inspect` snapshots, `diff` output. A reader refuses other numbers rather
//! than misread them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema this version writes and reads.
pub const SCHEMA: u64 = 1;

/// The `fdguard` key: always `SCHEMA` when written; reading another number fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schema;

impl Serialize for Schema {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(SCHEMA)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d)? {
            SCHEMA => Ok(Schema),
            other => Err(serde::de::Error::custom(format!(
                "schema {other} is not one this fdguard reads (it reads schema {SCHEMA})"
            ))),
        }
    }
}
