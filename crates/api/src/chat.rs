//! `POST /chat` and `POST /chat/stream` (and the same two inside a session): one user message
//! through the agent loop, answered as the `/chat` body or as server-sent events.
//!
//! Every run is spawned on its own task and owns its session bookkeeping: the user message is
//! stored before the run and the run's messages after it, whatever the outcome. The HTTP side
//! only holds a handle that cancels the run when it goes away (a client that disconnects), so a
//! dropped connection stops the model but never loses what was already said.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use etl_agent::run::{AgentEvent, RunError, RunOptions, RunOutcome, RunRequest};
use etl_agent::sessions::{self, Session};
use etl_agent::tools::agent_caller;
use etl_agent::usage::{self, Allowance, UsageRecord};
use etl_llm::Message;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ApiState;
use crate::auth::{Auth, JsonBody};
use crate::error::ApiError;

/// How often an idle stream sends `: keep-alive`, so proxies and clients do not time it out.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The request body of every chat endpoint, checked.
#[derive(Debug)]
pub struct ChatBody {
    pub message: String,
    pub include_tools: Option<bool>,
    pub system_prompt: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub model: Option<String>,
}

impl ChatBody {
    /// Reads and checks the body: `message` must be a non-empty string no longer than
    /// `max_message_bytes` (413 above it), the options of the right types.
    pub fn parse(body: &Json, max_message_bytes: usize) -> Result<ChatBody, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::bad_request(
                "the body must be a JSON object like {\"message\": \"list my flows\"}",
            ));
        };
        let message = match object.get("message") {
            None | Some(Json::Null) => {
                return Err(ApiError::bad_request(
                    "the body has no 'message'; send {\"message\": \"<what you want>\"}",
                ));
            }
            Some(Json::String(m)) if m.trim().is_empty() => {
                return Err(ApiError::bad_request(
                    "'message' is empty; send the question or instruction as text",
                ));
            }
            Some(Json::String(m)) => m.clone(),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "'message' must be a string, got {}; send {{\"message\": \"<text>\"}}",
                    json_kind(other)
                )));
            }
        };
        if message.len() > max_message_bytes {
            return Err(ApiError::payload_too_large(format!(
                "'message' is {} bytes, over the limit of {max_message_bytes} bytes; send a \
                 shorter message, or upload long text as a knowledge-base document with PUT \
                 {}/kb/documents/{{name}} and ask about it",
                message.len(),
                crate::BASE_PATH
            )));
        }
        let include_tools = optional(object, "include_tools", "true or false", Json::as_bool)?;
        let system_prompt = optional(object, "system_prompt", "a string", |v| {
            v.as_str().map(str::to_string)
        })?;
        if let Some(prompt) = &system_prompt
            && prompt.len() > max_message_bytes
        {
            return Err(ApiError::payload_too_large(format!(
                "'system_prompt' is {} bytes, over the limit of {max_message_bytes} bytes; \
                 shorten it",
                prompt.len()
            )));
        }
        let max_tokens = optional(object, "max_tokens", "a positive integer", |v| {
            v.as_u64()
                .filter(|n| *n > 0)
                .and_then(|n| u32::try_from(n).ok())
        })?;
        let temperature = optional(object, "temperature", "a number from 0 to 2", |v| {
            v.as_f64()
                .filter(|t| (0.0..=2.0).contains(t))
                .map(|t| t as f32)
        })?;
        let model = optional(object, "model", "a string", |v| {
            v.as_str().map(str::to_string)
        })?
        .filter(|m| !m.trim().is_empty());
        Ok(ChatBody {
            message,
            include_tools,
            system_prompt,
            max_tokens,
            temperature,
            model,
        })
    }
}

/// An optional field: absent or null is `None`; present, it must convert or the answer is a
/// 400 naming the field and the expected type.
fn optional<T>(
    object: &serde_json::Map<String, Json>,
    field: &str,
    expected: &str,
    convert: impl Fn(&Json) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match object.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(value) => convert(value).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "'{field}' must be {expected}, got {}",
                short_json(value)
            ))
        }),
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn short_json(value: &Json) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

