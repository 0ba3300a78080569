//! The agent loop: one user message in, the model asked (with the tools it may call), its tool
//! calls run through the [`ToolRegistry`], their results handed back, and the model asked again
//! until it answers in text or the turn limit is reached. Every step is an [`AgentEvent`] (the
//! `/chat/stream` table of API.md) and the run ends with the `/chat` body ([`ChatResponse`]) and
//! the messages to store in the session ([`RunOutcome::messages`]).
//!
//! Two forms: [`Agent::stream`] spawns the run and hands back a channel of events plus the
//! outcome; [`Agent::chat`] runs it to the end without events. Both take a
//! [`CancellationToken`]: cancelling stops the model call in flight and the loop between steps,
//! and the outcome still carries what was said and done so far, so the caller can keep it.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use etl_engine::host::{Caller, Role as CallerRole};
use etl_llm::{
    Event, FinishReason, LlmError, Message, Model, Request, Role, ToolCall, ToolSpec, tokens,
};
use futures::StreamExt;
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::tools::{CallError, ToolOutcome, ToolRegistry};
use crate::usage::{Allowance, CAP_EXCEEDED, Prices};

/// Model calls one user message may take unless configured otherwise.
pub const DEFAULT_MAX_TURNS: usize = 8;
/// Characters of a tool's result kept in a `tool_end` event.
pub const EVENT_RESULT_CHARS: usize = 2_000;
/// Characters of a tool's result handed to the model (and kept in the session) unless
/// configured otherwise; the rest is cut, and the result says so.
pub const DEFAULT_TOOL_RESULT_CHARS: usize = 20_000;
/// Tokens kept free for the answer when fitting the history into the context, unless the
/// request sets `max_tokens`.
pub const DEFAULT_RESERVE_TOKENS: u64 = 4_096;
/// Events buffered between the loop and a slow reader before the loop waits for it.
const EVENT_BUFFER: usize = 256;

/// How the agent runs every message: set once, by the server, for its model.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The product's system prompt ([`crate::prompt::DEFAULT_SYSTEM_PROMPT`] for LLMs), sent
    /// first on every model call; a client's own `system_prompt` follows it. `None` sends only
    /// the client's (the built-in planner reads no prompt).
    pub system_prompt: Option<String>,
    /// The model's context window, in tokens (counted with `etl_llm::tokens`). Each model call
    /// sends the system prompt, the tools, this message and this run's steps, and as much of
    /// the earlier history as still fits, newest whole turns first. `None`: all the history.
    pub context_tokens: Option<u64>,
    /// Tokens kept free for the answer when fitting the history, unless the request sets
    /// `max_tokens`.
    pub reserve_tokens: u64,
    /// Model calls per message, at most.
    pub max_turns: usize,
    /// Characters of a tool's result the model gets; longer results are cut and say so.
    pub tool_result_chars: usize,
    /// Turns tokens into cost (the `cost_micros` of an outcome, and cost caps).
    pub prices: Prices,
}

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig {
            system_prompt: None,
            context_tokens: None,
            reserve_tokens: DEFAULT_RESERVE_TOKENS,
            max_turns: DEFAULT_MAX_TURNS,
            tool_result_chars: DEFAULT_TOOL_RESULT_CHARS,
            prices: Prices::default(),
        }
    }
}

/// How to run one message.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The client's system prompt: sent after the product's (see [`AgentConfig`]).
    pub system_prompt: Option<String>,
    /// Whether the model is offered the tools (`include_tools`, default true). A read-only
    /// caller is never offered the agentic ones.
    pub include_tools: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// A model name to ask the provider for (the caller checked it is allowed); the answer
    /// reports it as its `model`.
    pub model: Option<String>,
    /// Model calls allowed for this message (at least 1); `None`: the agent's setting.
    pub max_turns: Option<usize>,
    /// The session this run belongs to, reported in `start`.
    pub session_id: Option<String>,
    /// The run's id, reported in `start`; a fresh `run_` id when not given.
    pub run_id: Option<String>,
    /// What the run may use before a usage cap is spent: checked before every model call after
    /// the first, so a runaway loop stops with `cap_exceeded`.
    pub allowance: Allowance,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            system_prompt: None,
            include_tools: true,
            max_tokens: None,
            temperature: None,
            model: None,
            max_turns: None,
            session_id: None,
            run_id: None,
            allowance: Allowance::default(),
        }
    }
}

/// One message to answer.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Who asks: the tools run as this caller (tenant, role: a read-only caller is not offered
    /// agentic tools, and a call to one is refused and the model told so).
    pub caller: Caller,
    /// The conversation before this message (a session's stored messages), oldest first.
    pub history: Vec<Message>,
    /// The new user message.
    pub message: String,
    pub options: RunOptions,
}

