//! Finding the records in a JSON response: an explicit dot path (`data.items`), or a guess that
//! is fixed after the first page so every page of one run is read the same way.

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
    /// Guesses from the first page: an array, else its only array-valued top-level field, else
    /// the object itself.
    pub fn detect(body: &serde_json::Value) -> Locator {
        match body {
            serde_json::Value::Array(_) => Locator::Root,
            serde_json::Value::Object(map) => {
                let mut arrays = map.iter().filter(|(_, v)| v.is_array());
                match (arrays.next(), arrays.next()) {
                    (Some((key, _)), None) => Locator::Field(key.clone()),
                    _ => Locator::Whole,
                }
            }
            _ => Locator::Whole,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Locator::Path(p) => format!("records_path '{p}'"),
            Locator::Root => "the top-level array".to_string(),
            Locator::Field(f) => format!("the array in field '{f}'"),
            Locator::Whole => "the whole response object, as one record".to_string(),
        }
    }

    /// Takes the records out of `body` (leaving the rest of it for cursor and next-URL paths).
    /// `Err` carries a message without the URL; the caller adds it.
    pub fn take(&self, body: &mut serde_json::Value) -> Result<Vec<serde_json::Value>, String> {
        let found = match self {
            Locator::Root => Some(std::mem::take(body)),
            Locator::Whole => return Ok(vec![body.clone()]),
            // An auto-detected field that later disappears means the API has nothing more.
            Locator::Field(f) => match body.get_mut(f.as_str()) {
                Some(v) => Some(std::mem::take(v)),
                None => return Ok(Vec::new()),
            },
            Locator::Path(p) => at_path_mut(body, p).map(std::mem::take),
        };
        match found {
            Some(serde_json::Value::Array(items)) => Ok(items),
            Some(serde_json::Value::Null) => Ok(Vec::new()),
            Some(obj @ serde_json::Value::Object(_)) => Ok(vec![obj]),
            Some(other) => Err(format!(
                "{} holds {} rather than an array of records; point source.records_path at the array",
                self.describe(),
                kind_of(&other)
            )),
            None => Err(format!(
                "the response has nothing at {}; it has {} — set source.records_path to the path of the records array (dot-separated, e.g. data.items), or remove it to let the connector find the array",
                self.describe(),
                describe_top_level(body)
            )),
        }
    }
}

/// The value at a dot path (`data.items`, `pages.0.next`); numeric segments index arrays.
pub(crate) fn at_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(v, |cur, seg| match cur {
            serde_json::Value::Object(m) => m.get(seg),
            serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
}

fn at_path_mut<'a>(v: &'a mut serde_json::Value, path: &str) -> Option<&'a mut serde_json::Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(v, |cur, seg| match cur {
            serde_json::Value::Object(m) => m.get_mut(seg),
            serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        })
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

    #[test]
    fn detects_where_records_are() {
        assert_eq!(Locator::detect(&json!([1])), Locator::Root);
        assert_eq!(
            Locator::detect(&json!({"data": [], "next": "x"})),
            Locator::Field("data".into())
        );
        assert_eq!(Locator::detect(&json!({"a": [], "b": []})), Locator::Whole);
        assert_eq!(Locator::detect(&json!({"id": 1})), Locator::Whole);
    }

    #[test]
    fn takes_by_path_and_explains_misses() {
        let mut body = json!({"data": {"items": [{"id": 1}, {"id": 2}]}, "meta": {"next": 5}});
        let items = Locator::Path("data.items".into()).take(&mut body).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(at_path(&body, "meta.next"), Some(&json!(5)));
        let err = Locator::Path("results".into()).take(&mut body).unwrap_err();
        assert!(
            err.contains("nothing at records_path 'results'; it has an object with fields data (an object), meta (an object)"),
            "{err}"
        );
        let mut body = json!({"items": 3});
        let err = Locator::Path("items".into()).take(&mut body).unwrap_err();
        assert!(err.contains("holds a number"), "{err}");
        assert_eq!(at_path(&json!({"a": [{"b": 1}]}), "a.0.b"), Some(&json!(1)));
    }
}
