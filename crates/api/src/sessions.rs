//! `/sessions`: create, list, read and delete the caller's chat sessions, read their messages,
//! and chat inside one (the chat itself is in [`crate::chat`]). Every call is scoped to the
//! key's tenant: another tenant's session answers 404 `session_not_found`, like an unknown id.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use etl_agent::sessions::{self, NewSession, Session, SessionError};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::{Auth, JsonBody};
use crate::chat::{session_chat, session_not_found};
use crate::error::{ApiError, ErrorBody};

/// Largest page of `GET /sessions` and `GET /sessions/{id}/messages`.
pub const MAX_PAGE: usize = 1000;

/// `limit` and `offset` of the list endpoints.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

impl Page {
    fn read(
        query: Result<Query<Page>, QueryRejection>,
        default: usize,
    ) -> Result<(usize, usize), ApiError> {
        let Query(page) = query.map_err(|e| {
            ApiError::bad_request(format!(
                "the query is wrong ({}); 'limit' and 'offset' are whole numbers, e.g. ?limit=20&offset=40",
                e.body_text()
            ))
        })?;
        let limit = page.limit.unwrap_or(default);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request(format!(
                "'limit' must be from 1 to {MAX_PAGE}, got {limit}"
            )));
        }
        Ok((limit, page.offset.unwrap_or(0)))
    }
}

/// `POST /sessions` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Sent to the model before the history on every turn (a turn's own `system_prompt` wins).
    pub system_prompt: Option<String>,
    /// Whether the model is offered the tools (default true; a turn's own value wins).
    pub include_tools: Option<bool>,
    /// A label for lists (cut to 200 characters).
    pub title: Option<String>,
    /// Anything the client wants to keep with the session: a JSON object.
    #[schema(value_type = Object)]
    pub metadata: Option<Json>,
}

/// `POST /sessions` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    pub success: bool,
    pub session_id: String,
    /// RFC 3339, microseconds.
    pub created_at: String,
}

/// A session as listed and described.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    /// `ses_` and 20 lowercase letters and digits.
    pub id: String,
    pub title: Option<String>,
    pub system_prompt: Option<String>,
    pub include_tools: bool,
    #[schema(value_type = Object)]
    pub metadata: Json,
    /// Stored messages: user, assistant and tool.
    pub message_count: u64,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Session> for SessionInfo {
    fn from(s: Session) -> SessionInfo {
        SessionInfo {
            id: s.id,
            title: s.title,
            system_prompt: s.system_prompt,
            include_tools: s.include_tools,
            metadata: s.metadata,
            message_count: s.message_count,
            created_at: time(&s.created_at),
            updated_at: time(&s.updated_at),
        }
    }
}

fn time(t: &etl_engine::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `GET /sessions` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub success: bool,
    pub sessions: Vec<SessionInfo>,
    pub count: usize,
    /// All the tenant's sessions, whatever the page.
    pub total: u64,
}

/// `GET /sessions/{id}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionDetails {
    pub success: bool,
    pub session: SessionInfo,
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageInfo {
    /// Its position in the session, from 1.
    pub id: u64,
    /// `user`, `assistant` or `tool` (or `system`).
    pub role: String,
    /// Text; for `tool` messages the tool's result.
    pub content: String,
    /// An assistant message's tool calls: `[{"id", "name", "arguments"}]`.
    #[schema(value_type = Vec<Object>)]
    pub tool_calls: Vec<etl_llm::ToolCall>,
    /// For `tool` messages: the call answered, the tool's name and whether it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    pub created_at: String,
}

/// `GET /sessions/{id}/messages` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub success: bool,
    pub session_id: String,
    pub messages: Vec<MessageInfo>,
    pub count: usize,
}

/// `{"success": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub success: bool,
}

fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn store_failed(doing: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(doing, e)
}

