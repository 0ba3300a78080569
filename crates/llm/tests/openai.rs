//! The OpenAI-compatible provider against a local server speaking Chat Completions as OpenAI
//! documents it (streamed `chat.completion.chunk`s, `data: [DONE]`, error bodies), asserting on
//! what the provider sends as much as on what it answers.

mod common;

use std::time::{Duration, Instant};

use common::{Mock, Part, Reply, closed_port, collect, quick_http, text, tools};
use etl_llm::{
    ApiKey, Event, FinishReason, LlmError, Message, Model, OpenAi, OpenAiConfig, Request, ToolCall,
    Usage,
};
use futures::StreamExt;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-test-0123456789abcdef";

fn provider(mock: &Mock) -> OpenAi {
    provider_with(mock, |_| {})
}

fn provider_with(mock: &Mock, adjust: impl FnOnce(&mut OpenAiConfig)) -> OpenAi {
    let mut config = OpenAiConfig::new("gpt-test");
    config.base_url = format!("{}/v1", mock.url);
    config.api_key = Some(ApiKey::new(KEY));
    config.http = quick_http();
    adjust(&mut config);
    OpenAi::new(config).unwrap()
}

/// One streamed chunk with a delta for choice 0.
fn chunk(delta: Json, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {body}\n\n")
}

/// The usage chunk `stream_options.include_usage` asks for: no choices.
fn usage(prompt: u64, completion: u64) -> String {
    let body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    });
    format!("data: {body}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

fn text_answer(words: &[&str]) -> Vec<String> {
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for w in words {
        events.push(chunk(json!({"content": w}), None));
    }
    events.push(chunk(json!({}), Some("stop")));
    events.push(usage(10, words.len() as u64));
    events.push(DONE.to_string());
    events
}

fn ask(messages: Vec<Message>) -> Request {
    Request {
        messages,
        tools: tools(),
        max_tokens: Some(500),
        temperature: Some(0.2),
        model: None,
    }
}

async fn run(model: &OpenAi, request: Request) -> (Vec<Event>, Option<LlmError>) {
    match model.stream(request, CancellationToken::new()).await {
        Ok(stream) => collect(stream).await,
        Err(e) => (Vec::new(), Some(e)),
    }
}

#[tokio::test]
async fn a_two_step_tool_conversation_sends_and_reads_the_exact_wire_format() {
    let first = vec![
        chunk(json!({"role": "assistant", "content": null}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function", "function": {"name": "host_cli", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"comm"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "and\": \"list flows\"}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        usage(120, 18),
        DONE.to_string(),
    ];
    let mock = Mock::start(vec![
        Reply::sse(&first),
        Reply::sse(&text_answer(&["You have ", "no flows."])),
    ])
    .await;
    let model = provider(&mock);
    let mut conversation = vec![
        Message::system("You are the agent."),
        Message::user("what flows do I have?"),
    ];

    let (events, error) = run(&model, ask(conversation.clone())).await;
    assert_eq!(error, None);
    let call = ToolCall {
        id: "call_abc".into(),
        name: "host_cli".into(),
        arguments: json!({"command": "list flows"}),
    };
    assert_eq!(
        events,
        vec![
            Event::ToolCall(call.clone()),
            Event::Usage(Usage {
                input_tokens: 120,
                output_tokens: 18
            }),
            Event::Finish(FinishReason::ToolCalls),
        ]
    );

    conversation.push(Message::assistant("", vec![call.clone()]));
    conversation.push(Message::tool_result(
        &call,
        true,
        "no flows",
        json!({"flows": []}),
    ));
    let (events, error) = run(&model, ask(conversation)).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "You have no flows.");
    assert_eq!(
        &events[events.len() - 2..],
        &[
            Event::Usage(Usage {
                input_tokens: 10,
                output_tokens: 2
            }),
            Event::Finish(FinishReason::Stop)
        ]
    );

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.query, None);
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("accept"), Some("text/event-stream"));
        assert!(
            request
                .header("user-agent")
                .unwrap()
                .starts_with("etlworks-agent/")
        );
    }
    let tools_json = json!([
        {"type": "function", "function": {"name": "host_cli", "description": "Runs host-language statements.",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}},
        {"type": "function", "function": {"name": "search_kb", "description": "Searches the knowledge base.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}},
    ]);
    assert_eq!(
        seen[0].body,
        json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "You are the agent."},
                {"role": "user", "content": "what flows do I have?"},
            ],
            "tools": tools_json,
            "max_tokens": 500,
            "temperature": 0.2,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
    assert_eq!(
        seen[1].body["messages"],
        json!([
            {"role": "system", "content": "You are the agent."},
            {"role": "user", "content": "what flows do I have?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "host_cli", "arguments": "{\"command\":\"list flows\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "no flows"},
        ])
    );
}

#[tokio::test]
async fn parallel_tool_calls_are_assembled_by_index_even_when_interleaved() {
    let events = vec![
        chunk(
            json!({"role": "assistant", "content": "Checking both."}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "host_cli", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "search_kb", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "{\"query\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [
                {"index": 0, "function": {"arguments": "\"list connections\"}"}},
                {"index": 1, "function": {"arguments": "\"schedules\"}"}},
            ]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
        DONE.to_string(),
    ];
    let mock = Mock::start(vec![Reply::sse(&events)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("both")])).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Text("Checking both.".into()),
            Event::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "host_cli".into(),
                arguments: json!({"command": "list connections"}),
            }),
            Event::ToolCall(ToolCall {
                id: "call_2".into(),
                name: "search_kb".into(),
                arguments: json!({"query": "schedules"}),
            }),
            Event::Finish(FinishReason::ToolCalls),
        ]
    );
}

