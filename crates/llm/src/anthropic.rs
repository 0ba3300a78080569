//! Anthropic Messages (`POST <base_url>/v1/messages`, streamed).
//!
//! System messages go in `system`; assistant tool calls as `tool_use` blocks; consecutive tool
//! results merged into one user message of `tool_result` blocks; tools as `{name, description,
//! input_schema}`. Streamed `input_json_delta` fragments are concatenated per content block
//! and the call emitted at `content_block_stop`; usage is `message_start`'s input tokens and
//! `message_delta`'s output tokens, emitted once before the finish reason.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::{Method, Url};
use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::sse::SseEvent;
use crate::stream::{self, Decoder, fresh_call_id, malformed, parse_arguments, temperature};
use crate::transport::{
    ApiKey, Call, Failure, HttpOptions, Transport, describe_error_object, display_url, join,
    parse_base_url, snippet,
};
use crate::{Event, EventStream, FinishReason, LlmError, Message, Model, Request, Role, Usage};

/// Settings of the Anthropic provider. Build with [`AnthropicConfig::new`] and adjust the
/// fields; [`Anthropic::new`] checks them.
#[derive(Clone, Debug)]
pub struct AnthropicConfig {
    /// The API root, without `/v1` (given with it, it is dropped): requests go to
    /// `<base_url>/v1/messages`, the start-up check to `<base_url>/v1/models/<model>`.
    /// Default `https://api.anthropic.com`; set it for a proxy or gateway that speaks the
    /// Messages API.
    pub base_url: String,
    /// The model, e.g. `claude-sonnet-4-5` (aliases are accepted). A request naming its own
    /// `model` overrides it.
    pub model: String,
    /// Sent as `x-api-key`. Required by Anthropic itself; `None` only for a gateway that adds
    /// its own.
    pub api_key: Option<ApiKey>,
    /// The `anthropic-version` header. Default `2023-06-01`.
    pub version: String,
    /// `max_tokens` when a request sets none (the Messages API requires one). Default 4096.
    pub default_max_tokens: u32,
    /// Timeouts, retries and extra headers (`anthropic-beta` goes here).
    pub http: HttpOptions,
}

impl AnthropicConfig {
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";
    pub const DEFAULT_VERSION: &'static str = "2023-06-01";
    pub const DEFAULT_MAX_TOKENS: u32 = 4096;

    /// The defaults for `model` with `api_key`.
    pub fn new(model: impl Into<String>, api_key: Option<ApiKey>) -> AnthropicConfig {
        AnthropicConfig {
            base_url: AnthropicConfig::DEFAULT_BASE_URL.to_string(),
            model: model.into(),
            api_key,
            version: AnthropicConfig::DEFAULT_VERSION.to_string(),
            default_max_tokens: AnthropicConfig::DEFAULT_MAX_TOKENS,
            http: HttpOptions::default(),
        }
    }
}

/// An Anthropic model: a [`Model`] over the Messages API.
pub struct Anthropic {
    model: String,
    base: Url,
    messages_url: Url,
    default_max_tokens: u32,
    transport: Arc<Transport>,
}

impl fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anthropic")
            .field("model", &self.model)
            .field("base_url", &display_url(&self.base))
            .finish_non_exhaustive()
    }
}

impl Anthropic {
    /// Checks the settings and builds the client; nothing is sent (see [`Model::check`]).
    pub fn new(config: AnthropicConfig) -> Result<Anthropic, LlmError> {
        let mut base = parse_base_url(&config.base_url, AnthropicConfig::DEFAULT_BASE_URL)?;
        let trimmed = base.path().trim_end_matches('/');
        if let Some(root) = trimmed.strip_suffix("/v1") {
            let root = root.to_string();
            base.set_path(&root);
        }
        let model = config.model.trim().to_string();
        if model.is_empty() {
            return Err(LlmError::BadRequest(
                "no model is set for Anthropic; name one, e.g. claude-sonnet-4-5".into(),
            ));
        }
        if config.default_max_tokens == 0 {
            return Err(LlmError::BadRequest(
                "default_max_tokens must be at least 1 (Anthropic requires a limit); 4096 is \
                 usual"
                    .into(),
            ));
        }
        let key = config
            .api_key
            .as_ref()
            .filter(|k| !k.expose().trim().is_empty());
        let auth = match key {
            Some(k) => vec![("x-api-key", k.expose().trim().to_string())],
            None => Vec::new(),
        };
        let label = format!("Anthropic at {}", display_url(&base));
        let fixed = vec![("anthropic-version", config.version.trim().to_string())];
        let transport = Transport::new(label, config.http, auth, fixed, key)?;
        Ok(Anthropic {
            model,
            messages_url: join(&base, &["v1", "messages"]),
            base,
            default_max_tokens: config.default_max_tokens,
            transport: Arc::new(transport),
        })
    }

