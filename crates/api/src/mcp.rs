//! MCP (the Model Context Protocol) over Streamable HTTP at `/rest/v1/ai-agent/mcp`, so MCP
//! clients (Claude Desktop, Cursor, the MCP Inspector, agent frameworks) can use the agent's
//! tools and delegate whole tasks to the agent itself.
//!
//! The protocol is the official Rust SDK's (`rmcp`): its [`StreamableHttpService`] runs inside
//! our axum router behind [`endpoint`], which first does what every route of the API does (the
//! bearer key, its rate limit, the body limit and read timeout) and then:
//! - puts the authenticated [`Auth`] in the request's extensions; rmcp hands the request's
//!   `http::request::Parts` to every handler, so each tool call runs as the key that sent it;
//! - binds every MCP session to the key that opened it: another key presenting its id is told
//!   the session does not exist (404), and one key may keep at most [`MAX_SESSIONS_PER_KEY`];
//! - answers `GET` with 405: this server sends nothing unasked, so it offers no
//!   server-initiated stream;
//! - turns the SDK's plain-text refusals into the API's JSON error body.
//!
//! The tools are the seven of the [`ToolRegistry`](etl_agent::tools::ToolRegistry), with their
//! schemas and annotations, plus [`ASSISTANT`], which runs the whole agent through the same
//! path as `/chat` ([`crate::chat::start_turn`]): progress notifications while it works,
//! cancellation, and one agent session per MCP session unless the caller names another.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use etl_agent::run::{AgentEvent, RunOutcome};
use etl_agent::sessions::{self, NewSession, Session, SessionError};
use etl_agent::tools::{CallError, check_arguments};
use etl_engine::host::Role;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProgressToken, ProtocolVersion, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value as Json, json};

use crate::ApiState;
use crate::auth::{Auth, read_body};
use crate::chat::{ChatBody, start_turn};
use crate::error::{ApiError, ErrorBody};

/// Where MCP is served.
pub const MCP_PATH: &str = "/rest/v1/ai-agent/mcp";

/// The tool that runs the whole agent.
pub const ASSISTANT: &str = "etlworks_assistant";

/// The protocol versions negotiated, oldest first. A client asking for another one is
/// answered with the newest, as the specification says; it may then go on or disconnect.
pub const PROTOCOL_VERSIONS: &[ProtocolVersion] =
    &[ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_11_25];

/// An MCP session with no request for this long is closed; the client's next request answers
/// 404 and the client initialises a new one. Long, because a session can sit idle while the
/// model on the client side thinks, and an agent run can be slow.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// MCP sessions one API key may keep open at once; one more `initialize` answers 429 until a
/// session is closed (DELETE) or expires.
pub const MAX_SESSIONS_PER_KEY: usize = 100;

/// The header naming the MCP session.
const SESSION_HEADER: &str = "mcp-session-id";

/// The host names MCP accepts in `Host` unless configured: the loopback names. rmcp refuses
/// other hosts (DNS-rebinding protection), so a server reached by another name must list it
/// (`serve --mcp-allowed-hosts`).
pub fn default_allowed_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// The hosts MCP accepts: the loopback names, then `configured` (`serve --mcp-allowed-hosts`)
/// when given, otherwise the host of `bind` unless it is a wildcard address (0.0.0.0, ::),
/// whose names only the operator knows. Loopback names are always safe: a DNS-rebinding page
/// reaches the server under its own name, never as localhost.
pub fn allowed_hosts(configured: &[String], bind: &str) -> Vec<String> {
    let mut hosts = default_allowed_hosts();
    let mut add = |host: &str| {
        if !host.is_empty() && !hosts.iter().any(|h| h == host) {
            hosts.push(host.to_string());
        }
    };
    let configured: Vec<&str> = configured
        .iter()
        .map(|h| h.trim())
        .filter(|h| !h.is_empty())
        .collect();
    if !configured.is_empty() {
        configured.into_iter().for_each(add);
        return hosts;
    }
    let host = match bind.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => bind,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let wildcard = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !wildcard {
        add(host);
    }
    hosts
}

/// The MCP route, ready to merge into the API's router.
pub fn routes(state: &ApiState) -> Router<ApiState> {
    let endpoint = Arc::new(Endpoint::new(state));
    Router::new().route(
        MCP_PATH,
        any(move |State(state): State<ApiState>, request: Request| {
            let endpoint = endpoint.clone();
            async move { endpoint.handle(&state, request).await }
        }),
    )
}