#[tokio::test]
async fn an_argument_split_over_many_chunks_and_network_reads_is_put_back_together() {
    let arguments =
        r#"{"command": "create connection inbox type=file directory='/tmp/in box' — ✓"}"#;
    let mut events = vec![chunk(
        json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_z", "type": "function", "function": {"name": "host_cli", "arguments": ""}}]}),
        None,
    )];
    for c in arguments.chars() {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": c.to_string()}}]}),
            None,
        ));
    }
    events.push(chunk(json!({}), Some("tool_calls")));
    events.push(usage(50, 40));
    events.push(DONE.to_string());
    // CRLF line ends too, and every network read cut at 7 bytes.
    let crlf: Vec<String> = events.iter().map(|e| e.replace('\n', "\r\n")).collect();
    let mock = Mock::start(vec![Reply::sse_in_pieces(&crlf, 7)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("go")])).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::ToolCall(ToolCall {
                id: "call_z".into(),
                name: "host_cli".into(),
                arguments: serde_json::from_str(arguments).unwrap(),
            }),
            Event::Usage(Usage {
                input_tokens: 50,
                output_tokens: 40
            }),
            Event::Finish(FinishReason::ToolCalls),
        ]
    );
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after_it_names_with_the_same_request() {
    let limited = Reply::json(
        429,
        json!({"error": {"message": "Rate limit reached for gpt-test", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
    )
    .header("retry-after", "1");
    let mock = Mock::start(vec![limited, Reply::sse(&text_answer(&["Hello"]))]).await;
    let started = Instant::now();
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    let waited = started.elapsed();
    assert_eq!(error, None);
    assert_eq!(text(&events), "Hello");
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body);
}

#[tokio::test]
async fn a_retry_after_longer_than_max_delay_ends_at_once_with_the_providers_message() {
    let limited = Reply::json(
        429,
        json!({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota", "code": "insufficient_quota"}}),
    )
    .header("retry-after", "120")
    .header("x-request-id", "req_42");
    let mock = Mock::start(vec![limited]).await;
    let started = Instant::now();
    let (_, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    // Not the 120 s the provider asked for (room for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(20));
    let LlmError::Unavailable(why) = error.unwrap() else {
        panic!("not unavailable")
    };
    assert_eq!(
        why,
        format!(
            "the OpenAI-compatible provider at {}/v1 is rate limiting requests (429 Too Many \
             Requests: You exceeded your current quota (type insufficient_quota, code \
             insufficient_quota)) [request id req_42] (it asked to retry after 120 s, longer \
             than the 5 s max_delay, so the request was not retried)",
            mock.url
        )
    );
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let failing = || {
        Reply::json(
            500,
            json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}),
        )
    };
    let mock = Mock::start(vec![failing(), failing(), failing(), failing()]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert!(events.is_empty());
    let why = error.unwrap().to_string();
    assert!(
        why.ends_with(
            "answered 500 Internal Server Error: The server had an error while processing your \
             request. (type server_error) (gave up after 3 attempts)"
        ),
        "{why}"
    );
    assert_eq!(mock.seen().len(), 3, "max_attempts is 3");
}

#[tokio::test]
async fn a_400_is_a_bad_request_and_is_not_retried() {
    let mock = Mock::start(vec![Reply::json(
        400,
        json!({"error": {"message": "Invalid value for 'temperature': must be <= 2.", "type": "invalid_request_error", "param": "temperature", "code": null}}),
    )])
    .await;
    let (_, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(
        error,
        Some(LlmError::BadRequest(format!(
            "the OpenAI-compatible provider at {}/v1 rejected the request (400 Bad Request: \
             Invalid value for 'temperature': must be <= 2. (type invalid_request_error))",
            mock.url
        )))
    );
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn an_error_mid_stream_after_output_is_surfaced_and_not_retried() {
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Half an ans"}), None),
    ];
    events.push(format!(
        "data: {}\n\n",
        json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}})
    ));
    let mock = Mock::start(vec![
        Reply::sse(&events),
        Reply::sse(&text_answer(&["never asked for"])),
    ])
    .await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(events, vec![Event::Text("Half an ans".into())]);
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "the OpenAI-compatible provider at {}/v1 reported an error in its answer: The server \
             had an error while processing your request. (type server_error)",
            mock.url
        )
    );
    assert_eq!(mock.seen().len(), 1, "no retry after output");
}