/// One run ready to start: the request for the loop and what to do with its outcome.
struct Turn {
    request: RunRequest,
    after: AfterRun,
}

/// Who asked (for the usage record) and, inside a session, where to keep the run.
struct AfterRun {
    tenant: String,
    key_id: String,
    session: Option<SessionTurn>,
}

struct SessionTurn {
    store: std::sync::Arc<dyn sessions::SessionStore>,
    tenant: String,
    id: String,
}

impl SessionTurn {
    /// Appends `messages` to the session; a failure is logged, never turned into the answer,
    /// since the run itself already happened.
    async fn keep(&self, messages: Vec<Message>, what: &str) {
        match sessions::append_now(self.store.as_ref(), &self.tenant, &self.id, messages).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::info!(session = %self.id, "the session was deleted during the run; {what} not kept")
            }
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "could not store {what} in the session")
            }
        }
    }
}

/// Why a turn does not start although the request is well formed: the model is unreachable
/// or a usage cap is spent. Answered like a run that failed (HTTP 200, `success: false`), so
/// the question is not stored in the session.
struct Refusal {
    error: RunError,
    session_id: Option<String>,
    model: String,
}

/// 400 when the body names a model this server does not offer.
fn check_model(state: &ApiState, body: &ChatBody) -> Result<(), ApiError> {
    let Some(model) = &body.model else {
        return Ok(());
    };
    let allowed = &state.chat().llm.models;
    if allowed.iter().any(|m| m == model) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "the model '{model}' is not offered by this server; ask for one of: {} (or leave \
         'model' out to use {})",
        allowed.join(", "),
        allowed.first().map(String::as_str).unwrap_or("the default")
    )))
}

/// The gate and the caps: what the run may use, or why it may not start.
async fn admit(
    state: &ApiState,
    auth: &Auth,
    body: &ChatBody,
    session_id: Option<&str>,
) -> Result<Result<Allowance, Refusal>, ApiError> {
    let chat = state.chat();
    let model = body
        .model
        .clone()
        .unwrap_or_else(|| state.agent().model().name().to_string());
    let refuse = |error| Refusal {
        error,
        session_id: session_id.map(str::to_string),
        model: model.clone(),
    };
    if let Some(why) = chat.llm.watch.as_ref().and_then(|w| w.unavailable()) {
        let error = etl_agent::run::model_error(&model, etl_llm::LlmError::Unavailable(why));
        return Ok(Err(refuse(error)));
    }
    if chat.caps.is_empty() {
        return Ok(Ok(Allowance::default()));
    }
    let check = usage::check_caps(
        chat.usage.as_ref(),
        &chat.caps,
        &auth.key.tenant,
        &auth.key.id,
        chrono::Utc::now(),
    )
    .await
    .map_err(|e| ApiError::internal("checking the AI usage cap", e))?;
    if let Some(spent) = check.exceeded() {
        tracing::info!(scope = spent.scope, id = %spent.id, "AI usage cap exceeded");
        return Ok(Err(refuse(RunError::cap_exceeded(spent.explain()))));
    }
    Ok(Ok(check.allowance))
}

/// Answers a refusal: the `/chat` failure body, or a stream of `start` and `error`.
fn refused(refusal: Refusal, streaming: bool) -> Response {
    if !streaming {
        return run_failed(refusal.error).into_response();
    }
    let events = [
        AgentEvent::Start {
            run_id: etl_agent::run::new_run_id(),
            session_id: refusal.session_id,
            model: refusal.model,
        },
        AgentEvent::Error(refusal.error),
    ];
    let frames: Vec<Result<Event, Infallible>> = events.iter().map(|e| Ok(frame(e))).collect();
    Sse::new(futures::stream::iter(frames)).into_response()
}