/// The `usage` object: totals of this run so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    /// Tool calls made (including refused ones).
    pub tool_calls: u64,
    /// Model calls made.
    pub llm_calls: u64,
}

/// One tool call as `/chat` reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolCallRecord {
    pub id: String,
    pub name: String,
    pub arguments: Json,
    pub success: bool,
    pub duration_ms: u64,
}

/// The `/chat` body (and the `done` event).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatResponse {
    pub success: bool,
    /// The answer: every text fragment of every model call, exactly as streamed as `token`s.
    pub response: String,
    /// Names of the tools called, in order (repeats included).
    pub tools_used: Vec<String>,
    pub tool_calls: Vec<ToolCallRecord>,
    pub usage: RunUsage,
    pub model: String,
    pub duration_ms: u64,
    /// Why the run ended: `stop` (the model answered), `length` (`max_tokens` cut the
    /// answer), `refused` (the provider refused), `turn_limit` (the loop stopped the model).
    pub finish: &'static str,
    /// The session, for `/sessions/{id}/chat`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A run that did not finish: the `error` event and what the API answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunError {
    pub error: String,
    /// `llm_unavailable`, `bad_request` (the model refused the request as malformed),
    /// `cap_exceeded` or `canceled`.
    pub code: &'static str,
    /// For `cap_exceeded`, whose `error` is the public API's fixed sentence: which cap, how
    /// much was used and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RunError {
    pub fn new(code: &'static str, error: impl Into<String>) -> RunError {
        RunError {
            error: error.into(),
            code,
            detail: None,
        }
    }

    /// `cap_exceeded` with the public API's sentence and `detail` saying why.
    pub fn cap_exceeded(detail: impl Into<String>) -> RunError {
        RunError {
            error: CAP_EXCEEDED.into(),
            code: "cap_exceeded",
            detail: Some(detail.into()),
        }
    }
}

/// What the stream carries, in the order of API.md's streaming table. Serialized with a
/// `type` field named like the SSE event ([`AgentEvent::kind`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    Start {
        run_id: String,
        session_id: Option<String>,
        model: String,
    },
    Token {
        content: String,
    },
    ToolStart {
        id: String,
        name: String,
        arguments: Json,
    },
    ToolEnd {
        id: String,
        name: String,
        success: bool,
        /// The result text, shortened to [`EVENT_RESULT_CHARS`] characters.
        result: String,
        duration_ms: u64,
    },
    Usage(RunUsage),
    Done(ChatResponse),
    Error(RunError),
}

impl AgentEvent {
    /// The SSE event name (`start`, `token`, `tool_start`, `tool_end`, `usage`, `done`,
    /// `error`).
    pub fn kind(&self) -> &'static str {
        match self {
            AgentEvent::Start { .. } => "start",
            AgentEvent::Token { .. } => "token",
            AgentEvent::ToolStart { .. } => "tool_start",
            AgentEvent::ToolEnd { .. } => "tool_end",
            AgentEvent::Usage(_) => "usage",
            AgentEvent::Done(_) => "done",
            AgentEvent::Error(_) => "error",
        }
    }
}

/// How a run ended and what to keep.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub run_id: String,
    /// The `/chat` body, or why there is none.
    pub result: Result<ChatResponse, RunError>,
    /// The messages this run added after the user message (assistant messages with their tool
    /// calls, tool results), in order, to append to the session after the user message. Always
    /// consistent: every tool call has its result message, even when the run was canceled
    /// (calls that never ran get a failed result saying so).
    pub messages: Vec<Message>,
    /// The text said so far (equal to `response` on success; the partial answer otherwise).
    pub response: String,
    pub usage: RunUsage,
    /// The model asked (the request's, or the model's own name).
    pub model: String,
    /// What the run cost by the agent's price table, in micro-dollars.
    pub cost_micros: u64,
}

/// A run in progress: its events, then its outcome.
pub struct RunStream {
    pub events: mpsc::Receiver<AgentEvent>,
    pub outcome: JoinHandle<RunOutcome>,
}

/// The loop over one model and one tool registry. Cheap to clone.
#[derive(Clone)]
pub struct Agent {
    model: Arc<dyn Model>,
    tools: ToolRegistry,
    config: Arc<AgentConfig>,
    counts: Arc<FixedCounts>,
}

/// Token counts that are the same for every run, counted once: the product's prompt and the
/// tool definitions (all of them; the non-agentic ones a read-only caller is offered).
#[derive(Default)]
struct FixedCounts {
    prompt: OnceLock<u64>,
    tools: [OnceLock<u64>; 2],
}

