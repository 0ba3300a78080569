//! Connector specifications: which properties a connection, a flow source and a flow destination
//! of each type take. The engine validates with these, the CLI and `get_connector_info` show
//! them, and the docs test checks every one is documented, so there is one source of truth.

use serde::Serialize;

use crate::Props;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PropKind {
    String,
    Integer,
    Boolean,
    Duration,
    Enum,
}

#[derive(Clone, Debug, Serialize)]
pub struct PropSpec {
    /// The key; a name ending in `.*` is a family (`header.*` matches `header.X-Api-Key`).
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: PropKind,
    pub required: bool,
    pub secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub choices: &'static [&'static str],
    pub description: &'static str,
    pub example: &'static str,
}

impl PropSpec {
    pub const fn new(name: &'static str, kind: PropKind, description: &'static str) -> Self {
        PropSpec {
            name,
            kind,
            required: false,
            secret: false,
            default: None,
            choices: &[],
            description,
            example: "",
        }
    }
    pub const fn string(name: &'static str, description: &'static str) -> Self {
        Self::new(name, PropKind::String, description)
    }
    pub const fn integer(name: &'static str, description: &'static str) -> Self {
        Self::new(name, PropKind::Integer, description)
    }
    pub const fn boolean(name: &'static str, description: &'static str) -> Self {
        Self::new(name, PropKind::Boolean, description)
    }
    pub const fn duration(name: &'static str, description: &'static str) -> Self {
        Self::new(name, PropKind::Duration, description)
    }
    pub const fn choice(
        name: &'static str,
        choices: &'static [&'static str],
        description: &'static str,
    ) -> Self {
        let mut p = Self::new(name, PropKind::Enum, description);
        p.choices = choices;
        p
    }
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }
    pub const fn example(mut self, value: &'static str) -> Self {
        self.example = value;
        self
    }

    pub fn matches(&self, key: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix) && key.len() > prefix.len(),
            None => self.name == key,
        }
    }

    fn check(&self, key: &str, value: &str) -> Option<String> {
        let ok = match self.kind {
            PropKind::String => true,
            PropKind::Integer => value.trim().parse::<i64>().is_ok(),
            PropKind::Boolean => crate::value::parse_bool(value).is_some(),
            PropKind::Duration => crate::parse_duration(value).is_some(),
            PropKind::Enum => self
                .choices
                .iter()
                .any(|c| c.eq_ignore_ascii_case(value.trim())),
        };
        (!ok).then(|| match self.kind {
            PropKind::Enum => format!(
                "'{key}' must be one of {}, got '{value}'",
                self.choices.join(", ")
            ),
            PropKind::Integer => format!("'{key}' must be a whole number, got '{value}'"),
            PropKind::Boolean => format!("'{key}' must be true or false, got '{value}'"),
            PropKind::Duration => {
                format!("'{key}' must be a duration such as 30s, 5m or 1h, got '{value}'")
            }
            PropKind::String => unreachable!("strings always pass"),
        })
    }
}

/// Checks `props` against `specs`, reporting every problem at once: unknown keys (with the
/// nearest known one), missing required keys, values of the wrong type.
pub fn validate(specs: &[PropSpec], props: &Props) -> Vec<String> {
    let mut errors = Vec::new();
    for (key, value) in &props.0 {
        match specs.iter().find(|s| s.matches(key)) {
            None => {
                let hint = nearest(key, specs.iter().map(|s| s.name))
                    .map(|n| format!("; did you mean '{n}'?"))
                    .unwrap_or_else(|| {
                        format!(
                            "; known properties: {}",
                            specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                        )
                    });
                errors.push(format!("unknown property '{key}'{hint}"));
            }
            Some(spec) if !value.is_empty() => errors.extend(spec.check(key, value)),
            Some(_) => {}
        }
    }
    for spec in specs
        .iter()
        .filter(|s| s.required && !s.name.ends_with('*'))
    {
        if props.get(spec.name).is_none() {
            let eg = if spec.example.is_empty() {
                String::new()
            } else {
                format!(", e.g. {}={}", spec.name, quote(spec.example))
            };
            errors.push(format!(
                "missing required property '{}' ({}{eg})",
                spec.name, spec.description
            ));
        }
    }
    errors
}

fn quote(v: &str) -> String {
    if v.contains(char::is_whitespace) {
        format!("'{v}'")
    } else {
        v.to_string()
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c.trim_end_matches(".*")), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// What a connector type is and takes.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectorSpec {
    #[serde(rename = "type")]
    pub type_name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub can_read: bool,
    pub can_write: bool,
    /// What a flow names as the source object (a table, a file glob, an API path).
    pub source_object: &'static str,
    /// What a flow names as the destination object.
    pub destination_object: &'static str,
    pub connection: &'static [PropSpec],
    pub source: &'static [PropSpec],
    pub destination: &'static [PropSpec],
}

impl ConnectorSpec {
    pub fn validate_connection(&self, props: &Props) -> Vec<String> {
        validate(self.connection, props)
    }
    pub fn validate_source(&self, props: &Props) -> Vec<String> {
        validate(self.source, props)
    }
    pub fn validate_destination(&self, props: &Props) -> Vec<String> {
        validate(self.destination, props)
    }

    /// Whether a connection property holds a secret (encrypted at rest, shown as `***`).
    pub fn is_secret(&self, key: &str) -> bool {
        self.connection
            .iter()
            .chain(self.source)
            .chain(self.destination)
            .any(|s| s.secret && s.matches(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SPECS: &[PropSpec] = &[
        PropSpec::string("host", "server host name")
            .required()
            .example("db.example.com"),
        PropSpec::integer("port", "TCP port").default("5432"),
        PropSpec::string("header.*", "extra header"),
        PropSpec::choice("mode", &["append", "merge"], "write mode"),
    ];

    #[test]
    fn reports_every_problem_at_once() {
        let props: Props = [
            ("hots", "x"),
            ("port", "abc"),
            ("mode", "upsert"),
            ("header.X-A", "1"),
        ]
        .into_iter()
        .collect();
        let errs = validate(SPECS, &props);
        assert_eq!(
            errs,
            vec![
                "unknown property 'hots'; did you mean 'host'?",
                "'mode' must be one of append, merge, got 'upsert'",
                "'port' must be a whole number, got 'abc'",
                "missing required property 'host' (server host name, e.g. host=db.example.com)",
            ]
        );
    }
}
