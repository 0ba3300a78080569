//! The binary as a client of a running server: `etlworks-agent tools|tool|chat|chat-stream|
//! session-*` against `ETLWORKS_URL` with `ETLWORKS_API_KEY`, with the grammar, output, error
//! line, retry rules and exit codes of the Python client's command line
//! (`clients/python/etlworks_agent/__init__.py`), so one tool serves both roles.
//!
//! Exit codes: 0 ok; 1 the server refused or failed the request, or could not be reached; 2 a
//! usage error (bad arguments, invalid JSON, a variable not set). This module never opens the
//! data directory: everything goes over HTTP.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, Url};
use serde_json::{Map, Value as Json, json};

/// The environment variable with the server's root URL.
pub const ENV_URL: &str = "ETLWORKS_URL";
/// The environment variable with the API key.
pub const ENV_API_KEY: &str = "ETLWORKS_API_KEY";

/// Seconds to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds to wait for an answer, or between two pieces of a stream (the server sends a
/// keep-alive every 15 s, so only a stalled server reaches it).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Retries after the first attempt, for the failures that may be retried.
const MAX_RETRIES: u32 = 2;
/// A `Retry-After` longer than this is not waited for: the error is reported at once.
const MAX_RETRY_AFTER: f64 = 60.0;
const BASE_BACKOFF: f64 = 0.25;
const MAX_BACKOFF: f64 = 8.0;

const EXIT_API: u8 = 1;
const EXIT_USAGE: u8 = 2;

const TOOL_EXAMPLE: &str = r#"tool search_knowledge_base '{"query": "merge keys", "limit": 3}'"#;

/// Shown under `--help` of every client command (and the binary's own help).
pub const ENVIRONMENT_HELP: &str = "\
Client commands (tools, tool, chat, chat-stream, session-*) talk to a running server:
  ETLWORKS_URL       the server's root URL, e.g. http://127.0.0.1:8080 (without /rest)
  ETLWORKS_API_KEY   the API key, e.g. $(cat data/admin.key)
Their exit codes: 0 ok, 1 the server refused or failed the request (or was unreachable),
2 usage error. See docs/clients.md.";