/// Builds the turn: the caller, the options (the body's, then the session's defaults), the
/// session's history, and the user message stored before the run.
async fn prepare(
    state: &ApiState,
    auth: &Auth,
    body: ChatBody,
    session: Option<Session>,
    allowance: Allowance,
) -> Result<Turn, ApiError> {
    let mut options = RunOptions {
        system_prompt: body.system_prompt,
        include_tools: body.include_tools.unwrap_or(true),
        max_tokens: body.max_tokens,
        temperature: body.temperature,
        model: body.model,
        allowance,
        ..RunOptions::default()
    };
    let mut history = Vec::new();
    let session = match session {
        None => None,
        Some(s) => {
            if options.system_prompt.is_none() {
                options.system_prompt = s.system_prompt.clone();
            }
            if body.include_tools.is_none() {
                options.include_tools = s.include_tools;
            }
            options.session_id = Some(s.id.clone());
            let store = state.sessions().clone();
            history = sessions::history(store.as_ref(), &auth.key.tenant, &s.id)
                .await
                .map_err(|e| ApiError::internal("reading the session's history", e))?;
            let turn = SessionTurn {
                store,
                tenant: auth.key.tenant.clone(),
                id: s.id,
            };
            // Before the run, so the question is kept even when the run fails or is cut off.
            let stored = sessions::append_now(
                turn.store.as_ref(),
                &turn.tenant,
                &turn.id,
                vec![Message::user(body.message.clone())],
            )
            .await
            .map_err(|e| ApiError::internal("storing the message in the session", e))?;
            if stored.is_none() {
                return Err(session_not_found(&turn.id));
            }
            Some(turn)
        }
    };
    Ok(Turn {
        request: RunRequest {
            caller: agent_caller(&auth.key.tenant, &auth.key.name, auth.key.role),
            history,
            message: body.message,
            options,
        },
        after: AfterRun {
            tenant: auth.key.tenant.clone(),
            key_id: auth.key.id.clone(),
            session,
        },
    })
}

impl AfterRun {
    /// Stores the run's messages in the session, then records what it used.
    async fn keep(&self, state: &ApiState, outcome: &RunOutcome) {
        if let Some(session) = &self.session {
            session
                .keep(outcome.messages.clone(), "the run's messages")
                .await;
        }
        self.record_usage(state, outcome).await;
    }

    /// Keeps what a run used (runs that used nothing are not recorded). A failure is logged,
    /// never turned into the answer, since the run itself already happened.
    async fn record_usage(&self, state: &ApiState, outcome: &RunOutcome) {
        let used = outcome.usage;
        if used.total_tokens == 0 && used.tool_calls == 0 {
            return;
        }
        let record = UsageRecord {
            tenant: self.tenant.clone(),
            key_id: self.key_id.clone(),
            session_id: self.session.as_ref().map(|s| s.id.clone()),
            run_id: outcome.run_id.clone(),
            model: outcome.model.clone(),
            input_tokens: used.input_tokens,
            output_tokens: used.output_tokens,
            tool_calls: used.tool_calls,
            llm_calls: used.llm_calls,
            cost_micros: outcome.cost_micros,
            at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6),
        };
        if let Err(e) = state.chat().usage.record_usage(&record).await {
            tracing::error!(run_id = %outcome.run_id, error = %e, "could not record the run's AI usage");
        }
    }
}

/// 404 `session_not_found` for an id that is unknown in the caller's tenant.
pub fn session_not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "session_not_found",
        format!(
            "there is no session '{id}' for this API key's tenant; create one with POST \
             {}/sessions or list yours with GET {}/sessions",
            crate::BASE_PATH,
            crate::BASE_PATH
        ),
    )
}