impl Agent {
    /// The loop with the default [`AgentConfig`]: no product prompt, the whole history.
    pub fn new(model: Arc<dyn Model>, tools: ToolRegistry) -> Agent {
        Agent::with_config(model, tools, AgentConfig::default())
    }

    pub fn with_config(model: Arc<dyn Model>, tools: ToolRegistry, config: AgentConfig) -> Agent {
        Agent {
            model,
            tools,
            config: Arc::new(config),
            counts: Arc::default(),
        }
    }

    pub fn model(&self) -> &Arc<dyn Model> {
        &self.model
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The tools a caller's model is offered: all of them, less the agentic ones for a
    /// read-only caller; none when `include_tools` is off.
    pub fn offered_tools(&self, caller: &Caller, include_tools: bool) -> Vec<ToolSpec> {
        if !include_tools {
            return Vec::new();
        }
        self.tools
            .tools()
            .iter()
            .filter(|t| !(t.agentic() && caller.role == CallerRole::Readonly))
            .map(|t| ToolSpec {
                name: t.name().to_string(),
                description: t.description().to_string(),
                parameters: t.parameters(),
            })
            .collect()
    }

    /// Spawns the run on the tokio runtime. The events end with `done` or `error`. Dropping
    /// the receiver cancels the run (a client that went away), as does cancelling `cancel`;
    /// the outcome is still produced.
    pub fn stream(&self, request: RunRequest, cancel: CancellationToken) -> RunStream {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let agent = self.clone();
        let outcome = tokio::spawn(async move { agent.run(request, cancel, Some(tx)).await });
        RunStream {
            events: rx,
            outcome,
        }
    }

    /// Runs to the end without events and answers the outcome.
    pub async fn chat(&self, request: RunRequest, cancel: CancellationToken) -> RunOutcome {
        self.run(request, cancel, None).await
    }

    /// The loop itself; events go to `events` when given.
    pub async fn run(
        &self,
        request: RunRequest,
        cancel: CancellationToken,
        events: Option<mpsc::Sender<AgentEvent>>,
    ) -> RunOutcome {
        let RunRequest {
            caller,
            history,
            message,
            options,
        } = request;
        let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
        let model_name = options
            .model
            .clone()
            .unwrap_or_else(|| self.model.name().to_string());
        let mut run = Running {
            started: Instant::now(),
            cancel: cancel.child_token(),
            events,
            response: String::new(),
            messages: Vec::new(),
            records: Vec::new(),
            usage: RunUsage::default(),
        };
        run.emit(AgentEvent::Start {
            run_id: run_id.clone(),
            session_id: options.session_id.clone(),
            model: model_name.clone(),
        })
        .await;

        let system = system_prompt(
            self.config.system_prompt.as_deref(),
            options.system_prompt.as_deref(),
        );
        let head: Vec<Message> = system.into_iter().map(Message::system).collect();
        let tools = self.offered_tools(&caller, options.include_tools);
        // With no earlier messages there is nothing to fit: nothing is counted.
        let fitting = self.config.context_tokens.is_some() && !history.is_empty();
        let history = History::new(history, fitting);
        let fixed = if fitting {
            self.fixed_tokens(&caller, &options, tools.is_empty())
        } else {
            0
        };
        let mut current_tokens = Counted::default();
        // This message and the steps of this run: always sent whole.
        let mut current = vec![Message::user(message)];
        let reserve = options
            .max_tokens
            .map_or(self.config.reserve_tokens, u64::from);

        let max_turns = options.max_turns.unwrap_or(self.config.max_turns).max(1);
        let mut finish = "turn_limit";
        let mut failure = None;
        for turn in 0..max_turns {
            if run.cancel.is_cancelled() {
                failure = Some(canceled());
                break;
            }
            if turn > 0
                && let Some(spent) =
                    self.over_allowance(&options.allowance, &model_name, &run.usage)
            {
                failure = Some(spent);
                break;
            }
            let budget = match self.config.context_tokens {
                Some(context) if fitting => {
                    let used = fixed + current_tokens.of(&current);
                    Some(context.saturating_sub(used + reserve))
                }
                _ => None,
            };
            let mut messages = head.clone();
            let kept = history.fit(budget);
            if kept < history.messages.len() && turn == 0 {
                tracing::info!(
                    kept,
                    of = history.messages.len(),
                    budget = budget.unwrap_or(0),
                    "earlier messages left out to fit the model's context"
                );
            }
            let sent_history = &history.messages[history.messages.len() - kept..];
            messages.extend_from_slice(sent_history);
            messages.extend(current.iter().cloned());
            let request = Request {
                messages,
                tools: tools.clone(),
                max_tokens: options.max_tokens,
                temperature: options.temperature,
                model: options.model.clone(),
            };
            let answer = run.ask(self.model.as_ref(), request).await;
            if !answer.reported && answer.error.is_none() {
                // The model said nothing of its usage: count what was sent and answered.
                let input = head
                    .iter()
                    .chain(sent_history)
                    .chain(current.iter())
                    .map(tokens::message)
                    .sum::<u64>()
                    + tokens::request(&[], &tools);
                let output = tokens::count(&answer.text)
                    + answer
                        .calls
                        .iter()
                        .map(|c| tokens::count(&c.name) + tokens::count(&c.arguments.to_string()))
                        .sum::<u64>();
                run.usage.input_tokens += input;
                run.usage.output_tokens += output;
                run.usage.total_tokens += input + output;
            }
            run.emit(AgentEvent::Usage(run.usage)).await;
            let Answer {
                text,
                calls,
                reason,
                error,
                ..
            } = answer;
            if let Some(error) = error {
                // Keep what was said before the failure; calls never made are dropped, so the
                // stored history has no call without its result.
                if !text.is_empty() {
                    run.keep(&mut current, Message::assistant(text, Vec::new()));
                }
                failure = Some(error);
                break;
            }
            let asked_tools = !calls.is_empty();
            if !text.is_empty() || asked_tools {
                run.keep(&mut current, Message::assistant(text, calls.clone()));
            }
            if !asked_tools {
                finish = match reason {
                    FinishReason::Length => "length",
                    FinishReason::Refused => "refused",
                    FinishReason::Stop | FinishReason::ToolCalls => "stop",
                };
                break;
            }
            for (i, call) in calls.iter().enumerate() {
                if run.cancel.is_cancelled() {
                    // Answer the calls that will not run, so the stored history stays valid
                    // for every provider (each call needs its result).
                    for skipped in &calls[i..] {
                        let outcome = ToolOutcome::failed(
                            "canceled",
                            "the run was canceled before this tool call ran",
                            Json::Null,
                        );
                        let message = self.tool_message(skipped, &outcome);
                        run.keep(&mut current, message);
                    }
                    failure = Some(canceled());
                    break;
                }
                self.call_tool(&mut run, &mut current, &caller, &tools, call)
                    .await;
            }
            if failure.is_some() {
                break;
            }
        }

        if failure.is_none() && finish == "turn_limit" {
            let mut note = turn_limit_note(max_turns, &run.records);
            if !run.response.is_empty() {
                note.insert_str(0, "\n\n");
            }
            run.say(&note).await;
            // The note is part of the answer, so the session keeps it too.
            let note = note.trim_start().to_string();
            run.keep(&mut current, Message::assistant(note, Vec::new()));
        }

        let duration_ms = run.started.elapsed().as_millis() as u64;
        let cost_micros = self.config.prices.cost_micros(
            &model_name,
            run.usage.input_tokens,
            run.usage.output_tokens,
        );
        // Counts and codes only: messages and tool arguments may hold secrets.
        tracing::info!(
            run_id = %run_id,
            tenant = %caller.tenant,
            model = %model_name,
            llm_calls = run.usage.llm_calls,
            tool_calls = run.usage.tool_calls,
            input_tokens = run.usage.input_tokens,
            output_tokens = run.usage.output_tokens,
            cost_micros,
            duration_ms,
            outcome = failure.as_ref().map_or(finish, |f| f.code),
            "agent run ended"
        );
        let result = match failure {
            Some(error) => {
                run.emit(AgentEvent::Error(error.clone())).await;
                Err(error)
            }
            None => {
                let body = ChatResponse {
                    success: true,
                    response: run.response.clone(),
                    tools_used: run.records.iter().map(|r| r.name.clone()).collect(),
                    tool_calls: run.records.clone(),
                    usage: run.usage,
                    model: model_name.clone(),
                    duration_ms,
                    finish,
                    session_id: options.session_id.clone(),
                };
                run.emit(AgentEvent::Done(body.clone())).await;
                Ok(body)
            }
        };
        RunOutcome {
            run_id,
            result,
            messages: run.messages,
            response: run.response,
            usage: run.usage,
            model: model_name,
            cost_micros,
        }
    }

    /// Tokens of what every model call of this run sends besides the history and the run's
    /// own messages: the system message, the tool definitions and the reply priming.
    fn fixed_tokens(&self, caller: &Caller, options: &RunOptions, no_tools: bool) -> u64 {
        let product = self.config.system_prompt.as_deref().map_or(0, |p| {
            *self.counts.prompt.get_or_init(|| tokens::count(p.trim()))
        });
        let client = options.system_prompt.as_deref().map_or(0, |c| {
            tokens::count(c.trim()) + tokens::count(INSTRUCTIONS_HEADING)
        });
        let system = if product + client > 0 {
            tokens::PER_MESSAGE + product + client
        } else {
            0
        };
        let tools = if no_tools {
            0
        } else {
            let readonly = caller.role == CallerRole::Readonly;
            *self.counts.tools[usize::from(readonly)].get_or_init(|| {
                tokens::request(&[], &self.offered_tools(caller, true)) - tokens::PER_REPLY
            })
        };
        system + tools + tokens::PER_REPLY
    }

    /// `cap_exceeded` when the run has used all its allowance.
    fn over_allowance(
        &self,
        allowance: &Allowance,
        model: &str,
        usage: &RunUsage,
    ) -> Option<RunError> {
        let cost = self
            .config
            .prices
            .cost_micros(model, usage.input_tokens, usage.output_tokens);
        let tokens_spent = allowance.tokens.is_some_and(|t| usage.total_tokens >= t);
        let cost_spent = allowance.cost_micros.is_some_and(|c| cost >= c);
        (tokens_spent || cost_spent).then(|| {
            RunError::cap_exceeded(format!(
                "the AI usage cap was reached during this run after {} model calls and {} \
                 tokens, so it stopped before asking the model again; what was said and done so \
                 far is kept. Ask the operator to raise the cap, or wait until it resets",
                usage.llm_calls, usage.total_tokens
            ))
        })
    }

    /// A tool's result as the message the model reads: the text cut to the configured size
    /// (saying so), the structured data as it is.
    fn tool_message(&self, call: &ToolCall, outcome: &ToolOutcome) -> Message {
        let data = match &outcome.code {
            Some(code) if !outcome.success && outcome.data.is_null() => json!({"code": code}),
            _ => outcome.data.clone(),
        };
        let content = bound_result(&outcome.result, self.config.tool_result_chars);
        Message::tool_result(call, outcome.success, content, data)
    }

    /// Runs one tool call (or refuses it) and hands its result to the conversation. A call the
    /// model should not have made (a tool not offered to it: tools off, or an agentic tool
    /// asked by a read-only caller's model) is refused without running, as is one the registry
    /// refuses (unknown tool, bad arguments); the refusal is a failed result the model reads
    /// and can act on.
    async fn call_tool(
        &self,
        run: &mut Running,
        conversation: &mut Vec<Message>,
        caller: &Caller,
        offered: &[ToolSpec],
        call: &ToolCall,
    ) {
        run.emit(AgentEvent::ToolStart {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        })
        .await;
        let started = Instant::now();
        let refused = |code: &str, why: String| {
            (
                ToolOutcome::failed(code, why, json!({"code": code})),
                started.elapsed().as_millis() as u64,
            )
        };
        let (outcome, duration_ms) = if !offered.iter().any(|t| t.name == call.name) {
            match self.tools.get(&call.name) {
                Some(tool) if tool.agentic() && caller.role == CallerRole::Readonly => refused(
                    "forbidden",
                    format!(
                        "'{}' changes state and this key is read-only, so it is not offered \
                         and was not run; tell the user that a key with the user or admin \
                         role can do this",
                        call.name
                    ),
                ),
                Some(_) => refused(
                    "not_offered",
                    format!(
                        "'{}' is not offered in this conversation (tools are turned off for \
                         it), so it was not run; answer without tools",
                        call.name
                    ),
                ),
                None => {
                    let names: Vec<&str> = offered.iter().map(|t| t.name.as_str()).collect();
                    refused(
                        "tool_not_found",
                        if names.is_empty() {
                            format!(
                                "unknown tool '{}', and no tools are offered in this \
                                 conversation; answer without tools",
                                call.name
                            )
                        } else {
                            format!(
                                "unknown tool '{}'; the tools are: {}",
                                call.name,
                                names.join(", ")
                            )
                        },
                    )
                }
            }
        } else {
            // A run canceled while a tool works (the client left, the server stops) drops the
            // tool's future: its requests and waits stop now rather than when it returns. What
            // the tool already started elsewhere (a flow run it launched) goes on.
            let called = tokio::select! {
                biased;
                called = self.tools.call(caller, &call.name, &call.arguments) => Some(called),
                _ = run.cancel.cancelled() => None,
            };
            match called {
                None => refused(
                    "canceled",
                    format!(
                        "the run was canceled while '{}' was running, so it was stopped before \
                         it answered; anything it had started (a flow run, say) may still be \
                         going: check with 'list runs'",
                        call.name
                    ),
                ),
                Some(Ok(done)) => (done.outcome, done.duration_ms),
                Some(Err(refusal)) => {
                    let code = match &refusal {
                        CallError::UnknownTool(_) => "tool_not_found",
                        CallError::InvalidArguments(_) => "invalid_arguments",
                        CallError::Forbidden(_) => "forbidden",
                    };
                    refused(code, refusal.to_string())
                }
            }
        };
        run.usage.tool_calls += 1;
        run.records.push(ToolCallRecord {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            success: outcome.success,
            duration_ms,
        });
        run.emit(AgentEvent::ToolEnd {
            id: call.id.clone(),
            name: call.name.clone(),
            success: outcome.success,
            result: shorten(&outcome.result, EVENT_RESULT_CHARS),
            duration_ms,
        })
        .await;
        let message = self.tool_message(call, &outcome);
        run.keep(conversation, message);
    }
}

/// The state of one run.
struct Running {
    started: Instant,
    cancel: CancellationToken,
    events: Option<mpsc::Sender<AgentEvent>>,
    response: String,
    messages: Vec<Message>,
    records: Vec<ToolCallRecord>,
    usage: RunUsage,
}

/// What one model call produced.
struct Answer {
    text: String,
    calls: Vec<ToolCall>,
    reason: FinishReason,
    error: Option<RunError>,
    /// The model reported its usage (a `Usage` event).
    reported: bool,
}

impl Running {
    async fn emit(&mut self, event: AgentEvent) {
        if let Some(tx) = &self.events
            && tx.send(event).await.is_err()
        {
            // Nobody listens any more (the client disconnected): stop working for it, but
            // finish cleanly so what was said is kept.
            self.events = None;
            self.cancel.cancel();
        }
    }

