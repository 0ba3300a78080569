//! The built-in planner: a deterministic model, the default when no LLM is configured. It reads
//! the conversation like any model (the last user request, the tool calls made for it and their
//! structured results, and what earlier turns touched) and answers with the next tool call of
//! its plan or with text written from those results.
//!
//! ```no_run
//! # async fn demo() -> Result<(), etl_llm::LlmError> {
//! use etl_llm::{Message, Model, Request};
//! let planner = etl_agent::planner::Planner::new();
//! let request = Request { messages: vec![Message::user("list my flows")], ..Request::default() };
//! let events = planner.stream(request, tokio_util::sync::CancellationToken::new()).await?;
//! # drop(events); Ok(()) }
//! ```
//!
//! What it understands (in ordinary wording): questions (knowledge base, plus templates when
//! systems are named), list/describe, create a connection from a URL/DSN/path, create a flow
//! ("load X into Y"), run, schedule ("it" = the object last touched; a connection first gets a
//! flow into `warehouse`), find/import templates, diagnose a failed flow. Anything else it
//! declines plainly, naming the `--llm` setting.

mod answer;
mod context;
mod intent;
mod plan;
mod text;

use async_trait::async_trait;
use etl_llm::{
    Event, EventStream, FinishReason, LlmError, Message, Model, Request, ToolCall, ToolSpec, Usage,
    tokens,
};
use futures::stream;
use tokio_util::sync::CancellationToken;

pub use intent::{Intent, classify};
pub use plan::Action;

use context::Conversation;

/// The name the planner reports as its model.
pub const MODEL_NAME: &str = "built-in-planner";

/// The built-in planner. Stateless: everything it needs is in the request's conversation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Planner;

impl Planner {
    pub fn new() -> Planner {
        Planner
    }

    /// The next action for a conversation: a tool call or the answer. `tools` are the tools the
    /// caller offers; a plan needing one that is not offered answers why it cannot go on.
    pub fn decide(&self, messages: &[Message], tools: &[ToolSpec]) -> Action {
        let conv = Conversation::read(messages);
        let intent = classify(conv.request);
        match plan::next(&conv, &intent) {
            Action::Call { tool, .. } if !tools.iter().any(|t| t.name == tool) => {
                Action::Say(format!(
                    "To do that I need the '{tool}' tool, and it is not offered in this conversation (the session may have tools turned off, or the key may be read-only). Start a session with tools enabled, or use a key that may call '{tool}'."
                ))
            }
            action => action,
        }
    }

    /// The events answering a conversation, as `stream` emits them.
    pub fn events(&self, request: &Request) -> Vec<Event> {
        let conv = Conversation::read(&request.messages);
        let input_tokens = tokens::request(&request.messages, &request.tools);
        let mut events = Vec::new();
        match self.decide(&request.messages, &request.tools) {
            Action::Call { tool, arguments } => {
                let output_tokens = tokens::count(&tool) + tokens::count(&arguments.to_string());
                events.push(Event::ToolCall(ToolCall {
                    id: format!("call_planner_{}", conv.call_count + 1),
                    name: tool,
                    arguments,
                }));
                events.push(Event::Usage(Usage {
                    input_tokens,
                    output_tokens,
                }));
                events.push(Event::Finish(FinishReason::ToolCalls));
            }
            Action::Say(text) => {
                let mut parts = fragments(&text);
                // `max_tokens` cuts the answer like a provider would, and says so (Length).
                let mut cut = false;
                if let Some(limit) = request.max_tokens.map(u64::from)
                    && tokens::count(&text) > limit
                {
                    cut = true;
                    let mut kept = String::new();
                    let whole = parts.len();
                    for (i, part) in parts.iter().enumerate() {
                        kept.push_str(part);
                        if tokens::count(&kept) > limit {
                            parts.truncate(i);
                            break;
                        }
                    }
                    debug_assert!(parts.len() < whole);
                }
                let output_tokens = tokens::count(&parts.concat());
                events.extend(parts.into_iter().map(Event::Text));
                events.push(Event::Usage(Usage {
                    input_tokens,
                    output_tokens,
                }));
                events.push(Event::Finish(if cut {
                    FinishReason::Length
                } else {
                    FinishReason::Stop
                }));
            }
        }
        events
    }
}

#[async_trait]
impl Model for Planner {
    fn name(&self) -> &str {
        MODEL_NAME
    }

    async fn stream(
        &self,
        request: Request,
        cancel: CancellationToken,
    ) -> Result<EventStream, LlmError> {
        if cancel.is_cancelled() {
            return Err(LlmError::Canceled);
        }
        // Deciding takes microseconds, so the whole answer is computed up front and then
        // handed out fragment by fragment; a cancelled token ends the stream early.
        let events = self.events(&request);
        let stream = stream::iter(events.into_iter().map(Ok));
        let stream = futures::StreamExt::take_while(stream, move |_| {
            let go_on = !cancel.is_cancelled();
            async move { go_on }
        });
        Ok(Box::pin(stream))
    }
}

/// The answer cut into word-sized fragments (each word with the whitespace before it), so it
/// streams like a model's tokens; the fragments concatenate to exactly `text`.
fn fragments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut current));
                in_word = false;
            }
        } else {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_concatenate_to_the_text() {
        let text = "Flow 'orders' now runs every 1h;\nnext  run at 20:00.";
        let parts = fragments(text);
        assert!(parts.len() > 5);
        assert_eq!(parts.concat(), text);
        assert!(fragments("").is_empty());
    }

    #[test]
    fn a_tool_not_offered_is_said_not_called() {
        let planner = Planner::new();
        let action = planner.decide(&[Message::user("list flows")], &[]);
        match action {
            Action::Say(t) => assert!(t.contains("'host_cli' tool"), "{t}"),
            other => panic!("expected text, got {other:?}"),
        }
    }
}