#[tokio::test]
async fn a_connection_lost_after_output_is_an_error_but_before_output_is_retried() {
    // (The pause lets the server flush what it sent before it drops the connection.)
    let broken_after_text = Reply::sse(&[chunk(json!({"content": "Hel"}), None)])
        .then(Part::Wait(Duration::from_millis(100)))
        .then(Part::Abort);
    let mock = Mock::start(vec![broken_after_text]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(events, vec![Event::Text("Hel".into())]);
    let why = error.unwrap().to_string();
    assert!(why.contains("broke off its answer"), "{why}");
    assert_eq!(mock.seen().len(), 1);

    // Broken before any event (a role-only chunk yields nothing): sent again, and answered.
    let broken_early = Reply::sse(&[chunk(json!({"role": "assistant", "content": ""}), None)])
        .then(Part::Wait(Duration::from_millis(100)))
        .then(Part::Abort);
    let mock = Mock::start(vec![broken_early, Reply::sse(&text_answer(&["Hello"]))]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "Hello");
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn a_stalled_stream_ends_in_an_error_after_the_idle_timeout() {
    let stalled = Reply::sse(&[chunk(json!({"content": "Thinking"}), None)]).then(Part::Stall);
    let mock = Mock::start(vec![stalled]).await;
    let model = provider_with(&mock, |c| c.http.idle_timeout = Duration::from_millis(300));
    let started = Instant::now();
    let (events, error) = run(&model, ask(vec![Message::user("hi")])).await;
    // Far below the 120 s default idle timeout, with room for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(events, vec![Event::Text("Thinking".into())]);
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "the OpenAI-compatible provider at {}/v1 sent nothing for 0.3 s (idle_timeout); the \
             stalled answer was abandoned",
            mock.url
        )
    );
    assert_eq!(mock.seen().len(), 1);

    // Headers that never come are an error too.
    let mock = Mock::start(vec![
        Reply::sse(&text_answer(&["late"])).delayed(Duration::from_secs(10)),
    ])
    .await;
    let model = provider_with(&mock, |c| c.http.idle_timeout = Duration::from_millis(300));
    let (_, error) = run(&model, ask(vec![Message::user("hi")])).await;
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "the OpenAI-compatible provider at {0}/v1 did not answer {0}/v1/chat/completions \
             within 0.3 s (idle_timeout)",
            mock.url
        )
    );
}