    /// Adds answer text: to the response and as a `token`.
    async fn say(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.response.push_str(text);
        self.emit(AgentEvent::Token {
            content: text.to_string(),
        })
        .await;
    }

    fn keep(&mut self, conversation: &mut Vec<Message>, message: Message) {
        conversation.push(message.clone());
        self.messages.push(message);
    }

    /// One model call: streams its text, collects its tool calls, adds the usage the model
    /// reports (the caller counts it when there is none: see [`Answer::reported`]).
    async fn ask(&mut self, model: &dyn Model, request: Request) -> Answer {
        self.usage.llm_calls += 1;
        let mut answer = Answer {
            text: String::new(),
            calls: Vec::new(),
            reason: FinishReason::Stop,
            error: None,
            reported: false,
        };
        let mut first_text = true;
        let opened = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(LlmError::Canceled),
            _ = reader_gone(self.events.as_ref()) => Err(LlmError::Canceled),
            opened = model.stream(request, self.cancel.clone()) => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => {
                answer.error = Some(model_error(model.name(), e));
                return answer;
            }
        };
        let mut finished = false;
        while !finished {
            let next = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Some(Err(LlmError::Canceled)),
                _ = reader_gone(self.events.as_ref()) => Some(Err(LlmError::Canceled)),
                next = stream.next() => next,
            };
            match next {
                Some(Ok(Event::Text(text))) => {
                    if text.is_empty() {
                        continue;
                    }
                    // Text of a later model call starts a new paragraph; the separator is
                    // streamed too, so the tokens still add up to the response.
                    if first_text && !self.response.is_empty() && !self.response.ends_with('\n') {
                        self.say("\n\n").await;
                    }
                    first_text = false;
                    answer.text.push_str(&text);
                    self.say(&text).await;
                }
                Some(Ok(Event::ToolCall(call))) => answer.calls.push(call),
                Some(Ok(Event::Usage(u))) => {
                    answer.reported = true;
                    self.usage.input_tokens += u.input_tokens;
                    self.usage.output_tokens += u.output_tokens;
                    self.usage.total_tokens += u.input_tokens + u.output_tokens;
                }
                Some(Ok(Event::Finish(reason))) => {
                    answer.reason = reason;
                    finished = true;
                }
                Some(Err(e)) => {
                    answer.error = Some(model_error(model.name(), e));
                    return answer;
                }
                // A stream that ends without `Finish` is taken as finished: what it said and
                // asked for is complete as far as anyone can tell.
                None => finished = true,
            }
        }
        answer
    }
}

