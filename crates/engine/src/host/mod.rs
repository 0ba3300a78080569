//! The host CLI language: what `host_cli` runs and `etlworks-agent host` prints.
//!
//! A script is parsed (never handed to a shell), each statement resolved against the
//! [`catalogue`], executed through the [`Engine`], and answered as one [`Outcome`]: JSON
//! (`{"ok": true, "data": ...}` / `{"ok": false, "error": {...}}`) plus a readable rendering.

pub mod catalogue;
mod commands;
pub mod parse;
mod render;

use serde_json::{Value as Json, json};

use crate::error::{EngineError, EngineResult};
use crate::service::Engine;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
    /// Read-only: commands that change state are refused.
    Readonly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Readonly => "readonly",
        }
    }
}

/// Who runs the statements.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: String,
    pub user: String,
    pub role: Role,
    /// What started runs are recorded as (manual from the CLI, agent from the agent, ...).
    pub trigger: crate::entity::RunTrigger,
}

impl Caller {
    /// The local operator at the command line.
    pub fn local() -> Caller {
        Caller {
            tenant: crate::entity::DEFAULT_TENANT.to_string(),
            user: "local".to_string(),
            role: Role::Admin,
            trigger: crate::entity::RunTrigger::Manual,
        }
    }
}

/// The answer to one statement.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub statement: String,
    pub result: Result<Json, EngineError>,
    /// A readable rendering of the same outcome.
    pub text: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }

    pub fn to_json(&self) -> Json {
        match &self.result {
            Ok(data) => json!({"ok": true, "data": data}),
            Err(e) => json!({"ok": false, "error": {"code": e.code, "message": e.message}}),
        }
    }
}

/// The host language bound to an engine.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    extensions: Option<std::sync::Arc<dyn Extensions>>,
}

/// Commands served by parts of the product the engine does not know: the knowledge base and
/// the template gallery. Each answers JSON data and its readable rendering, like any command.
#[async_trait::async_trait]
pub trait Extensions: Send + Sync {
    async fn search_kb(
        &self,
        caller: &Caller,
        query: &str,
        limit: usize,
    ) -> EngineResult<(Json, String)>;
    async fn search_templates(
        &self,
        caller: &Caller,
        query: &str,
        limit: usize,
    ) -> EngineResult<(Json, String)>;
    async fn get_template(&self, caller: &Caller, id: &str) -> EngineResult<(Json, String)>;
    /// `name` names the flow; `params` fill the template's parameters.
    async fn import_template(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<&str>,
        params: &std::collections::BTreeMap<String, String>,
    ) -> EngineResult<(Json, String)>;
}

impl Host {
    pub fn new(engine: Engine) -> Host {
        Host {
            engine,
            extensions: None,
        }
    }

    /// A host whose template and knowledge-base commands are served by `extensions`.
    pub fn with_extensions(engine: Engine, extensions: std::sync::Arc<dyn Extensions>) -> Host {
        Host {
            engine,
            extensions: Some(extensions),
        }
    }

    pub(crate) fn extensions(&self) -> Option<&std::sync::Arc<dyn Extensions>> {
        self.extensions.as_ref()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs a script. Statements run in order; a failing statement stops the script (later
    /// statements usually depend on it) and is the last outcome.
    pub async fn run(&self, caller: &Caller, script: &str) -> Vec<Outcome> {
        // Every tenant has its built-in warehouse from its first statement on.
        if let Err(e) = self.engine.ensure_warehouse(&caller.tenant).await {
            tracing::error!(tenant = %caller.tenant, error = %e, "could not create the tenant's warehouse connection");
        }
        let statements = match parse::parse_script(script) {
            Ok(s) => s,
            Err(e) => {
                return vec![Outcome {
                    statement: script.trim().to_string(),
                    text: format!("error: {e}"),
                    result: Err(EngineError::new("syntax", e.0)),
                }];
            }
        };
        if statements.is_empty() {
            let e = EngineError::new(
                "syntax",
                "no statement given; try 'help' or 'list commands'",
            );
            return vec![Outcome {
                statement: String::new(),
                text: format!("error: {}", e.message),
                result: Err(e),
            }];
        }
        let mut out = Vec::with_capacity(statements.len());
        for st in statements {
            let outcome = commands::execute(self, caller, &st).await;
            let failed = !outcome.ok();
            out.push(outcome);
            if failed {
                break;
            }
        }
        out
    }

    /// The readable rendering of a whole script's outcomes.
    pub fn render(outcomes: &[Outcome]) -> String {
        if outcomes.len() == 1 {
            return outcomes[0].text.clone();
        }
        outcomes
            .iter()
            .map(|o| format!("> {}\n{}", o.statement, o.text))
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}