/// The client commands, flattened into the binary's command list.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Client: list the server's tools.
    #[command(after_help = ENVIRONMENT_HELP)]
    Tools {
        #[command(flatten)]
        output: Output,
    },
    /// Client: run one tool with its arguments as a JSON object, e.g.
    /// tool search_knowledge_base '{"query": "merge keys", "limit": 3}'.
    #[command(after_help = ENVIRONMENT_HELP)]
    Tool {
        /// The tool, e.g. search_knowledge_base or host_cli.
        name: String,
        /// The arguments as a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
        #[command(flatten)]
        output: Output,
    },
    /// Client: send one message to the agent and print its answer.
    #[command(after_help = ENVIRONMENT_HELP)]
    Chat {
        message: String,
        #[command(flatten)]
        options: ChatOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Client: send one message and print the answer as it is written, with tool calls as
    /// one-line notes on standard error.
    #[command(after_help = ENVIRONMENT_HELP)]
    ChatStream {
        message: String,
        #[command(flatten)]
        options: ChatOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Client: start a session and print its id.
    #[command(after_help = ENVIRONMENT_HELP)]
    SessionCreate {
        /// A title to tell the session apart.
        #[arg(long)]
        title: Option<String>,
        /// A system prompt for every turn.
        #[arg(long)]
        system_prompt: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Client: send a message inside a session and print the answer.
    #[command(after_help = ENVIRONMENT_HELP)]
    SessionChat {
        #[arg(value_name = "ID")]
        session_id: String,
        message: String,
        #[command(flatten)]
        options: ChatOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Client: send a message inside a session, streaming the answer.
    #[command(after_help = ENVIRONMENT_HELP)]
    SessionChatStream {
        #[arg(value_name = "ID")]
        session_id: String,
        message: String,
        #[command(flatten)]
        options: ChatOptions,
        #[command(flatten)]
        output: Output,
    },
    /// Client: print a session's messages.
    #[command(after_help = ENVIRONMENT_HELP)]
    SessionMessages {
        #[arg(value_name = "ID")]
        session_id: String,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        output: Output,
    },
    /// Client: list the sessions.
    #[command(after_help = ENVIRONMENT_HELP)]
    SessionList {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        output: Output,
    },
    /// Client: delete a session and its messages.
    #[command(after_help = ENVIRONMENT_HELP)]
    SessionDelete {
        #[arg(value_name = "ID")]
        session_id: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Args, Debug)]
pub struct Output {
    /// Print the server's JSON answers (one event per line for streams).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ChatOptions {
    /// Sent to the model before the conversation.
    #[arg(long)]
    system_prompt: Option<String>,
    /// Answer from the conversation alone, without tools.
    #[arg(long)]
    no_tools: bool,
}

#[derive(Args, Debug)]
pub struct Page {
    /// At most this many (server default: 100 messages, 50 sessions).
    #[arg(long)]
    limit: Option<i64>,
    /// Skip this many first.
    #[arg(long)]
    offset: Option<i64>,
}

impl ClientCommand {
    fn json(&self) -> bool {
        match self {
            ClientCommand::Tools { output }
            | ClientCommand::Tool { output, .. }
            | ClientCommand::Chat { output, .. }
            | ClientCommand::ChatStream { output, .. }
            | ClientCommand::SessionCreate { output, .. }
            | ClientCommand::SessionChat { output, .. }
            | ClientCommand::SessionChatStream { output, .. }
            | ClientCommand::SessionMessages { output, .. }
            | ClientCommand::SessionList { output, .. }
            | ClientCommand::SessionDelete { output, .. } => output.json,
        }
    }

    fn is_stream(&self) -> bool {
        matches!(
            self,
            ClientCommand::ChatStream { .. } | ClientCommand::SessionChatStream { .. }
        )
    }
}

/// Runs one client command; `json` is the binary's `--json` given before the command.
pub async fn run(command: ClientCommand, json: bool) -> ExitCode {
    let as_json = json || command.json();
    let stream = command.is_stream();
    match execute(command, as_json).await {
        Ok(()) | Err(Failure::Quiet) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Connection(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_API)
        }
        Err(Failure::ToolFailed { name, code }) => {
            eprintln!("error: the tool '{name}' ran and failed (code {code})");
            ExitCode::from(EXIT_API)
        }
        Err(Failure::Api(error)) => {
            if as_json {
                // Scripts reading --json output get the error body too, with status and id.
                let mut body = match &error.body {
                    Some(Json::Object(map)) => map.clone(),
                    _ => {
                        let mut map = Map::new();
                        map.insert("success".into(), Json::Bool(false));
                        map.insert("error".into(), Json::String(error.message.clone()));
                        map.insert("code".into(), json!(error.code));
                        map
                    }
                };
                body.entry("status").or_insert(json!(error.status));
                body.entry("request_id").or_insert(json!(error.request_id));
                let body = Json::Object(body);
                let text = if stream {
                    python_json(&body)
                } else {
                    pretty(&body)
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}").and_then(|_| out.flush());
            }
            eprintln!("error: {error}");
            ExitCode::from(EXIT_API)
        }
    }
}

/// Why a command did not succeed; each kind has its exit code.
#[derive(Debug)]
enum Failure {
    /// A mistake on the command line or in the environment: exit 2.
    Usage(String),
    /// The server could not be reached, or the connection broke: exit 1.
    Connection(String),
    /// The server answered with an error: exit 1.
    Api(Box<ApiFailure>),
    /// A tool ran and failed; its answer is already printed: exit 1.
    ToolFailed { name: String, code: String },
    /// The reader of our output went away (`| head`): stop, say nothing, exit 0.
    Quiet,
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::Quiet
        } else {
            Failure::Connection(format!("cannot write the output: {e}"))
        }
    }
}

/// An error answer of the API, printed as `MESSAGE (HTTP 404, code X, request id Y)`.
#[derive(Debug)]
struct ApiFailure {
    message: String,
    /// 200 for a failure inside a successful answer (an `error` event, `success: false`).
    status: Option<u16>,
    code: Option<String>,
    request_id: Option<String>,
    body: Option<Json>,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut details = Vec::new();
        if let Some(status) = self.status.filter(|s| *s != 200) {
            details.push(format!("HTTP {status}"));
        }
        if let Some(code) = self.code.as_deref().filter(|c| !c.is_empty()) {
            details.push(format!("code {code}"));
        }
        if let Some(id) = self.request_id.as_deref().filter(|i| !i.is_empty()) {
            details.push(format!("request id {id}"));
        }
        if details.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{} ({})", self.message, details.join(", "))
        }
    }
}

/// The failure an error body `{"success": false, "error", "code"}` describes.
fn error_from_body(
    status: u16,
    body: Option<Json>,
    request_id: Option<String>,
    fallback: String,
) -> ApiFailure {
    let message = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Json::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or(fallback);
    let code = body
        .as_ref()
        .and_then(|b| b.get("code"))
        .and_then(Json::as_str)
        .map(str::to_string);
    ApiFailure {
        message,
        status: Some(status),
        code,
        request_id,
        body: body.filter(Json::is_object),
    }
}

