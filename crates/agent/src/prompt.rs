//! The product's default system prompt for LLMs (`prompt.md` beside this file): what the
//! product is, the tools and when to use each, asking before destructive actions, citing
//! knowledge-base sources and never revealing secrets. An operator may replace it
//! (`--llm-system-prompt-file`); a client's own `system_prompt` is sent after it.

/// The default system prompt sent first to every LLM provider.
pub const DEFAULT_SYSTEM_PROMPT: &str = include_str!("prompt.md");