/// The SDK's service and the key that opened each session.
struct Endpoint {
    service: StreamableHttpService<McpServer, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    /// MCP session id → the id of the key that opened it.
    owners: Mutex<HashMap<String, String>>,
}

impl Endpoint {
    fn new(state: &ApiState) -> Endpoint {
        let mut manager = LocalSessionManager::default();
        manager.session_config.keep_alive = Some(SESSION_IDLE_TIMEOUT);
        let sessions = Arc::new(manager);
        let hosts = &state.config().mcp_allowed_hosts;
        let mut config = StreamableHttpServerConfig::default()
            .with_cancellation_token(state.shutdown().child_token())
            .with_max_request_body_bytes(state.config().body_limit);
        config = if hosts.iter().any(|h| h == "*") {
            config.disable_allowed_hosts()
        } else {
            config.with_allowed_hosts(hosts.clone())
        };
        let catalogue = Arc::new(catalogue(state));
        let factory_state = state.clone();
        let service = StreamableHttpService::new(
            move || {
                Ok(McpServer {
                    state: factory_state.clone(),
                    catalogue: catalogue.clone(),
                    conversation: Arc::new(tokio::sync::Mutex::new(None)),
                })
            },
            sessions.clone(),
            config,
        );
        Endpoint {
            service,
            sessions,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn handle(&self, state: &ApiState, request: Request) -> Response {
        let (mut parts, body) = request.into_parts();
        let auth = match Auth::from_request_parts(&mut parts, state).await {
            Ok(auth) => auth,
            Err(e) => return e.into_response(),
        };
        if parts.method != Method::POST && parts.method != Method::DELETE {
            let mut response = ApiError::method_not_allowed(format!(
                "{MCP_PATH} does not accept {}: send MCP messages with POST and end a session \
                 with DELETE (this server sends nothing unasked, so it offers no GET stream)",
                parts.method
            ))
            .into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
            return response;
        }
        let session = parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(id) = &session {
            let owner = self.owners().get(id).cloned();
            if owner.is_some_and(|owner| owner != auth.key.id) {
                // Someone else's session is, for this key, a session that does not exist.
                return session_gone(id).into_response();
            }
        }
        let body = if parts.method == Method::POST {
            let limit = state.config().body_limit;
            match read_body(Request::from_parts(parts.clone(), body), state, limit).await {
                Ok(bytes) => bytes,
                Err(e) => return e.into_response(),
            }
        } else {
            Default::default()
        };
        let opens_session = session.is_none() && is_initialize(&body);
        if opens_session && let Err(refused) = self.admit(&auth).await {
            return refused;
        }
        parts.extensions.insert(auth.clone());
        let deleting = parts.method == Method::DELETE;
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let response = self
            .service
            .handle(Request::from_parts(parts, Body::from(body)))
            .await
            .map(Body::new);
        let status = response.status();
        if let Some(id) = &session
            && (status == StatusCode::NOT_FOUND || (deleting && status.is_success()))
        {
            self.owners().remove(id);
        }
        if opens_session
            && status.is_success()
            && let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
        {
            tracing::info!(mcp_session = %id, key = %auth.key.id, "MCP session opened");
            self.owners().insert(id.to_string(), auth.key.id.clone());
        }
        if status.is_client_error() || status.is_server_error() {
            return explain(response, session.as_deref(), &host).await;
        }
        if deleting && status == StatusCode::ACCEPTED {
            // The SDK says 202; the session is gone at once, and clients expect 200 or 204.
            tracing::info!(
                mcp_session = session.as_deref().unwrap_or(""),
                "MCP session ended"
            );
            return StatusCode::NO_CONTENT.into_response();
        }
        response
    }

    /// Refuses a new session when the key already keeps [`MAX_SESSIONS_PER_KEY`] open
    /// (closed and expired sessions are forgotten first).
    async fn admit(&self, auth: &Auth) -> Result<(), Response> {
        let live: Vec<String> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .map(|id| id.to_string())
            .collect();
        let mut owners = self.owners();
        owners.retain(|id, _| live.contains(id));
        let open = owners.values().filter(|k| **k == auth.key.id).count();
        if open >= MAX_SESSIONS_PER_KEY {
            let mut refusal = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this API key already has {open} MCP sessions open, the most allowed; end \
                     the ones you no longer use with DELETE {MCP_PATH} (header Mcp-Session-Id), \
                     or wait: a session idle for {} minutes is closed",
                    SESSION_IDLE_TIMEOUT.as_secs() / 60
                ),
            );
            refusal
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return Err(refusal);
        }
        Ok(())
    }
}