async fn execute(command: ClientCommand, as_json: bool) -> Result<(), Failure> {
    // Checked before the environment, as the Python client does: a typo is reported first.
    let tool_arguments = match &command {
        ClientCommand::Tool { arguments, .. } => Some(parse_tool_arguments(arguments)?),
        _ => None,
    };
    let client = Client::from_env()?;
    let mut out = std::io::stdout();
    match command {
        ClientCommand::Tools { .. } => {
            let answer = client
                .json(Method::GET, &["tools"], None, &[], true, &[])
                .await?;
            if as_json {
                writeln!(out, "{}", pretty(&answer))?;
            } else {
                write!(out, "{}", render_tools(&answer))?;
            }
        }
        ClientCommand::Tool { name, .. } => {
            let answer = client
                .json(
                    Method::POST,
                    &["tools", &name, "execute"],
                    tool_arguments.as_ref(),
                    &[],
                    false,
                    &["tool_failed"],
                )
                .await?;
            if as_json {
                writeln!(out, "{}", pretty(&answer))?;
            } else {
                let text = match answer.get("result") {
                    Some(Json::String(s)) => s.clone(),
                    Some(other) => pretty(other),
                    None => "null".to_string(),
                };
                write!(out, "{}", with_newline(&text))?;
            }
            out.flush()?;
            if answer.get("success") == Some(&Json::Bool(false)) {
                let code = answer
                    .get("code")
                    .map(plain)
                    .unwrap_or_else(|| "None".into());
                return Err(Failure::ToolFailed { name, code });
            }
        }
        ClientCommand::Chat {
            message, options, ..
        } => {
            let body = chat_body(&message, &options, Some(!options.no_tools));
            let answer = client
                .json(Method::POST, &["chat"], Some(&body), &[], false, &[])
                .await?;
            print_answer(&mut out, &answer, as_json)?;
        }
        ClientCommand::SessionChat {
            session_id,
            message,
            options,
            ..
        } => {
            let body = chat_body(&message, &options, options.no_tools.then_some(false));
            let answer = client
                .json(
                    Method::POST,
                    &["sessions", &session_id, "chat"],
                    Some(&body),
                    &[],
                    false,
                    &[],
                )
                .await?;
            print_answer(&mut out, &answer, as_json)?;
        }
        ClientCommand::ChatStream {
            message, options, ..
        } => {
            let body = chat_body(&message, &options, Some(!options.no_tools));
            client.stream(&["chat", "stream"], &body, as_json).await?;
        }
        ClientCommand::SessionChatStream {
            session_id,
            message,
            options,
            ..
        } => {
            let body = chat_body(&message, &options, options.no_tools.then_some(false));
            client
                .stream(&["sessions", &session_id, "chat", "stream"], &body, as_json)
                .await?;
        }
        ClientCommand::SessionCreate {
            title,
            system_prompt,
            ..
        } => {
            let mut body = Map::new();
            if let Some(title) = title {
                body.insert("title".into(), Json::String(title));
            }
            if let Some(prompt) = system_prompt {
                body.insert("system_prompt".into(), Json::String(prompt));
            }
            let answer = client
                .json(
                    Method::POST,
                    &["sessions"],
                    Some(&Json::Object(body)),
                    &[],
                    false,
                    &[],
                )
                .await?;
            if as_json {
                writeln!(out, "{}", pretty(&answer))?;
            } else {
                let Some(id) = answer.get("session_id").and_then(Json::as_str) else {
                    return Err(Failure::Api(Box::new(ApiFailure {
                        message: "the server created a session but did not say its id".into(),
                        status: Some(200),
                        code: None,
                        request_id: None,
                        body: Some(answer),
                    })));
                };
                writeln!(out, "{id}")?;
            }
        }
        ClientCommand::SessionMessages {
            session_id, page, ..
        } => {
            let answer = client
                .json(
                    Method::GET,
                    &["sessions", &session_id, "messages"],
                    None,
                    &page.query(),
                    true,
                    &[],
                )
                .await?;
            if as_json {
                writeln!(out, "{}", pretty(&answer))?;
            } else {
                write!(out, "{}", render_messages(&answer))?;
            }
        }
        ClientCommand::SessionList { page, .. } => {
            let answer = client
                .json(Method::GET, &["sessions"], None, &page.query(), true, &[])
                .await?;
            if as_json {
                writeln!(out, "{}", pretty(&answer))?;
            } else {
                write!(out, "{}", render_sessions(&answer))?;
            }
        }
        ClientCommand::SessionDelete { session_id, .. } => {
            let answer = client
                .json(
                    Method::DELETE,
                    &["sessions", &session_id],
                    None,
                    &[],
                    true,
                    &[],
                )
                .await?;
            if as_json {
                writeln!(out, "{}", pretty(&answer))?;
            } else {
                writeln!(out, "deleted session {session_id}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

impl Page {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(limit) = self.limit {
            q.push(("limit", limit.to_string()));
        }
        if let Some(offset) = self.offset {
            q.push(("offset", offset.to_string()));
        }
        q
    }
}

fn chat_body(message: &str, options: &ChatOptions, include_tools: Option<bool>) -> Json {
    let mut body = Map::new();
    body.insert("message".into(), Json::String(message.to_string()));
    if let Some(include) = include_tools {
        body.insert("include_tools".into(), Json::Bool(include));
    }
    if let Some(prompt) = &options.system_prompt {
        body.insert("system_prompt".into(), Json::String(prompt.clone()));
    }
    Json::Object(body)
}

fn print_answer(out: &mut impl Write, answer: &Json, as_json: bool) -> std::io::Result<()> {
    if as_json {
        writeln!(out, "{}", pretty(answer))
    } else {
        let text = answer.get("response").and_then(Json::as_str).unwrap_or("");
        write!(out, "{}", with_newline(text))
    }
}

fn parse_tool_arguments(text: &str) -> Result<Json, Failure> {
    let example = format!("etlworks-agent {TOOL_EXAMPLE}");
    let value: Json = serde_json::from_str(text).map_err(|e| {
        Failure::Usage(format!(
            "the tool arguments are not valid JSON: {e}; give one JSON object, e.g. {example}"
        ))
    })?;
    if !value.is_object() {
        let kind = match value {
            Json::Array(_) => "an array",
            Json::String(_) => "a string",
            Json::Number(_) => "a number",
            Json::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(Failure::Usage(format!(
            "the tool arguments must be a JSON object, got {kind}; e.g. {example}"
        )));
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A configured connection to one server.
struct Client {
    /// The instance root, e.g. `http://127.0.0.1:8080`.
    base_url: String,
    key: String,
    http: reqwest::Client,
}

impl Client {
    fn from_env() -> Result<Client, Failure> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(url) = var(ENV_URL) else {
            return Err(Failure::Usage(format!(
                "{ENV_URL} is not set; set it to the server's root URL, e.g. export {ENV_URL}=http://127.0.0.1:8080"
            )));
        };
        let Some(key) = var(ENV_API_KEY) else {
            return Err(Failure::Usage(format!(
                "{ENV_API_KEY} is not set; set it to an API key, e.g. export {ENV_API_KEY}=$(cat data/admin.key)"
            )));
        };
        let base_url = normalize_base_url(&url)?;
        etl_http::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("etlworks-agent-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Connection(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            base_url,
            key,
            http,
        })
    }

    /// The API address of `segments` (each one percent-encoded) with `query`.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = Url::parse(&format!("{}{}", self.base_url, etl_api::BASE_PATH))
            .expect("the base URL was checked");
        url.path_segments_mut()
            .expect("an http URL has a path")
            .extend(segments);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends a request and answers its JSON object; `success: false` (with a code not in
    /// `allow_codes`) is an error even inside a 200.
    async fn json(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Json>,
        query: &[(&str, String)],
        idempotent: bool,
        allow_codes: &[&str],
    ) -> Result<Json, Failure> {
        let url = self.url(segments, query);
        let response = self
            .send(method, url, body, idempotent, "application/json")
            .await?;
        let status = response.status().as_u16();
        let request_id = request_id(&response);
        let answer = self.decode(response).await?;
        if answer.get("success") == Some(&Json::Bool(false)) {
            let code = answer.get("code").and_then(Json::as_str).unwrap_or("");
            if !allow_codes.contains(&code) {
                return Err(Failure::Api(Box::new(error_from_body(
                    status,
                    Some(answer),
                    request_id,
                    "the server reported a failure without saying why".into(),
                ))));
            }
        }
        Ok(answer)
    }

    /// Reads a whole answer that must be a JSON object.
    async fn decode(&self, response: reqwest::Response) -> Result<Json, Failure> {
        let status = response.status().as_u16();
        let url = response.url().clone();
        let request_id = request_id(&response);
        let content_type = content_type(&response);
        let bytes = response.bytes().await.map_err(|e| {
            Failure::Connection(format!(
                "the connection to {} broke while reading the answer: {}",
                self.base_url,
                describe(&e)
            ))
        })?;
        let not_api = |what: String| {
            Failure::Api(Box::new(ApiFailure {
                message: what,
                status: Some(status),
                code: None,
                request_id: request_id.clone(),
                body: None,
            }))
        };
        match serde_json::from_slice::<Json>(&bytes) {
            Ok(answer @ Json::Object(_)) => Ok(answer),
            Ok(_) => Err(not_api(format!(
                "{url} answered JSON that is not an object"
            ))),
            Err(_) => Err(not_api(format!(
                "{url} answered HTTP {status} with {}, not the Agent API's JSON; is {ENV_URL} ({}) the etlworks-agent server's root URL?",
                content_type.as_deref().unwrap_or("no content type"),
                self.base_url
            ))),
        }
    }

    /// Sends one request, retrying what may be retried; answers a response below 400.
    ///
    /// Reads and deletes (`idempotent`) are resent on 429, 5xx and connection errors.
    /// Requests that change something are resent only when the server certainly did not act
    /// on them: 429, 503, or a connection that could not be opened.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Json>,
        idempotent: bool,
        accept: &str,
    ) -> Result<reqwest::Response, Failure> {
        let payload = body.map(|b| serde_json::to_vec(b).expect("JSON serializes"));
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&self.key)
                .header(reqwest::header::ACCEPT, accept);
            if let Some(payload) = &payload {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(payload.clone());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    let connect = e.is_connect();
                    if attempt < MAX_RETRIES && (idempotent || connect) {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(Failure::Connection(self.connection_error(&e)));
                }
            };
            let status = response.status();
            if status.as_u16() < 400 {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let may_retry =
                matches!(status.as_u16(), 429 | 503) || (status.is_server_error() && idempotent);
            if may_retry && attempt < MAX_RETRIES && retry_after.unwrap_or(0.0) <= MAX_RETRY_AFTER {
                drop(response);
                let wait = retry_after.map_or_else(|| backoff(attempt), Duration::from_secs_f64);
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            return Err(self.http_error(response).await);
        }
    }

    fn connection_error(&self, e: &reqwest::Error) -> String {
        let base = &self.base_url;
        if e.is_timeout() {
            if e.is_connect() {
                format!(
                    "could not connect to {base} within {} s; is the server up and {ENV_URL} right?",
                    CONNECT_TIMEOUT.as_secs()
                )
            } else {
                format!(
                    "could not get an answer from {base} within {} s; is the server up and {ENV_URL} right?",
                    READ_TIMEOUT.as_secs()
                )
            }
        } else {
            format!(
                "cannot connect to {base}: {}; is the etlworks-agent server running there, and is {ENV_URL} right?",
                describe(e)
            )
        }
    }

    /// The failure of an answer with status 400 or more.
    async fn http_error(&self, response: reqwest::Response) -> Failure {
        let status = response.status();
        let url = response.url().clone();
        let request_id = request_id(&response);
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<Json>(&text).ok();
        let reason = status.canonical_reason().unwrap_or("");
        let fallback = if body.as_ref().and_then(|b| b.get("error")).is_some() {
            String::new()
        } else if body.is_none() && !text.trim().is_empty() {
            let snippet: String = text
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(200)
                .collect();
            format!(
                "{url} answered HTTP {} {reason} without the API's error body ({snippet:?}); is {ENV_URL} ({}) the etlworks-agent server's root URL?",
                status.as_u16(),
                self.base_url
            )
        } else {
            format!("{url} answered HTTP {} {reason}", status.as_u16())
                .trim_end()
                .to_string()
        };
        Failure::Api(Box::new(error_from_body(
            status.as_u16(),
            body,
            request_id,
            fallback,
        )))
    }

    /// Posts a chat and prints its events as they arrive; a stream is never resent once it
    /// started.
    async fn stream(&self, segments: &[&str], body: &Json, as_json: bool) -> Result<(), Failure> {
        let url = self.url(segments, &[]);
        let mut response = self
            .send(Method::POST, url, Some(body), false, "text/event-stream")
            .await?;
        let status = response.status().as_u16();
        let request_id = request_id(&response);
        let content_type = content_type(&response).unwrap_or_default();
        if !content_type.contains("text/event-stream") {
            // Not a stream: a failure reported inside a 200 (cap_exceeded, llm_unavailable) or
            // something that is not the server.
            let answer = self.decode(response).await?;
            let shown = if content_type.is_empty() {
                "no content type"
            } else {
                &content_type
            };
            return Err(Failure::Api(Box::new(error_from_body(
                status,
                Some(answer),
                request_id,
                format!("the server answered {shown} instead of an event stream"),
            ))));
        }
        let mut printer = StreamPrinter::new(as_json);
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    printer.end_line()?;
                    return Err(Failure::Api(Box::new(ApiFailure {
                        message: format!(
                            "the stream broke before its 'done' event: {}",
                            describe(&e)
                        ),
                        status: Some(status),
                        code: Some("incomplete_stream".into()),
                        request_id,
                        body: None,
                    })));
                }
            };
            parser.feed(&chunk, &mut events);
            for (name, data) in events.drain(..) {
                let event = match serde_json::from_str::<Json>(&data) {
                    Ok(Json::Object(mut map)) => {
                        map.entry("type").or_insert(Json::String(name.clone()));
                        Json::Object(map)
                    }
                    Ok(other) => json!({"type": name, "data": other}),
                    Err(_) => {
                        printer.end_line()?;
                        let shown: String = data.chars().take(200).collect();
                        return Err(Failure::Api(Box::new(ApiFailure {
                            message: format!(
                                "the server sent a '{name}' event whose data is not JSON: {shown:?}"
                            ),
                            status: Some(status),
                            code: Some("bad_stream".into()),
                            request_id,
                            body: None,
                        })));
                    }
                };
                let kind = event.get("type").and_then(Json::as_str).unwrap_or("");
                if kind == "error" {
                    printer.end_line()?;
                    return Err(Failure::Api(Box::new(error_from_body(
                        status,
                        Some(event),
                        request_id,
                        "the run failed and the server gave no reason".into(),
                    ))));
                }
                let done = kind == "done";
                printer.event(&event)?;
                if done {
                    return Ok(());
                }
            }
        }
        printer.end_line()?;
        Err(Failure::Api(Box::new(ApiFailure {
            message: "the stream ended before its 'done' event: the server closed the connection \
                      early (did it stop, or did a proxy cut the connection?); what was said is \
                      kept in the session, if there was one"
                .into(),
            status: Some(status),
            code: Some("incomplete_stream".into()),
            request_id,
            body: None,
        })))
    }
}

fn request_id(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn normalize_base_url(url: &str) -> Result<String, Failure> {
    let mut url = url.trim().trim_end_matches('/').to_string();
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        return Err(Failure::Usage(format!(
            "the server URL '{url}' must start with http:// or https://; give the instance root, e.g. {ENV_URL}=http://127.0.0.1:8080"
        )));
    }
    // Accept the API's own address too: people often paste it from the docs.
    if lower.ends_with(etl_api::BASE_PATH) {
        url.truncate(url.len() - etl_api::BASE_PATH.len());
    }
    if Url::parse(&url).is_err() {
        return Err(Failure::Usage(format!(
            "the server URL '{url}' is not a valid URL; give the instance root, e.g. {ENV_URL}=http://127.0.0.1:8080"
        )));
    }
    Ok(url)
}

/// A short reason for a failed request, without the layers of wrapping.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut innermost = e.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "connection refused".into(),
                ConnectionReset => return "the connection was reset".into(),
                ConnectionAborted => return "the connection was closed by the server".into(),
                TimedOut => return "timed out".into(),
                UnexpectedEof => return "the connection closed in the middle of the answer".into(),
                _ => {}
            }
        }
        innermost = s.to_string();
        source = s.source();
    }
    let text = innermost;
    for (needle, reason) in [
        ("Name or service not known", "the host name is unknown"),
        ("failed to lookup address", "the host name is unknown"),
        (
            "connection closed before message completed",
            "the server closed the connection without answering",
        ),
        (
            "certificate",
            "the server's TLS certificate could not be verified",
        ),
        (
            "end of file before message length reached",
            "the connection closed in the middle of the answer",
        ),
    ] {
        if text.contains(needle) {
            return reason.into();
        }
    }
    if text.chars().count() > 300 {
        text.chars().take(300).collect::<String>() + "..."
    } else {
        text
    }
}

