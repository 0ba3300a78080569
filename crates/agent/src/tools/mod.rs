//! The tool registry: what `GET /tools` lists and `POST /tools/{name}/execute` runs, and what a
//! model may call. Every tool declares a JSON Schema for its arguments and whether it is
//! *agentic* (changes state on the host: metered, refused for read-only callers).

mod connectors;
mod diagnose;
mod host;
mod library;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use etl_engine::host::{Caller, Host, Role};
use serde::Serialize;
use serde_json::{Value as Json, json};

use crate::library::Library;

pub use diagnose::{Diagnosis, diagnose};

/// What a tool answers. `result` is text for a person or a model; `data` the same as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct ToolOutcome {
    pub success: bool,
    pub result: String,
    pub data: Json,
    /// Machine code of a failure (`tool_failed`, `invalid_arguments`, `forbidden`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ToolOutcome {
    pub fn ok(result: impl Into<String>, data: Json) -> Self {
        ToolOutcome {
            success: true,
            result: result.into(),
            data,
            code: None,
        }
    }
    pub fn failed(code: &str, result: impl Into<String>, data: Json) -> Self {
        ToolOutcome {
            success: false,
            result: result.into(),
            data,
            code: Some(code.to_string()),
        }
    }
}

/// A tool's outcome with its timing, as the API reports it.
#[derive(Clone, Debug)]
pub struct Execution {
    pub outcome: ToolOutcome,
    pub duration_ms: u64,
}

/// What every tool can reach.
#[derive(Clone)]
pub struct ToolEnv {
    pub host: Host,
    pub library: Arc<Library>,
}

#[async_trait]
pub trait Tool: Send + Sync {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    /// JSON Schema of the arguments object.
    fn parameters(&self) -> Json;
    /// Changes state on the host.
    fn agentic(&self) -> bool;
    async fn execute(&self, env: &ToolEnv, caller: &Caller, args: &Json) -> ToolOutcome;
}

/// Why a call did not reach the tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    UnknownTool(String),
    InvalidArguments(String),
    Forbidden(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::UnknownTool(m)
            | CallError::InvalidArguments(m)
            | CallError::Forbidden(m) => f.write_str(m),
        }
    }
}

#[derive(Clone)]
pub struct ToolRegistry {
    tools: Vec<Arc<dyn Tool>>,
    env: ToolEnv,
}

impl ToolRegistry {
    /// The registry with the tools this build offers over `env`.
    pub fn new(env: ToolEnv, extra: Vec<Arc<dyn Tool>>) -> ToolRegistry {
        let mut tools: Vec<Arc<dyn Tool>> = vec![
            Arc::new(library::SearchKnowledgeBase),
            Arc::new(host::HostListCommands),
            Arc::new(host::HostCli),
            Arc::new(library::SearchTemplates),
            Arc::new(library::ImportTemplate),
            Arc::new(connectors::GetConnectorInfo),
            Arc::new(diagnose::DiagnoseFlow),
        ];
        tools.extend(extra);
        ToolRegistry { tools, env }
    }

