//! `get_connector_info`: the connector catalogue, or one connector's properties, straight from
//! the specs the engine validates with.

use async_trait::async_trait;
use etl_engine::host::Caller;
use etl_model::{ConnectorSpec, PropSpec};
use serde_json::{Value as Json, json};

use super::{Tool, ToolEnv, ToolOutcome};

pub struct GetConnectorInfo;

#[async_trait]
impl Tool for GetConnectorInfo {
    fn name(&self) -> &'static str {
        "get_connector_info"
    }
    fn description(&self) -> &'static str {
        "Describes the connector types (http, file, sqlite, postgres, mysql): without 'type' the catalogue and what each can do; with 'type' every connection property, source option and destination option with its type, default, whether it is required or secret, and an example."
    }
    fn parameters(&self) -> Json {
        json!({
            "type": "object",
            "properties": {"type": {"type": "string", "description": "A connector type, e.g. postgres. Omit for the catalogue."}},
            "additionalProperties": false
        })
    }
    fn agentic(&self) -> bool {
        false
    }
    async fn execute(&self, env: &ToolEnv, _caller: &Caller, args: &Json) -> ToolOutcome {
        let registry = env.host.engine().registry();
        match args
            .get("type")
            .and_then(Json::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            None => {
                let specs: Vec<&ConnectorSpec> = registry.specs().collect();
                let mut text = String::from("Connector types:\n");
                for s in &specs {
                    text.push_str(&format!(
                        "- {} ({}): {} [{}]\n",
                        s.type_name,
                        s.title,
                        s.description,
                        uses(s)
                    ));
                }
                text.push_str("Ask for one type to see its properties.");
                let data = json!({"connectors": specs.iter().map(|s| json!({"type": s.type_name, "title": s.title, "description": s.description, "can_read": s.can_read, "can_write": s.can_write})).collect::<Vec<_>>()});
                ToolOutcome::ok(text, data)
            }
            Some(name) => match registry.get(name) {
                Ok(c) => {
                    let spec = c.spec();
                    ToolOutcome::ok(
                        spec_text(spec),
                        serde_json::to_value(spec).expect("specs serialize"),
                    )
                }
                Err(e) => ToolOutcome::failed("tool_failed", e.message, Json::Null),
            },
        }
    }
}

fn uses(s: &ConnectorSpec) -> &'static str {
    match (s.can_read, s.can_write) {
        (true, true) => "source and destination",
        (true, false) => "source only",
        (false, true) => "destination only",
        _ => "",
    }
}

fn spec_text(spec: &ConnectorSpec) -> String {
    let mut out = format!(
        "{} ({}): {}\nUse: {}. Source object: {}. Destination object: {}.\n",
        spec.type_name,
        spec.title,
        spec.description,
        uses(spec),
        if spec.can_read {
            spec.source_object
        } else {
            "-"
        },
        if spec.can_write {
            spec.destination_object
        } else {
            "-"
        }
    );
    for (title, props) in [
        (
            "Connection properties (create connection NAME type=... PROPERTY=VALUE)",
            spec.connection,
        ),
        (
            "Source options (source.OPTION=VALUE on create flow)",
            spec.source,
        ),
        (
            "Destination options (destination.OPTION=VALUE on create flow)",
            spec.destination,
        ),
    ] {
        if props.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{title}:\n"));
        for p in props {
            out.push_str(&format!("- {}\n", prop_line(p)));
        }
    }
    out.trim_end().to_string()
}

fn prop_line(p: &PropSpec) -> String {
    let mut notes = vec![
        serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
    ];
    if p.required {
        notes.push("required".into());
    }
    if p.secret {
        notes.push("secret".into());
    }
    if let Some(d) = p.default {
        notes.push(format!("default {d}"));
    }
    if !p.choices.is_empty() {
        notes.push(format!("one of {}", p.choices.join("|")));
    }
    let example = if p.example.is_empty() {
        String::new()
    } else {
        format!(" Example: {}={}", p.name, p.example)
    };
    format!(
        "{} ({}): {}.{example}",
        p.name,
        notes.join(", "),
        p.description.trim_end_matches('.')
    )
}
