//! Flatten-while-parsing JSON reading, shared by every connector that reads JSON records (the
//! `file` connector's JSON and NDJSON, the `http` connector's pages).
//!
//! Records are deserialized straight into flattened (column, value) pairs ([`FlatRecord`]),
//! with exactly the rules of [`crate::flatten_json`], skipping the intermediate
//! `serde_json::Value` tree: building that tree (a map and an owned key per field) and then
//! flattening it again dominated JSON reading, mostly in the allocator.
//!
//! [`stream_records`] and [`stream_records_from_slice`] stream one document: serde visits it,
//! descends along `records_path`, and hands each element of the records array to a callback as
//! soon as it is parsed. Everything else in the document is skipped unparsed. Readers with their
//! own notion of where records are (the HTTP source's pagination) compose [`FlatRecord`],
//! [`FlatRecordSeed`] and [`flatten_map`] in their own visitor.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::Value;

/// Why the callback asked to stop; carried out of the deserializer untouched.
pub type Emit<'a, H> = &'a mut dyn FnMut(Vec<(String, Value)>) -> Result<(), H>;

/// How streaming ended badly.
pub enum StreamError<H> {
    /// The callback stopped the stream.
    Halted(H),
    /// The document is not valid JSON, or the path leads to a scalar.
    Json(serde_json::Error),
    /// `records_path` names a key that is not there: `path[depth]` is the missing segment, and
    /// `found` says what is at that level instead ("its keys are a, b").
    PathNotFound { depth: usize, found: String },
}

struct State<'a, H> {
    emit: Emit<'a, H>,
    halted: Option<H>,
    found: bool,
    missing: Option<(usize, String)>,
    /// Fields of the previous record, to size the next one's vector in one allocation.
    hint: usize,
}

/// Reads one JSON document from `reader` and calls `emit` for every record: the elements of
/// the array at `path` (or of the top-level array when `path` is empty), or the one object
/// found there. The reader is read in small pieces, so memory stays at one record.
pub fn stream_records<R: Read, H>(
    reader: R,
    path: &[String],
    emit: Emit<'_, H>,
) -> Result<(), StreamError<H>> {
    stream(serde_json::Deserializer::from_reader(reader), path, emit)
}

/// [`stream_records`] over a document already in memory (an HTTP answer): strings and keys
/// without escapes are borrowed from `bytes` instead of copied through a scratch buffer.
pub fn stream_records_from_slice<H>(
    bytes: &[u8],
    path: &[String],
    emit: Emit<'_, H>,
) -> Result<(), StreamError<H>> {
    stream(serde_json::Deserializer::from_slice(bytes), path, emit)
}

fn stream<'de, R: serde_json::de::Read<'de>, H>(
    mut de: serde_json::Deserializer<R>,
    path: &[String],
    emit: Emit<'_, H>,
) -> Result<(), StreamError<H>> {
    let mut state = State {
        emit,
        halted: None,
        found: false,
        missing: None,
        hint: 0,
    };
    let result = At {
        path,
        depth: 0,
        state: &mut state,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(h) = state.halted {
        return Err(StreamError::Halted(h));
    }
    result.map_err(StreamError::Json)?;
    if !state.found {
        let (depth, found) = state.missing.unwrap_or_default();
        return Err(StreamError::PathNotFound { depth, found });
    }
    Ok(())
}

struct At<'p, 's, 'a, H> {
    path: &'p [String],
    depth: usize,
    state: &'s mut State<'a, H>,
}

impl<H> At<'_, '_, '_, H> {
    fn emit<E: de::Error>(&mut self, value: Vec<(String, Value)>) -> Result<(), E> {
        (self.state.emit)(value).map_err(|h| {
            self.state.halted = Some(h);
            E::custom("stopped by the reader")
        })
    }
}