/// Seconds from a `Retry-After` header: a number of seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<f64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return seconds.is_finite().then_some(seconds.max(0.0));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let seconds = (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some((seconds as f64 / 1000.0).max(0.0))
}

/// A jittered exponential backoff: 0.25 s, 0.5 s, 1 s, ... at most 8 s, each ±25 %.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let delay = (BASE_BACKOFF * 2f64.powi(attempt.min(16) as i32)).min(MAX_BACKOFF);
    // RandomState is seeded randomly per process, which is all the jitter needs.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64(delay * (0.75 + 0.5 * unit))
}

// ---------------------------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------------------------

/// An incremental `text/event-stream` reader: bytes in, `(event, data)` out as each event's
/// blank line arrives. Lines end at CRLF, CR or LF (a CRLF split across chunks counts once);
/// lines are split as bytes, so a UTF-8 character split across chunks is whole again; several
/// `data:` lines are joined with newlines; comments (`: keep-alive`), `id` and `retry` are
/// ignored; an event cut off by the end of the stream is dropped, as the format requires.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    skip_lf: bool,
    started: bool,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<(String, String)>) {
        for &byte in chunk {
            if std::mem::take(&mut self.skip_lf) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\n' => self.end_line(out),
                b'\r' => {
                    self.end_line(out);
                    self.skip_lf = true;
                }
                _ => self.line.push(byte),
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<(String, String)>) {
        let bytes = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_string();
            }
        }
        if line.is_empty() {
            if !self.data.is_empty() {
                let event = std::mem::take(&mut self.event);
                let name = if event.is_empty() {
                    "message".to_string()
                } else {
                    event
                };
                out.push((name, std::mem::take(&mut self.data).join("\n")));
            }
            self.event.clear();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match name {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
    }
}