    pub fn tools(&self) -> &[Arc<dyn Tool>] {
        &self.tools
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// The catalogue as `GET /tools` lists it.
    pub fn describe(&self) -> Vec<Json> {
        self.tools
            .iter()
            .map(|t| json!({"name": t.name(), "description": t.description(), "parameters": t.parameters(), "agentic": t.agentic()}))
            .collect()
    }

    /// Checks the call (tool exists, caller may use it, arguments fit the schema) and runs it.
    pub async fn call(
        &self,
        caller: &Caller,
        name: &str,
        args: &Json,
    ) -> Result<Execution, CallError> {
        let tool = self.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.tools.iter().map(|t| t.name()).collect();
            CallError::UnknownTool(format!(
                "unknown tool '{name}'; the tools are: {}",
                names.join(", ")
            ))
        })?;
        if tool.agentic() && caller.role == Role::Readonly {
            return Err(CallError::Forbidden(format!(
                "'{name}' changes state and this key is read-only; use a key with the user or admin role"
            )));
        }
        check_arguments(&tool.parameters(), args).map_err(CallError::InvalidArguments)?;
        let started = Instant::now();
        let outcome = tool.execute(&self.env, caller, args).await;
        Ok(Execution {
            outcome,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// Validates arguments against the small JSON Schema subset the tools use: an object with typed
/// properties, `required`, and no others. The message names the field.
pub fn check_arguments(schema: &Json, args: &Json) -> Result<(), String> {
    let Some(obj) = args.as_object() else {
        return Err(format!(
            "arguments must be a JSON object, got {}",
            type_name(args)
        ));
    };
    let props = schema
        .get("properties")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    for req in schema
        .get("required")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let key = req.as_str().unwrap_or_default();
        if obj.get(key).is_none_or(Json::is_null) {
            return Err(format!("missing required argument '{key}'"));
        }
    }
    for (key, value) in obj {
        let Some(spec) = props.get(key) else {
            let known: Vec<&str> = props.keys().map(String::as_str).collect();
            return Err(if known.is_empty() {
                format!("unknown argument '{key}'; this tool takes no arguments")
            } else {
                format!(
                    "unknown argument '{key}'; known arguments: {}",
                    known.join(", ")
                )
            });
        };
        if value.is_null() {
            continue;
        }
        let want = spec.get("type").and_then(Json::as_str).unwrap_or("");
        let ok = match want {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            _ => true,
        };
        if !ok {
            return Err(format!(
                "argument '{key}' must be {}, got {}",
                article(want),
                type_name(value)
            ));
        }
        if let (Some(min), Some(n)) = (spec.get("minimum").and_then(Json::as_i64), value.as_i64())
            && n < min
        {
            return Err(format!("argument '{key}' must be at least {min}, got {n}"));
        }
        if let (Some(max), Some(n)) = (spec.get("maximum").and_then(Json::as_i64), value.as_i64())
            && n > max
        {
            return Err(format!("argument '{key}' must be at most {max}, got {n}"));
        }
        if let (Some(max), Some(s)) = (spec.get("maxLength").and_then(Json::as_u64), value.as_str())
            && s.chars().count() as u64 > max
        {
            return Err(format!(
                "argument '{key}' must be at most {max} characters long"
            ));
        }
        if let Some(s) = value.as_str()
            && spec
                .get("minLength")
                .and_then(Json::as_u64)
                .is_some_and(|min| (s.trim().chars().count() as u64) < min)
        {
            return Err(format!("argument '{key}' must not be empty"));
        }
    }
    Ok(())
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn article(t: &str) -> String {
    match t {
        "integer" | "object" | "array" => format!("an {t}"),
        other => format!("a {other}"),
    }
}

/// The caller the tools run as when invoked on behalf of an API key or the agent.
pub fn agent_caller(tenant: &str, user: &str, role: Role) -> Caller {
    Caller {
        tenant: tenant.to_string(),
        user: user.to_string(),
        role,
        trigger: etl_engine::RunTrigger::Agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_checks_name_the_field() {
        let schema = json!({"type": "object", "properties": {"query": {"type": "string", "minLength": 1}, "limit": {"type": "integer", "minimum": 1, "maximum": 50}}, "required": ["query"]});
        assert_eq!(check_arguments(&schema, &json!({"query": "x"})), Ok(()));
        assert_eq!(
            check_arguments(&schema, &json!({})).unwrap_err(),
            "missing required argument 'query'"
        );
        assert_eq!(
            check_arguments(&schema, &json!({"query": 5})).unwrap_err(),
            "argument 'query' must be a string, got a number"
        );
        assert_eq!(
            check_arguments(&schema, &json!({"query": "x", "limit": 0})).unwrap_err(),
            "argument 'limit' must be at least 1, got 0"
        );
        assert_eq!(
            check_arguments(&schema, &json!({"query": "  "})).unwrap_err(),
            "argument 'query' must not be empty"
        );
        assert_eq!(
            check_arguments(&schema, &json!({"query": "x", "lim": 1})).unwrap_err(),
            "unknown argument 'lim'; known arguments: query, limit"
        );
        assert_eq!(
            check_arguments(&schema, &json!([1])).unwrap_err(),
            "arguments must be a JSON object, got an array"
        );
    }
}
