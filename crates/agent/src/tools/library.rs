//! `search_knowledge_base`, `search_templates` and `import_template`: the library as tools.

use std::collections::BTreeMap;

use async_trait::async_trait;
use etl_engine::host::Caller;
use serde_json::{Value as Json, json};

use super::{Tool, ToolEnv, ToolOutcome};

const DEFAULT_LIMIT: usize = 5;

fn limit_of(args: &Json) -> usize {
    args.get("limit")
        .and_then(Json::as_u64)
        .map(|l| l as usize)
        .unwrap_or(DEFAULT_LIMIT)
}

fn query_schema(what: &str) -> Json {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 10000, "description": what},
            "limit": {"type": "integer", "minimum": 1, "maximum": crate::library::MAX_LIMIT, "description": "How many results (default 5)."}
        },
        "required": ["query"],
        "additionalProperties": false
    })
}

pub struct SearchKnowledgeBase;

#[async_trait]
impl Tool for SearchKnowledgeBase {
    fn name(&self) -> &'static str {
        "search_knowledge_base"
    }
    fn description(&self) -> &'static str {
        "Searches the knowledge base (the product documentation plus documents the tenant added) and answers ranked passages, each with its title path, a highlighted snippet and the source to cite. Supports \"quoted phrases\" and prefix* terms."
    }
    fn parameters(&self) -> Json {
        query_schema(
            "What to look for, in plain words, e.g. 'merge mode keys' or 'pagination next link'.",
        )
    }
    fn agentic(&self) -> bool {
        false
    }
    async fn execute(&self, env: &ToolEnv, caller: &Caller, args: &Json) -> ToolOutcome {
        let query = args.get("query").and_then(Json::as_str).unwrap_or_default();
        match env.library.search_kb(&caller.tenant, query, limit_of(args)) {
            Ok((data, text)) => ToolOutcome::ok(text, data),
            Err(e) => ToolOutcome::failed("tool_failed", e.message, Json::Null),
        }
    }
}

pub struct SearchTemplates;

#[async_trait]
impl Tool for SearchTemplates {
    fn name(&self) -> &'static str {
        "search_templates"
    }
    fn description(&self) -> &'static str {
        "Searches the flow-template gallery (REST APIs, files, databases, well-known SaaS APIs) and answers ranked templates with their id, source and destination systems."
    }
    fn parameters(&self) -> Json {
        query_schema("The systems or task, e.g. 'salesforce to postgres' or 'csv into mysql'.")
    }
    fn agentic(&self) -> bool {
        false
    }
    async fn execute(&self, env: &ToolEnv, _caller: &Caller, args: &Json) -> ToolOutcome {
        let query = args.get("query").and_then(Json::as_str).unwrap_or_default();
        let (data, text) = env.library.search_templates(query, limit_of(args));
        ToolOutcome::ok(text, data)
    }
}

pub struct ImportTemplate;

#[async_trait]
impl Tool for ImportTemplate {
    fn name(&self) -> &'static str {
        "import_template"
    }
    fn description(&self) -> &'static str {
        "Imports a flow template: creates its connections and flow with the given parameters, and reports what it created and which parameters are still missing (with the command that sets each)."
    }
    fn parameters(&self) -> Json {
        json!({
            "type": "object",
            "properties": {
                "template": {"type": "string", "minLength": 1, "maxLength": 200, "description": "The template id, as search_templates answers it."},
                "name": {"type": "string", "maxLength": 128, "description": "The flow's name (default: the template's)."},
                "parameters": {"type": "object", "description": "Template parameters by name; values may be strings, numbers or booleans."}
            },
            "required": ["template"],
            "additionalProperties": false
        })
    }
    fn agentic(&self) -> bool {
        true
    }
    async fn execute(&self, env: &ToolEnv, caller: &Caller, args: &Json) -> ToolOutcome {
        let id = args
            .get("template")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let name = args
            .get("name")
            .and_then(Json::as_str)
            .filter(|n| !n.trim().is_empty());
        let mut params = BTreeMap::new();
        if let Some(map) = args.get("parameters").and_then(Json::as_object) {
            for (k, v) in map {
                let value = match v {
                    Json::String(s) => s.clone(),
                    Json::Number(n) => n.to_string(),
                    Json::Bool(b) => b.to_string(),
                    Json::Null => continue,
                    other => {
                        return ToolOutcome::failed(
                            "invalid_arguments",
                            format!(
                                "parameter '{k}' must be a string, number or boolean, got {other}"
                            ),
                            Json::Null,
                        );
                    }
                };
                params.insert(k.clone(), value);
            }
        }
        match env
            .library
            .import_template(&caller.tenant, id, name, &params)
            .await
        {
            Ok((data, text)) => ToolOutcome::ok(text, data),
            Err(e) => ToolOutcome::failed("tool_failed", e.message, json!({"code": e.code})),
        }
    }
}
