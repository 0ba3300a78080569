//! Streams the records of one JSON document without loading it: serde visits the document,
//! descends along `records_path`, and hands each element of the records array to a callback
//! as soon as it is parsed. Everything else in the document is skipped unparsed.

use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Why the callback asked to stop; carried out of the deserializer untouched.
pub type Emit<'a, H> = &'a mut dyn FnMut(serde_json::Value) -> Result<(), H>;

/// How streaming ended badly.
pub enum StreamError<H> {
    /// The callback stopped the stream.
    Halted(H),
    /// The document is not valid JSON, or the path leads to a scalar.
    Json(serde_json::Error),
    /// `records_path` names a key that is not there: `path[depth]` is the missing key, and
    /// `keys` the keys found at that level (the first 20).
    PathNotFound { depth: usize, keys: Vec<String> },
}

struct State<'a, H> {
    emit: Emit<'a, H>,
    halted: Option<H>,
    found: bool,
    missing: Option<(usize, Vec<String>)>,
}

/// Reads one JSON document from `reader` and calls `emit` for every record: the elements of
/// the array at `path` (or of the top-level array when `path` is empty), or the one object
/// found there.
pub fn stream_records<R: Read, H>(
    reader: R,
    path: &[String],
    emit: Emit<'_, H>,
) -> Result<(), StreamError<H>> {
    let mut state = State {
        emit,
        halted: None,
        found: false,
        missing: None,
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
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
        let (depth, keys) = state.missing.unwrap_or_default();
        return Err(StreamError::PathNotFound { depth, keys });
    }
    Ok(())
}

struct At<'p, 's, 'a, H> {
    path: &'p [String],
    depth: usize,
    state: &'s mut State<'a, H>,
}

impl<H> At<'_, '_, '_, H> {
    fn emit<E: de::Error>(&mut self, value: serde_json::Value) -> Result<(), E> {
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
            Some(key) => write!(f, "an object with the key '{key}'"),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if !self.path.is_empty() {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        self.state.found = true;
        while let Some(value) = seq.next_element::<serde_json::Value>()? {
            self.emit(value)?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let Some(key) = self.path.first() else {
            self.state.found = true;
            let value = serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
            return self.emit(value);
        };
        let mut seen = Vec::new();
        let mut found_here = false;
        while let Some(k) = map.next_key::<String>()? {
            if !found_here && &k == key {
                found_here = true;
                map.next_value_seed(At {
                    path: &self.path[1..],
                    depth: self.depth + 1,
                    state: &mut *self.state,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
                if seen.len() < 20 {
                    seen.push(k);
                }
            }
        }
        if !found_here && self.state.missing.is_none() {
            // Where the path broke and what was there instead, for the error message.
            self.state.missing = Some((self.depth, seen));
        }
        Ok(())
    }
}