impl<'de, H> DeserializeSeed<'de> for At<'_, '_, '_, H> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, H> Visitor<'de> for At<'_, '_, '_, H> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.first() {
            None => f.write_str("an array of records or one record object"),
            Some(key) if key.parse::<usize>().is_ok() => {
                write!(f, "an object with the key '{key}' or an array")
            }
            Some(key) => write!(f, "an object with the key '{key}'"),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if let Some(segment) = self.path.first() {
            // A numeric segment indexes an array (`results.0.rows`).
            let Ok(wanted) = segment.parse::<usize>() else {
                return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
            };
            let mut len = 0usize;
            loop {
                let more = if len == wanted {
                    seq.next_element_seed(At {
                        path: &self.path[1..],
                        depth: self.depth + 1,
                        state: &mut *self.state,
                    })?
                } else {
                    seq.next_element::<IgnoredAny>()?.map(|_| ())
                };
                if more.is_none() {
                    break;
                }
                len += 1;
            }
            if len <= wanted && self.state.missing.is_none() {
                self.state.missing =
                    Some((self.depth, format!("it is an array of {len} element(s)")));
            }
            return Ok(());
        }
        self.state.found = true;
        while let Some(fields) = seq.next_element_seed(FlatRecordSeed(self.state.hint))? {
            self.state.hint = fields.len();
            self.emit(fields)?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let Some(key) = self.path.first() else {
            self.state.found = true;
            let fields = flatten_map(map, 0)?;
            return self.emit(fields);
        };
        let mut seen = Vec::new();
        let mut found_here = false;
        while let Some(JsonKey(k)) = map.next_key::<JsonKey>()? {
            if !found_here && k == key.as_str() {
                found_here = true;
                map.next_value_seed(At {
                    path: &self.path[1..],
                    depth: self.depth + 1,
                    state: &mut *self.state,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
                if seen.len() < 20 {
                    seen.push(k.into_owned());
                }
            }
        }
        if !found_here && self.state.missing.is_none() {
            // Where the path broke and what was there instead, for the error message.
            let found = if seen.is_empty() {
                "it has no other keys".to_string()
            } else {
                format!("its keys are {}", seen.join(", "))
            };
            self.state.missing = Some((self.depth, found));
        }
        Ok(())
    }
}

/// One record as flattened (column, value) pairs: nested objects become `parent_child`
/// columns, an empty object is null, arrays are kept as JSON text, and a record that is not an
/// object becomes one column named `value` (the rules of [`crate::flatten_json`]).
pub struct FlatRecord(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for FlatRecord {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FlatRecordSeed(0).deserialize(d).map(FlatRecord)
    }
}

/// Where flattened fields go. Names are lent, not given: a sink that already knows a column
/// (the usual case from the second record on) needs no allocation for its name.
pub trait FieldSink {
    /// Fields received so far (of this record or in total; only differences are used).
    fn count(&self) -> usize;
    /// One flattened field.
    fn field(&mut self, name: &str, value: Value);
}

impl FieldSink for Vec<(String, Value)> {
    fn count(&self) -> usize {
        self.len()
    }
    fn field(&mut self, name: &str, value: Value) {
        self.push((name.to_string(), value));
    }
}

/// Deserializes one record like [`FlatRecord`], reserving room for the given number of fields
/// up front. Readers of many records pass the previous record's field count, so a record's
/// vector is allocated once instead of growing by doubling.
#[derive(Clone, Copy, Debug)]
pub struct FlatRecordSeed(pub usize);

impl<'de> DeserializeSeed<'de> for FlatRecordSeed {
    type Value = Vec<(String, Value)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut out = Vec::with_capacity(self.0);
        FlattenInto(&mut out).deserialize(d)?;
        Ok(out)
    }
}

/// Deserializes one record into a [`FieldSink`], with the rules of [`FlatRecord`].
pub struct FlattenInto<'s, S: FieldSink>(pub &'s mut S);

impl<'de, S: FieldSink> DeserializeSeed<'de> for FlattenInto<'_, S> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let mut name = String::new();
        d.deserialize_any(Field {
            name: &mut name,
            top: true,
            out: self.0,
        })
    }
}

/// Flattens the object `map` is positioned in (its keys not yet read) into (column, value)
/// pairs, as [`FlatRecord`] does for an object record; `capacity` as in [`FlatRecordSeed`].
pub fn flatten_map<'de, A: MapAccess<'de>>(
    map: A,
    capacity: usize,
) -> Result<Vec<(String, Value)>, A::Error> {
    let mut out = Vec::with_capacity(capacity);
    flatten_map_into(map, &mut out)?;
    Ok(out)
}

