//! The Agent API over HTTP (`API.md`): the tools, key management, the tenant's knowledge-base
//! documents, health and the OpenAPI document, under `/rest/v1/ai-agent/api`. This is the only
//! crate that knows HTTP; everything it serves is done by `etl-agent` and the engine.
//!
//! Build the state with [`ApiState::new`] and serve [`router`]:
//!
//! ```no_run
//! # async fn demo(tools: etl_agent::tools::ToolRegistry, library: std::sync::Arc<etl_agent::Library>,
//! #               keys: std::sync::Arc<dyn etl_agent::keys::KeyStore>,
//! #               sessions: std::sync::Arc<dyn etl_agent::sessions::SessionStore>,
//! #               usage: std::sync::Arc<dyn etl_agent::usage::UsageStore>) -> std::io::Result<()> {
//! let agent = etl_agent::run::Agent::new(
//!     std::sync::Arc::new(etl_agent::planner::Planner::new()),
//!     tools.clone(),
//! );
//! let chat = etl_api::Chat::new(agent, sessions, usage);
//! let state = etl_api::ApiState::new(tools, library, keys, chat, etl_api::ApiConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! etl_api::serve::serve(listener, etl_api::router(state), Default::default(), stop).await;
//! # Ok(())
//! # }
//! ```
//!
//! Every answer carries `x-request-id` (the client's, when it sent a sane one), and every
//! request is logged in a tracing span with that id. Every error, whatever its status, is the
//! body [`error::ErrorBody`]. MCP is served at [`mcp::MCP_PATH`] and an OpenAI-compatible
//! endpoint under `/v1` ([`openai_compat`]), with the same keys.

pub mod auth;
pub mod chat;
pub mod downloads;
pub mod error;
pub mod kb;
pub mod key_cache;
pub mod keys;
pub mod mcp;
pub mod openai_compat;
pub mod serve;
pub mod sessions;
pub mod tools;
pub mod usage;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use etl_agent::Library;
use etl_agent::keys::KeyStore;
use etl_agent::run::Agent;
use etl_agent::sessions::SessionStore;
use etl_agent::tools::ToolRegistry;
use etl_agent::usage::{Caps, UsageStore};
use etl_agent::watch::Watched;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use auth::{Auth, RateLimiter};
pub use error::{ApiError, ErrorBody};

/// Where the API lives.
pub const BASE_PATH: &str = "/rest/v1/ai-agent/api";

/// The header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Limits and identity of a served API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Largest JSON request body, in bytes (413 above it).
    pub body_limit: usize,
    /// Largest knowledge-base document upload, in bytes.
    pub document_limit: usize,
    /// Sustained requests per second allowed per key (0 turns the limit off).
    pub rate_per_second: f64,
    /// Requests a key may send at once before the sustained rate applies.
    pub rate_burst: u32,
    /// The version `GET /health` reports.
    pub version: String,
    /// Sessions one tenant may keep; creating one more answers 400 until some are deleted.
    pub max_sessions_per_tenant: u64,
    /// Largest chat `message` (and `system_prompt`), in bytes of UTF-8; over it, 413.
    pub max_message_bytes: usize,
    /// Time a client has to send a whole request body once its headers arrived; over it, 408.
    pub read_timeout: std::time::Duration,
    /// Host names (or `host:port`) MCP accepts in the `Host` header; `*` accepts any. See
    /// [`mcp::default_allowed_hosts`].
    pub mcp_allowed_hosts: Vec<String>,
}

/// Default of [`ApiConfig::max_sessions_per_tenant`].
pub const DEFAULT_MAX_SESSIONS: u64 = 10_000;
/// Default of [`ApiConfig::max_message_bytes`]: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// What chat needs: the agent loop (its model and tools), where sessions and usage live, the
/// model names a request may ask for, the usage caps and what `/health` says of the model.
#[derive(Clone)]
pub struct Chat {
    pub agent: Agent,
    pub sessions: Arc<dyn SessionStore>,
    pub usage: Arc<dyn UsageStore>,
    /// Checked before every run (and the remainder enforced during it).
    pub caps: Caps,
    pub llm: LlmInfo,
}

impl Chat {
    /// Chat with no caps, the agent's model as the only one a request may name, reported as
    /// the built-in planner.
    pub fn new(agent: Agent, sessions: Arc<dyn SessionStore>, usage: Arc<dyn UsageStore>) -> Chat {
        let name = agent.model().name().to_string();
        Chat {
            agent,
            sessions,
            usage,
            caps: Caps::default(),
            llm: LlmInfo {
                provider: "builtin".into(),
                base_url: None,
                models: vec![name],
                watch: None,
            },
        }
    }
}