/// Prints a stream's events: tokens on standard output as they arrive, tool calls as one-line
/// notes on standard error; with `--json`, each event as one line of JSON.
struct StreamPrinter {
    as_json: bool,
    mid_line: bool,
    tty: bool,
}

impl StreamPrinter {
    fn new(as_json: bool) -> StreamPrinter {
        StreamPrinter {
            as_json,
            mid_line: false,
            tty: std::io::stdout().is_terminal(),
        }
    }

    fn event(&mut self, event: &Json) -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        if self.as_json {
            writeln!(out, "{}", python_json(event))?;
            out.flush()?;
            return Ok(());
        }
        let kind = event.get("type").and_then(Json::as_str).unwrap_or("");
        let name = event.get("name").map(plain).unwrap_or_default();
        match kind {
            "token" => {
                let content = event.get("content").map(plain).unwrap_or_default();
                write!(out, "{content}")?;
                out.flush()?;
                if !content.is_empty() {
                    self.mid_line = !content.ends_with('\n');
                }
            }
            "tool_start" | "tool_end" => {
                if self.mid_line && self.tty {
                    writeln!(out)?;
                    out.flush()?;
                    self.mid_line = false;
                }
                let note = if kind == "tool_start" {
                    let arguments = python_json(event.get("arguments").unwrap_or(&json!({})));
                    format!("[tool {name} {}]", one_line(&arguments, 200))
                } else {
                    let ok = event.get("success") == Some(&Json::Bool(true));
                    let ms = event
                        .get("duration_ms")
                        .map(plain)
                        .unwrap_or_else(|| "?".into());
                    let mut note =
                        format!("[tool {name} {}, {ms} ms", if ok { "ok" } else { "failed" });
                    if !ok {
                        let result = event.get("result").map(plain).unwrap_or_default();
                        note.push_str(&format!(": {}", one_line(&result, 200)));
                    }
                    note + "]"
                };
                let mut err = std::io::stderr().lock();
                writeln!(err, "{note}")?;
                err.flush()?;
            }
            "done" => self.end_line_with(&mut out)?,
            _ => {}
        }
        Ok(())
    }

    /// Ends a partial answer line (before an error is reported, or at the end).
    fn end_line(&mut self) -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        self.end_line_with(&mut out)
    }

    fn end_line_with(&mut self, out: &mut impl Write) -> Result<(), Failure> {
        if self.mid_line && !self.as_json {
            writeln!(out)?;
            out.flush()?;
        }
        self.mid_line = false;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering, as the Python client renders
// ---------------------------------------------------------------------------------------------

/// A value as text: strings without quotes, anything else as JSON.
fn plain(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => python_json(other),
    }
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

fn pretty(value: &Json) -> String {
    serde_json::to_string_pretty(value).expect("JSON serializes")
}

/// One-line JSON with Python's `json.dumps` spacing (`{"a": 1, "b": 2}`), as the other clients
/// print tool arguments and stream events.
fn python_json(value: &Json) -> String {
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut bytes = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, Spaced);
    serde::Serialize::serialize(value, &mut serializer).expect("JSON serializes");
    String::from_utf8(bytes).expect("JSON is UTF-8")
}

