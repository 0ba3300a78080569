//! The OpenAI-compatible endpoint: `GET /v1/models` and `POST /v1/chat/completions`, so any
//! OpenAI client (the `openai` packages, LangChain's `ChatOpenAI`, frameworks that take a base
//! URL) can use the whole agent as if it were a model.
//!
//! A completion is one agent turn, run by the same path as `/chat`
//! ([`crate::chat::start_turn`]): the last message (a user message) is the request, the earlier
//! user and assistant messages are the history, system and developer messages the system
//! prompt. The agent calls its own tools; a client's `tools` are not offered to it, and a
//! request that insists on them (`tool_choice: "required"` or a named function) is refused, as
//! are image or audio parts, `n` other than 1, `logprobs` and JSON response formats: better an
//! error that says so than an answer that silently is not what was asked.
//!
//! Same bearer keys as the Agent API; errors in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, since that is what OpenAI clients parse.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use etl_agent::run::{AgentEvent, ChatResponse, RunError, RunUsage};
use etl_llm::Message;
use serde_json::{Map, Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ApiState;
use crate::auth::{Auth, JsonBody};
use crate::chat::{ChatBody, forward, sse_response, start_turn};
use crate::error::ApiError;

/// The agent's id as a model.
pub const MODEL_ID: &str = "etlworks-agent";

/// The routes under `/v1`, ready to merge into the API's router.
pub fn routes() -> Router<ApiState> {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Router::new()
        .route(
            "/v1/models",
            any(
                move |State(state): State<ApiState>,
                      method: Method,
                      auth: Result<Auth, ApiError>| async move {
                    models(state, method, auth, created)
                },
            ),
        )
        .route(
            "/v1/models/{id}",
            any(
                move |State(state): State<ApiState>,
                      method: Method,
                      auth: Result<Auth, ApiError>,
                      Path(id): Path<String>| async move {
                    model(state, method, auth, created, id)
                },
            ),
        )
        .route("/v1/chat/completions", any(completions))
        .route("/v1/{*rest}", any(unknown))
}

/// An error in OpenAI's shape, with the status (and headers such as `Retry-After`) of the
/// API's own error.
fn openai_error(e: ApiError) -> Response {
    let status = e.status();
    let kind = match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error": {
        "message": e.message(),
        "type": kind,
        "param": Json::Null,
        "code": e.code(),
    }});
    let mut response = e.into_response();
    *response.body_mut() = Body::from(body.to_string());
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

/// Why a request is refused before the agent runs: a parameter at fault (400 naming it), or
/// the API's own refusal of its body.
enum Refused {
    Param { param: String, message: String },
    Api(ApiError),
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Param { param, message } => {
                let body = json!({"error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": param,
                    "code": "bad_request",
                }});
                (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
            }
            Refused::Api(e) => openai_error(e),
        }
    }

    #[cfg(test)]
    fn status(&self) -> StatusCode {
        match self {
            Refused::Param { .. } => StatusCode::BAD_REQUEST,
            Refused::Api(e) => e.status(),
        }
    }
}

/// A 400 naming the parameter at fault.
fn invalid(param: &str, message: impl Into<String>) -> Refused {
    Refused::Param {
        param: param.to_string(),
        message: message.into(),
    }
}