/// Runs a turn to the end and answers the `/chat` body (with `session_id` inside a session).
async fn answer(state: &ApiState, turn: Turn) -> Response {
    let agent = state.agent().clone();
    let cancel = state.shutdown().child_token();
    // The run and its bookkeeping live on their own task; if this handler is dropped (the
    // client left), the guard cancels the run and the task still stores what was said.
    let guard = cancel.clone().drop_guard();
    let state = state.clone();
    let task = tokio::spawn(async move {
        let outcome = agent.chat(turn.request, cancel).await;
        turn.after.keep(&state, &outcome).await;
        outcome
    });
    let outcome = task.await;
    drop(guard);
    match outcome {
        Ok(RunOutcome {
            result: Ok(body), ..
        }) => axum::Json(body).into_response(),
        Ok(RunOutcome { result: Err(e), .. }) => run_failed(e).into_response(),
        Err(e) => ApiError::internal("running the agent", e).into_response(),
    }
}

/// A run that ended without an answer: 200 with `success: false` (the public API's
/// application-level failure), its sentence and code (and for `cap_exceeded`, whose sentence
/// is the public API's fixed one, `detail`: which cap and what to do).
fn run_failed(e: RunError) -> axum::Json<Json> {
    let mut body = json!({"success": false, "error": e.error, "code": e.code});
    if let Some(detail) = e.detail {
        body["detail"] = json!(detail);
    }
    axum::Json(body)
}

/// Runs a turn as server-sent events. A forwarding task reads the loop's events and writes
/// frames; it holds back the last event (`done` or `error`) until the session has the run's
/// messages, so a client that reads the session right after `done` sees the whole turn. When
/// the client goes away the forwarder drops the loop's receiver and cancels the run, then still
/// stores what was said.
fn stream(state: &ApiState, turn: Turn) -> Response {
    let agent = state.agent().clone();
    let cancel = state.shutdown().child_token();
    let (tx, rx) = mpsc::channel::<Event>(64);
    let mut run = agent.stream(turn.request, cancel.clone());
    let after = turn.after;
    let state = state.clone();
    tokio::spawn(async move {
        let last = forward(&mut run.events, &tx, &cancel, |event| Some(frame(event))).await;
        drop(run.events);
        let outcome = match run.outcome.await {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                tracing::error!(error = %e, "the agent run failed");
                None
            }
        };
        if let Some(outcome) = &outcome {
            after.keep(&state, outcome).await;
        }
        let last = last.unwrap_or_else(|| {
            AgentEvent::Error(etl_agent::run::RunError::new(
                "internal",
                "the run ended without an answer; the details are in the server log",
            ))
        });
        let _ = tx.send(frame(&last)).await;
    });
    sse_response(rx)
}

/// Forwards a run's events to a stream's frames, each turned into a frame by `frame` (`None`:
/// nothing to send), until the run's last event (`done` or `error`), which is answered rather
/// than sent so the caller can finish the turn first. A client that goes away (the frames'
/// receiver dropped) cancels the run; then, as when the run ends without a last event, the
/// answer is `None`.
pub(crate) async fn forward(
    events: &mut mpsc::Receiver<AgentEvent>,
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
    mut frame: impl FnMut(&AgentEvent) -> Option<Event>,
) -> Option<AgentEvent> {
    loop {
        tokio::select! {
            biased;
            _ = tx.closed() => {
                cancel.cancel();
                return None;
            }
            event = events.recv() => match event {
                None => return None,
                Some(event @ (AgentEvent::Done(_) | AgentEvent::Error(_))) => return Some(event),
                Some(event) => {
                    if let Some(f) = frame(&event)
                        && tx.send(f).await.is_err()
                    {
                        cancel.cancel();
                        return None;
                    }
                }
            },
        }
    }
}

/// The `text/event-stream` answer sending `rx`'s frames as they come, with a keep-alive comment
/// while nothing happens.
pub(crate) fn sse_response(rx: mpsc::Receiver<Event>) -> Response {
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(frames)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// One SSE frame: `event: <type>` and `data: <the event as JSON, with the same type>`.
fn frame(event: &AgentEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|e| {
        json!({"type": "error", "error": format!("an event could not be encoded: {e}"), "code": "internal"})
            .to_string()
    });
    Event::default().event(event.kind()).data(data)
}

