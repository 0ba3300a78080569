//! Database rows to engine values. Each column gets a decoding plan once (from its type), then
//! every row is decoded by that plan: integers, floats, booleans and text map directly; dates and
//! timestamps become ISO-8601 text, JSON and UUIDs their text, bytes base64, NUMERIC/DECIMAL an
//! integer, a float or exact text (see [`numeric`]).

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use etl_model::Value;
use sqlx::mysql::MySqlRow;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// How one column's values are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Int2,
    Int4,
    Int,
    UInt,
    Float4,
    Float8,
    /// Decimal digits as text, turned into a number by [`numeric`].
    Numeric,
    Text,
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    Uuid,
    Json,
    /// SQLite: typed per value; `true` when the column is declared BOOLEAN.
    Dynamic(bool),
    /// A type this crate cannot decode from the binary protocol.
    Unsupported,
}

/// NUMERIC/DECIMAL text to a value: a whole number that fits 64 bits is an integer; a value
/// with at most 15 significant digits is a float (it survives the round trip through f64
/// exactly); anything longer stays text with its exact digits, so no precision is lost.
pub(crate) fn numeric(s: &str) -> Value {
    let t = s.trim();
    if !t.contains(['.', 'e', 'E'])
        && let Ok(i) = t.parse::<i64>()
    {
        return Value::Int(i);
    }
    let digits = t
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|b| *b == b'0')
        .count();
    let significant = {
        // Trailing zeros after the point are not significant ("12.50" has 3).
        let mantissa = t.split(['e', 'E']).next().unwrap_or("");
        if mantissa.contains('.') {
            digits - mantissa.bytes().rev().take_while(|b| *b == b'0').count()
        } else {
            digits
        }
    };
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() && significant <= 15 => Value::Float(f),
        _ => Value::Text(t.to_string()),
    }
}

/// f32 widened without binary noise (0.1f32 stays 0.1, not 0.10000000149011612).
fn widen(f: f32) -> f64 {
    f.to_string().parse().unwrap_or(f as f64)
}