/// Resolves when the reader of the events went away (never, when there is none): a model
/// waiting to answer nobody is stopped at once, not at its next event.
async fn reader_gone(events: Option<&mpsc::Sender<AgentEvent>>) {
    match events {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

/// The run error for a model's failure: `llm_unavailable` (with the cause and what to check),
/// `bad_request` or `canceled`.
pub fn model_error(model: &str, e: LlmError) -> RunError {
    match e {
        LlmError::Canceled => canceled(),
        LlmError::Unavailable(why) => RunError::new(
            "llm_unavailable",
            format!(
                "the model '{model}' could not answer: {why}; check the LLM settings and that \
                 the provider is reachable, then ask again"
            ),
        ),
        LlmError::BadRequest(why) => RunError::new(
            "bad_request",
            format!(
                "the model '{model}' refused the request: {why}; check the options sent \
                 (model, max_tokens, temperature)"
            ),
        ),
    }
}

fn canceled() -> RunError {
    RunError::new(
        "canceled",
        "the run was canceled before it finished; what was said so far is kept in the session",
    )
}

/// The closing words when the turn limit stops the model: what was done, and how to go on.
fn turn_limit_note(max_turns: usize, records: &[ToolCallRecord]) -> String {
    let mut note = format!(
        "I stopped after {max_turns} model turns, the limit for one message, before \
         finishing."
    );
    if records.is_empty() {
        note.push_str(" No tool was called.");
    } else {
        let ok = records.iter().filter(|r| r.success).count();
        note.push_str(&format!(
            " So far I made {} tool call{} ({ok} succeeded): ",
            records.len(),
            if records.len() == 1 { "" } else { "s" }
        ));
        let listed: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    "{} ({})",
                    r.name,
                    if r.success { "succeeded" } else { "failed" }
                )
            })
            .collect();
        note.push_str(&listed.join(", "));
        note.push('.');
    }
    note.push_str(
        " Say \"continue\" to let me go on from here, or ask a narrower question; the limit is \
         the max_turns option.",
    );
    note
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => {
            let rest = text[cut..].chars().count();
            format!("{}… ({rest} more characters)", &text[..cut])
        }
    }
}