    /// The request body for `request`, exactly as sent.
    pub fn body(&self, request: &Request) -> Result<Json, LlmError> {
        let mut body = Map::new();
        let model = request
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.model);
        body.insert("model".into(), json!(model));
        body.insert(
            "max_tokens".into(),
            json!(request.max_tokens.unwrap_or(self.default_max_tokens)),
        );
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System && !m.content.is_empty())
            .map(|m| m.content.as_str())
            .collect();
        if !system.is_empty() {
            body.insert("system".into(), json!(system.join("\n\n")));
        }
        body.insert("messages".into(), Json::Array(messages(&request.messages)?));
        if !request.tools.is_empty() {
            let tools: Vec<Json> = request
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "description": t.description,
                        "input_schema": t.parameters,
                    })
                })
                .collect();
            body.insert("tools".into(), Json::Array(tools));
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), temperature(t));
        }
        body.insert("stream".into(), json!(true));
        Ok(Json::Object(body))
    }
}

/// The conversation as Messages API turns. Tool results that follow one another become one
/// user turn of `tool_result` blocks, as the API requires after a turn with several calls.
fn messages(conversation: &[Message]) -> Result<Vec<Json>, LlmError> {
    let mut turns: Vec<Json> = Vec::new();
    let mut results: Vec<Json> = Vec::new();
    for m in conversation {
        if m.role != Role::Tool && !results.is_empty() {
            turns.push(json!({"role": "user", "content": std::mem::take(&mut results)}));
        }
        match m.role {
            Role::System => {}
            Role::User => turns.push(json!({"role": "user", "content": m.content})),
            Role::Assistant if m.tool_calls.is_empty() => {
                // The API refuses empty turns; an assistant that said nothing adds nothing.
                if !m.content.is_empty() {
                    turns.push(json!({"role": "assistant", "content": m.content}));
                }
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for call in &m.tool_calls {
                    // `input` must be an object; arguments a model sent as non-JSON text
                    // cannot be one.
                    let input = match &call.arguments {
                        Json::Object(_) => call.arguments.clone(),
                        _ => json!({}),
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": input,
                    }));
                }
                turns.push(json!({"role": "assistant", "content": blocks}));
            }
            Role::Tool => {
                let Some(id) = m.tool_call_id.as_deref() else {
                    return Err(LlmError::BadRequest(
                        "a tool result message has no tool_call_id, so the model cannot tell \
                         which call it answers"
                            .into(),
                    ));
                };
                results.push(json!({
                    "type": "tool_result",
                    "tool_use_id": id,
                    "content": m.content,
                    "is_error": m.success == Some(false),
                }));
            }
        }
    }
    if !results.is_empty() {
        turns.push(json!({"role": "user", "content": results}));
    }
    Ok(turns)
}

#[async_trait]
impl Model for Anthropic {
    fn name(&self) -> &str {
        &self.model
    }

    async fn stream(
        &self,
        request: Request,
        cancel: CancellationToken,
    ) -> Result<EventStream, LlmError> {
        let body = self.body(&request)?;
        let call = Call {
            method: Method::POST,
            url: self.messages_url.clone(),
            body: Some(serde_json::to_vec(&body).expect("JSON values serialize")),
            stream: true,
        };
        let decoder = AnthropicDecoder::new(self.transport.label.clone());
        stream::start(self.transport.clone(), call, decoder, cancel).await
    }

