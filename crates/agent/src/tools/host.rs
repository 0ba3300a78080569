//! `host_list_commands` and `host_cli`: the host CLI language as tools.

use async_trait::async_trait;
use etl_engine::host::catalogue::COMMANDS;
use etl_engine::host::{Caller, Host, Role};
use serde_json::{Value as Json, json};

use super::{Tool, ToolEnv, ToolOutcome};

/// The longest script `host_cli` accepts.
const MAX_COMMAND: usize = 100_000;

pub struct HostListCommands;

#[async_trait]
impl Tool for HostListCommands {
    fn name(&self) -> &'static str {
        "host_list_commands"
    }
    fn description(&self) -> &'static str {
        "Lists the host CLI commands (name, synopsis, description, and whether each changes state) that host_cli runs."
    }
    fn parameters(&self) -> Json {
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    }
    fn agentic(&self) -> bool {
        false
    }
    async fn execute(&self, _env: &ToolEnv, _caller: &Caller, _args: &Json) -> ToolOutcome {
        let mut text = String::from("Host CLI commands (statements separated by ';'):\n");
        for c in COMMANDS {
            text.push_str(&format!(
                "- {}{}: {}\n",
                c.synopsis,
                if c.mutating { " [changes state]" } else { "" },
                c.description
            ));
        }
        let data = json!({"commands": COMMANDS, "count": COMMANDS.len()});
        ToolOutcome::ok(text.trim_end(), data)
    }
}

pub struct HostCli;

#[async_trait]
impl Tool for HostCli {
    fn name(&self) -> &'static str {
        "host_cli"
    }
    fn description(&self) -> &'static str {
        "Runs host CLI statements (separated by ';') against the data-integration engine: connections, flows, runs, schedules, queries. Example: \"create connection crm type=http url=https://api.example.com; list connections\". See host_list_commands for the catalogue."
    }
    fn parameters(&self) -> Json {
        json!({
            "type": "object",
            "properties": {"command": {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND, "description": "One or more host CLI statements separated by ';'."}},
            "required": ["command"],
            "additionalProperties": false
        })
    }
    fn agentic(&self) -> bool {
        true
    }
    async fn execute(&self, env: &ToolEnv, caller: &Caller, args: &Json) -> ToolOutcome {
        let command = args
            .get("command")
            .and_then(Json::as_str)
            .unwrap_or_default();
        run_script(&env.host, caller, command).await
    }
}

/// Runs a script and shapes its outcomes as a tool answer: the readable text, and the JSON of
/// each statement (`{"statement", "ok", "data"|"error"}`).
pub async fn run_script(host: &Host, caller: &Caller, script: &str) -> ToolOutcome {
    let outcomes = host.run(caller, script).await;
    let text = Host::render(&outcomes);
    let results: Vec<Json> = outcomes
        .iter()
        .map(|o| {
            let mut v = o.to_json();
            v["statement"] = json!(o.statement);
            v
        })
        .collect();
    let failed = outcomes.iter().find_map(|o| o.result.as_ref().err());
    let data = json!({"results": results});
    match failed {
        None => ToolOutcome::ok(text, data),
        Some(e) if e.code == "forbidden" && caller.role == Role::Readonly => {
            ToolOutcome::failed("forbidden", text, data)
        }
        Some(_) => ToolOutcome::failed("tool_failed", text, data),
    }
}
