//! Reading the conversation: the request being answered, the tool calls already made for it
//! (with their results), and what earlier turns touched, so "it" and "that flow" resolve.

use etl_llm::{Message, Role, ToolCall};
use serde_json::Value as Json;

/// One tool call made for the current request, with its result once it arrived.
#[derive(Clone, Debug)]
pub struct Step<'a> {
    pub call: &'a ToolCall,
    pub result: Option<&'a Message>,
}

impl Step<'_> {
    pub fn tool(&self) -> &str {
        &self.call.name
    }
    pub fn succeeded(&self) -> bool {
        self.result.and_then(|r| r.success).unwrap_or(false)
    }
    /// The tool's structured answer (`Null` when there is none).
    pub fn data(&self) -> &Json {
        static NULL: Json = Json::Null;
        self.result.and_then(|r| r.data.as_ref()).unwrap_or(&NULL)
    }
    /// The tool's text answer.
    pub fn text(&self) -> &str {
        self.result.map(|r| r.content.as_str()).unwrap_or_default()
    }
    /// The `command` of a `host_cli` call.
    pub fn command(&self) -> &str {
        self.call
            .arguments
            .get("command")
            .and_then(Json::as_str)
            .unwrap_or_default()
    }
    /// The statements a `host_cli` call answered: `(statement, data or error)`.
    pub fn statements(&self) -> Vec<Statement<'_>> {
        host_statements(self.data())
    }
}

/// One statement's answer inside a `host_cli` result.
#[derive(Clone, Debug)]
pub struct Statement<'a> {
    pub text: &'a str,
    pub ok: bool,
    pub data: &'a Json,
    pub error_code: &'a str,
    pub error: &'a str,
}

pub fn host_statements(data: &Json) -> Vec<Statement<'_>> {
    data.get("results")
        .and_then(Json::as_array)
        .map(|results| {
            results
                .iter()
                .map(|r| Statement {
                    text: r
                        .get("statement")
                        .and_then(Json::as_str)
                        .unwrap_or_default(),
                    ok: r.get("ok").and_then(Json::as_bool).unwrap_or(false),
                    data: r.get("data").unwrap_or(&Json::Null),
                    error_code: r
                        .pointer("/error/code")
                        .and_then(Json::as_str)
                        .unwrap_or_default(),
                    error: r
                        .pointer("/error/message")
                        .and_then(Json::as_str)
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Something a conversation can call "it".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    Connection(String),
    Flow(String),
}

/// The conversation as the planner reads it.
pub struct Conversation<'a> {
    /// The last user message: the request being answered.
    pub request: &'a str,
    /// The tool calls made since that message, in order.
    pub steps: Vec<Step<'a>>,
    /// Every tool call of the whole conversation (earlier turns and this one), in order.
    pub all_steps: Vec<Step<'a>>,
    /// How many tool calls the conversation holds, for fresh call ids.
    pub call_count: usize,
}

impl<'a> Conversation<'a> {
    pub fn read(messages: &'a [Message]) -> Conversation<'a> {
        let last_user = messages.iter().rposition(|m| m.role == Role::User);
        let request = last_user
            .map(|i| messages[i].content.as_str())
            .unwrap_or_default();
        let all_steps = steps_of(messages);
        let call_count = all_steps.len();
        let steps = match last_user {
            Some(i) => steps_of(&messages[i + 1..]),
            None => Vec::new(),
        };
        Conversation {
            request,
            steps,
            all_steps,
            call_count,
        }
    }

    /// The connection or flow earlier requests last created, ran, scheduled, described or
    /// diagnosed: what "it" means in the current request. Steps of the current request do not
    /// count, so a plan's own calls never change what "it" means halfway through.
    pub fn last_touched(&self) -> Option<Touched> {
        let earlier = self.all_steps.len() - self.steps.len();
        self.all_steps[..earlier].iter().rev().find_map(touched_by)
    }

    /// The template last found or imported, for "import it".
    pub fn last_template(&self) -> Option<String> {
        self.all_steps.iter().rev().find_map(|s| match s.tool() {
            "search_templates" => s
                .data()
                .pointer("/results/0/id")
                .and_then(Json::as_str)
                .map(str::to_string),
            "import_template" => s
                .call
                .arguments
                .get("template")
                .and_then(Json::as_str)
                .map(str::to_string),
            _ => None,
        })
    }

    /// The current request's steps with the given tool.
    pub fn steps_with(&self, tool: &str) -> Vec<&Step<'a>> {
        self.steps.iter().filter(|s| s.tool() == tool).collect()
    }

    /// The last `host_cli` step of this request whose command starts with `prefix`.
    pub fn host_step(&self, prefix: &str) -> Option<&Step<'a>> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.tool() == "host_cli" && s.command().starts_with(prefix))
    }
}

fn steps_of(messages: &[Message]) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for m in messages {
        if m.role == Role::Assistant {
            for call in &m.tool_calls {
                let result = messages.iter().find(|r| {
                    r.role == Role::Tool && r.tool_call_id.as_deref() == Some(call.id.as_str())
                });
                steps.push(Step { call, result });
            }
        }
    }
    steps
}