/// Whether a POST body is an `initialize` request (alone or first in a batch).
fn is_initialize(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Json>(body) else {
        return false;
    };
    let first = match &value {
        Json::Array(items) => items.first(),
        other => Some(other),
    };
    first
        .and_then(|m| m.get("method"))
        .and_then(Json::as_str)
        .is_some_and(|m| m == "initialize")
}

/// 404 for an MCP session that does not exist (never did, expired, was deleted, or belongs to
/// another key): MCP clients answer it by initialising a new session.
fn session_gone(id: &str) -> ApiError {
    ApiError::not_found(
        "session_not_found",
        format!(
            "there is no MCP session '{id}' (it expired after {} idle minutes, was ended, or the \
             server restarted); initialise a new one: send 'initialize' without an \
             Mcp-Session-Id header",
            SESSION_IDLE_TIMEOUT.as_secs() / 60
        ),
    )
}

/// Gives the SDK's plain-text refusals the API's JSON error body (JSON-RPC errors, which MCP
/// clients parse, are left as they are).
async fn explain(response: Response, session: Option<&str>, host: &str) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let status = parts.status;
    let (code, error) = match status {
        StatusCode::NOT_FOUND => {
            return session_gone(session.unwrap_or("?")).into_response();
        }
        StatusCode::FORBIDDEN if text.contains("Host") => (
            "forbidden",
            format!(
                "MCP refuses the Host '{host}' (protection against DNS rebinding); the operator \
                 must allow it: serve --mcp-allowed-hosts {} (a comma-separated list of the \
                 names clients use; '*' allows any)",
                host.rsplit_once(':')
                    .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
                    .map_or(host, |(name, _)| name)
            ),
        ),
        StatusCode::FORBIDDEN => ("forbidden", format!("MCP refused the request: {text}")),
        StatusCode::NOT_ACCEPTABLE => (
            "bad_request",
            "an MCP POST must send 'Accept: application/json, text/event-stream'".to_string(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "bad_request",
            format!(
                "an MCP POST must send one JSON-RPC message as JSON, with 'Content-Type: \
                 application/json' ({})",
                text.trim_start_matches("Unsupported Media Type: ")
            ),
        ),
        StatusCode::BAD_REQUEST if text.contains("Session ID is required") => (
            "bad_request",
            "this request needs an MCP session: send 'initialize' first (without an \
             Mcp-Session-Id header), then send the Mcp-Session-Id it answers with every request"
                .to_string(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!("the MCP message is over this server's body limit: {text}"),
        ),
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), detail = %text, "MCP failed");
            (
                "internal",
                "the MCP server failed; the details are in the server log under this response's \
                 x-request-id"
                    .to_string(),
            )
        }
        _ => (
            "bad_request",
            format!(
                "MCP refused the request: {}",
                if text.is_empty() {
                    "no reason given"
                } else {
                    &text
                }
            ),
        ),
    };
    let mut answer = refusal(status, code, error);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// An error answer in the API's body, for the statuses [`ApiError`] has no constructor for.
fn refusal(status: StatusCode, code: &str, error: String) -> Response {
    let body = ErrorBody {
        success: false,
        error,
        code: code.to_string(),
    };
    (status, axum::Json(body)).into_response()
}

/// The tools as MCP lists them: the registry's, with their schemas and hints, then the
/// assistant.
fn catalogue(state: &ApiState) -> Vec<Tool> {
    let mut tools: Vec<Tool> = state
        .tools()
        .tools()
        .iter()
        .map(|t| {
            let schema = match t.parameters() {
                Json::Object(map) => map,
                _ => Default::default(),
            };
            let mut tool = Tool::new(t.name(), t.description(), Arc::new(schema));
            tool.annotations = Some(annotations(t.name(), t.agentic()));
            tool
        })
        .collect();
    let mut assistant = Tool::new(
        ASSISTANT,
        "Delegates a data-integration task or question to the Etlworks agent, which plans and \
         calls the tools above itself (searching the docs and templates, creating connections \
         and flows, running, scheduling and diagnosing them) and answers in prose, citing its \
         sources. Give the whole task in 'message'. Calls in one MCP session continue one \
         conversation; pass 'session_id' (from an earlier answer) to continue another.",
        Arc::new(match assistant_schema() {
            Json::Object(map) => map,
            _ => Default::default(),
        }),
    );
    assistant.annotations = Some(annotations(ASSISTANT, true));
    tools.push(assistant);
    tools
}