/// Answer one message.
#[utoipa::path(
    post,
    path = "/rest/v1/ai-agent/api/chat",
    tag = "chat",
    security(("bearer" = [])),
    request_body(content = Object, description = "`message` (string, required); optional \
        `include_tools` (bool, default true), `system_prompt`, `max_tokens`, `temperature`, `model`"),
    responses(
        (status = 200, description = "`{success, response, tools_used, tool_calls, usage, model, \
            duration_ms, finish}`; a run that failed answers `success: false` with `error` and \
            `code` (`llm_unavailable`, `cap_exceeded` with `detail`, `canceled`)", content_type = "application/json"),
        (status = 400, description = "Missing, empty or mistyped `message` or option, or a `model` this server does not offer", body = crate::ErrorBody),
        (status = 401, description = "No usable key", body = crate::ErrorBody),
        (status = 413, description = "Body or message over the limit", body = crate::ErrorBody),
        (status = 429, description = "Over the key's rate limit", body = crate::ErrorBody),
    )
)]
pub async fn chat(
    axum::extract::State(state): axum::extract::State<ApiState>,
    auth: Auth,
    JsonBody(body): JsonBody<Json>,
) -> Result<Response, ApiError> {
    let body = ChatBody::parse(&body, state.config().max_message_bytes)?;
    check_model(&state, &body)?;
    let allowance = match admit(&state, &auth, &body, None).await? {
        Ok(allowance) => allowance,
        Err(refusal) => return Ok(refused(refusal, false)),
    };
    let turn = prepare(&state, &auth, body, None, allowance).await?;
    Ok(answer(&state, turn).await)
}

/// Answer one message as server-sent events.
#[utoipa::path(
    post,
    path = "/rest/v1/ai-agent/api/chat/stream",
    tag = "chat",
    security(("bearer" = [])),
    request_body(content = Object, description = "As POST /chat"),
    responses(
        (status = 200, description = "`text/event-stream`: `start`, then `token`, `tool_start`, \
            `tool_end`, `usage` as they happen, and last `done` (the /chat body) or `error` \
            (`error`, `code`, for `cap_exceeded` also `detail`); `: keep-alive` every 15 s while idle", content_type = "text/event-stream"),
        (status = 400, description = "Missing, empty or mistyped `message` or option, or a `model` this server does not offer", body = crate::ErrorBody),
        (status = 401, description = "No usable key", body = crate::ErrorBody),
        (status = 413, description = "Body or message over the limit", body = crate::ErrorBody),
    )
)]
pub async fn chat_stream(
    axum::extract::State(state): axum::extract::State<ApiState>,
    auth: Auth,
    JsonBody(body): JsonBody<Json>,
) -> Result<Response, ApiError> {
    let body = ChatBody::parse(&body, state.config().max_message_bytes)?;
    check_model(&state, &body)?;
    let allowance = match admit(&state, &auth, &body, None).await? {
        Ok(allowance) => allowance,
        Err(refusal) => return Ok(refused(refusal, true)),
    };
    let turn = prepare(&state, &auth, body, None, allowance).await?;
    Ok(stream(&state, turn))
}

/// `/sessions/{id}/chat` and `/sessions/{id}/chat/stream`: the session must exist in the
/// caller's tenant; its history goes to the model.
pub(crate) async fn session_chat(
    state: &ApiState,
    auth: &Auth,
    id: &str,
    body: &Json,
    streaming: bool,
) -> Result<Response, ApiError> {
    let body = ChatBody::parse(body, state.config().max_message_bytes)?;
    check_model(state, &body)?;
    let session = state
        .sessions()
        .get_session(&auth.key.tenant, id)
        .await
        .map_err(|e| ApiError::internal("reading the session", e))?
        .ok_or_else(|| session_not_found(id))?;
    let allowance = match admit(state, auth, &body, Some(&session.id)).await? {
        Ok(allowance) => allowance,
        Err(refusal) => return Ok(refused(refusal, streaming)),
    };
    let turn = prepare(state, auth, body, Some(session), allowance).await?;
    Ok(if streaming {
        stream(state, turn)
    } else {
        answer(state, turn).await
    })
}

