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

use std::sync::Arc;
use std::time::Instant;

use etl_engine::host::Caller;
use etl_llm::{Event, FinishReason, LlmError, Message, Model, Request, Role, ToolCall, ToolSpec};
use futures::StreamExt;
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::tools::{CallError, ToolOutcome, ToolRegistry};

/// Model calls one user message may take unless the caller says otherwise.
pub const DEFAULT_MAX_TURNS: usize = 8;
/// Characters of a tool's result kept in a `tool_end` event (the model gets all of it).
pub const EVENT_RESULT_CHARS: usize = 2_000;
/// Events buffered between the loop and a slow reader before the loop waits for it.
const EVENT_BUFFER: usize = 256;

/// How to run one message.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Sent as the first (system) message of every model call.
    pub system_prompt: Option<String>,
    /// Whether the model is offered the tools (`include_tools`, default true).
    pub include_tools: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// A model name to ask the provider for; the answer reports the model's own name.
    pub model: Option<String>,
    /// Model calls allowed for this message (at least 1).
    pub max_turns: usize,
    /// The session this run belongs to, reported in `start`.
    pub session_id: Option<String>,
    /// The run's id, reported in `start`; a fresh `run_` id when not given.
    pub run_id: Option<String>,
    /// Upper bound, in characters, of the earlier history sent to the model; the oldest turns
    /// are left out first, always whole (a user message and everything after it), so a tool
    /// call is never separated from its result. `None`: send everything.
    pub history_budget_chars: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            system_prompt: None,
            include_tools: true,
            max_tokens: None,
            temperature: None,
            model: None,
            max_turns: DEFAULT_MAX_TURNS,
            session_id: None,
            run_id: None,
            history_budget_chars: None,
        }
    }
}

/// One message to answer.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// Who asks: the tools run as this caller (tenant, role: a read-only caller's agentic tool
    /// calls are refused and the model is told so).
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
    /// `llm_unavailable`, `bad_request` (the model refused the request as malformed) or
    /// `canceled`.
    pub code: &'static str,
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
}

impl Agent {
    pub fn new(model: Arc<dyn Model>, tools: ToolRegistry) -> Agent {
        Agent { model, tools }
    }

    pub fn model(&self) -> &Arc<dyn Model> {
        &self.model
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
        let mut run = Running {
            started: Instant::now(),
            cancel: cancel.child_token(),
            events,
            response: String::new(),
            messages: Vec::new(),
            records: Vec::new(),
            usage: RunUsage::default(),
        };
        let model_name = self.model.name().to_string();
        run.emit(AgentEvent::Start {
            run_id: run_id.clone(),
            session_id: options.session_id.clone(),
            model: model_name.clone(),
        })
        .await;

        let mut conversation = Vec::with_capacity(history.len() + 2);
        if let Some(prompt) = options.system_prompt.as_deref().filter(|p| !p.is_empty()) {
            conversation.push(Message::system(prompt));
        }
        conversation.extend(trim_history(history, options.history_budget_chars));
        conversation.push(Message::user(message));
        let tools: Vec<ToolSpec> = if options.include_tools {
            self.tools
                .tools()
                .iter()
                .map(|t| ToolSpec {
                    name: t.name().to_string(),
                    description: t.description().to_string(),
                    parameters: t.parameters(),
                })
                .collect()
        } else {
            Vec::new()
        };

        let max_turns = options.max_turns.max(1);
        let mut finish = "turn_limit";
        let mut failure = None;
        for _turn in 0..max_turns {
            if run.cancel.is_cancelled() {
                failure = Some(canceled());
                break;
            }
            let request = Request {
                messages: conversation.clone(),
                tools: tools.clone(),
                max_tokens: options.max_tokens,
                temperature: options.temperature,
                model: options.model.clone(),
            };
            let answer = run.ask(self.model.as_ref(), request).await;
            run.emit(AgentEvent::Usage(run.usage)).await;
            let Answer {
                text,
                calls,
                reason,
                error,
            } = answer;
            if let Some(error) = error {
                // Keep what was said before the failure; calls never made are dropped, so the
                // stored history has no call without its result.
                if !text.is_empty() {
                    run.keep(&mut conversation, Message::assistant(text, Vec::new()));
                }
                failure = Some(error);
                break;
            }
            let asked_tools = !calls.is_empty();
            if !text.is_empty() || asked_tools {
                run.keep(&mut conversation, Message::assistant(text, calls.clone()));
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
                        run.keep(&mut conversation, tool_message(skipped, &outcome));
                    }
                    failure = Some(canceled());
                    break;
                }
                self.call_tool(&mut run, &mut conversation, &caller, call)
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
            run.keep(
                &mut conversation,
                Message::assistant(note.trim_start(), Vec::new()),
            );
        }

