//! A single cell value and the column types inferred from values.

use std::cmp::Ordering;
use std::fmt;

/// One cell. Deliberately small: every system we read is mapped onto these five shapes, and
/// destinations infer their column types from them (see [`ColumnType::infer`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as text, as it would be written to a CSV file (`None` for null).
    pub fn as_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Value::Null => None,
            Value::Text(s) => Some(std::borrow::Cow::Borrowed(s)),
            other => Some(std::borrow::Cow::Owned(other.to_string())),
        }
    }

    /// From a JSON scalar. Objects and arrays become their JSON text.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(f) = n.as_f64() {
                    Value::Float(f)
                } else {
                    Value::Text(n.to_string())
                }
            }
            serde_json::Value::String(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => serde_json::Value::String(s.clone()),
        }
    }

    /// Numeric view used by comparisons and casts: ints, floats and numeric text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Text(s) => s.trim().parse().ok(),
            Value::Null => None,
        }
    }

    /// Ordering across shapes: numbers compare numerically (numeric text included), otherwise
    /// text order. ISO-8601 timestamps therefore compare correctly as text. Null sorts first.
    pub fn compare(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Less,
            (_, Value::Null) => Ordering::Greater,
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                _ => a.cmp(b),
            },
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                _ => a.to_string().cmp(&b.to_string()),
            },
        }
    }

    /// Convert to the given column type; `Err` names what could not be converted.
    pub fn cast(&self, to: ColumnType) -> Result<Value, String> {
        if self.is_null() {
            return Ok(Value::Null);
        }
        let fail = || format!("cannot cast {} to {}", self.describe(), to.name());
        Ok(match to {
            ColumnType::Text | ColumnType::Json | ColumnType::Timestamp | ColumnType::Date => {
                match self {
                    Value::Text(_) => self.clone(),
                    other => Value::Text(other.to_string()),
                }
            }
            ColumnType::Integer => match self {
                Value::Int(i) => Value::Int(*i),
                Value::Float(f) if f.fract() == 0.0 => Value::Int(*f as i64),
                Value::Bool(b) => Value::Int(*b as i64),
                Value::Text(s) => Value::Int(s.trim().parse().map_err(|_| fail())?),
                _ => return Err(fail()),
            },
            ColumnType::Float => Value::Float(self.as_f64().ok_or_else(fail)?),
            ColumnType::Boolean => match self {
                Value::Bool(b) => Value::Bool(*b),
                Value::Int(i) => Value::Bool(*i != 0),
                Value::Text(s) => Value::Bool(parse_bool(s).ok_or_else(fail)?),
                _ => return Err(fail()),
            },
        })
    }

    fn describe(&self) -> String {
        match self {
            Value::Text(s) => format!("'{s}'"),
            other => other.to_string(),
        }
    }
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "on" => Some(true),
        "false" | "f" | "no" | "n" | "0" | "off" => Some(false),
        _ => None,
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// The column types a destination creates. Inferred from data, or given by a `cast` mapping.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Boolean,
    Integer,
    Float,
    Date,
    Timestamp,
    Json,
    Text,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
            ColumnType::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Option<ColumnType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "bool" | "boolean" => ColumnType::Boolean,
            "int" | "integer" | "bigint" | "long" => ColumnType::Integer,
            "float" | "double" | "real" | "number" | "numeric" | "decimal" => ColumnType::Float,
            "date" => ColumnType::Date,
            "timestamp" | "datetime" => ColumnType::Timestamp,
            "json" => ColumnType::Json,
            "text" | "string" | "varchar" => ColumnType::Text,
            _ => return None,
        })
    }

    /// The narrowest type that holds this one value, or `None` for null.
    pub fn of(value: &Value) -> Option<ColumnType> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => ColumnType::Boolean,
            Value::Int(_) => ColumnType::Integer,
            Value::Float(_) => ColumnType::Float,
            Value::Text(s) => infer_text(s),
        })
    }

    /// The narrowest type that holds every value; text when values disagree, `None` when all
    /// are null.
    pub fn infer<'a>(values: impl IntoIterator<Item = &'a Value>) -> Option<ColumnType> {
        values
            .into_iter()
            .filter_map(ColumnType::of)
            .reduce(ColumnType::widen)
    }

    /// The smallest type that holds both.
    pub fn widen(self, other: ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Integer, Float) | (Float, Integer) => Float,
            (Date, Timestamp) | (Timestamp, Date) => Timestamp,
            _ => Text,
        }
    }
}