/// Introduces a client's own system prompt after the product's.
const INSTRUCTIONS_HEADING: &str = "# Instructions from the application";

/// Tokens of a growing list of messages, each counted once.
#[derive(Default)]
struct Counted {
    counted: usize,
    tokens: u64,
}

impl Counted {
    fn of(&mut self, messages: &[Message]) -> u64 {
        self.tokens += messages[self.counted..]
            .iter()
            .map(tokens::message)
            .sum::<u64>();
        self.counted = messages.len();
        self.tokens
    }
}

/// The product's system prompt and the client's, as the one system message sent first.
pub fn system_prompt(product: Option<&str>, client: Option<&str>) -> Option<String> {
    let product = product.map(str::trim).filter(|p| !p.is_empty());
    let client = client.map(str::trim).filter(|p| !p.is_empty());
    match (product, client) {
        (None, None) => None,
        (Some(p), None) => Some(p.to_string()),
        (None, Some(c)) => Some(c.to_string()),
        (Some(p), Some(c)) => Some(format!("{p}\n\n{INSTRUCTIONS_HEADING}\n\n{c}")),
    }
}

/// A tool's result text, cut to at most `max` characters (at a line end when one is near)
/// with a note saying how much was left out and how to see it.
pub fn bound_result(text: &str, max: usize) -> String {
    let Some((cut, _)) = text.char_indices().nth(max) else {
        return text.to_string();
    };
    let head = &text[..cut];
    // A cut at a line end reads better, unless that loses more than a fifth of what is kept.
    let head = match head.rfind('\n') {
        Some(nl) if nl >= cut - cut / 5 => &head[..nl],
        _ => head,
    };
    let total = text.chars().count();
    let kept = head.chars().count();
    format!(
        "{head}\n[cut: this result is {total} characters and only the first {kept} are shown. \
         Ask for less to see the rest: a narrower query, a where clause, limit=N or tail=N.]"
    )
}