/// The schema of [`ASSISTANT`]'s arguments.
fn assistant_schema() -> Json {
    json!({
        "type": "object",
        "properties": {
            "message": {
                "type": "string",
                "minLength": 1,
                "description": "The task or question, in plain words, e.g. 'load the CSV files in /data/in into postgres table orders every hour'."
            },
            "session_id": {
                "type": "string",
                "description": "Continue this agent session (a session_id from an earlier answer or POST /sessions). Default: this MCP session's conversation."
            }
        },
        "required": ["message"],
        "additionalProperties": false
    })
}

/// The behaviour hints of a tool. Non-agentic tools only read. Of the agentic ones,
/// `host_cli` (and the assistant, which may call it) can delete connections, flows and
/// schedules and reach external systems; `import_template` only adds (a name already taken
/// gets a new one), so it is not destructive.
fn annotations(name: &str, agentic: bool) -> ToolAnnotations {
    let title = match name {
        "search_knowledge_base" => "Search the knowledge base",
        "host_list_commands" => "List the host CLI commands",
        "host_cli" => "Run host CLI statements",
        "search_templates" => "Search flow templates",
        "import_template" => "Import a flow template",
        "get_connector_info" => "Describe connectors",
        "diagnose_flow" => "Diagnose a failed flow",
        ASSISTANT => "Ask the Etlworks agent",
        other => other,
    };
    let hints = ToolAnnotations::with_title(title);
    if !agentic {
        return hints
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(false);
    }
    match name {
        "import_template" => hints
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(false),
        _ => hints
            .read_only(false)
            .destructive(true)
            .idempotent(false)
            .open_world(true),
    }
}

/// One MCP session's server: made by the SDK for each session.
#[derive(Clone)]
struct McpServer {
    state: ApiState,
    catalogue: Arc<Vec<Tool>>,
    /// The agent session this MCP session's assistant calls continue, once the first made it.
    conversation: Arc<tokio::sync::Mutex<Option<String>>>,
}

/// The key that sent the request: the endpoint put it in the HTTP request's extensions, which
/// the SDK hands over with the request's parts.
fn caller(context: &RequestContext<RoleServer>) -> Result<Auth, ErrorData> {
    context
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Auth>())
        .cloned()
        .ok_or_else(|| {
            tracing::error!("an MCP request arrived without the key that sent it");
            ErrorData::internal_error("the request carries no authenticated key", None)
        })
}