#[tokio::test]
async fn keep_alive_comments_keep_a_slow_stream_open() {
    let mut reply = Reply::sse(&[chunk(json!({"content": "slow "}), None)]);
    for _ in 0..6 {
        reply = reply
            .then(Part::Wait(Duration::from_millis(100)))
            .then(Part::Send(": keep-alive\n\n".into()));
    }
    for e in text_answer(&["but sure"]) {
        reply = reply.then(Part::Send(e));
    }
    let mock = Mock::start(vec![reply]).await;
    let model = provider_with(&mock, |c| c.http.idle_timeout = Duration::from_millis(600));
    let (events, error) = run(&model, ask(vec![Message::user("hi")])).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "slow but sure");
}

#[tokio::test]
async fn malformed_json_in_a_chunk_names_the_provider_and_shows_the_chunk() {
    let events = vec![
        chunk(json!({"content": "Hi"}), None),
        "data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"oops}\n\n".to_string(),
    ];
    let mock = Mock::start(vec![Reply::sse(&events)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(events, vec![Event::Text("Hi".into())]);
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "the OpenAI-compatible provider at {}/v1 sent a chunk that is not valid JSON \
             (EOF while parsing a string at line 1 column 53): {{\"choices\": [{{\"index\": 0, \
             \"delta\": {{\"content\": \"oops}}",
            mock.url
        )
    );
}

#[tokio::test]
async fn a_refusal_is_streamed_as_text_and_finishes_refused() {
    let events = vec![
        chunk(
            json!({"role": "assistant", "content": null, "refusal": ""}),
            None,
        ),
        chunk(json!({"refusal": "I'm sorry, "}), None),
        chunk(json!({"refusal": "I can't help with that."}), None),
        chunk(json!({}), Some("stop")),
        usage(30, 9),
        DONE.to_string(),
    ];
    let mock = Mock::start(vec![Reply::sse(&events)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("bad")])).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "I'm sorry, I can't help with that.");
    assert_eq!(events.last(), Some(&Event::Finish(FinishReason::Refused)));
}

