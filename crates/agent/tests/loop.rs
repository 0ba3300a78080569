//! The agent loop driven by a scripted model against the application as the server wires it
//! (`open_app` on a temporary data directory: real engine, warehouse, knowledge base and
//! tools): multi-step tool conversations, refused and failing tool calls fed back to the model,
//! read-only callers, the turn limit, cancellation, model failures, and the event stream's
//! promises (tokens add up to the response, usage sums every call, `done` or `error` last).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etl_agent::run::{Agent, AgentEvent, RunOptions, RunOutcome, RunRequest};
use etl_agent::tools::{Tool, ToolEnv, ToolOutcome, ToolRegistry, agent_caller};
use etl_engine::host::{Caller, Role};
use etl_llm::{
    Event, EventStream, FinishReason, LlmError, Message, Model, Request, ToolCall, Usage,
};
use futures::StreamExt;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

/// One step of a scripted answer.
#[derive(Clone)]
enum Step {
    Say(&'static str),
    Call(&'static str, &'static str, Json),
    Used(u64, u64),
    Finish(FinishReason),
    Fail(LlmError),
    /// Waits until the call is canceled, then reports the cancellation.
    Hang,
}

/// A model that answers each call with the next scripted answer (repeating the last one when
/// `repeat` is set) and records every request it was sent.
struct Scripted {
    answers: Mutex<VecDeque<Vec<Step>>>,
    repeat: bool,
    requests: Mutex<Vec<Request>>,
}

impl Scripted {
    fn new(answers: Vec<Vec<Step>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            repeat: false,
            requests: Mutex::new(Vec::new()),
        })
    }
    fn repeating(answer: Vec<Step>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(vec![answer].into()),
            repeat: true,
            requests: Mutex::new(Vec::new()),
        })
    }
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl Model for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn stream(
        &self,
        request: Request,
        cancel: CancellationToken,
    ) -> Result<EventStream, LlmError> {
        self.requests.lock().unwrap().push(request);
        let steps = {
            let mut answers = self.answers.lock().unwrap();
            if self.repeat {
                answers.front().cloned()
            } else {
                answers.pop_front()
            }
        }
        .ok_or_else(|| LlmError::BadRequest("the script has no answer left".into()))?;
        let events = futures::stream::iter(steps).then(move |step| {
            let cancel = cancel.clone();
            async move {
                match step {
                    Step::Say(text) => Ok(Event::Text(text.to_string())),
                    Step::Call(id, name, arguments) => Ok(Event::ToolCall(ToolCall {
                        id: id.to_string(),
                        name: name.to_string(),
                        arguments,
                    })),
                    Step::Used(input_tokens, output_tokens) => Ok(Event::Usage(Usage {
                        input_tokens,
                        output_tokens,
                    })),
                    Step::Finish(reason) => Ok(Event::Finish(reason)),
                    Step::Fail(e) => Err(e),
                    Step::Hang => {
                        cancel.cancelled().await;
                        Err(LlmError::Canceled)
                    }
                }
            }
        });
        Ok(events.boxed())
    }
}

async fn app() -> (tempfile::TempDir, etlworks_agent::App) {
    let dir = tempfile::tempdir().unwrap();
    let settings = etlworks_agent::Settings::resolve(dir.path().to_path_buf(), 2).unwrap();
    let app = etlworks_agent::open_app(&settings).await.unwrap();
    (dir, app)
}

fn user() -> Caller {
    agent_caller("default", "tester", Role::User)
}

fn ask(caller: Caller, message: &str, options: RunOptions) -> RunRequest {
    RunRequest {
        caller,
        history: Vec::new(),
        message: message.to_string(),
        options,
    }
}

/// Runs to the end through the streaming form, answering every event and the outcome.
async fn streamed(
    agent: &Agent,
    request: RunRequest,
    cancel: CancellationToken,
) -> (Vec<AgentEvent>, RunOutcome) {
    let mut run = agent.stream(request, cancel);
    let mut events = Vec::new();
    while let Some(e) = run.events.recv().await {
        events.push(e);
    }
    (events, run.outcome.await.unwrap())
}