/// A tool result that failed, for the model on the client side to read: the sentence as text
/// and `{success: false, error, code}` as structured content.
fn tool_error(code: &str, error: impl Into<String>) -> CallToolResult {
    let error = error.into();
    let mut result = CallToolResult::error(vec![ContentBlock::text(error.clone())]);
    result.structured_content = Some(json!({"success": false, "error": error, "code": code}));
    result
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
            .with_server_info(
                Implementation::new("etlworks-agent", self.state.config().version.clone())
                    .with_title("Etlworks AI agent (self-hosted)"),
            )
            .with_instructions(
                "A data-integration agent: it moves data between REST APIs, CSV/JSON files, \
                 SQLite, PostgreSQL and MySQL with flows, schedules and templates. Delegate \
                 whole tasks to etlworks_assistant, or call the tools directly: \
                 search_knowledge_base and get_connector_info to learn, host_list_commands \
                 and host_cli to act, search_templates and import_template to start from a \
                 template, diagnose_flow when a flow failed.",
            )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(PROTOCOL_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let auth = caller(&context)?;
        let mut tools = (*self.catalogue).clone();
        if auth.key.role == Role::Readonly
            && let Some(assistant) = tools.iter_mut().find(|t| t.name == ASSISTANT)
        {
            // For a read-only key the agent is offered only the tools that read.
            assistant.annotations = Some(annotations(ASSISTANT, false));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.catalogue.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let auth = caller(&context)?;
        let name = request.name.to_string();
        let args = Json::Object(request.arguments.unwrap_or_default());
        if name == ASSISTANT {
            return Ok(self.assistant(&auth, &args, &context).await.into());
        }
        let run = tokio::select! {
            run = crate::tools::run_tool(&self.state, &auth, &name, &args) => run,
            _ = context.ct.cancelled() => {
                return Ok(tool_error("canceled", format!("the call to {name} was canceled")).into());
            }
        };
        let run = match run {
            Ok(run) => run,
            Err(CallError::UnknownTool(m)) => {
                return Err(ErrorData::invalid_params(format!("{m}, {ASSISTANT}"), None));
            }
            Err(CallError::InvalidArguments(m)) => {
                return Ok(tool_error(
                    "invalid_arguments",
                    format!("{m}; see the tool's inputSchema"),
                )
                .into());
            }
            Err(CallError::Forbidden(m)) => return Ok(tool_error("forbidden", m).into()),
        };
        let body = crate::tools::execution(name, run);
        let text = body.result.clone();
        let structured = serde_json::to_value(&body).unwrap_or(Json::Null);
        let mut result = if body.success {
            CallToolResult::success(vec![ContentBlock::text(text)])
        } else {
            CallToolResult::error(vec![ContentBlock::text(text)])
        };
        result.structured_content = Some(structured);
        Ok(result.into())
    }
}

impl McpServer {
    /// Runs the whole agent on `message`, in the named session or this MCP session's
    /// conversation, with a progress notification per tool start and end when the client
    /// asked for progress. Cancelling the request stops the run.
    async fn assistant(
        &self,
        auth: &Auth,
        args: &Json,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        if let Err(m) = check_arguments(&assistant_schema(), args) {
            return tool_error("invalid_arguments", m);
        }
        let state = &self.state;
        let message = args["message"].as_str().unwrap_or_default().to_string();
        let body = match ChatBody::parse(
            &json!({"message": message}),
            state.config().max_message_bytes,
        ) {
            Ok(body) => body,
            Err(e) => return tool_error(e.code(), e.message()),
        };
        let session = match args.get("session_id").and_then(Json::as_str) {
            Some(id) => match state.sessions().get_session(&auth.key.tenant, id).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return tool_error(
                        "session_not_found",
                        crate::chat::session_not_found(id).message(),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the session for etlworks_assistant");
                    return tool_error(
                        "internal",
                        "the server could not read the session; the details are in its log",
                    );
                }
            },
            None => match self.conversation(auth, &message).await {
                Ok(s) => s,
                Err(result) => return result,
            },
        };
        let session_id = session.id.clone();
        let cancel = context.ct.child_token();
        let mut run = match start_turn(state, auth, body, Some(session), None, cancel).await {
            Ok(run) => run,
            Err(e) => return tool_error(e.code(), e.message()),
        };
        let progress = context.meta.get_progress_token();
        let mut step = 0u32;
        while let Some(event) = run.events.recv().await {
            let note = match &event {
                AgentEvent::ToolStart { name, .. } => format!("calling {name}"),
                AgentEvent::ToolEnd {
                    name,
                    success,
                    duration_ms,
                    ..
                } => format!(
                    "{name} {} in {duration_ms} ms",
                    if *success { "succeeded" } else { "failed" }
                ),
                AgentEvent::Done(_) | AgentEvent::Error(_) => break,
                _ => continue,
            };
            if let Some(token) = &progress {
                step += 1;
                notify(context, token, step, note).await;
            }
        }
        drop(run.events);
        let outcome = match run.outcome.await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "the agent run failed");
                return tool_error(
                    "internal",
                    "the agent run failed; the details are in the server log",
                );
            }
        };
        answer(outcome, &session_id)
    }

    /// This MCP session's agent session: the one its first assistant call created.
    async fn conversation(&self, auth: &Auth, message: &str) -> Result<Session, CallToolResult> {
        let state = &self.state;
        let mut slot = self.conversation.lock().await;
        if let Some(id) = slot.as_ref()
            && let Ok(Some(s)) = state.sessions().get_session(&auth.key.tenant, id).await
        {
            return Ok(s);
        }
        let title: String = message.chars().take(80).collect();
        let created = sessions::create(
            state.sessions().as_ref(),
            &auth.key.tenant,
            NewSession {
                title: Some(format!("MCP: {title}")),
                metadata: Some(json!({"source": "mcp"})),
                ..NewSession::default()
            },
            state.config().max_sessions_per_tenant,
        )
        .await;
        match created {
            Ok(s) => {
                *slot = Some(s.id.clone());
                Ok(s)
            }
            Err(SessionError::Full { max }) => Err(tool_error(
                "bad_request",
                crate::sessions::sessions_full(max),
            )),
            Err(e) => {
                tracing::error!(error = %e, "creating the session for etlworks_assistant");
                Err(tool_error(
                    "internal",
                    "the server could not create a session; the details are in its log",
                ))
            }
        }
    }
}

