//! Finding the records in a JSON response: an explicit dot path (`data.items`), or a guess that
//! is fixed after the first page so every page of one run is read the same way.
//!
//! A page is parsed once: the records stream straight into flattened records (the model's
//! flatten-while-parsing deserializer), the pagination field is captured on the way, and
//! everything else is skipped unparsed. No `serde_json::Value` tree of the page is built:
//! that tree and flattening it afterwards were most of the source's CPU time.

use std::fmt;

use std::collections::HashMap;

use etl_model::{FieldSink, FlattenInto, JsonKey, Value, flatten_map_into};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Where the records are, once known.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Locator {
    /// `records_path` as given by the flow; missing is an error.
    Path(String),
    /// The response itself is the array.
    Root,
    /// The one array-valued top-level field of the first page.
    Field(String),
    /// The response object is a single record.
    Whole,
}

impl Locator {
    /// Guesses from the first page's bytes: an array, else its only array-valued top-level
    /// field, else the object itself. The values are skipped unparsed; only their kind is
    /// looked at. `Err` is the parser's, for a body that is not JSON.
    pub fn detect(body: &[u8]) -> Result<Locator, serde_json::Error> {
        serde_json::from_slice::<Shape>(body).map(|shape| match shape {
            Shape::Array => Locator::Root,
            Shape::Object(arrays) if arrays.len() == 1 => {
                Locator::Field(arrays.into_iter().next().unwrap_or_default())
            }
            Shape::Object(_) | Shape::Other => Locator::Whole,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Locator::Path(p) => format!("records_path '{p}'"),
            Locator::Root => "the top-level array".to_string(),
            Locator::Field(f) => format!("the array in field '{f}'"),
            Locator::Whole => "the whole response object, as one record".to_string(),
        }
    }

    /// Reads one page in a single pass: the records at this locator, flattened while they are
    /// parsed, and the scalar at `capture` (the cursor or next-URL path), if any. Nothing else
    /// in the body is materialised.
    pub fn read(&self, body: &[u8], capture: Option<&str>) -> Result<Page, PageError> {
        let capture: Option<Vec<String>> = capture.map(segments);
        let mut out = Page {
            records: FlatPage::default(),
            captured: None,
        };
        let mut state = ReadState {
            out: &mut out,
            found: false,
            problem: None,
        };
        if let Locator::Whole = self {
            // The whole body is the one record; the capture needs a second (cheap) look at
            // a body that holds a single record.
            let mut de = serde_json::Deserializer::from_slice(body);
            FlattenInto(&mut state.out.records)
                .deserialize(&mut de)
                .and_then(|()| de.end())
                .map_err(PageError::Json)?;
            state.out.records.end_record();
            if let Some(path) = &capture {
                read_node(body, None, Some(path), &mut state)?;
            }
            return Ok(out);
        }
        let path = match self {
            Locator::Path(p) => segments(p),
            Locator::Field(f) => vec![f.clone()],
            _ => Vec::new(),
        };
        read_node(body, Some(&path), capture.as_deref(), &mut state)?;
        if let Some(kind) = state.problem {
            return Err(PageError::Shape(format!(
                "{} holds {kind} rather than an array of records; point source.records_path at the array",
                self.describe()
            )));
        }
        match self {
            Locator::Path(_) if !state.found => Err(PageError::Shape(format!(
                "the response has nothing at {}; it has {} — set source.records_path to the path of the records array (dot-separated, e.g. data.items), or remove it to let the connector find the array",
                self.describe(),
                describe_body(body)
            ))),
            // An auto-detected field that later disappears means the API has nothing more.
            _ => Ok(out),
        }
    }
}

/// The path's segments; empty ones (`data..items`, a leading dot) are ignored.
fn segments(path: &str) -> Vec<String> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn matches(segment: &str, at: Result<&str, usize>) -> bool {
    match at {
        Ok(key) => segment == key,
        Err(index) => segment.parse::<usize>() == Ok(index),
    }
}

/// What one page holds for the source.
#[derive(Debug)]
pub(crate) struct Page {
    /// The page's records, flattened.
    pub records: FlatPage,
    /// The scalar at the capture path (cursor or next URL); `None` when it is absent, or is an
    /// object or array.
    pub captured: Option<serde_json::Value>,
}

/// A page's records, flattened, with each column name stored once per page rather than once
/// per record: records are runs of (column id, value) in one vector, so reading a record
/// allocates nothing but its text values.
#[derive(Debug, Default)]
pub(crate) struct FlatPage {
    /// Column names by id, in the order first seen.
    pub names: Vec<String>,
    index: HashMap<String, u32>,
    /// Every record's fields, one record after another.
    pub fields: Vec<(u32, Value)>,
    /// The number of fields of each record.
    pub lens: Vec<usize>,
    /// Where the record being read starts in `fields`.
    start: usize,
}

impl FlatPage {
    /// Closes the record being read.
    fn end_record(&mut self) {
        self.lens.push(self.fields.len() - self.start);
        self.start = self.fields.len();
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// The records as (column, value) pairs (tests compare them with `flatten_json`).
    #[cfg(test)]
    pub fn to_records(&self) -> Vec<Vec<(String, Value)>> {
        let mut fields = self.fields.iter();
        self.lens
            .iter()
            .map(|n| {
                fields
                    .by_ref()
                    .take(*n)
                    .map(|(id, v)| (self.names[*id as usize].clone(), v.clone()))
                    .collect()
            })
            .collect()
    }
}

impl FieldSink for FlatPage {
    fn count(&self) -> usize {
        self.fields.len()
    }

