//! The model contract every model implements, the built-in planner as much as an LLM provider:
//! a [`Request`] (the conversation so far, the tools it may call, limits) answered by a stream
//! of [`Event`]s (text deltas, complete tool calls, usage, the finish reason).
//!
//! One loop, one event stream and one session format then serve every model. This crate knows
//! nothing of data integration, HTTP servers or sessions.
//!
//! Two providers implement [`Model`] over HTTP: [`OpenAi`] (any OpenAI-compatible Chat
//! Completions server: OpenAI, Azure OpenAI, Ollama, vLLM, llama.cpp, LM Studio, Groq,
//! OpenRouter) and [`Anthropic`] (the Messages API). Both stream, retry what is worth retrying
//! while nothing has been said yet, time out stalled streams ([`HttpOptions`]) and never print
//! their key ([`ApiKey`]).

pub mod anthropic;
pub mod openai;
mod sse;
mod stream;
mod transport;

pub use anthropic::{Anthropic, AnthropicConfig};
pub use openai::{OpenAi, OpenAiConfig};
pub use transport::{ApiKey, HttpOptions, ensure_crypto_provider};

pub mod tokens;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering the assistant message that made it.
    Tool,
}

/// A tool call the model asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Unique within the conversation; the tool's result message carries it back.
    pub id: String,
    pub name: String,
    /// The arguments object.
    pub arguments: Json,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// Text (for `Tool` messages, the tool's result text).
    #[serde(default)]
    pub content: String,
    /// The calls an assistant message makes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Tool` messages: the call answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `Tool` messages: the tool's name, and its structured result (models that can read
    /// JSON, like the built-in planner, use it; providers send `content`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Json>,
    /// Whether the tool call succeeded (`Tool` messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Message {
        Message::text(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::text(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls,
            ..Message::text(Role::Assistant, content)
        }
    }
    pub fn tool_result(
        call: &ToolCall,
        success: bool,
        content: impl Into<String>,
        data: Json,
    ) -> Message {
        Message {
            tool_call_id: Some(call.id.clone()),
            name: Some(call.name.clone()),
            data: Some(data),
            success: Some(success),
            ..Message::text(Role::Tool, content)
        }
    }
    fn text(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            data: None,
            success: None,
        }
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Json,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// A model name the caller asked for, when the provider serves several.
    pub model: Option<String>,
}

/// Tokens one model call used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The answer is complete.
    Stop,
    /// The model wants its tool calls run and to be asked again.
    ToolCalls,
    /// `max_tokens` cut the answer.
    Length,
    /// The provider refused (content policy).
    Refused,
}

/// What a model emits while it answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A fragment of the answer text.
    Text(String),
    /// A complete tool call (providers assemble streamed argument deltas before emitting it).
    ToolCall(ToolCall),
    Usage(Usage),
    /// Last event of a successful call.
    Finish(FinishReason),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The provider cannot be reached or answered an error; the text says which and why.
    #[error("{0}")]
    Unavailable(String),
    /// The request was refused as malformed (a bug on our side or an unsupported option).
    #[error("{0}")]
    BadRequest(String),
    #[error("the request was canceled")]
    Canceled,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, LlmError>> + Send>>;

/// A model: the built-in planner or a provider.
#[async_trait]
pub trait Model: Send + Sync {
    /// The name reported in answers (`"model"` of `/chat`).
    fn name(&self) -> &str;
    /// Answers the request as a stream that ends with `Finish` (or an error). Dropping the
    /// stream, or cancelling `cancel`, stops the call.
    async fn stream(
        &self,
        request: Request,
        cancel: CancellationToken,
    ) -> Result<EventStream, LlmError>;
    /// Checks that the model can answer (provider reachable, key accepted, model known),
    /// without spending tokens where the provider allows it. Answers a one-line description of
    /// what was checked, or the error that says exactly what is wrong. Models that need
    /// nothing (the built-in planner) keep this default.
    async fn check(&self) -> Result<String, LlmError> {
        Ok(format!("{} needs no connection", self.name()))
    }
}