/// Sends one progress notification; a client that went away is not an error of the run.
async fn notify(
    context: &RequestContext<RoleServer>,
    token: &ProgressToken,
    step: u32,
    note: String,
) {
    let param = ProgressNotificationParam::new(token.clone(), f64::from(step)).with_message(note);
    if let Err(e) = context.peer.notify_progress(param).await {
        tracing::debug!(error = %e, "a progress notification was not delivered");
    }
}

/// The assistant's result: the answer as text, and the `/chat` body (with the session id) as
/// structured content; a run that failed is a tool error with its sentence and code.
fn answer(outcome: RunOutcome, session_id: &str) -> CallToolResult {
    match outcome.result {
        Ok(mut body) => {
            body.session_id = Some(session_id.to_string());
            let mut structured = serde_json::to_value(&body).unwrap_or(Json::Null);
            if let Some(map) = structured.as_object_mut() {
                map.insert("run_id".into(), Json::String(outcome.run_id));
            }
            let tools = if body.tools_used.is_empty() {
                "no tools".to_string()
            } else {
                body.tools_used.join(", ")
            };
            let mut result = CallToolResult::success(vec![ContentBlock::text(format!(
                "{}\n\n(tools used: {tools}; session_id: {session_id})",
                body.response
            ))]);
            result.structured_content = Some(structured);
            result
        }
        Err(e) => {
            let mut result = tool_error(e.code, e.error.clone());
            if let Some(Json::Object(map)) = result.structured_content.as_mut() {
                map.insert("session_id".into(), Json::String(session_id.to_string()));
                map.insert("response".into(), Json::String(outcome.response));
                if let Some(detail) = e.detail {
                    map.insert("detail".into(), Json::String(detail));
                }
            }
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_come_from_the_flag_or_the_bind_address() {
        let loopback = default_allowed_hosts();
        assert_eq!(allowed_hosts(&[], "127.0.0.1:8080"), loopback);
        assert_eq!(allowed_hosts(&[], "0.0.0.0:8080"), loopback);
        assert_eq!(allowed_hosts(&[], "[::]:8080"), loopback);
        let mut with_ip = loopback.clone();
        with_ip.push("10.1.2.3".into());
        assert_eq!(allowed_hosts(&[], "10.1.2.3:8080"), with_ip);
        let mut named = loopback.clone();
        named.push("agent.example.com".into());
        assert_eq!(
            allowed_hosts(
                &[" agent.example.com ".into(), String::new()],
                "10.1.2.3:80"
            ),
            named
        );
    }

    #[test]
    fn initialize_is_recognised_alone_or_first_in_a_batch() {
        assert!(is_initialize(
            br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#
        ));
        assert!(is_initialize(
            br#"[{"jsonrpc":"2.0","id":1,"method":"initialize"}]"#
        ));
        assert!(!is_initialize(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        ));
        assert!(!is_initialize(b"not json"));
    }

    #[test]
    fn only_the_agentic_tools_lose_the_read_only_hint() {
        let read = annotations("search_templates", false);
        assert_eq!(read.read_only_hint, Some(true));
        assert_eq!(read.destructive_hint, Some(false));
        let host = annotations("host_cli", true);
        assert_eq!(host.read_only_hint, Some(false));
        assert_eq!(host.destructive_hint, Some(true));
        let import = annotations("import_template", true);
        assert_eq!(import.destructive_hint, Some(false));
        assert_eq!(annotations(ASSISTANT, true).destructive_hint, Some(true));
    }
}