/// Whitespace collapsed to single spaces, cut to `limit` characters with `...`.
fn one_line(text: &str, limit: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= limit {
        text
    } else {
        text.chars()
            .take(limit.saturating_sub(3))
            .collect::<String>()
            + "..."
    }
}

/// The first sentence: up to the first whitespace after a period.
fn first_sentence(text: &str) -> &str {
    let mut previous = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() && previous == Some('.') {
            return &text[..i];
        }
        previous = Some(c);
    }
    text
}

fn render_tools(answer: &Json) -> String {
    let tools = answer
        .get("tools")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let width = tools
        .iter()
        .map(|t| t.get("name").map(plain).unwrap_or_default().chars().count())
        .max()
        .unwrap_or(0)
        + 11;
    let mut text = String::new();
    for tool in &tools {
        let mut label = tool.get("name").map(plain).unwrap_or_default();
        if tool.get("agentic") == Some(&Json::Bool(true)) {
            label.push_str(" (agentic)");
        }
        let description = tool.get("description").map(plain).unwrap_or_default();
        let pad = width.saturating_sub(label.chars().count());
        text.push_str(&format!(
            "{label}{} {}\n",
            " ".repeat(pad),
            one_line(first_sentence(&description), 110)
        ));
    }
    text
}

fn render_sessions(answer: &Json) -> String {
    let sessions = answer
        .get("sessions")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    if sessions.is_empty() {
        return "no sessions\n".into();
    }
    let mut text = String::new();
    for s in &sessions {
        let field = |name: &str, default: &str| {
            s.get(name)
                .filter(|v| !v.is_null())
                .map(plain)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        text.push_str(&format!(
            "{}  {:>4} messages  updated {}  {}\n",
            field("id", "-"),
            field("message_count", "0"),
            field("updated_at", "-"),
            field("title", "-"),
        ));
    }
    if let Some(total) = answer.get("total").and_then(Json::as_u64)
        && total > sessions.len() as u64
    {
        text.push_str(&format!(
            "({} of {total}; see --limit and --offset)\n",
            sessions.len()
        ));
    }
    text
}

fn render_messages(answer: &Json) -> String {
    let messages = answer
        .get("messages")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    if messages.is_empty() {
        return "no messages\n".into();
    }
    let mut text = String::new();
    for m in &messages {
        let role = m.get("role").map(plain).unwrap_or_default();
        let mut head = format!("#{} {role}", m.get("id").map(plain).unwrap_or_default());
        if role == "tool" {
            let ok = m.get("success") == Some(&Json::Bool(true));
            head.push_str(&format!(
                " {} ({})",
                m.get("name").map(plain).unwrap_or_default(),
                if ok { "ok" } else { "failed" }
            ));
        }
        let content = m
            .get("content")
            .filter(|c| !c.is_null())
            .map(plain)
            .unwrap_or_default();
        let calls = m
            .get("tool_calls")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        if !content.is_empty() {
            text.push_str(&format!("{head}: {content}\n"));
        }
        for call in &calls {
            let arguments = python_json(call.get("arguments").unwrap_or(&json!({})));
            text.push_str(&format!(
                "{head}: calls {} {arguments}\n",
                call.get("name").map(plain).unwrap_or_default()
            ));
        }
        if content.is_empty() && calls.is_empty() {
            text.push_str(&format!("{head}: (empty)\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out);
        }
        out
    }

    #[test]
    fn sse_lines_end_at_crlf_cr_or_lf_even_split_across_chunks() {
        let got = parse_chunks(&[
            b"\xef\xbb\xbfevent: token\r",
            b"\ndata: {\"a\":1}\r\n\r\n",
            b"event: x\rdata: 2\r\r",
            b"data: 3\n\n",
        ]);
        assert_eq!(
            got,
            vec![
                ("token".into(), "{\"a\":1}".into()),
                ("x".into(), "2".into()),
                ("message".into(), "3".into()),
            ]
        );
    }

    #[test]
    fn sse_joins_data_lines_skips_comments_and_drops_an_unfinished_event() {
        let got = parse_chunks(&[
            b": keep-alive\n\nevent: token\ndata: a\ndata:b\nid: 7\nretry: 10\n\n",
            b"event: done\ndata: {}\n",
        ]);
        assert_eq!(got, vec![("token".into(), "a\nb".into())]);
    }

    #[test]
    fn sse_keeps_a_utf8_character_split_across_chunks() {
        let text = "data: \"h\u{e9}\u{2028}llo\"\n\n".as_bytes();
        let (a, b) = text.split_at(9); // inside the two bytes of é
        let got = parse_chunks(&[a, b]);
        assert_eq!(
            got,
            vec![("message".into(), "\"h\u{e9}\u{2028}llo\"".into())]
        );
    }

    #[test]
    fn python_spacing_and_one_line() {
        let v = json!({"command": "list connections", "n": [1, 2], "o": {}});
        assert_eq!(
            python_json(&v),
            r#"{"command": "list connections", "n": [1, 2], "o": {}}"#
        );
        assert_eq!(one_line("a \n b", 10), "a b");
        assert_eq!(one_line("abcdefghijk", 8), "abcde...");
        assert_eq!(first_sentence("Runs it. Then more."), "Runs it.");
        assert_eq!(first_sentence("v1.2 is out"), "v1.2 is out");
    }

    #[test]
    fn urls_are_normalized_or_refused() {
        let ok = |u: &str| match normalize_base_url(u) {
            Ok(v) => v,
            Err(e) => panic!("{u}: {e:?}"),
        };
        assert_eq!(ok(" http://h:8080/ "), "http://h:8080");
        assert_eq!(ok("https://h/rest/v1/ai-agent/api/"), "https://h");
        assert_eq!(ok("HTTP://h/base"), "HTTP://h/base");
        for bad in ["localhost:8080", "ftp://h", "http://", "http:///x"] {
            assert!(
                matches!(normalize_base_url(bad), Err(Failure::Usage(m)) if m.contains("http://")),
                "{bad}"
            );
        }
    }

    #[test]
    fn retry_after_and_backoff() {
        assert_eq!(parse_retry_after("2"), Some(2.0));
        assert_eq!(parse_retry_after("-1"), Some(0.0));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(0.0)
        );
        assert_eq!(parse_retry_after("soon"), None);
        for attempt in 0..8 {
            let d = backoff(attempt).as_secs_f64();
            let nominal = (0.25 * 2f64.powi(attempt as i32)).min(8.0);
            assert!(d >= nominal * 0.75 && d <= nominal * 1.25, "{attempt}: {d}");
        }
    }

    #[test]
    fn the_error_line_names_status_code_and_request_id() {
        let e = error_from_body(
            404,
            Some(json!({"success": false, "error": "no session", "code": "session_not_found"})),
            Some("abc".into()),
            "fallback".into(),
        );
        assert_eq!(
            e.to_string(),
            "no session (HTTP 404, code session_not_found, request id abc)"
        );
        let in_200 = error_from_body(200, Some(json!({"code": "cap_exceeded"})), None, "x".into());
        assert_eq!(in_200.to_string(), "x (code cap_exceeded)");
    }
}