/// A run that ended without an answer, as the HTTP error an OpenAI client expects: a spent
/// usage cap is a 429 (`insufficient_quota`), an unreachable model a 503.
fn run_error(e: &RunError) -> (StatusCode, Json) {
    let (status, kind) = match e.code {
        "cap_exceeded" => (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota"),
        "llm_unavailable" | "canceled" => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
        "bad_request" => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    };
    let message = match &e.detail {
        Some(detail) => format!("{} ({detail})", e.error),
        None => e.error.clone(),
    };
    (
        status,
        json!({"error": {"message": message, "type": kind, "param": Json::Null, "code": e.code}}),
    )
}

fn method_not_allowed(path: &str, method: &Method, allowed: &'static str) -> Response {
    let mut response = openai_error(ApiError::method_not_allowed(format!(
        "{path} does not accept {method}; use {allowed}"
    )));
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}

/// The agent as an OpenAI model object, with what runs behind it.
fn model_object(state: &ApiState, created: u64) -> Json {
    json!({
        "id": MODEL_ID,
        "object": "model",
        "created": created,
        "owned_by": "etlworks-agent",
        "etlworks": {
            "underlying_model": state.agent().model().name(),
            "tools": state.tools().tools().iter().map(|t| t.name()).collect::<Vec<_>>(),
            "version": state.config().version,
        }
    })
}

fn models(state: ApiState, method: Method, auth: Result<Auth, ApiError>, created: u64) -> Response {
    if let Err(e) = auth {
        return openai_error(e);
    }
    if method != Method::GET {
        return method_not_allowed("/v1/models", &method, "GET");
    }
    axum::Json(json!({"object": "list", "data": [model_object(&state, created)]})).into_response()
}

fn model(
    state: ApiState,
    method: Method,
    auth: Result<Auth, ApiError>,
    created: u64,
    id: String,
) -> Response {
    if let Err(e) = auth {
        return openai_error(e);
    }
    if method != Method::GET {
        return method_not_allowed("/v1/models/{id}", &method, "GET");
    }
    if id != MODEL_ID {
        return openai_error(ApiError::not_found(
            "model_not_found",
            format!("there is no model '{id}' here; this server offers one model, '{MODEL_ID}'"),
        ));
    }
    axum::Json(model_object(&state, created)).into_response()
}

async fn unknown(method: Method, Path(rest): Path<String>) -> Response {
    openai_error(ApiError::not_found(
        "not_found",
        format!(
            "there is no endpoint {method} /v1/{rest}; the OpenAI-compatible endpoints are GET \
             /v1/models and POST /v1/chat/completions"
        ),
    ))
}

/// A chat completion request, checked and turned into one agent turn.
struct Completion {
    body: ChatBody,
    history: Vec<Message>,
    stream: bool,
    include_usage: bool,
}

/// The text of a message's `content`: a string, or an array of text parts.
fn content_text(index: usize, message: &Map<String, Json>) -> Result<String, Refused> {
    let param = format!("messages[{index}].content");
    match message.get("content") {
        None | Some(Json::Null) => Ok(String::new()),
        Some(Json::String(text)) => Ok(text.clone()),
        Some(Json::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Json::as_str),
                    part.get("text").and_then(Json::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(invalid(
                            &param,
                            format!(
                                "only text content is supported, got a '{}' part; send the text, \
                                 or upload documents to the knowledge base (PUT {}/kb/documents/{{name}})",
                                kind.unwrap_or("untyped"),
                                crate::BASE_PATH
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(invalid(
            &param,
            "'content' must be a string or an array of {\"type\": \"text\", \"text\": ...} parts",
        )),
    }
}

impl Completion {
    fn parse(request: &Json, max_message_bytes: usize) -> Result<Completion, Refused> {
        let Some(object) = request.as_object() else {
            return Err(invalid(
                "",
                "the body must be a JSON object like {\"model\": \"etlworks-agent\", \"messages\": [{\"role\": \"user\", \"content\": \"list my flows\"}]}",
            ));
        };
        let Some(messages) = object.get("messages").and_then(Json::as_array) else {
            return Err(invalid(
                "messages",
                "'messages' is required: an array of {\"role\", \"content\"} ending with the user's message",
            ));
        };
        if object
            .get("n")
            .is_some_and(|n| !n.is_null() && n.as_u64() != Some(1))
        {
            return Err(invalid(
                "n",
                "'n' must be 1: the agent gives one answer per request",
            ));
        }
        if object.get("logprobs").and_then(Json::as_bool) == Some(true) {
            return Err(invalid(
                "logprobs",
                "'logprobs' is not supported by the agent",
            ));
        }
        if let Some(format) = object.get("response_format").filter(|f| !f.is_null()) {
            let kind = format.get("type").and_then(Json::as_str).unwrap_or("");
            if kind != "text" {
                return Err(invalid(
                    "response_format",
                    format!(
                        "response_format '{kind}' is not supported: the agent answers in text; ask \
                         for the format in the message instead"
                    ),
                ));
            }
        }
        match object.get("tool_choice") {
            None | Some(Json::Null) => {}
            Some(Json::String(choice)) if choice == "auto" || choice == "none" => {}
            Some(_) => {
                return Err(invalid(
                    "tool_choice",
                    "client-side tools are not supported: the agent calls its own tools (see GET \
                     /rest/v1/ai-agent/api/tools) and answers in text; leave 'tool_choice' out or \
                     set it to \"auto\"",
                ));
            }
        }
        let mut system = Vec::new();
        let mut turns = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let Some(message) = message.as_object() else {
                return Err(invalid(
                    &format!("messages[{index}]"),
                    "each message must be an object with 'role' and 'content'",
                ));
            };
            let role = message.get("role").and_then(Json::as_str).unwrap_or("");
            let text = content_text(index, message)?;
            match role {
                "system" | "developer" => system.push(text),
                "user" => turns.push(Message::user(text)),
                "assistant" => {
                    if message
                        .get("tool_calls")
                        .is_some_and(|c| c.as_array().is_some_and(|c| !c.is_empty()))
                        || message.get("function_call").is_some_and(|c| !c.is_null())
                    {
                        return Err(invalid(
                            &format!("messages[{index}]"),
                            "client-side tool calls are not supported: the agent calls its own \
                             tools; send the conversation as user and assistant text",
                        ));
                    }
                    turns.push(Message::assistant(text, Vec::new()));
                }
                "tool" | "function" => {
                    return Err(invalid(
                        &format!("messages[{index}].role"),
                        "client-side tool results are not supported: the agent calls its own tools",
                    ));
                }
                other => {
                    return Err(invalid(
                        &format!("messages[{index}].role"),
                        format!("unknown role '{other}'; use system, developer, user or assistant"),
                    ));
                }
            }
        }
        let Some(last) = turns.pop().filter(|m| m.role == etl_llm::Role::User) else {
            return Err(invalid(
                "messages",
                "the last message must be the user's (role 'user'): it is what the agent answers",
            ));
        };
        let mut chat = Map::new();
        chat.insert("message".into(), Json::String(last.content));
        if !system.is_empty() {
            chat.insert("system_prompt".into(), Json::String(system.join("\n\n")));
        }
        let max_tokens = object
            .get("max_completion_tokens")
            .filter(|v| !v.is_null())
            .or_else(|| object.get("max_tokens"));
        if let Some(v) = max_tokens.filter(|v| !v.is_null()) {
            chat.insert("max_tokens".into(), v.clone());
        }
        if let Some(v) = object.get("temperature").filter(|v| !v.is_null()) {
            chat.insert("temperature".into(), v.clone());
        }
        if let Some(model) = object.get("model").and_then(Json::as_str)
            && model != MODEL_ID
            && !model.trim().is_empty()
        {
            chat.insert("model".into(), Json::String(model.to_string()));
        }
        let body = ChatBody::parse(&Json::Object(chat), max_message_bytes).map_err(Refused::Api)?;
        let stream = object
            .get("stream")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let include_usage = object
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Json::as_bool)
            .unwrap_or(false);
        Ok(Completion {
            body,
            history: turns,
            stream,
            include_usage,
        })
    }
}

fn usage(u: &RunUsage) -> Json {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    })
}

/// OpenAI's `finish_reason` for how the run ended: a turn limit cut the work short, like a
/// length limit; a provider's refusal is its content filter.
fn finish_reason(finish: &str) -> &'static str {
    match finish {
        "length" | "turn_limit" => "length",
        "refused" => "content_filter",
        _ => "stop",
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the agent did, beside OpenAI's fields (clients ignore fields they do not know).
fn extras(body: &ChatResponse, run_id: &str) -> Json {
    json!({
        "run_id": run_id,
        "underlying_model": body.model,
        "tools_used": body.tools_used,
        "tool_calls": body.tool_calls,
        "finish": body.finish,
    })
}

/// `POST /v1/chat/completions`.
async fn completions(
    State(state): State<ApiState>,
    method: Method,
    auth: Result<Auth, ApiError>,
    body: Result<JsonBody<Json>, ApiError>,
) -> Response {
    let auth = match auth {
        Ok(auth) => auth,
        Err(e) => return openai_error(e),
    };
    if method != Method::POST {
        return method_not_allowed("/v1/chat/completions", &method, "POST");
    }
    let JsonBody(request) = match body {
        Ok(body) => body,
        Err(e) => return openai_error(e),
    };
    let completion = match Completion::parse(&request, state.config().max_message_bytes) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    let cancel = state.shutdown().child_token();
    let run = match start_turn(
        &state,
        &auth,
        completion.body,
        None,
        Some(completion.history),
        cancel.clone(),
    )
    .await
    {
        Ok(run) => run,
        Err(e) => return openai_error(e),
    };
    if completion.stream {
        stream(run, cancel, completion.include_usage)
    } else {
        answer(run, cancel).await
    }
}

/// The whole answer as one `chat.completion`.
async fn answer(mut run: etl_agent::run::RunStream, cancel: CancellationToken) -> Response {
    // If this handler is dropped (the client left), the run stops.
    let guard = cancel.drop_guard();
    // The events are drained, not dropped: dropping them would cancel the run.
    while run.events.recv().await.is_some() {}
    let outcome = run.outcome.await;
    drop(guard);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => return openai_error(ApiError::internal("running the agent", e)),
    };
    match &outcome.result {
        Ok(body) => axum::Json(json!({
            "id": format!("chatcmpl-{}", outcome.run_id),
            "object": "chat.completion",
            "created": now(),
            "model": MODEL_ID,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": body.response, "refusal": Json::Null},
                "finish_reason": finish_reason(body.finish),
                "logprobs": Json::Null,
            }],
            "usage": usage(&body.usage),
            "system_fingerprint": Json::Null,
            "etlworks": extras(body, &outcome.run_id),
        }))
        .into_response(),
        Err(e) => {
            let (status, body) = run_error(e);
            (status, axum::Json(body)).into_response()
        }
    }
}