/// A conversation's earlier messages, split into turns (a user message and everything after
/// it up to the next one) with their token counts, to send the newest whole turns that fit a
/// budget: a tool call always travels with its result.
struct History {
    messages: Vec<Message>,
    /// Per turn, newest first: (index of its first message, its tokens).
    turns: Vec<(usize, u64)>,
}

impl History {
    /// `count`: whether token counts are needed (a context budget is set).
    fn new(messages: Vec<Message>, count: bool) -> History {
        let mut turns = Vec::new();
        if count {
            let mut tokens_in_turn = 0;
            for i in (0..messages.len()).rev() {
                tokens_in_turn += tokens::message(&messages[i]);
                // Messages before the first user message belong to the oldest turn.
                if messages[i].role == Role::User || i == 0 {
                    turns.push((i, tokens_in_turn));
                    tokens_in_turn = 0;
                }
            }
        }
        History { messages, turns }
    }

    /// How many of the newest messages to send within `budget` tokens (`None`: all).
    fn fit(&self, budget: Option<u64>) -> usize {
        let Some(budget) = budget else {
            return self.messages.len();
        };
        let mut used = 0;
        let mut from = self.messages.len();
        for &(start, tokens) in &self.turns {
            if used + tokens > budget {
                break;
            }
            used += tokens;
            from = start;
        }
        self.messages.len() - from
    }
}