/// Text that looks like a number, boolean, date or timestamp is typed as such; anything with a
/// leading zero ("00123", a zip code) stays text so nothing is lost.
fn infer_text(s: &str) -> ColumnType {
    let t = s.trim();
    if t.is_empty() || t.len() != s.len() {
        return ColumnType::Text;
    }
    let digits = t.strip_prefix('-').unwrap_or(t);
    let leading_zero = digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.");
    if !leading_zero && digits.bytes().all(|b| b.is_ascii_digit()) && t.parse::<i64>().is_ok() {
        return ColumnType::Integer;
    }
    if !leading_zero
        && digits.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && digits.bytes().all(|b| {
            b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'-' || b == b'+'
        })
        && t.parse::<f64>().is_ok_and(f64::is_finite)
    {
        return ColumnType::Float;
    }
    if matches!(t, "true" | "false" | "TRUE" | "FALSE" | "True" | "False") {
        return ColumnType::Boolean;
    }
    if looks_like_date(t) {
        return ColumnType::Date;
    }
    if looks_like_timestamp(t) {
        return ColumnType::Timestamp;
    }
    ColumnType::Text
}

fn looks_like_date(t: &str) -> bool {
    t.len() == 10 && chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok()
}

fn looks_like_timestamp(t: &str) -> bool {
    if t.len() < 19 || !looks_like_date(&t[..10]) {
        return false;
    }
    chrono::DateTime::parse_from_rfc3339(t).is_ok()
        || chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        || chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_narrowest_type() {
        let v = |s: &str| Value::Text(s.into());
        assert_eq!(
            ColumnType::infer(&[v("1"), v("22")]),
            Some(ColumnType::Integer)
        );
        assert_eq!(
            ColumnType::infer(&[v("1"), v("2.5")]),
            Some(ColumnType::Float)
        );
        assert_eq!(ColumnType::infer(&[v("00123")]), Some(ColumnType::Text));
        assert_eq!(ColumnType::infer(&[v("0.5")]), Some(ColumnType::Float));
        assert_eq!(
            ColumnType::infer(&[v("2024-01-02")]),
            Some(ColumnType::Date)
        );
        assert_eq!(
            ColumnType::infer(&[v("2024-01-02"), v("2024-01-02T10:00:00Z")]),
            Some(ColumnType::Timestamp)
        );
        assert_eq!(ColumnType::infer(&[v("1"), v("x")]), Some(ColumnType::Text));
        assert_eq!(ColumnType::infer(&[Value::Null]), None);
        assert_eq!(ColumnType::infer(&[v("1e5")]), Some(ColumnType::Float));
        assert_eq!(ColumnType::infer(&[v("e5")]), Some(ColumnType::Text));
        assert_eq!(ColumnType::infer(&[v(" 1")]), Some(ColumnType::Text));
    }

    #[test]
    fn compares_across_shapes() {
        assert_eq!(
            Value::Int(2).compare(&Value::Text("10".into())),
            Ordering::Less
        );
        assert_eq!(
            Value::Text("2024-01-02".into()).compare(&Value::Text("2024-01-10".into())),
            Ordering::Less
        );
        assert_eq!(Value::Null.compare(&Value::Int(0)), Ordering::Less);
    }

    #[test]
    fn casts_or_says_why_not() {
        assert_eq!(
            Value::from("42").cast(ColumnType::Integer),
            Ok(Value::Int(42))
        );
        assert_eq!(
            Value::from("abc").cast(ColumnType::Integer),
            Err("cannot cast 'abc' to integer".to_string())
        );
        assert_eq!(
            Value::from("yes").cast(ColumnType::Boolean),
            Ok(Value::Bool(true))
        );
    }
}
