//! Deserializing an internally tagged recipe table (`kind = "..."`, `task = "..."`) so that a bad
//! value is reported with its key. serde's derived `#[serde(tag = ...)]` buffers the table and
//! loses the key: `cache_len = 1.5` was reported as "invalid type: floating point `1.5`, expected
//! usize" at the table's header line, not naming `cache_len`. Here the table is read as a
//! [`toml::Table`], the tag taken out, and the variant's struct deserialized from the rest, whose
//! errors end in "in `cache_len`".

use serde::de::{DeserializeOwned, Error};
use serde::{Deserialize, Deserializer};

/// Reads the table and removes its string `tag`: `(tag value, the other keys)`.
pub(crate) fn split<'de, D: Deserializer<'de>>(d: D, tag: &'static str) -> Result<(String, toml::Value), D::Error> {
    let mut table = toml::Table::deserialize(d)?;
    match table.remove(tag) {
        Some(toml::Value::String(s)) => Ok((s, toml::Value::Table(table))),
        Some(other) => Err(D::Error::custom(format!("`{tag}` must be a string, got {other}"))),
        None => Err(D::Error::missing_field(tag)),
    }
}

/// The variant struct `T` of `tag = "name"` from the remaining keys; errors name the key.
pub(crate) fn variant<T: DeserializeOwned, E: Error>(rest: toml::Value, tag: &str, name: &str) -> Result<T, E> {
    T::deserialize(rest).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.trim_end().replace('\n', " ");
        E::custom(format!("{msg} (in the `{tag} = \"{name}\"` table)"))
    })
}