    fn field(&mut self, name: &str, value: Value) {
        // Records of one API nearly always list their fields in the same order, so the n-th
        // field of this record is most likely column n: one string comparison, no hashing.
        let ordinal = self.fields.len() - self.start;
        let id = match self.names.get(ordinal) {
            Some(known) if known == name => ordinal as u32,
            _ => match self.index.get(name) {
                Some(&id) => id,
                None => {
                    let id = self.names.len() as u32;
                    self.names.push(name.to_string());
                    self.index.insert(name.to_string(), id);
                    id
                }
            },
        };
        self.fields.push((id, value));
    }
}

/// Why a page could not be read.
#[derive(Debug)]
pub(crate) enum PageError {
    /// The body is not JSON.
    Json(serde_json::Error),
    /// The records are not where the locator says; a message without the URL.
    Shape(String),
}

struct ReadState<'o> {
    out: &'o mut Page,
    /// The records node was reached.
    found: bool,
    /// The kind of scalar found where records were expected.
    problem: Option<String>,
}

fn read_node(
    body: &[u8],
    records: Option<&[String]>,
    capture: Option<&[String]>,
    state: &mut ReadState<'_>,
) -> Result<(), PageError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Node {
        records,
        capture,
        state,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(PageError::Json)
}

/// One position in the body, with what is still wanted below it: the rest of the records
/// path and the rest of the capture path (`None`: not wanted down here).
struct Node<'p, 's, 'o> {
    records: Option<&'p [String]>,
    capture: Option<&'p [String]>,
    state: &'s mut ReadState<'o>,
}

impl<'p, 'o> Node<'p, '_, 'o> {
    fn at_records(&self) -> bool {
        self.records.is_some_and(<[String]>::is_empty)
    }

    /// Whether this node's value is wanted at all; otherwise it is skipped unparsed.
    fn wanted(&self) -> bool {
        self.records.is_some() || self.capture.is_some()
    }

    /// Steps into a member (`Ok(key)`) or an array element (`Err(index)`): what is wanted
    /// below it. Numeric segments index arrays, as `data.0.items` does.
    fn step(&mut self, at: Result<&str, usize>) -> Node<'p, '_, 'o> {
        let follow = |path: Option<&'p [String]>| match path {
            Some([first, rest @ ..]) if matches(first, at) => Some(rest),
            _ => None,
        };
        // A repeated key must not stream the records twice.
        let records = if self.state.found {
            None
        } else {
            follow(self.records)
        };
        Node {
            records,
            capture: follow(self.capture),
            state: &mut *self.state,
        }
    }

    /// A scalar reached: the cursor when the capture ends here, a problem when the records
    /// were expected here.
    fn scalar<E>(self, value: impl FnOnce() -> serde_json::Value) -> Result<(), E> {
        if self.at_records() {
            self.state.found = true;
            let value = value();
            if !value.is_null() {
                self.state.problem = Some(kind_of(&value));
            }
        } else if self.records.is_none() && self.capture.is_some_and(<[String]>::is_empty) {
            self.state.out.captured = Some(value());
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.wanted() {
            d.deserialize_any(self)
        } else {
            d.deserialize_ignored_any(IgnoredAny).map(|_| ())
        }
    }
}