#[tokio::test]
async fn cancelling_or_dropping_the_stream_closes_the_providers_connection() {
    let endless = || {
        Reply::sse(&[chunk(json!({"content": "Once"}), None)])
            .then(Part::KeepAlive(Duration::from_millis(50)))
    };
    let mock = Mock::start(vec![endless(), endless()]).await;
    let model = provider(&mock);

    let cancel = CancellationToken::new();
    let mut stream = model
        .stream(ask(vec![Message::user("hi")]), cancel.clone())
        .await
        .unwrap();
    assert_eq!(stream.next().await, Some(Ok(Event::Text("Once".into()))));
    let waiting = tokio::spawn(async move {
        let next = stream.next().await;
        (next, stream.next().await)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(mock.closed(), 0, "the answer is still streaming");
    cancel.cancel();
    let (next, after) = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("cancel ends the stream at once")
        .unwrap();
    assert_eq!(next, Some(Err(LlmError::Canceled)));
    assert_eq!(after, None);
    assert!(
        mock.wait_closed(1, Duration::from_secs(3)).await,
        "the server saw the connection go"
    );

    let mut stream = model
        .stream(ask(vec![Message::user("hi")]), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(stream.next().await, Some(Ok(Event::Text("Once".into()))));
    drop(stream);
    assert!(
        mock.wait_closed(2, Duration::from_secs(3)).await,
        "dropping the stream closed the connection"
    );
}

#[tokio::test]
async fn a_cancel_during_a_retry_wait_stops_at_once() {
    let limited =
        Reply::json(429, json!({"error": {"message": "slow down"}})).header("retry-after", "4");
    let mock = Mock::start(vec![limited]).await;
    let model = provider(&mock);
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        canceller.cancel();
    });
    let started = Instant::now();
    let result = model.stream(ask(vec![Message::user("hi")]), cancel).await;
    assert!(matches!(result, Err(LlmError::Canceled)));
    assert!(started.elapsed() < Duration::from_secs(20), "not a hang");
}

#[tokio::test]
async fn a_server_that_ignores_stream_options_gives_no_usage_and_the_option_can_be_left_out() {
    let events = vec![
        chunk(json!({"role": "assistant", "content": "Hi"}), None),
        chunk(json!({}), Some("stop")),
        DONE.to_string(),
    ];
    let mock = Mock::start(vec![Reply::sse(&events), Reply::sse(&events)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![Event::Text("Hi".into()), Event::Finish(FinishReason::Stop)]
    );

    let model = provider_with(&mock, |c| {
        c.include_usage = false;
        c.max_completion_tokens = true;
        c.api_key = None;
    });
    let request = Request {
        temperature: None,
        tools: Vec::new(),
        model: Some("llama3.1:8b".into()),
        ..ask(vec![Message::user("hi")])
    };
    let (_, error) = run(&model, request).await;
    assert_eq!(error, None);
    let seen = mock.seen();
    assert_eq!(
        seen[1].body,
        json!({
            "model": "llama3.1:8b",
            "messages": [{"role": "user", "content": "hi"}],
            "max_completion_tokens": 500,
            "stream": true,
        })
    );
    assert_eq!(seen[1].header("authorization"), None);
}

#[tokio::test]
async fn a_server_that_answers_one_json_document_is_read_too() {
    let answer = json!({
        "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me check.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "host_cli", "arguments": "{\"command\":\"list flows\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "search_kb", "arguments": ""}},
            ]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    });
    let mock = Mock::start(vec![Reply::json(200, answer)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Text("Let me check.".into()),
            Event::ToolCall(ToolCall {
                id: "call_a".into(),
                name: "host_cli".into(),
                arguments: json!({"command": "list flows"})
            }),
            Event::ToolCall(ToolCall {
                id: "call_b".into(),
                name: "search_kb".into(),
                arguments: json!({})
            }),
            Event::Usage(Usage {
                input_tokens: 12,
                output_tokens: 7
            }),
            Event::Finish(FinishReason::ToolCalls),
        ]
    );
}

#[tokio::test]
async fn azure_gets_its_deployment_path_api_version_and_api_key_header() {
    let mock = Mock::start(vec![
        Reply::sse(&text_answer(&["Hi"])),
        Reply::sse(&text_answer(&["O"])),
    ])
    .await;
    let model = provider_with(&mock, |c| {
        c.base_url = format!("{}/openai/deployments/gpt4o-prod/", mock.url);
        c.azure_api_version = Some("2024-10-21".into());
        c.http.headers = vec![("X-Trace".into(), "t-1".into())];
    });
    let (events, error) = run(&model, ask(vec![Message::user("hi")])).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "Hi");
    let check = model.check().await.unwrap();
    assert_eq!(
        check,
        format!(
            "Azure OpenAI at {}/openai/deployments/gpt4o-prod answered a one-token request",
            mock.url
        )
    );
    let seen = mock.seen();
    for request in &seen {
        assert_eq!(
            request.path,
            "/openai/deployments/gpt4o-prod/chat/completions"
        );
        assert_eq!(request.query.as_deref(), Some("api-version=2024-10-21"));
        assert_eq!(request.header("api-key"), Some(KEY));
        assert_eq!(request.header("authorization"), None);
        assert_eq!(request.header("x-trace"), Some("t-1"));
    }
    assert_eq!(seen[1].body["max_tokens"], json!(1));
}

#[tokio::test]
async fn check_lists_models_and_says_exactly_what_is_wrong() {
    let listed = json!({"object": "list", "data": [
        {"id": "gpt-test", "object": "model", "created": 1, "owned_by": "system"},
        {"id": "gpt-other", "object": "model", "created": 1, "owned_by": "system"},
    ]});
    let refused = Reply::json(
        401,
        json!({"error": {"message": format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    );
    let mock = Mock::start(vec![
        Reply::json(200, listed.clone()),
        Reply::json(200, listed),
        refused,
    ])
    .await;
    assert_eq!(
        provider(&mock).check().await.unwrap(),
        format!(
            "the OpenAI-compatible provider at {}/v1 is reachable and serves the model 'gpt-test'",
            mock.url
        )
    );
    let other = provider_with(&mock, |c| c.model = "llama3".into());
    assert_eq!(
        other.check().await.unwrap(),
        format!(
            "the OpenAI-compatible provider at {}/v1 is reachable but does not list the model \
             'llama3' (it lists gpt-test, gpt-other); requests will fail unless it serves that \
             name anyway",
            mock.url
        )
    );
    let error = provider(&mock).check().await.unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "the OpenAI-compatible provider at {}/v1 refused the API key (401 Unauthorized: \
             Incorrect API key provided: ***. You can find your API key at \
             https://platform.openai.com/account/api-keys. (type invalid_request_error, code \
             invalid_api_key)); check the key",
            mock.url
        )
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "a 401 is not retried");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/v1/models")
    );
    assert_eq!(seen[0].body, Json::Null);

    let port = closed_port().await;
    let unreachable = OpenAi::new(OpenAiConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        http: common::quick_http(),
        ..OpenAiConfig::new("gpt-test")
    })
    .unwrap();
    let error = unreachable.check().await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "cannot connect to http://127.0.0.1:{port}/v1/models: Connection refused"
        )) && error.ends_with("(gave up after 3 attempts)"),
        "{error}"
    );
}

