//! `GET /tools` and `POST /tools/{name}/execute`: the tool registry over HTTP.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use etl_agent::tools::{CallError, Execution, agent_caller};
use serde::Serialize;
use serde_json::Value as Json;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::{Auth, JsonBody};
use crate::error::{ApiError, ErrorBody};

/// One tool as `GET /tools` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    #[schema(value_type = Object)]
    pub parameters: Json,
    /// Changes state on the host: refused for read-only keys.
    pub agentic: bool,
}

/// The tool catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    pub success: bool,
    pub tools: Vec<ToolInfo>,
    pub count: usize,
}

/// What a tool call answers. A tool that ran and failed has `success: false` with `error` and
/// `code` (`tool_failed`), still with HTTP 200.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolExecution {
    pub success: bool,
    pub tool: String,
    /// The outcome as text for a person or a model.
    pub result: String,
    /// The same outcome as JSON.
    #[schema(value_type = Object)]
    pub data: Json,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The catalogue body, serialized once: it never changes while the server runs.
pub fn catalogue(state_tools: &etl_agent::tools::ToolRegistry) -> Vec<u8> {
    let tools: Vec<ToolInfo> = state_tools
        .tools()
        .iter()
        .map(|t| ToolInfo {
            name: t.name().to_string(),
            description: t.description().to_string(),
            parameters: t.parameters(),
            agentic: t.agentic(),
        })
        .collect();
    let list = ToolList {
        success: true,
        count: tools.len(),
        tools,
    };
    serde_json::to_vec(&list).expect("the tool catalogue serializes")
}

/// List the tools with their argument schemas.
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/tools",
    tag = "tools",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tool catalogue", body = ToolList),
        (status = 401, description = "Missing, malformed, unknown, revoked or expired key", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<ApiState>, _auth: Auth) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.catalogue(),
    )
        .into_response()
}

/// Run one tool with the body as its arguments (`{}` or an empty body when it takes none).
#[utoipa::path(
    post,
    path = "/rest/v1/ai-agent/api/tools/{name}/execute",
    tag = "tools",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The tool's name, as GET /tools lists it")),
    request_body(content = Object, description = "The tool's arguments as a flat JSON object"),
    responses(
        (status = 200, description = "The tool ran; `success` says whether it succeeded", body = ToolExecution),
        (status = 400, description = "Malformed JSON (`bad_request`) or arguments that fail the schema (`invalid_arguments`)", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 403, description = "An agentic tool called with a read-only key", body = ErrorBody),
        (status = 404, description = "Unknown tool (`tool_not_found`)", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 429, description = "Over the key's rate limit", body = ErrorBody),
    )
)]
pub async fn execute(
    State(state): State<ApiState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    JsonBody(args): JsonBody<Json>,
) -> Result<axum::Json<ToolExecution>, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let run = run_tool(&state, &auth, &name, &args)
        .await
        .map_err(|e| match e {
            CallError::UnknownTool(m) => ApiError::not_found("tool_not_found", m),
            CallError::InvalidArguments(m) => ApiError::invalid_arguments(m),
            CallError::Forbidden(m) => ApiError::forbidden(m),
        })?;
    Ok(axum::Json(execution(name, run)))
}

/// Runs one tool as the key's caller: the one path of every direct tool call (this endpoint
/// and MCP's `tools/call`), so whatever a call must pass or record is done once, here.
pub(crate) async fn run_tool(
    state: &ApiState,
    auth: &Auth,
    name: &str,
    args: &Json,
) -> Result<Execution, CallError> {
    let caller = agent_caller(&auth.key.tenant, &auth.key.name, auth.key.role);
    let run = state.tools().call(&caller, name, args).await?;
    tracing::info!(
        tool = %name,
        success = run.outcome.success,
        duration_ms = run.duration_ms,
        "tool executed"
    );
    Ok(run)
}

/// The answer body of a tool that ran.
pub(crate) fn execution(name: String, run: Execution) -> ToolExecution {
    let outcome = run.outcome;
    let failed = !outcome.success;
    ToolExecution {
        success: outcome.success,
        tool: name,
        error: failed.then(|| outcome.result.clone()),
        code: failed.then(|| outcome.code.unwrap_or_else(|| "tool_failed".into())),
        result: outcome.result,
        data: outcome.data,
        duration_ms: run.duration_ms,
    }
}