fn iso_naive(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

fn iso_utc(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// PostgreSQL: the plan for a type, by the name the server reports. Types outside the list
/// are read as text by casting in SQL (see [`pg_needs_text_cast`]).
pub(crate) fn pg_kind(type_name: &str) -> Kind {
    match type_name {
        "BOOL" => Kind::Bool,
        "INT2" => Kind::Int2,
        "INT4" => Kind::Int4,
        "INT8" => Kind::Int,
        "FLOAT4" => Kind::Float4,
        "FLOAT8" => Kind::Float8,
        "NUMERIC" => Kind::Numeric,
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Kind::Text,
        "BYTEA" => Kind::Bytes,
        "DATE" => Kind::Date,
        "TIMESTAMP" => Kind::Timestamp,
        "TIMESTAMPTZ" => Kind::TimestampTz,
        "UUID" => Kind::Uuid,
        "JSON" | "JSONB" => Kind::Json,
        _ => Kind::Unsupported,
    }
}

/// Whether a PostgreSQL column is read as `::text` rather than decoded natively: NUMERIC (any
/// precision, NaN), JSON (the server's own text), and every type without a native plan
/// (intervals, arrays, enums, network types, ...), which then arrive in PostgreSQL's text form.
pub(crate) fn pg_needs_text_cast(type_name: &str) -> bool {
    matches!(
        pg_kind(type_name),
        Kind::Numeric | Kind::Json | Kind::Unsupported
    )
}

/// The plan for a PostgreSQL column after [`pg_needs_text_cast`] columns were cast to text.
pub(crate) fn pg_cast_kind(type_name: &str) -> Kind {
    match pg_kind(type_name) {
        Kind::Json | Kind::Unsupported => Kind::Text,
        k => k,
    }
}

/// MySQL/MariaDB: the plan for a type, by the name sqlx reports.
pub(crate) fn mysql_kind(type_name: &str) -> Kind {
    match type_name {
        "BOOLEAN" => Kind::Bool,
        "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" | "YEAR" => Kind::Int,
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED" | "MEDIUMINT UNSIGNED"
        | "BIGINT UNSIGNED" | "BIT" => Kind::UInt,
        "FLOAT" => Kind::Float4,
        "DOUBLE" => Kind::Float8,
        "DECIMAL" => Kind::Numeric,
        "DATE" => Kind::Date,
        "DATETIME" => Kind::Timestamp,
        "TIMESTAMP" => Kind::TimestampTz,
        "TIME" => Kind::Time,
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY" => {
            Kind::Bytes
        }
        "NULL" => Kind::Dynamic(false),
        _ => Kind::Text,
    }
}

/// Decoding failure for one cell, naming the column and its type.
fn cell_error(column: &str, type_name: &str, e: impl std::fmt::Display) -> String {
    format!(
        "column '{column}' ({type_name}) holds a value that cannot be read: {e}; cast it to text in a query (source.query) to read it"
    )
}

pub(crate) fn pg_plan(row: &PgRow) -> Vec<Kind> {
    row.columns()
        .iter()
        .map(|c| pg_kind(c.type_info().name()))
        .collect()
}

pub(crate) fn decode_pg(row: &PgRow, plan: &[Kind]) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(plan.len());
    for (i, kind) in plan.iter().enumerate() {
        let fail = |e: sqlx::Error| {
            let c = &row.columns()[i];
            cell_error(c.name(), c.type_info().name(), e)
        };
        let v = match kind {
            Kind::Bool => row
                .try_get::<Option<bool>, _>(i)
                .map_err(fail)?
                .map(Value::Bool),
            Kind::Int2 => row
                .try_get::<Option<i16>, _>(i)
                .map_err(fail)?
                .map(|v| Value::Int(v.into())),
            Kind::Int4 => row
                .try_get::<Option<i32>, _>(i)
                .map_err(fail)?
                .map(|v| Value::Int(v.into())),
            Kind::Int | Kind::UInt => row
                .try_get::<Option<i64>, _>(i)
                .map_err(fail)?
                .map(Value::Int),
            Kind::Float4 => row
                .try_get::<Option<f32>, _>(i)
                .map_err(fail)?
                .map(|f| Value::Float(widen(f))),
            Kind::Float8 => row
                .try_get::<Option<f64>, _>(i)
                .map_err(fail)?
                .map(Value::Float),
            Kind::Numeric => match row.try_get_unchecked::<Option<String>, _>(i) {
                // Read path: the SQL cast it to text.
                Ok(s) if row.columns()[i].type_info().name() == "TEXT" => s.map(|s| numeric(&s)),
                _ => row
                    .try_get::<Option<rust_decimal::Decimal>, _>(i)
                    .map_err(fail)?
                    .map(|d| numeric(&d.to_string())),
            },
            Kind::Text => row
                .try_get::<Option<String>, _>(i)
                .map_err(fail)?
                .map(Value::Text),
            Kind::Bytes => row
                .try_get::<Option<Vec<u8>>, _>(i)
                .map_err(fail)?
                .map(|b| Value::Text(b64(&b))),
            Kind::Date => row
                .try_get::<Option<NaiveDate>, _>(i)
                .map_err(fail)?
                .map(|d| Value::Text(d.to_string())),
            Kind::Timestamp => row
                .try_get::<Option<NaiveDateTime>, _>(i)
                .map_err(fail)?
                .map(|t| Value::Text(iso_naive(&t))),
            Kind::TimestampTz => row
                .try_get::<Option<DateTime<Utc>>, _>(i)
                .map_err(fail)?
                .map(|t| Value::Text(iso_utc(&t))),
            Kind::Uuid => row
                .try_get::<Option<uuid::Uuid>, _>(i)
                .map_err(fail)?
                .map(|u| Value::Text(u.to_string())),
            Kind::Json => row
                .try_get::<Option<serde_json::Value>, _>(i)
                .map_err(fail)?
                .map(|j| Value::Text(j.to_string())),
            Kind::Time | Kind::Dynamic(_) | Kind::Unsupported => {
                let c = &row.columns()[i];
                if row.try_get_raw(i).map(|r| r.is_null()).unwrap_or(false) {
                    None
                } else {
                    return Err(format!(
                        "column '{}' has type {}, which can only be returned by a SELECT; cast it (::text) or use a SELECT",
                        c.name(),
                        c.type_info().name()
                    ));
                }
            }
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(out)
}

pub(crate) fn mysql_plan(row: &MySqlRow) -> Vec<Kind> {
    row.columns()
        .iter()
        .map(|c| match mysql_kind(c.type_info().name()) {
            // Text with a binary collation (utf8mb4_bin, MariaDB's JSON) carries the same
            // BINARY flag as real bytes; only the collation tells them apart.
            Kind::Bytes if <str as sqlx::Type<sqlx::MySql>>::compatible(c.type_info()) => {
                Kind::Text
            }
            k => k,
        })
        .collect()
}

pub(crate) fn decode_mysql(row: &MySqlRow, plan: &[Kind]) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(plan.len());
    for (i, kind) in plan.iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
        if raw.is_null() {
            out.push(Value::Null);
            continue;
        }
        let fail = |e: sqlx::Error| {
            let c = &row.columns()[i];
            cell_error(c.name(), c.type_info().name(), e)
        };
        let v = match kind {
            Kind::Bool => Value::Bool(row.try_get_unchecked::<i64, _>(i).map_err(fail)? != 0),
            Kind::Int | Kind::Int2 | Kind::Int4 => {
                Value::Int(row.try_get_unchecked::<i64, _>(i).map_err(fail)?)
            }
            Kind::UInt => {
                let u = row.try_get_unchecked::<u64, _>(i).map_err(fail)?;
                i64::try_from(u)
                    .map(Value::Int)
                    .unwrap_or_else(|_| Value::Text(u.to_string()))
            }
            Kind::Float4 => Value::Float(widen(row.try_get::<f32, _>(i).map_err(fail)?)),
            Kind::Float8 => Value::Float(row.try_get::<f64, _>(i).map_err(fail)?),
            Kind::Numeric => numeric(row.try_get_unchecked::<&str, _>(i).map_err(fail)?),
            // Zero dates ('0000-00-00') have no calendar value; they read as null.
            Kind::Date => match row.try_get::<NaiveDate, _>(i) {
                Ok(d) => Value::Text(d.to_string()),
                Err(_) => Value::Null,
            },
            Kind::Timestamp => match row.try_get::<NaiveDateTime, _>(i) {
                Ok(t) => Value::Text(iso_naive(&t)),
                Err(_) => Value::Null,
            },
            Kind::TimestampTz => match row.try_get::<DateTime<Utc>, _>(i) {
                Ok(t) => Value::Text(iso_utc(&t)),
                Err(_) => Value::Null,
            },
            Kind::Time => Value::Text(
                row.try_get::<sqlx::mysql::types::MySqlTime, _>(i)
                    .map_err(fail)?
                    .to_string(),
            ),
            Kind::Bytes => Value::Text(b64(row.try_get_unchecked::<&[u8], _>(i).map_err(fail)?)),
            _ => Value::Text(row.try_get_unchecked::<String, _>(i).map_err(fail)?),
        };
        out.push(v);
    }
    Ok(out)
}