/// The answer as `chat.completion.chunk` server-sent events: the role, the text as the agent
/// says it, the finish reason, the usage when asked for, and `data: [DONE]`. A run that fails
/// sends `data: {"error": ...}` instead and ends. A client that leaves cancels the run.
fn stream(
    mut run: etl_agent::run::RunStream,
    cancel: CancellationToken,
    include_usage: bool,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut chunks = Chunks {
            id: String::from("chatcmpl-run"),
            created: now(),
            include_usage,
        };
        forward(&mut run.events, &tx, &cancel, |event| match event {
            AgentEvent::Start { run_id, .. } => {
                chunks.id = format!("chatcmpl-{run_id}");
                Some(chunks.delta(json!({"role": "assistant", "content": ""}), None, None))
            }
            AgentEvent::Token { content } => {
                Some(chunks.delta(json!({"content": content}), None, None))
            }
            _ => None,
        })
        .await;
        // Drained rather than dropped, so a finished run is not canceled by the drop.
        while run.events.recv().await.is_some() {}
        let outcome = match run.outcome.await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "the agent run failed");
                let (_, body) = run_error(&RunError::new(
                    "internal",
                    "the run ended without an answer; the details are in the server log",
                ));
                let _ = tx.send(Event::default().data(body.to_string())).await;
                return;
            }
        };
        match &outcome.result {
            Ok(body) => {
                let last = chunks.delta(
                    json!({}),
                    Some(finish_reason(body.finish)),
                    Some(extras(body, &outcome.run_id)),
                );
                let _ = tx.send(last).await;
                if include_usage {
                    let _ = tx.send(chunks.usage(&body.usage)).await;
                }
                let _ = tx.send(Event::default().data("[DONE]")).await;
            }
            Err(e) => {
                let (_, body) = run_error(e);
                let _ = tx.send(Event::default().data(body.to_string())).await;
            }
        }
    });
    sse_response(rx)
}