/// What a successful step touched: the last object named by a statement that succeeded.
fn touched_by(step: &Step<'_>) -> Option<Touched> {
    if !step.succeeded() && step.tool() != "host_cli" {
        return None;
    }
    match step.tool() {
        "host_cli" => step
            .statements()
            .iter()
            .rev()
            .filter(|s| s.ok || s.error_code == "run_failed")
            .find_map(|s| touched_by_statement(s.text)),
        "import_template" => step
            .data()
            .get("flow")
            .and_then(Json::as_str)
            .map(|f| Touched::Flow(f.to_string())),
        "diagnose_flow" => step
            .data()
            .get("flow")
            .and_then(Json::as_str)
            .map(|f| Touched::Flow(f.to_string())),
        _ => None,
    }
}

/// `create connection crm ...` touches connection `crm`; `run flow orders` flow `orders`.
/// Listing, deleting and reading other things touch nothing.
fn touched_by_statement(statement: &str) -> Option<Touched> {
    let words: Vec<&str> = statement
        .split(|c: char| c.is_whitespace() || c == '-')
        .filter(|w| !w.is_empty())
        .collect();
    let verb = words.first()?.to_lowercase();
    let noun = words.get(1)?.to_lowercase();
    let name = words
        .get(2)?
        .trim_matches(|c| c == '\'' || c == '"')
        .to_string();
    if name.contains('=') {
        return None;
    }
    let connection_verbs = ["create", "get", "update", "test"];
    let flow_verbs = [
        "create", "get", "update", "describe", "run", "schedule", "status", "logs", "stop",
    ];
    match noun.as_str() {
        "connection" | "connections" | "conn" if connection_verbs.contains(&verb.as_str()) => {
            Some(Touched::Connection(name))
        }
        "flow" | "flows" if flow_verbs.contains(&verb.as_str()) => Some(Touched::Flow(name)),
        "schedule" if ["enable", "disable"].contains(&verb.as_str()) => Some(Touched::Flow(name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(id: &str, name: &str, args: Json) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: args,
        }
    }

    #[test]
    fn it_is_the_last_object_a_successful_statement_named() {
        let c1 = call(
            "1",
            "host_cli",
            json!({"command": "create connection crm type=http url=https://x"}),
        );
        let c2 = call("2", "host_cli", json!({"command": "list connections"}));
        let messages = vec![
            Message::user("create a connection to x"),
            Message::assistant("", vec![c1.clone()]),
            Message::tool_result(
                &c1,
                true,
                "created",
                json!({"results": [{"statement": "create connection crm type=http url=https://x", "ok": true, "data": {}}]}),
            ),
            Message::assistant("done", vec![]),
            Message::user("list connections"),
            Message::assistant("", vec![c2.clone()]),
            Message::tool_result(
                &c2,
                true,
                "...",
                json!({"results": [{"statement": "list connections", "ok": true, "data": []}]}),
            ),
            Message::user("schedule it every hour"),
        ];
        let conv = Conversation::read(&messages);
        assert_eq!(conv.request, "schedule it every hour");
        assert!(conv.steps.is_empty());
        assert_eq!(conv.call_count, 2);
        assert_eq!(conv.last_touched(), Some(Touched::Connection("crm".into())));
    }

    #[test]
    fn failed_statements_touch_nothing() {
        assert_eq!(
            touched_by_statement("run flow orders --wait"),
            Some(Touched::Flow("orders".into()))
        );
        assert_eq!(touched_by_statement("list flows"), None);
        assert_eq!(touched_by_statement("delete flow orders"), None);
        let c = call("1", "host_cli", json!({"command": "create flow x"}));
        let messages = vec![
            Message::user("load"),
            Message::assistant("", vec![c.clone()]),
            Message::tool_result(
                &c,
                false,
                "error",
                json!({"results": [{"statement": "create flow x source=a", "ok": false, "error": {"code": "invalid", "message": "bad"}}]}),
            ),
        ];
        assert_eq!(Conversation::read(&messages).last_touched(), None);
    }
}
