//! Token counting with a real BPE tokenizer (OpenAI's `o200k_base`, the tables built into the
//! binary), for the models that do not report usage themselves (the built-in planner, servers
//! that ignore `stream_options.include_usage`) and for fitting a history into a context budget.
//!
//! Counts are exact for OpenAI's current models and a close estimate for others (Anthropic and
//! open models use their own vocabularies; differences are typically within 10–20%).
//! The tables are loaded on first use (about 100 ms, some 30 MB), not at start-up, so an idle
//! server does not pay for them.

use crate::{Message, ToolSpec};

/// Tokens a chat format adds around each message (role and separators), as OpenAI documents
/// for its chat models.
pub const PER_MESSAGE: u64 = 3;
/// Tokens that prime the reply.
pub const PER_REPLY: u64 = 3;

/// The number of tokens in `text`.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// Tokens one message takes in a request: its text, its tool calls (name and arguments), the
/// tool name of a result, and the per-message framing.
pub fn message(message: &Message) -> u64 {
    let calls: u64 = message
        .tool_calls
        .iter()
        .map(|c| count(&c.name) + count(&c.arguments.to_string()))
        .sum();
    PER_MESSAGE + count(&message.content) + calls + message.name.as_deref().map_or(0, count)
}

/// Tokens a whole request's input takes: every message, the tool definitions, the reply
/// priming.
pub fn request(messages: &[Message], tools: &[ToolSpec]) -> u64 {
    let tools: u64 = tools
        .iter()
        .map(|t| count(&t.name) + count(&t.description) + count(&t.parameters.to_string()))
        .sum();
    messages.iter().map(message).sum::<u64>() + tools + PER_REPLY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_real_bpe_tokens_not_words() {
        assert_eq!(count(""), 0);
        // "hello world" is two tokens in o200k_base; a long word is several.
        assert_eq!(count("hello world"), 2);
        assert!(count("antidisestablishmentarianism") > 1);
        // Punctuation and digits are tokens of their own, unlike a whitespace split.
        assert!(count("postgres://user@host:5432/db") > 3);
    }

    #[test]
    fn a_message_costs_its_framing_plus_its_parts() {
        let m = Message::user("list connections");
        assert_eq!(message(&m), PER_MESSAGE + count("list connections"));
        let call = crate::ToolCall {
            id: "c1".into(),
            name: "host_cli".into(),
            arguments: serde_json::json!({"command": "list connections"}),
        };
        let a = Message::assistant("", vec![call.clone()]);
        assert!(message(&a) > PER_MESSAGE + count("host_cli"));
        assert_eq!(
            request(std::slice::from_ref(&m), &[]),
            message(&m) + PER_REPLY,
            "no tools: the messages and the reply priming"
        );
    }
}
