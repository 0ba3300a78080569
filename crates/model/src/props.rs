//! String-valued properties with typed, error-reporting accessors.
//!
//! Properties arrive as text from the host language, the API and templates; each connector's
//! [`crate::ConnectorSpec`] says which exist and what they hold. Accessors turn a bad value into
//! a [`ConnectorError`] naming the property and what it expects.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConnectorError;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Props(pub BTreeMap<String, String>);

impl Props {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// The value, treating an empty string as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    pub fn required(&self, key: &str) -> Result<&str, ConnectorError> {
        self.get(key)
            .ok_or_else(|| ConnectorError::config(format!("missing required property '{key}'")))
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ConnectorError> {
        self.get(key)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    ConnectorError::config(format!(
                        "property '{key}' must be a whole number, got '{v}'"
                    ))
                })
            })
            .transpose()
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64, ConnectorError> {
        Ok(self.u64(key)?.unwrap_or(default))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConnectorError> {
        self.get(key)
            .map(|v| {
                crate::value::parse_bool(v).ok_or_else(|| {
                    ConnectorError::config(format!(
                        "property '{key}' must be true or false, got '{v}'"
                    ))
                })
            })
            .transpose()
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConnectorError> {
        Ok(self.bool(key)?.unwrap_or(default))
    }

    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConnectorError> {
        self.get(key)
            .map(|v| {
                parse_duration(v).ok_or_else(|| {
                    ConnectorError::config(format!(
                        "property '{key}' must be a duration such as 30s, 5m or 1h, got '{v}'"
                    ))
                })
            })
            .transpose()
    }

    /// One of the listed choices (case-insensitive), or the default when absent.
    pub fn choice<'a>(
        &self,
        key: &str,
        choices: &[&'a str],
        default: &'a str,
    ) -> Result<&'a str, ConnectorError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(v.trim()))
                .copied()
                .ok_or_else(|| {
                    ConnectorError::config(format!(
                        "property '{key}' must be one of {}, got '{v}'",
                        choices.join(", ")
                    ))
                }),
        }
    }

    /// Entries whose key starts with `prefix`, with the prefix removed (`header.X-Id` → `X-Id`).
    pub fn prefixed<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .iter()
            .filter_map(move |(k, v)| k.strip_prefix(prefix).map(|rest| (rest, v.as_str())))
    }

    /// A comma-separated list, trimmed, empty items dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Props {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Props(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Parses `500ms`, `30s`, `15m`, `1h`, `2d`, `1h30m`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => Duration::from_secs(n * 60),
            "h" | "hr" | "hour" | "hours" => Duration::from_secs(n * 3600),
            "d" | "day" | "days" => Duration::from_secs(n * 86_400),
            _ => return None,
        };
        total += d;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn typed_accessors_name_the_property() {
        let p: Props = [("port", "abc"), ("mode", "MERGE")].into_iter().collect();
        assert_eq!(
            p.u64("port").unwrap_err().message,
            "property 'port' must be a whole number, got 'abc'"
        );
        assert_eq!(
            p.choice("mode", &["append", "merge"], "append").unwrap(),
            "merge"
        );
        assert!(p.required("host").unwrap_err().message.contains("'host'"));
    }
}