/// The model behind chat, as `/health` reports it and requests may name it.
#[derive(Clone)]
pub struct LlmInfo {
    /// `builtin`, `openai` or `anthropic`.
    pub provider: String,
    /// The provider's base URL (without credentials), for a provider.
    pub base_url: Option<String>,
    /// The names a request's `model` may take; the first is the default.
    pub models: Vec<String>,
    /// The health gate in front of a provider (`None` for the built-in planner).
    pub watch: Option<Arc<Watched>>,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            body_limit: 1024 * 1024,
            document_limit: etl_kb::MAX_DOCUMENT_BYTES,
            rate_per_second: 20.0,
            rate_burst: 40,
            version: env!("CARGO_PKG_VERSION").to_string(),
            max_sessions_per_tenant: DEFAULT_MAX_SESSIONS,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            read_timeout: serve::DEFAULT_READ_TIMEOUT,
            mcp_allowed_hosts: mcp::default_allowed_hosts(),
        }
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    tools: ToolRegistry,
    library: Arc<Library>,
    keys: Arc<dyn KeyStore>,
    chat: Chat,
    /// Cancelled when the server stops: every chat run is a child, so open streams end with
    /// an `error` event instead of holding the shutdown up.
    shutdown: CancellationToken,
    limiter: RateLimiter,
    catalogue: axum::body::Bytes,
    openapi: axum::body::Bytes,
    config: ApiConfig,
}

impl ApiState {
    pub fn new(
        tools: ToolRegistry,
        library: Arc<Library>,
        keys: Arc<dyn KeyStore>,
        chat: Chat,
        config: ApiConfig,
    ) -> ApiState {
        let catalogue = tools::catalogue(&tools).into();
        let openapi = ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
            .into();
        ApiState {
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(config.rate_per_second, config.rate_burst),
                tools,
                library,
                keys: Arc::new(key_cache::CachedKeyStore::new(
                    keys,
                    key_cache::KEY_CACHE_TTL,
                )),
                chat,
                shutdown: CancellationToken::new(),
                catalogue,
                openapi,
                config,
            }),
        }
    }

    pub fn tools(&self) -> &ToolRegistry {
        &self.inner.tools
    }
    pub fn library(&self) -> &Arc<Library> {
        &self.inner.library
    }
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.inner.keys
    }
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }
    pub fn agent(&self) -> &Agent {
        &self.inner.chat.agent
    }
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.inner.chat.sessions
    }
    pub fn chat(&self) -> &Chat {
        &self.inner.chat
    }
    /// Cancel it when the server stops: chat runs are canceled and their streams end with an
    /// `error` event (what was said is kept in the session).
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }
    fn catalogue(&self) -> axum::body::Bytes {
        self.inner.catalogue.clone()
    }
}

/// The whole HTTP surface, ready to serve.
pub fn router(state: ApiState) -> Router {
    let path = |p: &str| format!("{BASE_PATH}{p}");
    let body_limit = state.config().body_limit;
    let document_limit = state.config().document_limit;
    Router::new()
        .route("/health", get(health))
        .route(&path("/health"), get(health))
        .route(downloads::PYTHON_CLIENT_PATH, get(downloads::python_client))
        .route(&path("/openapi.json"), get(openapi))
        .route(&path("/tools"), get(tools::list))
        .route(&path("/tools/{name}/execute"), post(tools::execute))
        .route(&path("/chat"), post(chat::chat))
        .route(&path("/chat/stream"), post(chat::chat_stream))
        .route(
            &path("/sessions"),
            get(sessions::list).post(sessions::create),
        )
        .route(
            &path("/sessions/{id}"),
            get(sessions::get).delete(sessions::delete),
        )
        .route(&path("/sessions/{id}/messages"), get(sessions::messages))
        .route(&path("/sessions/{id}/chat"), post(sessions::chat))
        .route(
            &path("/sessions/{id}/chat/stream"),
            post(sessions::chat_stream),
        )
        .route(&path("/usage"), get(usage::report))
        .route(&path("/keys"), get(keys::list).post(keys::create))
        .route(&path("/keys/{id}"), axum::routing::delete(keys::revoke))
        .route(&path("/kb/documents"), get(kb::list))
        .route(
            &path("/kb/documents/{*name}"),
            put(kb::upload)
                .layer(DefaultBodyLimit::max(document_limit))
                .delete(kb::remove),
        )
        .merge(mcp::routes(&state))
        .merge(openai_compat::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// Gives every request an id (the client's `x-request-id` when it is sane, a new one
/// otherwise), runs it inside a tracing span with that id, logs the outcome and echoes the id.
async fn request_context(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, ms, "answered");
        } else {
            tracing::info!(status, ms, "answered");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(
        "not_found",
        format!(
            "there is no endpoint {} {}; the endpoints are listed in GET {BASE_PATH}/openapi.json",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} does not accept {}; see GET {BASE_PATH}/openapi.json for its methods",
        request.uri().path(),
        request.method()
    ))
}