impl<'de> Visitor<'de> for Node<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        if self.at_records() {
            // One object where the records are: a single record.
            self.state.found = true;
            flatten_map_into(map, &mut self.state.out.records)?;
            self.state.out.records.end_record();
            return Ok(());
        }
        while let Some(JsonKey(key)) = map.next_key::<JsonKey>()? {
            map.next_value_seed(self.step(Ok(&key)))?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if self.at_records() {
            self.state.found = true;
            let records = &mut self.state.out.records;
            while seq.next_element_seed(FlattenInto(records))?.is_some() {
                records.end_record();
            }
            return Ok(());
        }
        let mut index = 0usize;
        while seq.next_element_seed(self.step(Err(index)))?.is_some() {
            index += 1;
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(|| serde_json::Value::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(|| v.into())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(|| v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(|| v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(|| v.into())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(|| v.into())
    }
}

/// The top-level shape of a body, for [`Locator::detect`]: the names of array-valued fields.
enum Shape {
    Array,
    Object(Vec<String>),
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut arrays = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            // A repeated key counts once, with its last value, as a parsed object has it.
            arrays.retain(|k| k != &key);
            if map.next_value::<IsArray>()?.0 {
                arrays.push(key);
            }
        }
        Ok(Shape::Object(arrays))
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
}

/// Whether a value is an array; the value itself is skipped.
struct IsArray(bool);

impl<'de> Deserialize<'de> for IsArray {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IsArray;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsArray, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsArray(true))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsArray, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsArray(false))
            }
            fn visit_unit<E>(self) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
        }
        d.deserialize_any(V)
    }
}

/// [`describe_top_level`] of a raw body, for error messages (parses it whole: errors only).
pub(crate) fn describe_body(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).map_or_else(
        |_| "a body that is not JSON".to_string(),
        |v| describe_top_level(&v),
    )
}

/// A short description of a response's top level, for error messages:
/// "an object with fields data (array of 3), meta (object)".
pub(crate) fn describe_top_level(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) if m.is_empty() => "an empty object".to_string(),
        serde_json::Value::Object(m) => {
            const SHOWN: usize = 12;
            let mut fields: Vec<String> = m
                .iter()
                .take(SHOWN)
                .map(|(k, v)| format!("{k} ({})", kind_of(v)))
                .collect();
            if m.len() > SHOWN {
                fields.push(format!("and {} more", m.len() - SHOWN));
            }
            format!("an object with fields {}", fields.join(", "))
        }
        other => kind_of(other),
    }
}

fn kind_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::Bool(_) => "a boolean".to_string(),
        serde_json::Value::Number(_) => "a number".to_string(),
        serde_json::Value::String(_) => "a string".to_string(),
        serde_json::Value::Array(a) => format!("an array of {}", a.len()),
        serde_json::Value::Object(_) => "an object".to_string(),
    }
}

