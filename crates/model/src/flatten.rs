//! Nested JSON objects become columns (`address.city` → `address_city`); arrays stay JSON text.

use crate::Value;

/// Flattens one JSON record into (column, value) pairs. A non-object record becomes a single
/// column named `value`.
pub fn flatten_json(record: &serde_json::Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    match record {
        serde_json::Value::Object(map) => flatten_into("", map, &mut out),
        other => out.push(("value".to_string(), Value::from_json(other))),
    }
    out
}

fn flatten_into(
    prefix: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, Value)>,
) {
    for (key, value) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}_{key}")
        };
        match value {
            serde_json::Value::Object(inner) if !inner.is_empty() => {
                flatten_into(&name, inner, out)
            }
            serde_json::Value::Object(_) => out.push((name, Value::Null)),
            other => out.push((name, Value::from_json(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_objects_keeps_arrays() {
        let rec =
            json!({"id": 1, "address": {"city": "Paris", "geo": {"lat": 1.5}}, "tags": ["a", "b"]});
        let flat = flatten_json(&rec);
        assert_eq!(
            flat,
            vec![
                ("id".into(), Value::Int(1)),
                ("address_city".into(), Value::Text("Paris".into())),
                ("address_geo_lat".into(), Value::Float(1.5)),
                ("tags".into(), Value::Text("[\"a\",\"b\"]".into())),
            ]
        );
    }
}