#[tokio::test]
async fn settings_are_checked_and_the_key_never_shows() {
    let bad = OpenAi::new(OpenAiConfig {
        base_url: "localhost:11434/v1".into(),
        ..OpenAiConfig::new("llama3")
    })
    .unwrap_err();
    assert_eq!(
        bad.to_string(),
        "the base URL 'localhost:11434/v1' is not an http(s) URL; use e.g. https://api.openai.com/v1"
    );
    let no_model = OpenAi::new(OpenAiConfig::new(" ")).unwrap_err();
    assert!(
        no_model.to_string().contains("no model is set"),
        "{no_model}"
    );
    let bad_header = OpenAi::new(OpenAiConfig {
        http: etl_llm::HttpOptions {
            headers: vec![("X Title".into(), "x".into())],
            ..Default::default()
        },
        ..OpenAiConfig::new("m")
    })
    .unwrap_err();
    assert!(
        bad_header
            .to_string()
            .contains("'X Title' is not a valid HTTP header name")
    );

    let config = OpenAiConfig {
        api_key: Some(ApiKey::new(KEY)),
        ..OpenAiConfig::new("gpt-test")
    };
    let shown = format!("{config:?} {:?}", OpenAi::new(config.clone()).unwrap());
    assert!(
        !shown.contains(KEY) && shown.contains("ApiKey(***)"),
        "{shown}"
    );
}