/// The chunks of one streamed completion: the same id, time and model in every one.
struct Chunks {
    id: String,
    created: u64,
    include_usage: bool,
}

impl Chunks {
    fn base(&self, choices: Json) -> Json {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL_ID,
            "system_fingerprint": Json::Null,
            "choices": choices,
        })
    }

    /// A chunk with one choice: its delta, its finish reason, and the agent's extras on the
    /// last one; `usage: null` when usage was asked for (OpenAI's convention).
    fn delta(&self, delta: Json, finish: Option<&str>, etlworks: Option<Json>) -> Event {
        let mut chunk = self.base(json!([
            {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": Json::Null}
        ]));
        if let Some(extra) = etlworks {
            chunk["etlworks"] = extra;
        }
        if self.include_usage {
            chunk["usage"] = Json::Null;
        }
        Event::default().data(chunk.to_string())
    }

    /// The last chunk when usage was asked for: no choices, the usage.
    fn usage(&self, used: &RunUsage) -> Event {
        let mut chunk = self.base(json!([]));
        chunk["usage"] = usage(used);
        Event::default().data(chunk.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(request: Json) -> Result<Completion, StatusCode> {
        Completion::parse(&request, 1000).map_err(|r| r.status())
    }

    #[test]
    fn messages_become_system_prompt_history_and_request() {
        let c = parse(json!({
            "model": "etlworks-agent",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "list connections"},
                {"role": "assistant", "content": [{"type": "text", "text": "warehouse"}]},
                {"role": "developer", "content": "Cite sources."},
                {"role": "user", "content": [{"type": "text", "text": "and "}, {"type": "text", "text": "flows?"}]},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": 50,
            "temperature": 0.2,
            "tools": [{"type": "function", "function": {"name": "x"}}],
        }))
        .unwrap_or_else(|s| panic!("refused: {s}"));
        assert_eq!(c.body.message, "and flows?");
        assert_eq!(
            c.body.system_prompt.as_deref(),
            Some("Be brief.\n\nCite sources.")
        );
        assert_eq!(c.body.max_tokens, Some(50));
        assert_eq!(
            c.body.model, None,
            "the agent's own id asks for the default model"
        );
        assert_eq!(c.history.len(), 2);
        assert_eq!(c.history[1].content, "warehouse");
        assert!(c.stream && c.include_usage);
    }

    #[test]
    fn what_the_agent_cannot_honour_is_refused() {
        let user = json!([{"role": "user", "content": "hi"}]);
        for request in [
            json!({}),
            json!({"messages": []}),
            json!({"messages": [{"role": "assistant", "content": "x"}]}),
            json!({"messages": user, "n": 2}),
            json!({"messages": user, "logprobs": true}),
            json!({"messages": user, "tool_choice": "required"}),
            json!({"messages": user, "response_format": {"type": "json_object"}}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            json!({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}, {"role": "user", "content": "hi"}]}),
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            json!({"messages": user, "temperature": 7}),
        ] {
            assert_eq!(
                parse(request.clone()).err(),
                Some(StatusCode::BAD_REQUEST),
                "{request}"
            );
        }
        assert_eq!(
            parse(json!({"messages": [{"role": "user", "content": "x".repeat(2000)}]})).err(),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