/// Explains a body that did not parse as JSON, with a hint when it is an HTML page.
pub(crate) fn not_json_message(
    body: &[u8],
    content_type: Option<&str>,
    err: &serde_json::Error,
) -> String {
    let ct = content_type
        .map(|c| format!(" (Content-Type: {c})"))
        .unwrap_or_default();
    let hint = if body.iter().take(64).any(|b| *b == b'<') {
        "it looks like HTML, so the URL probably points at a web page rather than the API; check url and object="
    } else {
        "check that object= names a JSON endpoint"
    };
    format!(
        "the response is not JSON{ct}: {err}; body starts with {}; {hint}",
        crate::request::snippet(body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(v: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    fn ids(page: &Page) -> Vec<Value> {
        page.records
            .to_records()
            .iter()
            .map(|r| r[0].1.clone())
            .collect()
    }

    #[test]
    fn detects_where_records_are() {
        let detect = |v: serde_json::Value| Locator::detect(&bytes(&v)).unwrap();
        assert_eq!(detect(json!([1])), Locator::Root);
        assert_eq!(
            detect(json!({"data": [], "next": "x"})),
            Locator::Field("data".into())
        );
        assert_eq!(detect(json!({"a": [], "b": []})), Locator::Whole);
        assert_eq!(detect(json!({"id": 1})), Locator::Whole);
        assert_eq!(detect(json!("text")), Locator::Whole);
        assert!(Locator::detect(b"<html>").is_err());
    }

    #[test]
    fn reads_by_path_and_captures_the_cursor() {
        let body = bytes(
            &json!({"data": {"items": [{"id": 1}, {"id": 2, "a": {"b": "x"}}]}, "meta": {"next": 5}}),
        );
        let page = Locator::Path("data.items".into())
            .read(&body, Some("meta.next"))
            .unwrap();
        assert_eq!(ids(&page), vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(
            page.records.to_records()[1][1],
            ("a_b".to_string(), Value::Text("x".into()))
        );
        assert_eq!(page.captured, Some(json!(5)));
        // An object or array at the capture path is no cursor.
        let page = Locator::Path("data.items".into())
            .read(&body, Some("meta"))
            .unwrap();
        assert_eq!(page.captured, None);
        // Numeric segments index arrays, leading zeros and all, as a number would.
        let body = bytes(&json!({"a": [{"b": [{"id": 7}]}, {"c": "z"}]}));
        let page = Locator::Path("a.0.b".into())
            .read(&body, Some("a.01.c"))
            .unwrap();
        assert_eq!(ids(&page), vec![Value::Int(7)]);
        assert_eq!(page.captured, Some(json!("z")));
    }

    #[test]
    fn explains_records_that_are_missing_or_not_an_array() {
        let body = bytes(&json!({"data": {"items": []}, "meta": {"next": 5}}));
        let PageError::Shape(err) = Locator::Path("results".into())
            .read(&body, None)
            .unwrap_err()
        else {
            panic!("a shape error")
        };
        assert!(
            err.contains("nothing at records_path 'results'; it has an object with fields data (an object), meta (an object)"),
            "{err}"
        );
        let body = bytes(&json!({"items": 3}));
        let PageError::Shape(err) = Locator::Path("items".into()).read(&body, None).unwrap_err()
        else {
            panic!("a shape error")
        };
        assert!(err.contains("holds a number"), "{err}");
        assert!(matches!(
            Locator::Path("items".into()).read(b"{\"items\": [1,", None),
            Err(PageError::Json(_))
        ));
    }

    #[test]
    fn null_object_and_vanished_field_are_read_as_before() {
        let body = bytes(&json!({"data": null, "next": "n"}));
        let page = Locator::Path("data".into())
            .read(&body, Some("next"))
            .unwrap();
        assert_eq!(page.records.len(), 0);
        assert_eq!(page.captured, Some(json!("n")));
        let body = bytes(&json!({"data": {"id": 3}}));
        let page = Locator::Field("data".into()).read(&body, None).unwrap();
        assert_eq!(ids(&page), vec![Value::Int(3)]);
        let page = Locator::Field("rows".into()).read(&body, None).unwrap();
        assert_eq!(page.records.len(), 0);
        // The whole body as one record, still with its cursor.
        let body = bytes(&json!({"id": 9, "next": "c2"}));
        let page = Locator::Whole.read(&body, Some("next")).unwrap();
        assert_eq!(
            page.records.to_records(),
            vec![vec![
                ("id".to_string(), Value::Int(9)),
                ("next".to_string(), Value::Text("c2".into()))
            ]]
        );
        assert_eq!(page.captured, Some(json!("c2")));
        // The top-level array, where a later page sends a single object.
        let page = Locator::Root.read(&bytes(&json!({"id": 4})), None).unwrap();
        assert_eq!(ids(&page), vec![Value::Int(4)]);
        let PageError::Shape(err) = Locator::Root.read(b"\"x\"", None).unwrap_err() else {
            panic!("a shape error")
        };
        assert!(
            err.starts_with("the top-level array holds a string"),
            "{err}"
        );
    }

    /// Every record must come out exactly as the model's `flatten_json` makes it.
    #[test]
    fn records_match_flatten_json() {
        let records = json!([
            {"id": 1, "address": {"city": "Paris", "geo": {"lat": 1.5}}, "tags": ["a", {"b": 1}]},
            {"empty": {}, "n": null, "big": 18446744073709551615u64, "s": "x\"y\u{e9}"},
            [1, 2],
            "text",
            7
        ]);
        let body = bytes(&json!({"data": records}));
        let page = Locator::Path("data".into()).read(&body, None).unwrap();
        let expected: Vec<_> = records
            .as_array()
            .unwrap()
            .iter()
            .map(etl_model::flatten_json)
            .collect();
        assert_eq!(page.records.to_records(), expected);
    }
}