/// Keeps the newest whole turns of `history` that fit in `budget` tokens (counted with
/// `etl_llm::tokens`): what [`Agent::run`] sends of a session's earlier messages.
pub fn trim_history(history: Vec<Message>, budget: u64) -> Vec<Message> {
    let h = History::new(history, true);
    let kept = h.fit(Some(budget));
    let skip = h.messages.len() - kept;
    h.messages.into_iter().skip(skip).collect()
}

/// A new run id: `run_` and 16 random lowercase letters and digits.
pub fn new_run_id() -> String {
    let tail = Alphanumeric
        .sample_string(&mut rand::rng(), 16)
        .to_ascii_lowercase();
    format!("run_{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_on_characters_and_says_how_much_is_left() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("ééééé", 2), "éé… (3 more characters)");
    }

    #[test]
    fn trimming_keeps_whole_newest_turns_within_a_token_budget() {
        let call = ToolCall {
            id: "c1".into(),
            name: "host_cli".into(),
            arguments: json!({"command": "list flows"}),
        };
        let history = vec![
            Message::user("tell me a long story ".repeat(20)),
            Message::assistant("once upon a time ".repeat(20), Vec::new()),
            Message::user("list"),
            Message::assistant("", vec![call.clone()]),
            Message::tool_result(&call, true, "no flows", Json::Null),
            Message::assistant("none", Vec::new()),
        ];
        let newest: u64 = history[2..].iter().map(tokens::message).sum();
        let all: u64 = history.iter().map(tokens::message).sum();
        let trimmed = trim_history(history.clone(), newest + 5);
        assert_eq!(trimmed.len(), 4, "{trimmed:?}");
        assert_eq!(trimmed[0].content, "list");
        assert_eq!(
            trimmed[2].role,
            Role::Tool,
            "the result stays with its call"
        );
        assert_eq!(trim_history(history.clone(), all), history);
        // A turn that does not fit is left out whole, even the newest.
        assert!(trim_history(history.clone(), newest - 1).is_empty());
        // The call without its result is never sent: cutting inside the newest turn is not
        // possible, whatever the budget.
        for budget in 0..all {
            let t = trim_history(history.clone(), budget);
            assert!(t.is_empty() || t[0].role == Role::User, "{budget}: {t:?}");
        }
    }

    #[test]
    fn long_results_are_cut_and_say_so() {
        assert_eq!(bound_result("short", 10), "short");
        let text = format!("{}\n{}", "a".repeat(90), "b".repeat(30));
        let cut = bound_result(&text, 100);
        assert!(cut.starts_with(&"a".repeat(90)), "{cut}");
        assert!(!cut.contains('b'), "cut at the line end: {cut}");
        assert!(
            cut.contains("[cut: this result is 121 characters and only the first 90 are shown."),
            "{cut}"
        );
        let one_line = "x".repeat(500);
        assert!(bound_result(&one_line, 100).starts_with(&"x".repeat(100)));
    }

    #[test]
    fn the_product_prompt_comes_before_the_clients() {
        assert_eq!(system_prompt(None, None), None);
        assert_eq!(system_prompt(Some("P"), Some(" ")).as_deref(), Some("P"));
        assert_eq!(system_prompt(None, Some("C")).as_deref(), Some("C"));
        let both = system_prompt(Some("P"), Some("C")).unwrap();
        assert!(
            both.starts_with("P\n\n# Instructions from the application\n\nC"),
            "{both}"
        );
    }

    #[test]
    fn the_turn_limit_note_lists_what_was_done() {
        let records = vec![
            ToolCallRecord {
                id: "1".into(),
                name: "host_cli".into(),
                arguments: Json::Null,
                success: true,
                duration_ms: 1,
            },
            ToolCallRecord {
                id: "2".into(),
                name: "diagnose_flow".into(),
                arguments: Json::Null,
                success: false,
                duration_ms: 1,
            },
        ];
        let note = turn_limit_note(3, &records);
        assert!(note.contains("after 3 model turns"), "{note}");
        assert!(
            note.contains("host_cli (succeeded), diagnose_flow (failed)"),
            "{note}"
        );
    }

    #[test]
    fn events_serialize_with_their_type() {
        let e = AgentEvent::Usage(RunUsage {
            input_tokens: 1,
            output_tokens: 2,
            total_tokens: 3,
            tool_calls: 0,
            llm_calls: 1,
        });
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"type": "usage", "input_tokens": 1, "output_tokens": 2, "total_tokens": 3, "tool_calls": 0, "llm_calls": 1})
        );
        assert_eq!(e.kind(), "usage");
        let t = AgentEvent::Token {
            content: "hi".into(),
        };
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"type": "token", "content": "hi"})
        );
    }
}