/// A turn for the front ends beside `/chat` (MCP's `etlworks_assistant`, the OpenAI-compatible
/// endpoint): the same checks (model, gate, caps), preparation and bookkeeping after the run
/// (session, usage) as `/chat`, with the loop's events handed to the caller, who must read
/// them to the end (dropping them cancels the run, as does `cancel`, which should be a child
/// of [`ApiState::shutdown`]). The outcome resolves once the run is kept. `history`, when
/// given, replaces the session's (OpenAI clients send the whole conversation every time). A
/// turn refused before it starts (model unreachable, cap spent) is a stream of `start` and
/// `error` whose outcome carries the same error.
pub(crate) async fn start_turn(
    state: &ApiState,
    auth: &Auth,
    body: ChatBody,
    session: Option<Session>,
    history: Option<Vec<Message>>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<etl_agent::run::RunStream, ApiError> {
    check_model(state, &body)?;
    let session_id = session.as_ref().map(|s| s.id.clone());
    let allowance = match admit(state, auth, &body, session_id.as_deref()).await? {
        Ok(allowance) => allowance,
        Err(refusal) => {
            let run_id = etl_agent::run::new_run_id();
            let (tx, events) = mpsc::channel(2);
            let _ = tx.try_send(AgentEvent::Start {
                run_id: run_id.clone(),
                session_id: refusal.session_id,
                model: refusal.model.clone(),
            });
            let _ = tx.try_send(AgentEvent::Error(refusal.error.clone()));
            let outcome = RunOutcome {
                run_id,
                result: Err(refusal.error),
                messages: Vec::new(),
                response: String::new(),
                usage: Default::default(),
                model: refusal.model,
                cost_micros: 0,
            };
            return Ok(etl_agent::run::RunStream {
                events,
                outcome: tokio::spawn(async move { outcome }),
            });
        }
    };
    let mut turn = prepare(state, auth, body, session, allowance).await?;
    if let Some(history) = history {
        turn.request.history = history;
    }
    let run = state.agent().stream(turn.request, cancel);
    let (state, after, running) = (state.clone(), turn.after, run.outcome);
    let outcome = tokio::spawn(async move {
        match running.await {
            Ok(outcome) => {
                after.keep(&state, &outcome).await;
                outcome
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the agent run was aborted: {e}"),
        }
    });
    Ok(etl_agent::run::RunStream {
        events: run.events,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_field_by_field() {
        let ok = ChatBody::parse(
            &json!({"message": "hi", "include_tools": false, "max_tokens": 10, "temperature": 0.5}),
            100,
        )
        .unwrap();
        assert_eq!(ok.message, "hi");
        assert_eq!(ok.include_tools, Some(false));
        assert_eq!(ok.max_tokens, Some(10));
        for (body, needle) in [
            (json!({}), "no 'message'"),
            (json!({"message": "  "}), "empty"),
            (json!({"message": 5}), "must be a string, got a number"),
            (json!([1]), "JSON object"),
            (
                json!({"message": "x", "include_tools": "yes"}),
                "'include_tools' must be true or false",
            ),
            (
                json!({"message": "x", "max_tokens": -1}),
                "'max_tokens' must be a positive integer",
            ),
            (json!({"message": "x", "temperature": 9}), "'temperature'"),
        ] {
            let e = ChatBody::parse(&body, 100).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message().contains(needle), "{body}: {}", e.message());
        }
        let long = ChatBody::parse(&json!({"message": "x".repeat(101)}), 100).unwrap_err();
        assert_eq!(long.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(long.message().contains("101 bytes"), "{}", long.message());
    }
}
