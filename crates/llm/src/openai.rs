//! OpenAI-compatible Chat Completions (`POST <base_url>/chat/completions`, streamed): OpenAI,
//! Azure OpenAI, Ollama, vLLM, llama.cpp server, LM Studio, Groq, OpenRouter and the like.
//!
//! Tools go as functions; streamed tool-call deltas are assembled by `index` (id and name in the
//! first, arguments concatenated over any number of chunks) and emitted whole when the choice
//! finishes. Usage comes from the `stream_options.include_usage` chunk (or Groq's `x_groq`);
//! a server that sends none gives no `Usage` event. A server that answers one JSON document
//! instead of a stream is read the same way.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::{Method, Url};
use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::sse::SseEvent;
use crate::stream::{self, Decoder, fresh_call_id, malformed, parse_arguments, temperature};
use crate::transport::{
    ApiKey, Call, Failure, HttpOptions, Transport, describe_error_object, display_url, join,
    parse_base_url, snippet,
};
use crate::{
    Event, EventStream, FinishReason, LlmError, Message, Model, Request, Role, ToolSpec, Usage,
};

/// Settings of an OpenAI-compatible provider. Build with [`OpenAiConfig::new`] and adjust the
/// fields; [`OpenAi::new`] checks them.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// The API root, up to and including the version; requests go to
    /// `<base_url>/chat/completions`, the start-up check to `<base_url>/models`.
    /// Default `https://api.openai.com/v1`. Others: Ollama `http://localhost:11434/v1`, vLLM
    /// `http://localhost:8000/v1`, llama.cpp `http://localhost:8080/v1`, LM Studio
    /// `http://localhost:1234/v1`, Groq `https://api.groq.com/openai/v1`, OpenRouter
    /// `https://openrouter.ai/api/v1`, Azure OpenAI
    /// `https://<resource>.openai.azure.com/openai/deployments/<deployment>` (with
    /// `azure_api_version`).
    pub base_url: String,
    /// The model asked for (`model` in the request body), e.g. `gpt-4o-mini`, `llama3.1:8b`,
    /// `Qwen/Qwen2.5-7B-Instruct`. A request naming its own `model` overrides it. Azure routes
    /// by the deployment in `base_url` and ignores it.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` (`api-key: <key>` for Azure). `None` for local
    /// servers that need no key (Ollama, vLLM, llama.cpp, LM Studio by default).
    pub api_key: Option<ApiKey>,
    /// Azure OpenAI only: the `api-version` query parameter added to every request, e.g.
    /// `2024-10-21`. Setting it also sends the key as `api-key` instead of a bearer token, and
    /// makes the start-up check a one-token completion (deployment URLs have no `/models`).
    pub azure_api_version: Option<String>,
    /// Ask for token usage in the stream (`stream_options: {"include_usage": true}`).
    /// Default true. Turn it off for a server that rejects the option; with no usage from the
    /// server the caller counts tokens itself.
    pub include_usage: bool,
    /// Send a request's token limit as `max_completion_tokens` (required by OpenAI's reasoning
    /// models) instead of `max_tokens` (what most compatible servers understand). Default false.
    pub max_completion_tokens: bool,
    /// Timeouts, retries and extra headers.
    pub http: HttpOptions,
}

impl OpenAiConfig {
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";

    /// The defaults for `model`: OpenAI's URL, no key, usage asked for, `max_tokens`.
    pub fn new(model: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            base_url: OpenAiConfig::DEFAULT_BASE_URL.to_string(),
            model: model.into(),
            api_key: None,
            azure_api_version: None,
            include_usage: true,
            max_completion_tokens: false,
            http: HttpOptions::default(),
        }
    }
}

/// An OpenAI-compatible model: a [`Model`] over Chat Completions.
pub struct OpenAi {
    model: String,
    base: Url,
    chat_url: Url,
    models_url: Url,
    azure: bool,
    include_usage: bool,
    max_completion_tokens: bool,
    transport: Arc<Transport>,
}