/// Start a session.
#[utoipa::path(
    post,
    path = "/rest/v1/ai-agent/api/sessions",
    tag = "sessions",
    security(("bearer" = [])),
    request_body(content = CreateSession, description = "All fields optional; `{}` or no body is fine"),
    responses(
        (status = 201, description = "Created", body = SessionCreated),
        (status = 400, description = "A field of the wrong type, unknown field, metadata not an object, or the tenant's session cap reached", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let store = state.sessions();
    let cap = state.config().max_sessions_per_tenant;
    let max = state.config().max_message_bytes;
    if body.system_prompt.as_ref().is_some_and(|p| p.len() > max) {
        return Err(ApiError::payload_too_large(format!(
            "'system_prompt' is over the limit of {max} bytes; shorten it"
        )));
    }
    let session = sessions::create(
        store.as_ref(),
        &auth.key.tenant,
        NewSession {
            title: body.title,
            system_prompt: body.system_prompt,
            include_tools: body.include_tools,
            metadata: body.metadata,
        },
        cap,
    )
    .await
    .map_err(|e| match e {
        SessionError::Invalid(m) => ApiError::bad_request(m),
        SessionError::Full { max } => ApiError::bad_request(sessions_full(max)),
        SessionError::Store(e) => store_failed("creating the session", e),
    })?;
    tracing::info!(session = %session.id, "session created");
    Ok((
        StatusCode::CREATED,
        axum::Json(SessionCreated {
            success: true,
            session_id: session.id,
            created_at: time(&session.created_at),
        }),
    )
        .into_response())
}

/// What a tenant at its session cap is told, wherever it asked for a new session.
pub(crate) fn sessions_full(max: u64) -> String {
    format!(
        "this tenant already has {max} sessions, the most allowed; delete sessions you no longer \
         need with DELETE {}/sessions/{{id}}, or ask the operator to raise --max-sessions",
        crate::BASE_PATH
    )
}

/// The caller's sessions, most recently used first.
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/sessions",
    tag = "sessions",
    security(("bearer" = [])),
    params(
        ("limit" = Option<usize>, Query, description = "At most this many (1 to 1000, default 50)"),
        ("offset" = Option<usize>, Query, description = "Skip this many first (default 0)"),
    ),
    responses(
        (status = 200, description = "The sessions", body = SessionList),
        (status = 400, description = "Bad limit or offset", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    auth: Auth,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<axum::Json<SessionList>, ApiError> {
    let (limit, offset) = Page::read(query, 50)?;
    let store = state.sessions();
    let found = store
        .list_sessions(&auth.key.tenant, limit, offset)
        .await
        .map_err(|e| store_failed("listing the sessions", e))?;
    let total = store
        .count_sessions(&auth.key.tenant)
        .await
        .map_err(|e| store_failed("counting the sessions", e))?;
    let sessions: Vec<SessionInfo> = found.into_iter().map(SessionInfo::from).collect();
    Ok(axum::Json(SessionList {
        success: true,
        count: sessions.len(),
        sessions,
        total,
    }))
}

/// One session's details.
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/sessions/{id}",
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "The session", body = SessionDetails),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 404, description = "Unknown here (`session_not_found`)", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<ApiState>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<SessionDetails>, ApiError> {
    let id = path_id(id)?;
    let session = state
        .sessions()
        .get_session(&auth.key.tenant, &id)
        .await
        .map_err(|e| store_failed("reading the session", e))?
        .ok_or_else(|| session_not_found(&id))?;
    Ok(axum::Json(SessionDetails {
        success: true,
        session: session.into(),
    }))
}

/// Delete a session and all its messages.
#[utoipa::path(
    delete,
    path = "/rest/v1/ai-agent/api/sessions/{id}",
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 404, description = "Unknown here (`session_not_found`)", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<ApiState>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Deleted>, ApiError> {
    let id = path_id(id)?;
    let deleted = state
        .sessions()
        .delete_session(&auth.key.tenant, &id)
        .await
        .map_err(|e| store_failed("deleting the session", e))?;
    if !deleted {
        return Err(session_not_found(&id));
    }
    tracing::info!(session = %id, "session deleted");
    Ok(axum::Json(Deleted { success: true }))
}

/// A session's messages, oldest first.
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/sessions/{id}/messages",
    tag = "sessions",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The session id"),
        ("limit" = Option<usize>, Query, description = "At most this many (1 to 1000, default 100)"),
        ("offset" = Option<usize>, Query, description = "Skip this many first (default 0)"),
    ),
    responses(
        (status = 200, description = "The messages", body = MessageList),
        (status = 400, description = "Bad limit or offset", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 404, description = "Unknown here (`session_not_found`)", body = ErrorBody),
    )
)]
pub async fn messages(
    State(state): State<ApiState>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<axum::Json<MessageList>, ApiError> {
    let id = path_id(id)?;
    let (limit, offset) = Page::read(query, 100)?;
    let store = state.sessions();
    // The store answers an empty list for an unknown session; the API must say 404.
    store
        .get_session(&auth.key.tenant, &id)
        .await
        .map_err(|e| store_failed("reading the session", e))?
        .ok_or_else(|| session_not_found(&id))?;
    let found = store
        .list_messages(&auth.key.tenant, &id, limit, offset)
        .await
        .map_err(|e| store_failed("reading the session's messages", e))?;
    let messages: Vec<MessageInfo> = found
        .into_iter()
        .map(|m| MessageInfo {
            id: m.seq,
            role: serde_json::to_value(m.message.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            content: m.message.content,
            tool_calls: m.message.tool_calls,
            tool_call_id: m.message.tool_call_id,
            name: m.message.name,
            success: m.message.success,
            created_at: time(&m.created_at),
        })
        .collect();
    Ok(axum::Json(MessageList {
        success: true,
        session_id: id,
        count: messages.len(),
        messages,
    }))
}

/// Answer one message inside the session; its history goes to the model.
#[utoipa::path(
    post,
    path = "/rest/v1/ai-agent/api/sessions/{id}/chat",
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    request_body(content = Object, description = "As POST /chat"),
    responses(
        (status = 200, description = "As POST /chat, plus `session_id`", content_type = "application/json"),
        (status = 400, description = "Missing, empty or mistyped `message` or option, or a `model` this server does not offer", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 404, description = "Unknown here (`session_not_found`)", body = ErrorBody),
        (status = 413, description = "Body or message over the limit", body = ErrorBody),
    )
)]
pub async fn chat(
    State(state): State<ApiState>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<Json>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    session_chat(&state, &auth, &id, &body, false).await
}

/// Answer one message inside the session as server-sent events.
#[utoipa::path(
    post,
    path = "/rest/v1/ai-agent/api/sessions/{id}/chat/stream",
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The session id")),
    request_body(content = Object, description = "As POST /chat"),
    responses(
        (status = 200, description = "As POST /chat/stream; `start` carries the session id", content_type = "text/event-stream"),
        (status = 400, description = "Missing, empty or mistyped `message` or option, or a `model` this server does not offer", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 404, description = "Unknown here (`session_not_found`)", body = ErrorBody),
        (status = 413, description = "Body or message over the limit", body = ErrorBody),
    )
)]
pub async fn chat_stream(
    State(state): State<ApiState>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<Json>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    session_chat(&state, &auth, &id, &body, true).await
}