/// Liveness and what this server is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub success: bool,
    /// `ok` while the server answers and its model can; `degraded` while the LLM provider is
    /// unreachable (chat then answers `llm_unavailable`; everything else works).
    pub status: String,
    pub service: String,
    pub version: String,
    /// The model behind chat (`built-in-planner` unless an LLM is configured).
    pub model: String,
    /// How many tools `GET /tools` lists.
    pub tools: usize,
    pub llm: LlmHealth,
}

/// The model behind chat and whether it can answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LlmHealth {
    /// `builtin`, `openai` or `anthropic`.
    pub provider: String,
    pub model: String,
    /// The provider's base URL, for a provider.
    pub base_url: Option<String>,
    /// The names a request's `model` may take.
    pub models: Vec<String>,
    /// Whether the last check reached the provider (always true for the built-in planner).
    pub reachable: bool,
    /// When the provider was last checked (RFC 3339).
    pub checked_at: Option<String>,
    /// What the last check found: what was checked, or exactly what is wrong.
    pub detail: String,
    /// The last failed model call since start, and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// Liveness (no key needed).
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses((status = 200, description = "The server is up", body = Health))
)]
pub async fn health(State(state): State<ApiState>) -> axum::Json<Health> {
    let chat = state.chat();
    let model = state.agent().model().name().to_string();
    let time =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let llm = match &chat.llm.watch {
        None => LlmHealth {
            provider: chat.llm.provider.clone(),
            model: model.clone(),
            base_url: chat.llm.base_url.clone(),
            models: chat.llm.models.clone(),
            reachable: true,
            checked_at: None,
            detail: format!("{model} runs in this process and needs no connection"),
            last_error: None,
            last_error_at: None,
        },
        Some(watch) => {
            let h = watch.health();
            LlmHealth {
                provider: chat.llm.provider.clone(),
                model: model.clone(),
                base_url: chat.llm.base_url.clone(),
                models: chat.llm.models.clone(),
                reachable: h.reachable,
                checked_at: h.checked_at.map(time),
                detail: h.detail,
                last_error: h.last_error,
                last_error_at: h.last_error_at.map(time),
            }
        }
    };
    axum::Json(Health {
        success: true,
        status: if llm.reachable { "ok" } else { "degraded" }.into(),
        service: "etlworks-agent".into(),
        version: state.config().version.clone(),
        model,
        tools: state.tools().tools().len(),
        llm,
    })
}

/// This API as OpenAPI 3.1, generated from the handlers and types (no key needed).
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/openapi.json",
    tag = "service",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi(State(state): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.inner.openapi.clone(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "etlworks-agent Agent API",
        description = "The self-hosted Agent API: chat (plain and streamed), chat \
                       sessions, tools, key management, knowledge-base \
                       documents and AI usage. Every request under the base path sends \
                       `Authorization: Bearer <key>`. Errors are always \
                       `{\"success\": false, \"error\", \"code\"}`. MCP (Streamable HTTP) is \
                       served at /rest/v1/ai-agent/mcp and an OpenAI-compatible \
                       endpoint at /v1/models and /v1/chat/completions."
    ),
    paths(
        health,
        openapi,
        downloads::python_client,
        chat::chat,
        chat::chat_stream,
        sessions::create,
        sessions::list,
        sessions::get,
        sessions::delete,
        sessions::messages,
        sessions::chat,
        sessions::chat_stream,
        usage::report,
        tools::list,
        tools::execute,
        keys::create,
        keys::list,
        keys::revoke,
        kb::list,
        kb::upload,
        kb::remove,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "chat", description = "One message through the agent, answered whole or streamed"),
        (name = "sessions", description = "Conversations kept across messages and restarts"),
        (name = "tools", description = "The agent's tools, callable directly"),
        (name = "keys", description = "API keys of the caller's tenant (admin keys)"),
        (name = "knowledge base", description = "The tenant's own knowledge-base documents"),
        (name = "usage", description = "AI usage of the caller's tenant (admin keys)"),
        (name = "service", description = "Health and this document"),
    )
)]
struct ApiDoc;

/// Declares the bearer-key scheme the paths refer to as `bearer`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A 256-character API key from <data-dir>/admin.key or \
                         'etlworks-agent keys create'",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document as a value, for tools that want it without serving HTTP.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