    /// `GET <base_url>/v1/models/<model>`: the key is accepted and the model (or alias)
    /// exists. Spends no tokens.
    async fn check(&self) -> Result<String, LlmError> {
        let url = join(&self.base, &["v1", "models", &self.model]);
        let found = self
            .transport
            .get_json(url, &CancellationToken::new())
            .await?;
        let label = &self.transport.label;
        let id = found
            .get("id")
            .and_then(Json::as_str)
            .unwrap_or(&self.model);
        Ok(match found.get("display_name").and_then(Json::as_str) {
            Some(shown) => format!("{label} serves the model '{id}' ({shown})"),
            None => format!("{label} serves the model '{id}'"),
        })
    }
}

/// A content block being streamed.
enum Block {
    Text,
    Tool {
        id: String,
        name: String,
        json: String,
    },
    /// Thinking, server tools and whatever comes next: not ours to show.
    Other,
}

/// Messages API events into events.
struct AnthropicDecoder {
    label: String,
    blocks: BTreeMap<u64, Block>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    stop_reason: Option<String>,
    calls_sent: bool,
}

impl AnthropicDecoder {
    fn new(label: String) -> AnthropicDecoder {
        AnthropicDecoder {
            label,
            blocks: BTreeMap::new(),
            input_tokens: None,
            output_tokens: None,
            stop_reason: None,
            calls_sent: false,
        }
    }

    /// Usage fields are cumulative: the latest value of each wins. Cache reads and writes
    /// are input too.
    fn usage(&mut self, usage: Option<&Json>) {
        let Some(usage) = usage else { return };
        let read = |k: &str| usage.get(k).and_then(Json::as_u64);
        if let Some(input) = read("input_tokens") {
            let cached = read("cache_creation_input_tokens").unwrap_or(0)
                + read("cache_read_input_tokens").unwrap_or(0);
            self.input_tokens = Some(input + cached);
        }
        if let Some(output) = read("output_tokens") {
            self.output_tokens = Some(output);
        }
    }

    fn start_block(&mut self, index: u64, block: &Json, out: &mut VecDeque<Event>) {
        let kind = block.get("type").and_then(Json::as_str).unwrap_or_default();
        let started = match kind {
            "text" => {
                if let Some(text) = block.get("text").and_then(Json::as_str)
                    && !text.is_empty()
                {
                    out.push_back(Event::Text(text.to_string()));
                }
                Block::Text
            }
            "tool_use" => Block::Tool {
                id: block
                    .get("id")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: block
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_string(),
                // The start carries `input: {}`; the real input streams as JSON fragments.
                // A non-streamed block carries it whole.
                json: match block.get("input") {
                    Some(Json::Object(o)) if !o.is_empty() => Json::Object(o.clone()).to_string(),
                    _ => String::new(),
                },
            },
            _ => Block::Other,
        };
        self.blocks.insert(index, started);
    }

    fn stop_block(&mut self, index: u64, out: &mut VecDeque<Event>) -> Result<(), Failure> {
        if let Some(Block::Tool { id, name, json }) = self.blocks.remove(&index) {
            if name.is_empty() {
                return Err(Failure::fatal(LlmError::Unavailable(format!(
                    "{} sent a tool_use block (index {index}) without a name",
                    self.label
                ))));
            }
            self.calls_sent = true;
            out.push_back(Event::ToolCall(crate::ToolCall {
                id: if id.is_empty() { fresh_call_id() } else { id },
                name,
                arguments: parse_arguments(&json),
            }));
        }
        Ok(())
    }