/// [`flatten_map`] into a [`FieldSink`].
pub fn flatten_map_into<'de, A: MapAccess<'de>, S: FieldSink>(
    map: A,
    out: &mut S,
) -> Result<(), A::Error> {
    let mut name = String::new();
    flatten_members(map, &mut name, out)
}

/// Integers above `i64::MAX` become floats, as `Value::from_json` does.
fn unsigned(v: u64) -> Value {
    i64::try_from(v).map_or(Value::Float(v as f64), Value::Int)
}

/// Sends the members of one object to `out`, each named after the prefix in `name` (possibly
/// empty), an underscore and its key. `name` is one buffer reused for every column name of a
/// record; it is left as it was found.
fn flatten_members<'de, A: MapAccess<'de>, S: FieldSink>(
    mut map: A,
    name: &mut String,
    out: &mut S,
) -> Result<(), A::Error> {
    let prefix = name.len();
    while let Some(JsonKey(key)) = map.next_key::<JsonKey>()? {
        if prefix > 0 {
            name.push('_');
        }
        name.push_str(&key);
        let result = map.next_value_seed(Field {
            name: &mut *name,
            top: false,
            out: &mut *out,
        });
        name.truncate(prefix);
        result?;
    }
    Ok(())
}

/// An object key, borrowed from the input when it has no escapes (slice input), else owned.
/// (serde's own `Cow<str>` always copies.)
pub struct JsonKey<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for JsonKey<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = JsonKey<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<JsonKey<'de>, E> {
        Ok(JsonKey(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<JsonKey<'de>, E> {
        Ok(JsonKey(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<JsonKey<'de>, E> {
        Ok(JsonKey(Cow::Owned(v)))
    }
}

/// One value named `name`: scalars are sent, objects recurse, arrays become JSON text. At the
/// top of a record (`top`) an object is the record itself and anything else is one column
/// named `value`.
struct Field<'a, S> {
    name: &'a mut String,
    top: bool,
    out: &'a mut S,
}

impl<S: FieldSink> Field<'_, S> {
    fn send(self, value: Value) {
        self.out
            .field(if self.top { "value" } else { self.name }, value);
    }
}

impl<'de, S: FieldSink> DeserializeSeed<'de> for Field<'_, S> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: FieldSink> Visitor<'de> for Field<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let before = self.out.count();
        flatten_members(map, self.name, self.out)?;
        if !self.top && self.out.count() == before {
            // `{}` and objects whose members are all empty objects carry no columns of their
            // own; an empty object is a null column (an empty record has no columns at all).
            self.out.field(self.name, Value::Null);
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let array = serde_json::Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.send(Value::Text(array.to_string()));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.send(Value::Null);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.send(Value::Bool(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.send(Value::Int(v));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.send(unsigned(v));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.send(Value::Float(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.send(Value::Text(v.to_string()));
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.send(Value::Text(v));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path must agree with the model's `flatten_json` on every shape.
    #[test]
    fn flat_record_matches_flatten_json() {
        let samples = [
            r#"{"id": 1, "name": "a", "address": {"city": "Paris", "geo": {"lat": 1.5, "lng": -2}}}"#,
            r#"{"tags": ["a", {"b": 1}], "empty": {}, "nul": null, "t": true, "big": 18446744073709551615}"#,
            r#"{"neg": -9223372036854775808, "f": 1e3, "s": "x\"y\u00e9", "o": {"e": {}}}"#,
            r#"[1, 2, {"a": null}]"#,
            r#""just text""#,
            r#"42"#,
            r#"null"#,
            r#"{}"#,
        ];
        for text in samples {
            let expected = crate::flatten_json(&serde_json::from_str(text).unwrap());
            let FlatRecord(got) = serde_json::from_str(text).unwrap();
            assert_eq!(got, expected, "{text}");
            // Through a reader, keys and strings arrive as transient slices instead of borrows.
            let FlatRecord(got) = serde_json::from_reader(text.as_bytes()).unwrap();
            assert_eq!(got, expected, "{text} (reader)");
        }
    }
}
