//! The template file format: what a YAML template under `templates/` may contain. Unknown
//! fields are rejected so a misspelt key fails loudly at load instead of being ignored.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// One flow template: the parameters it asks for, the connections it creates and the flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Kebab-case, unique in the gallery, equal to the file name without `.yaml`.
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The system the data comes from, as people name it (`GitHub`, `PostgreSQL`, `CSV files`).
    pub source_system: String,
    /// The system the data goes to.
    pub destination_system: String,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// Connections the import creates. A flow may also name the built-in `warehouse`, which is
    /// never created by a template.
    #[serde(default)]
    pub connections: Vec<ConnectionTemplate>,
    pub flow: FlowTemplate,
}

impl Template {
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }
}

/// The type a parameter's value must have; checked before anything is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Boolean,
    Duration,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
            ParamType::Duration => "duration",
        }
    }

    /// The value in canonical form, or a phrase saying what was expected.
    pub fn check(self, value: &str) -> Result<String, &'static str> {
        let v = value.trim();
        match self {
            ParamType::String => Ok(value.to_string()),
            ParamType::Integer => v
                .parse::<i64>()
                .map(|n| n.to_string())
                .map_err(|_| "an integer (a whole number such as 100)"),
            ParamType::Boolean => match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok("true".into()),
                "false" | "no" | "off" | "0" => Ok("false".into()),
                _ => Err("a boolean (true or false)"),
            },
            ParamType::Duration => etl_model::parse_duration(v)
                .map(|_| v.to_string())
                .ok_or("a duration (such as 30s, 5m or 1h)"),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn string_type() -> ParamType {
    ParamType::String
}

/// A value the person importing the template supplies, referenced as `{{name}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Snake_case; `name` itself is reserved (it names the imported flow).
    pub name: String,
    pub description: String,
    #[serde(rename = "type", default = "string_type")]
    pub kind: ParamType,
    /// Stored encrypted by the engine and never echoed back.
    #[serde(default)]
    pub secret: bool,
    /// Must be given when there is no default.
    #[serde(default)]
    pub required: bool,
    #[serde(
        default,
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<String>,
    /// A realistic value, shown to people and used by the gallery's own import test.
    #[serde(
        default,
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub example: Option<String>,
}

/// A connection the import creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionTemplate {
    /// The connection's name; a numeric suffix is added when the tenant already has it.
    pub name: String,
    /// A connector type: `http`, `file`, `sqlite`, `postgres`, `mysql`.
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default)]
    pub description: String,
    /// Property values, with `{{param}}` placeholders.
    #[serde(default, deserialize_with = "scalar_map")]
    pub properties: BTreeMap<String, String>,
}

/// The flow the import creates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowTemplate {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub source: SourceTemplate,
    pub destination: DestinationTemplate,
    /// `append` (default), `replace` or `merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// High-water-mark column for incremental runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<String>,
    #[serde(default)]
    pub mapping: MappingTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTemplate {
    /// A connection of this template, or `warehouse`.
    pub connection: String,
    #[serde(default)]
    pub object: String,
    /// `source.*` options, with `{{param}}` placeholders.
    #[serde(default, deserialize_with = "scalar_map")]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationTemplate {
    pub connection: String,
    pub target: String,
    /// `destination.*` options, with `{{param}}` placeholders.
    #[serde(default, deserialize_with = "scalar_map")]
    pub options: BTreeMap<String, String>,
}

/// Column changes, applied in the engine's order: filter, rename, exclude, constants, casts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// old name → new name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// column → value added to every row.
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub constants: BTreeMap<String, String>,
    /// column → type (`integer`, `float`, `boolean`, `text`, `date`, `timestamp`, `json`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub casts: BTreeMap<String, String>,
}

/// A YAML scalar of any kind read as text, so `page_size: 100` and `header: false` need no quotes.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a text, number or boolean value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn opt_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| s.0))
}

fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Scalar>>::deserialize(d)?.unwrap_or_default();
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Placeholders in `text`: `(start, end, name)` of each `{{name}}` (spaces inside allowed).
/// A `{{` without a closing `}}` is an error naming the text.
pub(crate) fn placeholders(text: &str) -> Result<Vec<(usize, usize, &str)>, String> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(open) = text[rest..].find("{{") {
        let start = rest + open;
        let Some(close) = text[start + 2..].find("}}") else {
            return Err(format!("'{text}' opens '{{{{' without closing '}}}}'"));
        };
        let end = start + 2 + close + 2;
        out.push((start, end, text[start + 2..end - 2].trim()));
        rest = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_placeholders() {
        let p = placeholders("/repos/{{owner}}/{{ repo }}/issues").unwrap();
        assert_eq!(
            p.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec!["owner", "repo"]
        );
        assert!(placeholders("x {{open").is_err());
        assert!(placeholders("no placeholders").unwrap().is_empty());
    }

    #[test]
    fn checks_parameter_types() {
        assert_eq!(ParamType::Integer.check(" 100 ").unwrap(), "100");
        assert!(ParamType::Integer.check("1e3").is_err());
        assert_eq!(ParamType::Boolean.check("Yes").unwrap(), "true");
        assert!(ParamType::Boolean.check("maybe").is_err());
        assert_eq!(ParamType::Duration.check("5m").unwrap(), "5m");
        assert!(ParamType::Duration.check("five minutes").is_err());
        assert_eq!(ParamType::String.check(" x ").unwrap(), " x ");
    }
}
