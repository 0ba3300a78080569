//! Errors of the template gallery: each a sentence naming the template, parameter or step and
//! the fix, plus a stable code that front ends map to their own (HTTP status, exit code).

use etl_engine::EngineError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// A template file is malformed or inconsistent; every problem is listed.
    #[error("template {file} is invalid: {}", problems.join("; "))]
    Invalid { file: String, problems: Vec<String> },

    #[error("unknown template '{id}'; {}", suggest(suggestions))]
    UnknownTemplate {
        id: String,
        suggestions: Vec<String>,
    },

    #[error("template '{template}' has no parameter '{name}'; {}", hint_param(suggestion.as_deref(), known))]
    UnknownParameter {
        template: String,
        name: String,
        suggestion: Option<String>,
        known: Vec<String>,
    },

    #[error("parameter '{name}' must be {expected}, got '{value}'")]
    WrongParameterType {
        name: String,
        expected: String,
        value: String,
    },

    /// Required parameters without a value that the import cannot leave for later (they are
    /// part of the flow, or of a connection property the connector requires).
    #[error(
        "template '{template}' needs {}: {}; give them as parameters, e.g. import template {template} {}",
        if missing.len() == 1 { "a value for this parameter" } else { "values for these parameters" },
        missing.iter().map(|m| format!("{} ({})", m.name, m.description)).collect::<Vec<_>>().join(", "),
        missing.iter().map(|m| format!("{}={}", m.name, m.example)).collect::<Vec<_>>().join(" ")
    )]
    MissingParameters {
        template: String,
        missing: Vec<MissingValue>,
    },

    #[error(
        "'{name}' is not a valid flow name; use letters, digits, '_', '-' or '.' (at most 128 characters)"
    )]
    InvalidName { name: String },

    /// The engine refused a step; nothing the import created before it is kept.
    #[error("importing template '{template}' failed while {step}: {source}")]
    Engine {
        template: String,
        step: String,
        #[source]
        source: EngineError,
    },
}

/// A required parameter nobody gave, as shown in [`TemplateError::MissingParameters`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MissingValue {
    pub name: String,
    pub description: String,
    /// An example value (`<name>` when the template has none).
    pub example: String,
}

impl TemplateError {
    /// `invalid`, `not_found`, or the engine's code for engine failures.
    pub fn code(&self) -> &'static str {
        match self {
            TemplateError::UnknownTemplate { .. } => "not_found",
            TemplateError::Engine { source, .. } => source.code,
            _ => "invalid",
        }
    }
}

fn suggest(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        "try 'search templates' with a few words about the source and destination".into()
    } else {
        format!(
            "did you mean {}? ('search templates' lists more)",
            suggestions
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn hint_param(suggestion: Option<&str>, known: &[String]) -> String {
    match suggestion {
        Some(s) => format!("did you mean '{s}'? (parameters: {})", known.join(", ")),
        None if known.is_empty() => "it takes no parameters".into(),
        None => format!("its parameters are {}", known.join(", ")),
    }
}