fn tokens(events: &[AgentEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Token { content } => Some(content.as_str()),
            _ => None,
        })
        .collect()
}

fn kinds(events: &[AgentEvent]) -> Vec<&'static str> {
    events.iter().map(AgentEvent::kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tool_rounds_then_an_answer() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![
        vec![
            Step::Say("Let me create the table."),
            Step::Call(
                "c1",
                "host_cli",
                json!({"command": "query warehouse sql='create table orders (id integer, total real)'"}),
            ),
            Step::Used(120, 15),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![
            Step::Call(
                "c2",
                "host_cli",
                json!({"command": "list objects warehouse"}),
            ),
            Step::Call(
                "c3",
                "search_knowledge_base",
                json!({"query": "schedule a flow", "limit": 2}),
            ),
            Step::Used(300, 20),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![
            Step::Say("The warehouse now has the table "),
            Step::Say("orders."),
            Step::Used(500, 9),
            Step::Finish(FinishReason::Stop),
        ],
    ]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let options = RunOptions {
        system_prompt: Some("You are terse.".into()),
        session_id: Some("ses_abc".into()),
        run_id: Some("run_fixed".into()),
        ..RunOptions::default()
    };
    let history = vec![
        Message::user("hello"),
        Message::assistant("Hi, what shall we load?", Vec::new()),
    ];
    let request = RunRequest {
        history: history.clone(),
        ..ask(user(), "make an orders table", options)
    };
    let (events, outcome) = streamed(&agent, request, CancellationToken::new()).await;

    assert_eq!(
        kinds(&events),
        [
            "start",
            "token",
            "usage",
            "tool_start",
            "tool_end",
            "usage",
            "tool_start",
            "tool_end",
            "tool_start",
            "tool_end",
            "token",
            "token",
            "token",
            "usage",
            "done"
        ]
    );
    assert_eq!(
        serde_json::to_value(&events[0]).unwrap(),
        json!({"type": "start", "run_id": "run_fixed", "session_id": "ses_abc", "model": "scripted"})
    );
    let body = outcome.result.clone().expect("the run succeeds");
    assert_eq!(
        body.response,
        "Let me create the table.\n\nThe warehouse now has the table orders."
    );
    assert_eq!(
        tokens(&events),
        body.response,
        "tokens add up to the response"
    );
    assert_eq!(
        body.tools_used,
        ["host_cli", "host_cli", "search_knowledge_base"]
    );
    assert!(
        body.tool_calls.iter().all(|c| c.success),
        "{:?}",
        body.tool_calls
    );
    assert_eq!(body.tool_calls[1].id, "c2");
    assert_eq!(
        body.tool_calls[1].arguments,
        json!({"command": "list objects warehouse"})
    );
    assert_eq!(body.finish, "stop");
    assert_eq!(body.model, "scripted");
    assert_eq!(body.session_id.as_deref(), Some("ses_abc"));
    let usage = json!({"input_tokens": 920, "output_tokens": 44, "total_tokens": 964, "tool_calls": 3, "llm_calls": 3});
    assert_eq!(serde_json::to_value(body.usage).unwrap(), usage);
    let usages: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Usage(u) => Some(u.total_tokens),
            _ => None,
        })
        .collect();
    assert_eq!(
        usages,
        [135, 455, 964],
        "usage events carry the totals so far"
    );
    match events.last().unwrap() {
        AgentEvent::Done(done) => {
            assert_eq!(done, &body);
            let wire = serde_json::to_value(&events[events.len() - 1]).unwrap();
            assert_eq!(wire["type"], "done");
            assert_eq!(wire["success"], true);
            assert_eq!(wire["usage"], usage);
            assert_eq!(wire["tool_calls"][0]["name"], "host_cli");
        }
        other => panic!("the last event must be done, got {other:?}"),
    }
    match &events[4] {
        AgentEvent::ToolEnd {
            id, name, success, ..
        } => {
            assert_eq!(
                (id.as_str(), name.as_str(), *success),
                ("c1", "host_cli", true)
            );
        }
        other => panic!("expected tool_end, got {other:?}"),
    }

    // What the model was sent: system prompt, history, the message, then each round's results.
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].messages[0], Message::system("You are terse."));
    assert_eq!(requests[0].messages[1..3], history[..]);
    assert_eq!(
        requests[0].messages[3],
        Message::user("make an orders table")
    );
    assert_eq!(requests[0].tools.len(), 7, "all seven tools are offered");
    let third = &requests[2].messages;
    let results: Vec<&Message> = third
        .iter()
        .filter(|m| m.role == etl_llm::Role::Tool)
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1].tool_call_id.as_deref(), Some("c2"));
    assert!(
        results[1].content.contains("orders"),
        "the model sees the listing with the new table: {}",
        results[1].content
    );
    assert_eq!(results[1].success, Some(true));
    assert!(results[1].data.is_some());

    // What to keep: the assistant messages and tool results after the user message.
    let roles: Vec<etl_llm::Role> = outcome.messages.iter().map(|m| m.role).collect();
    use etl_llm::Role::{Assistant, Tool};
    assert_eq!(roles, [Assistant, Tool, Assistant, Tool, Tool, Assistant]);
    assert_eq!(outcome.messages[0].content, "Let me create the table.");
    assert_eq!(outcome.messages[0].tool_calls[0].id, "c1");
    assert_eq!(outcome.messages[2].tool_calls.len(), 2);
    assert_eq!(
        outcome.messages[5].content,
        "The warehouse now has the table orders."
    );
    assert_eq!(&third[4..], &outcome.messages[..5], "sent and kept agree");
    assert_eq!(outcome.response, body.response);
    assert_eq!(outcome.run_id, "run_fixed");

    // The collecting form gives the same body.
    let again = Scripted::new(vec![vec![
        Step::Say("Plain answer."),
        Step::Used(3, 2),
        Step::Finish(FinishReason::Stop),
    ]]);
    let chat = Agent::new(again, app.tools.clone())
        .chat(
            ask(user(), "hi", RunOptions::default()),
            CancellationToken::new(),
        )
        .await;
    let body = chat.result.unwrap();
    assert_eq!(body.response, "Plain answer.");
    assert_eq!(body.usage.total_tokens, 5);
    assert!(chat.run_id.starts_with("run_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_failing_tool_calls_are_fed_back_to_the_model() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![
        vec![
            Step::Call("u1", "drop_everything", json!({})),
            Step::Call("u2", "host_cli", json!({"command": 42})),
            Step::Call(
                "u3",
                "host_cli",
                json!({"command": "run flow nosuch --wait"}),
            ),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![
            Step::Say("Those did not work."),
            Step::Finish(FinishReason::Stop),
        ],
    ]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let (events, outcome) = streamed(
        &agent,
        ask(user(), "break things", RunOptions::default()),
        CancellationToken::new(),
    )
    .await;
    let body = outcome.result.expect("tool failures do not fail the run");
    assert_eq!(body.response, "Those did not work.");
    assert_eq!(tokens(&events), body.response);
    assert!(body.tool_calls.iter().all(|c| !c.success));
    assert_eq!(body.usage.tool_calls, 3);
    assert_eq!(body.usage.llm_calls, 2);

    let ends: Vec<(bool, String)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolEnd {
                success, result, ..
            } => Some((*success, result.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 3);
    assert!(
        ends[0]
            .1
            .starts_with("unknown tool 'drop_everything'; the tools are: search_knowledge_base"),
        "{}",
        ends[0].1
    );
    assert_eq!(
        ends[1].1,
        "argument 'command' must be a string, got a number"
    );
    assert!(ends[2].1.contains("nosuch"), "{}", ends[2].1);

    let sent = &model.requests()[1].messages;
    let results: Vec<&Message> = sent
        .iter()
        .filter(|m| m.role == etl_llm::Role::Tool)
        .collect();
    assert_eq!(results.len(), 3, "every call is answered");
    assert_eq!(results[0].data, Some(json!({"code": "tool_not_found"})));
    assert_eq!(results[1].data, Some(json!({"code": "invalid_arguments"})));
    assert_eq!(results[1].content, ends[1].1);
    assert_eq!(results[2].success, Some(false));
    assert!(results[2].content.contains("nosuch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_caller_gets_agentic_calls_refused_as_results() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![
        vec![
            Step::Call(
                "r1",
                "host_cli",
                json!({"command": "create connection api type=http url=https://api.example.com"}),
            ),
            Step::Call("r2", "host_list_commands", json!({})),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![
            Step::Say("This key is read-only, so I could not create it."),
            Step::Finish(FinishReason::Stop),
        ],
    ]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let reader = agent_caller("default", "viewer", Role::Readonly);
    let outcome = agent
        .chat(
            ask(reader, "connect to api.example.com", RunOptions::default()),
            CancellationToken::new(),
        )
        .await;
    let body = outcome.result.unwrap();
    assert!(!body.tool_calls[0].success, "the agentic call is refused");
    assert!(body.tool_calls[1].success, "a non-agentic call still runs");
    let refused = &outcome.messages[1];
    assert_eq!(refused.role, etl_llm::Role::Tool);
    assert_eq!(refused.data, Some(json!({"code": "forbidden"})));
    assert!(refused.content.contains("read-only"), "{}", refused.content);
    // Nothing was created.
    let listed = app
        .tools
        .call(&user(), "host_cli", &json!({"command": "list connections"}))
        .await
        .unwrap()
        .outcome;
    assert!(
        !listed.result.contains("api.example.com"),
        "{}",
        listed.result
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_limit_ends_with_what_was_done() {
    let (_dir, app) = app().await;
    let model = Scripted::repeating(vec![
        Step::Say("Checking."),
        Step::Call("loop", "host_list_commands", json!({})),
        Step::Used(10, 1),
        Step::Finish(FinishReason::ToolCalls),
    ]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let options = RunOptions {
        max_turns: Some(3),
        ..RunOptions::default()
    };
    let (events, outcome) = streamed(
        &agent,
        ask(user(), "loop forever", options),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(model.requests().len(), 3, "no model call beyond the limit");
    let body = outcome.result.unwrap();
    assert_eq!(body.finish, "turn_limit");
    assert_eq!(body.usage.llm_calls, 3);
    assert_eq!(body.usage.tool_calls, 3);
    assert_eq!(body.usage.total_tokens, 33);
    assert!(
        body.response
            .starts_with("Checking.\n\nChecking.\n\nChecking.\n\nI stopped after 3 model turns"),
        "{}",
        body.response
    );
    assert!(
        body.response.contains(
            "3 tool calls (3 succeeded): host_list_commands (succeeded), host_list_commands \
             (succeeded), host_list_commands (succeeded)"
        ),
        "{}",
        body.response
    );
    assert_eq!(tokens(&events), body.response);
    assert_eq!(events.last().unwrap().kind(), "done");
    let last = outcome.messages.last().unwrap();
    assert_eq!(last.role, etl_llm::Role::Assistant);
    assert!(last.content.starts_with("I stopped after 3 model turns"));
    assert!(last.tool_calls.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_mid_answer_keeps_what_was_said() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![
        vec![
            Step::Call("k1", "host_list_commands", json!({})),
            Step::Used(7, 3),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![Step::Say("Here is what I found so far"), Step::Hang],
    ]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let cancel = CancellationToken::new();
    let mut run = agent.stream(
        ask(user(), "take your time", RunOptions::default()),
        cancel.clone(),
    );
    let mut events = Vec::new();
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = run.events.recv().await {
            if matches!(e, AgentEvent::Token { .. }) {
                cancel.cancel();
            }
            events.push(e);
        }
        run.outcome.await.unwrap()
    })
    .await
    .expect("a canceled run ends promptly");
    let error = outcome.result.clone().unwrap_err();
    assert_eq!(error.code, "canceled");
    match events.last().unwrap() {
        AgentEvent::Error(e) => assert_eq!(e, &error),
        other => panic!("the last event must be error, got {other:?}"),
    }
    assert_eq!(
        serde_json::to_value(events.last().unwrap()).unwrap()["type"],
        "error"
    );
    assert_eq!(outcome.response, "Here is what I found so far");
    assert_eq!(tokens(&events), outcome.response);
    let roles: Vec<etl_llm::Role> = outcome.messages.iter().map(|m| m.role).collect();
    use etl_llm::Role::{Assistant, Tool};
    assert_eq!(roles, [Assistant, Tool, Assistant]);
    assert_eq!(outcome.messages[2].content, "Here is what I found so far");
    assert_eq!(outcome.usage.llm_calls, 2);
    assert_eq!(outcome.usage.total_tokens, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_cancels_the_run() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![vec![Step::Say("Starting"), Step::Hang]]);
    let agent = Agent::new(model, app.tools.clone());
    let mut run = agent.stream(
        ask(user(), "anything", RunOptions::default()),
        CancellationToken::new(),
    );
    assert_eq!(run.events.recv().await.unwrap().kind(), "start");
    assert_eq!(run.events.recv().await.unwrap().kind(), "token");
    // The model now waits for more to say; nobody is listening any more.
    drop(run.events);
    let outcome = tokio::time::timeout(Duration::from_secs(30), run.outcome)
        .await
        .expect("the run notices the reader left")
        .unwrap();
    assert_eq!(outcome.result.unwrap_err().code, "canceled");
    assert_eq!(outcome.messages.len(), 1, "what was said is kept");
    assert_eq!(outcome.messages[0].content, "Starting");
}

/// A test tool that cancels the run it is called from, so cancellation lands exactly between
/// two tool calls.
struct CancelRun(CancellationToken);

#[async_trait]
impl Tool for CancelRun {
    fn name(&self) -> &'static str {
        "cancel_run"
    }
    fn description(&self) -> &'static str {
        "Cancels the current run (test only)."
    }
    fn parameters(&self) -> Json {
        json!({"type": "object", "properties": {}})
    }
    fn agentic(&self) -> bool {
        false
    }
    async fn execute(&self, _env: &ToolEnv, _caller: &Caller, _args: &Json) -> ToolOutcome {
        self.0.cancel();
        ToolOutcome::ok("canceled the run", json!({}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_run_answers_every_call_it_did_not_make() {
    let (_dir, app) = app().await;
    let cancel = CancellationToken::new();
    let tools = ToolRegistry::new(
        ToolEnv {
            host: app.host.clone(),
            library: app.library.clone(),
        },
        vec![Arc::new(CancelRun(cancel.clone()))],
    );
    let model = Scripted::new(vec![vec![
        Step::Call("a", "cancel_run", json!({})),
        Step::Call("b", "host_list_commands", json!({})),
        Step::Finish(FinishReason::ToolCalls),
    ]]);
    let agent = Agent::new(model.clone(), tools);
    let (events, outcome) = streamed(
        &agent,
        ask(user(), "two calls", RunOptions::default()),
        cancel,
    )
    .await;
    assert_eq!(
        model.requests()[0].tools.len(),
        8,
        "extra tools are offered too"
    );
    assert_eq!(outcome.result.unwrap_err().code, "canceled");
    assert_eq!(
        kinds(&events),
        ["start", "usage", "tool_start", "tool_end", "error"],
        "the second call never starts"
    );
    let results: Vec<&Message> = outcome
        .messages
        .iter()
        .filter(|m| m.role == etl_llm::Role::Tool)
        .collect();
    assert_eq!(results.len(), 2, "both calls have a result in the history");
    assert_eq!(results[0].success, Some(true));
    assert_eq!(results[1].tool_call_id.as_deref(), Some("b"));
    assert_eq!(results[1].success, Some(false));
    assert_eq!(
        results[1].content,
        "the run was canceled before this tool call ran"
    );
    assert_eq!(outcome.usage.tool_calls, 1, "only the call that ran counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_ends_with_an_error_event() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![
        vec![
            Step::Say("First part."),
            Step::Call("f1", "host_list_commands", json!({})),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![
            Step::Say("Half"),
            Step::Fail(LlmError::Unavailable(
                "POST http://127.0.0.1:1/v1/chat/completions: connection refused".into(),
            )),
        ],
    ]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let options = RunOptions {
        include_tools: false,
        ..RunOptions::default()
    };
    let (events, outcome) =
        streamed(&agent, ask(user(), "hi", options), CancellationToken::new()).await;
    assert!(
        model.requests()[0].tools.is_empty(),
        "include_tools=false offers no tools"
    );
    let error = outcome.result.unwrap_err();
    assert_eq!(error.code, "llm_unavailable");
    assert_eq!(
        error.error,
        "the model 'scripted' could not answer: POST http://127.0.0.1:1/v1/chat/completions: \
         connection refused; check the LLM settings and that the provider is reachable, then \
         ask again"
    );
    assert_eq!(events.last().unwrap().kind(), "error");
    assert_eq!(outcome.response, "First part.\n\nHalf");
    assert_eq!(tokens(&events), outcome.response);
    let last = outcome.messages.last().unwrap();
    assert_eq!(last.content, "Half");
    assert!(last.tool_calls.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_continues_after_a_restart_with_its_tool_calls() {
    use etl_agent::sessions::{self, NewSession, SessionStore};
    let (dir, app) = app().await;
    let db = dir.path().join("sessions.db");
    let tenant = "default";
    let store = etl_store::SqliteStore::open(&db).await.unwrap();
    let session = sessions::create(
        &store,
        tenant,
        NewSession {
            title: Some("orders".into()),
            system_prompt: Some("Be brief.".into()),
            ..NewSession::default()
        },
        u64::MAX,
    )
    .await
    .unwrap();

    // First message: a tool round, then an answer; everything goes into the session.
    let model = Scripted::new(vec![
        vec![
            Step::Call(
                "t1",
                "host_cli",
                json!({"command": "query warehouse sql='create table kept (id integer)'"}),
            ),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![
            Step::Say("Created the table kept."),
            Step::Finish(FinishReason::Stop),
        ],
    ]);
    let agent = Agent::new(model, app.tools.clone());
    let said = "make a table called kept";
    sessions::append_now(&store, tenant, &session.id, vec![Message::user(said)])
        .await
        .unwrap()
        .unwrap();
    let options = RunOptions {
        system_prompt: session.system_prompt.clone(),
        include_tools: session.include_tools,
        session_id: Some(session.id.clone()),
        ..RunOptions::default()
    };
    let first = agent
        .chat(ask(user(), said, options.clone()), CancellationToken::new())
        .await;
    assert_eq!(
        first.result.as_ref().unwrap().session_id.as_deref(),
        Some(session.id.as_str())
    );
    sessions::append_now(&store, tenant, &session.id, first.messages.clone())
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    drop(store);

    // "Restart": reopen the store; the next message sees the whole earlier turn.
    let store = etl_store::SqliteStore::open(&db).await.unwrap();
    let stored = store
        .get_session(tenant, &session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.message_count, 4);
    let history = sessions::history(&store, tenant, &session.id)
        .await
        .unwrap();
    let model = Scripted::new(vec![vec![
        Step::Say("It is still there."),
        Step::Finish(FinishReason::Stop),
    ]]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let second = agent
        .chat(
            RunRequest {
                history,
                ..ask(user(), "is it still there?", options)
            },
            CancellationToken::new(),
        )
        .await;
    assert_eq!(second.result.unwrap().response, "It is still there.");
    let sent = &model.requests()[0].messages;
    assert_eq!(sent[0], Message::system("Be brief."));
    assert_eq!(sent[1], Message::user(said));
    assert_eq!(
        sent[2].tool_calls[0].id, "t1",
        "the earlier tool call is seen"
    );
    assert_eq!(sent[3].tool_call_id.as_deref(), Some("t1"));
    assert_eq!(sent[3].success, Some(true));
    assert_eq!(sent[3], first.messages[1], "its result comes back exactly");
    assert_eq!(sent[4].content, "Created the table kept.");
    assert_eq!(sent[5], Message::user("is it still there?"));
    // Another tenant cannot continue it.
    assert!(
        sessions::append_now(&store, "other", &session.id, vec![Message::user("hi")])
            .await
            .unwrap()
            .is_none()
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_or_refused_answer_says_why_it_ended() {
    let (_dir, app) = app().await;
    for (reason, finish) in [
        (FinishReason::Length, "length"),
        (FinishReason::Refused, "refused"),
    ] {
        let model = Scripted::new(vec![vec![Step::Say("Partial"), Step::Finish(reason)]]);
        let outcome = Agent::new(model, app.tools.clone())
            .chat(
                ask(user(), "go", RunOptions::default()),
                CancellationToken::new(),
            )
            .await;
        let body = outcome.result.unwrap();
        assert_eq!(body.finish, finish);
        assert_eq!(body.response, "Partial");
        assert_eq!(outcome.messages.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_reports_no_usage_is_counted_with_the_tokenizer() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![vec![
        Step::Say("Counted by us."),
        Step::Finish(FinishReason::Stop),
    ]]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let outcome = agent
        .chat(
            ask(user(), "how many tokens?", RunOptions::default()),
            CancellationToken::new(),
        )
        .await;
    let body = outcome.result.unwrap();
    let sent = &model.requests()[0];
    assert_eq!(
        body.usage.input_tokens,
        etl_llm::tokens::request(&sent.messages, &sent.tools),
        "the whole request, tools included"
    );
    assert_eq!(
        body.usage.output_tokens,
        etl_llm::tokens::count("Counted by us.")
    );
    assert_eq!(
        body.usage.total_tokens,
        body.usage.input_tokens + body.usage.output_tokens
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_allowance_stops_the_run_before_the_next_model_call() {
    let (_dir, app) = app().await;
    let model = Scripted::repeating(vec![
        Step::Call("loop", "host_list_commands", json!({})),
        Step::Used(400, 100),
        Step::Finish(FinishReason::ToolCalls),
    ]);
    let agent = Agent::new(model.clone(), app.tools.clone());
    let options = RunOptions {
        allowance: etl_agent::usage::Allowance {
            tokens: Some(1_200),
            cost_micros: None,
        },
        ..RunOptions::default()
    };
    let outcome = agent
        .chat(
            ask(user(), "loop forever", options),
            CancellationToken::new(),
        )
        .await;
    let error = outcome.result.unwrap_err();
    assert_eq!(error.code, "cap_exceeded");
    assert_eq!(error.error, "AI usage cap exceeded");
    assert!(
        error
            .detail
            .as_deref()
            .unwrap()
            .contains("after 3 model calls and 1500 tokens"),
        "{error:?}"
    );
    assert_eq!(
        model.requests().len(),
        3,
        "500 tokens a call: the 4th is never made"
    );
    assert_eq!(
        outcome.usage.tool_calls, 3,
        "every call made got its result"
    );
    let results = outcome
        .messages
        .iter()
        .filter(|m| m.role == etl_llm::Role::Tool)
        .count();
    assert_eq!(results, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_tool_results_are_cut_for_the_model_and_say_so() {
    let (_dir, app) = app().await;
    let model = Scripted::new(vec![
        vec![
            Step::Call("big", "host_list_commands", json!({})),
            Step::Finish(FinishReason::ToolCalls),
        ],
        vec![Step::Say("Done."), Step::Finish(FinishReason::Stop)],
    ]);
    let agent = Agent::with_config(
        model.clone(),
        app.tools.clone(),
        etl_agent::run::AgentConfig {
            tool_result_chars: 600,
            system_prompt: Some(etl_agent::prompt::DEFAULT_SYSTEM_PROMPT.into()),
            ..Default::default()
        },
    );
    let outcome = agent
        .chat(
            ask(
                user(),
                "what commands are there?",
                RunOptions {
                    system_prompt: Some("Be brief.".into()),
                    ..RunOptions::default()
                },
            ),
            CancellationToken::new(),
        )
        .await;
    assert!(outcome.result.is_ok());
    let sent = &model.requests()[1].messages;
    assert!(
        sent[0]
            .content
            .starts_with("You are the data-integration assistant")
    );
    assert!(
        sent[0]
            .content
            .ends_with("# Instructions from the application\n\nBe brief.")
    );
    let result = sent.iter().find(|m| m.role == etl_llm::Role::Tool).unwrap();
    assert!(
        result.content.chars().count() < 800,
        "{}",
        result.content.len()
    );
    assert!(
        result.content.contains("[cut: this result is ") && result.content.contains("Ask for less"),
        "{}",
        result.content
    );
    assert_eq!(
        outcome.messages[1].content, result.content,
        "the session keeps what the model saw"
    );
}