    /// The message is complete: usage, then the finish reason, always last.
    fn complete(&mut self, out: &mut VecDeque<Event>) -> Result<(), Failure> {
        let open: Vec<u64> = self.blocks.keys().copied().collect();
        for index in open {
            self.stop_block(index, out)?;
        }
        if self.input_tokens.is_some() || self.output_tokens.is_some() {
            out.push_back(Event::Usage(Usage {
                input_tokens: self.input_tokens.unwrap_or(0),
                output_tokens: self.output_tokens.unwrap_or(0),
            }));
        }
        let reason = match self.stop_reason.as_deref() {
            Some("tool_use") => FinishReason::ToolCalls,
            Some("max_tokens") | Some("model_context_window_exceeded") => FinishReason::Length,
            Some("refusal") => FinishReason::Refused,
            _ if self.calls_sent => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        out.push_back(Event::Finish(reason));
        Ok(())
    }

    fn error(&self, event: &Json) -> Failure {
        let error = event.get("error").unwrap_or(event);
        let message = describe_error_object(error).unwrap_or_else(|| snippet(&error.to_string()));
        let kind = error.get("type").and_then(Json::as_str).unwrap_or_default();
        let failure = LlmError::Unavailable(format!(
            "{} reported an error in its answer: {message}",
            self.label
        ));
        // Overload, rate limits and internal errors pass; a refused request does not.
        if matches!(
            kind,
            "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error"
        ) {
            Failure::transient(failure)
        } else {
            Failure::fatal(failure)
        }
    }
}

impl Decoder for AnthropicDecoder {
    fn reset(&mut self) {
        *self = AnthropicDecoder::new(std::mem::take(&mut self.label));
    }

    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Event>) -> Result<bool, Failure> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        let v: Json =
            serde_json::from_str(data).map_err(|e| malformed(&self.label, "an event", data, &e))?;
        let kind = v
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or(event.event.as_str());
        let index = v.get("index").and_then(Json::as_u64).unwrap_or(0);
        match kind {
            "message_start" => self.usage(v.pointer("/message/usage")),
            "content_block_start" => {
                if let Some(block) = v.get("content_block") {
                    self.start_block(index, block, out);
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Json::Null);
                match delta.get("type").and_then(Json::as_str) {
                    Some("text_delta") => {
                        if let Some(text) = delta.get("text").and_then(Json::as_str)
                            && !text.is_empty()
                        {
                            out.push_back(Event::Text(text.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(Block::Tool { json, .. }) = self.blocks.get_mut(&index)
                            && let Some(part) = delta.get("partial_json").and_then(Json::as_str)
                        {
                            json.push_str(part);
                        }
                    }
                    // thinking, signatures, citations: not part of the answer text.
                    _ => {}
                }
            }
            "content_block_stop" => self.stop_block(index, out)?,
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Json::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                self.usage(v.get("usage"));
            }
            "message_stop" => {
                self.complete(out)?;
                return Ok(true);
            }
            "error" => return Err(self.error(&v)),
            // `ping`, and event types added later (the API says to expect new ones).
            _ => {}
        }
        Ok(false)
    }

    fn end(&mut self, _out: &mut VecDeque<Event>) -> Result<(), Failure> {
        Err(Failure::transient(LlmError::Unavailable(format!(
            "{} ended its answer before finishing it (no message_stop)",
            self.label
        ))))
    }

    fn whole(&mut self, body: &[u8], out: &mut VecDeque<Event>) -> Result<(), Failure> {
        let text = String::from_utf8_lossy(body);
        let message: Json = serde_json::from_str(text.trim())
            .map_err(|e| malformed(&self.label, "an answer", &text, &e))?;
        if message.get("type").and_then(Json::as_str) == Some("error") {
            return Err(self.error(&message));
        }
        self.usage(message.get("usage"));
        if let Some(blocks) = message.get("content").and_then(Json::as_array) {
            for (index, block) in blocks.iter().enumerate() {
                self.start_block(index as u64, block, out);
                self.stop_block(index as u64, out)?;
            }
        }
        self.stop_reason = message
            .get("stop_reason")
            .and_then(Json::as_str)
            .map(str::to_string);
        self.complete(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_tool_results_become_one_user_turn_and_empty_turns_are_dropped() {
        let a = crate::ToolCall {
            id: "toolu_a".into(),
            name: "f".into(),
            arguments: json!({"x": 1}),
        };
        let b = crate::ToolCall {
            id: "toolu_b".into(),
            name: "g".into(),
            arguments: json!("{not json"),
        };
        let turns = messages(&[
            Message::system("be brief"),
            Message::user("hi"),
            Message::assistant("", Vec::new()),
            Message::assistant("Let me look.", vec![a.clone(), b.clone()]),
            Message::tool_result(&a, true, "one", json!(null)),
            Message::tool_result(&b, false, "two failed", json!(null)),
            Message::user("and?"),
        ])
        .unwrap();
        assert_eq!(
            Json::Array(turns),
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"x": 1}},
                    {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "one", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "two failed", "is_error": true},
                ]},
                {"role": "user", "content": "and?"},
            ])
        );
    }
}