impl fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAi")
            .field("model", &self.model)
            .field("base_url", &display_url(&self.base))
            .field("azure", &self.azure)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// Checks the settings and builds the client; nothing is sent (see [`Model::check`]).
    pub fn new(config: OpenAiConfig) -> Result<OpenAi, LlmError> {
        let mut base = parse_base_url(&config.base_url, OpenAiConfig::DEFAULT_BASE_URL)?;
        let model = config.model.trim().to_string();
        if model.is_empty() {
            return Err(LlmError::BadRequest(
                "no model is set for the OpenAI-compatible provider; name one, e.g. gpt-4o-mini \
                 or llama3.1:8b"
                    .into(),
            ));
        }
        let azure = match config.azure_api_version.as_deref().map(str::trim) {
            Some("") => {
                return Err(LlmError::BadRequest(
                    "azure_api_version is empty; give the api-version Azure expects, e.g. \
                     2024-10-21"
                        .into(),
                ));
            }
            Some(version) => {
                let kept: Vec<(String, String)> = base
                    .query_pairs()
                    .filter(|(k, _)| k != "api-version")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                base.query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair("api-version", version);
                true
            }
            None => false,
        };
        let key = config
            .api_key
            .as_ref()
            .filter(|k| !k.expose().trim().is_empty());
        let auth = match key {
            Some(k) if azure => vec![("api-key", k.expose().trim().to_string())],
            Some(k) => vec![("authorization", format!("Bearer {}", k.expose().trim()))],
            None => Vec::new(),
        };
        let label = if azure {
            format!("Azure OpenAI at {}", display_url(&base))
        } else {
            format!("the OpenAI-compatible provider at {}", display_url(&base))
        };
        let transport = Transport::new(label, config.http, auth, Vec::new(), key)?;
        Ok(OpenAi {
            model,
            chat_url: join(&base, &["chat", "completions"]),
            models_url: join(&base, &["models"]),
            base,
            azure,
            include_usage: config.include_usage,
            max_completion_tokens: config.max_completion_tokens,
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
        let messages: Vec<Json> = request
            .messages
            .iter()
            .map(message)
            .collect::<Result<_, _>>()?;
        body.insert("messages".into(), Json::Array(messages));
        if !request.tools.is_empty() {
            body.insert(
                "tools".into(),
                Json::Array(request.tools.iter().map(tool).collect()),
            );
        }
        if let Some(max) = request.max_tokens {
            let name = if self.max_completion_tokens {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(name.into(), json!(max));
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), temperature(t));
        }
        body.insert("stream".into(), json!(true));
        if self.include_usage {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Ok(Json::Object(body))
    }
}

fn message(m: &Message) -> Result<Json, LlmError> {
    Ok(match m.role {
        Role::System => json!({"role": "system", "content": m.content}),
        Role::User => json!({"role": "user", "content": m.content}),
        Role::Assistant if m.tool_calls.is_empty() => {
            json!({"role": "assistant", "content": m.content})
        }
        Role::Assistant => {
            let calls: Vec<Json> = m
                .tool_calls
                .iter()
                .map(|c| {
                    // Arguments a model once sent as non-JSON text go back as it sent them.
                    let arguments = match &c.arguments {
                        Json::String(raw) => raw.clone(),
                        other => other.to_string(),
                    };
                    json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": arguments},
                    })
                })
                .collect();
            let content = if m.content.is_empty() {
                Json::Null
            } else {
                json!(m.content)
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Role::Tool => {
            let Some(id) = m.tool_call_id.as_deref() else {
                return Err(LlmError::BadRequest(
                    "a tool result message has no tool_call_id, so the model cannot tell which \
                     call it answers"
                        .into(),
                ));
            };
            json!({"role": "tool", "tool_call_id": id, "content": m.content})
        }
    })
}

fn tool(t: &ToolSpec) -> Json {
    json!({
        "type": "function",
        "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
    })
}

#[async_trait]
impl Model for OpenAi {
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
            url: self.chat_url.clone(),
            body: Some(serde_json::to_vec(&body).expect("JSON values serialize")),
            stream: true,
        };
        let decoder = OpenAiDecoder::new(self.transport.label.clone());
        stream::start(self.transport.clone(), call, decoder, cancel).await
    }

    /// `GET <base_url>/models`, then whether the model is among those listed (a server may
    /// serve a model it does not list, like llama.cpp, so an unlisted model is reported, not
    /// refused). For Azure, a one-token completion.
    async fn check(&self) -> Result<String, LlmError> {
        let label = &self.transport.label;
        let cancel = CancellationToken::new();
        if self.azure {
            let request = Request {
                messages: vec![Message::user("Say OK.")],
                max_tokens: Some(1),
                ..Request::default()
            };
            let mut events = self.stream(request, cancel).await?;
            while let Some(event) = events.next().await {
                if let Event::Finish(_) = event? {
                    break;
                }
            }
            return Ok(format!("{label} answered a one-token request"));
        }
        let listed = self
            .transport
            .get_json(self.models_url.clone(), &cancel)
            .await?;
        let ids: Vec<&str> = listed
            .get("data")
            .and_then(Json::as_array)
            .map(|models| {
                models
                    .iter()
                    .filter_map(|m| m.get("id").and_then(Json::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let model = &self.model;
        Ok(if ids.contains(&model.as_str()) {
            format!("{label} is reachable and serves the model '{model}'")
        } else if ids.is_empty() {
            format!("{label} is reachable (it lists no models; '{model}' will be asked for)")
        } else {
            let shown: Vec<&str> = ids.iter().take(10).copied().collect();
            let more = if ids.len() > shown.len() {
                format!(" and {} more", ids.len() - shown.len())
            } else {
                String::new()
            };
            format!(
                "{label} is reachable but does not list the model '{model}' (it lists {}{more}); \
                 requests will fail unless it serves that name anyway",
                shown.join(", ")
            )
        })
    }
}

/// A tool call being streamed.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Chat Completions chunks into events.
struct OpenAiDecoder {
    label: String,
    calls: BTreeMap<u64, PartialCall>,
    /// The index of the last call a delta touched (for servers that send no `index`).
    last: Option<u64>,
    finish: Option<FinishReason>,
    refused: bool,
    calls_sent: bool,
    usage: Option<Usage>,
}

impl OpenAiDecoder {
    fn new(label: String) -> OpenAiDecoder {
        OpenAiDecoder {
            label,
            calls: BTreeMap::new(),
            last: None,
            finish: None,
            refused: false,
            calls_sent: false,
            usage: None,
        }
    }

    fn chunk(
        &mut self,
        chunk: &Json,
        out: &mut VecDeque<Event>,
        whole: bool,
    ) -> Result<(), Failure> {
        // Usage may come in its own chunk (choices empty), in Groq's `x_groq`, or (vLLM's
        // continuous stats) in every chunk: the last one seen is the total.
        if let Some(usage) =
            usage_of(chunk.get("usage")).or_else(|| usage_of(chunk.pointer("/x_groq/usage")))
        {
            self.usage = Some(usage);
        }
        let Some(choices) = chunk.get("choices").and_then(Json::as_array) else {
            return Ok(());
        };
        for choice in choices {
            // We ask for one choice; a server answering more gets its first one read.
            if choice.get("index").and_then(Json::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.get("delta").or_else(|| choice.get("message")) {
                self.delta(delta, out, whole);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Json::as_str) {
                self.finish = Some(finish_reason(reason));
                self.flush_calls(out)?;
            }
        }
        Ok(())
    }

    fn delta(&mut self, delta: &Json, out: &mut VecDeque<Event>, whole: bool) {
        if let Some(text) = delta.get("content").and_then(Json::as_str)
            && !text.is_empty()
        {
            out.push_back(Event::Text(text.to_string()));
        }
        if let Some(text) = delta.get("refusal").and_then(Json::as_str)
            && !text.is_empty()
        {
            self.refused = true;
            out.push_back(Event::Text(text.to_string()));
        }
        let Some(calls) = delta.get("tool_calls").and_then(Json::as_array) else {
            return;
        };
        for (position, call) in calls.iter().enumerate() {
            let id = call.get("id").and_then(Json::as_str).unwrap_or_default();
            let index = match call.get("index").and_then(Json::as_u64) {
                Some(index) => index,
                None if whole => position as u64,
                // No index: a new id starts a new call, anything else continues the last one.
                None => match self.last {
                    Some(last)
                        if id.is_empty() || self.calls.get(&last).is_some_and(|c| c.id == id) =>
                    {
                        last
                    }
                    _ => self.calls.keys().next_back().map_or(0, |k| k + 1),
                },
            };
            self.last = Some(index);
            let partial = self.calls.entry(index).or_default();
            if !id.is_empty() {
                partial.id = id.to_string();
            }
            let function = call.get("function");
            if let Some(name) = function.and_then(|f| f.get("name")).and_then(Json::as_str)
                && !name.is_empty()
            {
                // Servers that repeat the name in later deltas must not double it.
                partial.name = name.to_string();
            }
            match function.and_then(|f| f.get("arguments")) {
                Some(Json::String(part)) => partial.arguments.push_str(part),
                // A few servers send the arguments as an object rather than a string.
                Some(Json::Object(obj)) => partial
                    .arguments
                    .push_str(&Json::Object(obj.clone()).to_string()),
                _ => {}
            }
        }
    }

    fn flush_calls(&mut self, out: &mut VecDeque<Event>) -> Result<(), Failure> {
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return Err(Failure::fatal(LlmError::Unavailable(format!(
                    "{} sent a tool call (index {index}) without a function name",
                    self.label
                ))));
            }
            self.calls_sent = true;
            out.push_back(Event::ToolCall(crate::ToolCall {
                id: if call.id.is_empty() {
                    fresh_call_id()
                } else {
                    call.id
                },
                name: call.name,
                arguments: parse_arguments(&call.arguments),
            }));
        }
        self.last = None;
        Ok(())
    }

    /// The answer is complete: pending calls, usage, then the finish reason, always last.
    fn complete(&mut self, out: &mut VecDeque<Event>) -> Result<(), Failure> {
        self.flush_calls(out)?;
        if let Some(usage) = self.usage.take() {
            out.push_back(Event::Usage(usage));
        }
        let reason = match self.finish {
            _ if self.refused => FinishReason::Refused,
            // Some servers (Ollama among them) finish a tool-calling answer with "stop".
            Some(FinishReason::Stop) | None if self.calls_sent => FinishReason::ToolCalls,
            Some(reason) => reason,
            None => FinishReason::Stop,
        };
        out.push_back(Event::Finish(reason));
        Ok(())
    }

    fn error(&self, chunk: &Json) -> Failure {
        let error = chunk.get("error").unwrap_or(chunk);
        let message = match error {
            Json::String(s) => s.clone(),
            _ => describe_error_object(error).unwrap_or_else(|| snippet(&error.to_string())),
        };
        let kind = error.get("type").and_then(Json::as_str).unwrap_or_default();
        let failure = LlmError::Unavailable(format!(
            "{} reported an error in its answer: {message}",
            self.label
        ));
        if kind.contains("invalid_request") {
            Failure::fatal(failure)
        } else {
            Failure::transient(failure)
        }
    }
}

impl Decoder for OpenAiDecoder {
    fn reset(&mut self) {
        *self = OpenAiDecoder::new(std::mem::take(&mut self.label));
    }

    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Event>) -> Result<bool, Failure> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        if data == "[DONE]" {
            self.complete(out)?;
            return Ok(true);
        }
        let chunk: Json =
            serde_json::from_str(data).map_err(|e| malformed(&self.label, "a chunk", data, &e))?;
        if event.event == "error" || chunk.get("error").is_some_and(|e| !e.is_null()) {
            return Err(self.error(&chunk));
        }
        self.chunk(&chunk, out, false)?;
        Ok(false)
    }

    fn end(&mut self, out: &mut VecDeque<Event>) -> Result<(), Failure> {
        if self.finish.is_some() {
            // Finished but closed without `[DONE]`: complete as far as anyone can tell.
            return self.complete(out);
        }
        Err(Failure::transient(LlmError::Unavailable(format!(
            "{} ended its answer before finishing it (no finish_reason, no [DONE])",
            self.label
        ))))
    }

    fn whole(&mut self, body: &[u8], out: &mut VecDeque<Event>) -> Result<(), Failure> {
        let text = String::from_utf8_lossy(body);
        let answer: Json = serde_json::from_str(text.trim())
            .map_err(|e| malformed(&self.label, "an answer", &text, &e))?;
        if answer.get("error").is_some_and(|e| !e.is_null()) {
            return Err(self.error(&answer));
        }
        self.chunk(&answer, out, true)?;
        self.complete(out)
    }
}