        let duration_ms = run.started.elapsed().as_millis() as u64;
        // Counts and codes only: messages and tool arguments may hold secrets.
        tracing::info!(
            run_id = %run_id,
            tenant = %caller.tenant,
            model = %model_name,
            llm_calls = run.usage.llm_calls,
            tool_calls = run.usage.tool_calls,
            input_tokens = run.usage.input_tokens,
            output_tokens = run.usage.output_tokens,
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
                    model: model_name,
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
        }
    }

    /// Runs one tool call (or refuses it) and hands its result to the conversation. A call the
    /// registry refuses (unknown tool, bad arguments, read-only caller) becomes a failed result
    /// the model reads and can act on.
    async fn call_tool(
        &self,
        run: &mut Running,
        conversation: &mut Vec<Message>,
        caller: &Caller,
        call: &ToolCall,
    ) {
        run.emit(AgentEvent::ToolStart {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        })
        .await;
        let started = Instant::now();
        let (outcome, duration_ms) =
            match self.tools.call(caller, &call.name, &call.arguments).await {
                Ok(done) => (done.outcome, done.duration_ms),
                Err(refused) => {
                    let code = match &refused {
                        CallError::UnknownTool(_) => "tool_not_found",
                        CallError::InvalidArguments(_) => "invalid_arguments",
                        CallError::Forbidden(_) => "forbidden",
                    };
                    (
                        ToolOutcome::failed(code, refused.to_string(), json!({"code": code})),
                        started.elapsed().as_millis() as u64,
                    )
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
        run.keep(conversation, tool_message(call, &outcome));
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

    /// One model call: streams its text, collects its tool calls, adds its usage.
    async fn ask(&mut self, model: &dyn Model, request: Request) -> Answer {
        self.usage.llm_calls += 1;
        let mut answer = Answer {
            text: String::new(),
            calls: Vec::new(),
            reason: FinishReason::Stop,
            error: None,
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

fn model_error(model: &str, e: LlmError) -> RunError {
    match e {
        LlmError::Canceled => canceled(),
        LlmError::Unavailable(why) => RunError {
            error: format!(
                "the model '{model}' could not answer: {why}; check the LLM settings and that \
                 the provider is reachable, then ask again"
            ),
            code: "llm_unavailable",
        },
        LlmError::BadRequest(why) => RunError {
            error: format!(
                "the model '{model}' refused the request: {why}; check the options sent \
                 (model, max_tokens, temperature)"
            ),
            code: "bad_request",
        },
    }
}

fn canceled() -> RunError {
    RunError {
        error: "the run was canceled before it finished; what was said so far is kept in the \
                session"
            .into(),
        code: "canceled",
    }
}

fn tool_message(call: &ToolCall, outcome: &ToolOutcome) -> Message {
    let data = match &outcome.code {
        Some(code) if !outcome.success && outcome.data.is_null() => json!({"code": code}),
        _ => outcome.data.clone(),
    };
    Message::tool_result(call, outcome.success, outcome.result.clone(), data)
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

/// Keeps the newest whole turns of `history` that fit in `budget` characters. A turn starts at
/// a user message, so an assistant's tool calls stay with their results. The newest turn is
/// kept even when it alone is over budget; system messages at the start are always kept.
pub fn trim_history(history: Vec<Message>, budget: Option<usize>) -> Vec<Message> {
    let Some(budget) = budget else {
        return history;
    };
    let size = |m: &Message| {
        m.content.len()
            + m.tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.to_string().len())
                .sum::<usize>()
    };
    let lead = history
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    let mut used = 0;
    let mut keep_from = history.len();
    let mut turn_size = 0;
    for i in (lead..history.len()).rev() {
        turn_size += size(&history[i]);
        if history[i].role == Role::User {
            if used + turn_size > budget && keep_from < history.len() {
                break;
            }
            used += turn_size;
            turn_size = 0;
            keep_from = i;
        }
    }
    let mut kept: Vec<Message> = history[..lead].to_vec();
    kept.extend(history.into_iter().skip(keep_from));
    kept
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
    fn trimming_keeps_whole_newest_turns() {
        let call = ToolCall {
            id: "c1".into(),
            name: "host_cli".into(),
            arguments: json!({"command": "list flows"}),
        };
        let history = vec![
            Message::system("be brief"),
            Message::user("a".repeat(100)),
            Message::assistant("b".repeat(100), Vec::new()),
            Message::user("list"),
            Message::assistant("", vec![call.clone()]),
            Message::tool_result(&call, true, "no flows", Json::Null),
            Message::assistant("none", Vec::new()),
        ];
        let trimmed = trim_history(history.clone(), Some(120));
        assert_eq!(trimmed.len(), 5, "{trimmed:?}");
        assert_eq!(trimmed[0].role, Role::System);
        assert_eq!(trimmed[1].content, "list");
        assert_eq!(
            trimmed[3].role,
            Role::Tool,
            "the result stays with its call"
        );
        assert_eq!(trim_history(history.clone(), None), history);
        assert_eq!(trim_history(history.clone(), Some(10_000)), history);
        // The newest turn stays even when it alone is over budget.
        assert_eq!(trim_history(history, Some(1)).len(), 5);
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