pub(crate) fn sqlite_plan(row: &SqliteRow) -> Vec<Kind> {
    row.columns()
        .iter()
        .map(|c| Kind::Dynamic(c.type_info().name() == "BOOLEAN"))
        .collect()
}

pub(crate) fn decode_sqlite(row: &SqliteRow, plan: &[Kind]) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(plan.len());
    for (i, kind) in plan.iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
        if raw.is_null() {
            out.push(Value::Null);
            continue;
        }
        let storage = raw.type_info().name().to_string();
        let fail = |e: sqlx::Error| cell_error(row.columns()[i].name(), &storage, e);
        let v = match storage.as_str() {
            "INTEGER" | "BOOLEAN" => {
                let n = row.try_get_unchecked::<i64, _>(i).map_err(fail)?;
                if *kind == Kind::Dynamic(true) {
                    Value::Bool(n != 0)
                } else {
                    Value::Int(n)
                }
            }
            "REAL" => Value::Float(row.try_get_unchecked::<f64, _>(i).map_err(fail)?),
            "BLOB" => Value::Text(b64(&row
                .try_get_unchecked::<Vec<u8>, _>(i)
                .map_err(fail)?)),
            _ => Value::Text(row.try_get_unchecked::<String, _>(i).map_err(fail)?),
        };
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_keeps_precision() {
        assert_eq!(numeric("42"), Value::Int(42));
        assert_eq!(numeric("12.50"), Value::Float(12.5));
        assert_eq!(numeric("-0.001"), Value::Float(-0.001));
        assert_eq!(
            numeric("12345678901234567.89"),
            Value::Text("12345678901234567.89".into())
        );
        assert_eq!(
            numeric("123456789012345678901234567890"),
            Value::Text("123456789012345678901234567890".into())
        );
        assert_eq!(numeric("NaN"), Value::Text("NaN".into()));
        assert_eq!(
            numeric("999999999999999.9"),
            Value::Text("999999999999999.9".into())
        );
        assert_eq!(numeric("99999999999999.9"), Value::Float(99999999999999.9));
    }

    #[test]
    fn widens_floats_without_noise() {
        assert_eq!(widen(0.1), 0.1);
    }
}