fn usage_of(usage: Option<&Json>) -> Option<Usage> {
    let usage = usage?.as_object()?;
    let input = usage.get("prompt_tokens").and_then(Json::as_u64);
    let output = usage.get("completion_tokens").and_then(Json::as_u64);
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
    })
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::Refused,
        _ => FinishReason::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&str]) -> Result<Vec<Event>, LlmError> {
        let mut d = OpenAiDecoder::new("the test provider".into());
        let mut out = VecDeque::new();
        for c in chunks {
            let done = d
                .event(
                    SseEvent {
                        event: String::new(),
                        data: c.to_string(),
                    },
                    &mut out,
                )
                .map_err(|f| f.error)?;
            if done {
                return Ok(out.into());
            }
        }
        d.end(&mut out).map_err(|f| f.error)?;
        Ok(out.into())
    }

    #[test]
    fn calls_without_index_are_told_apart_by_id() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":{"y":2}}}]},"finish_reason":"stop"}]}"#,
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                Event::ToolCall(crate::ToolCall {
                    id: "a".into(),
                    name: "f".into(),
                    arguments: json!({"x": 1})
                }),
                Event::ToolCall(crate::ToolCall {
                    id: "b".into(),
                    name: "g".into(),
                    arguments: json!({"y": 2})
                }),
                Event::Finish(FinishReason::ToolCalls),
            ]
        );
    }

    #[test]
    fn a_stream_closed_after_finish_reason_is_complete_and_one_closed_before_is_not() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"length"}]}"#,
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                Event::Text("Hi".into()),
                Event::Finish(FinishReason::Length)
            ]
        );
        let e = decode(&[r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#]).unwrap_err();
        assert!(e.to_string().contains("before finishing"), "{e}");
    }

    #[test]
    fn content_filter_is_a_refusal_and_bad_arguments_are_kept_as_text() {
        let events = decode(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}"#,
            "[DONE]",
        ])
        .unwrap();
        assert_eq!(
            events,
            vec![
                Event::ToolCall(crate::ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: json!("{oops")
                }),
                Event::Finish(FinishReason::Refused),
            ]
        );
    }
}
