//! The Anthropic provider against a local server speaking the Messages API as Anthropic
//! documents it (`message_start` … `message_stop` events, `input_json_delta`, `ping`, `error`
//! events, error bodies), asserting on what the provider sends as much as on what it answers.

mod common;

use std::time::{Duration, Instant};

use common::{Mock, Part, Reply, closed_port, collect, quick_http, text, tools};
use etl_llm::{
    Anthropic, AnthropicConfig, ApiKey, Event, FinishReason, LlmError, Message, Model, Request,
    ToolCall, Usage,
};
use futures::StreamExt;
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-ant-test-0123456789";

fn provider(mock: &Mock) -> Anthropic {
    provider_with(mock, |_| {})
}

fn provider_with(mock: &Mock, adjust: impl FnOnce(&mut AnthropicConfig)) -> Anthropic {
    let mut config = AnthropicConfig::new("claude-test", Some(ApiKey::new(KEY)));
    config.base_url = mock.url.clone();
    config.http = quick_http();
    adjust(&mut config);
    Anthropic::new(config).unwrap()
}

fn ev(kind: &str, data: Json) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn message_start(input_tokens: u64) -> String {
    ev(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-test", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
    )
}

fn text_block(index: u64, parts: &[&str]) -> Vec<String> {
    let mut events = vec![ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
    )];
    for p in parts {
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    events.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    events
}

fn tool_block(index: u64, id: &str, name: &str, fragments: &[&str]) -> Vec<String> {
    let mut events = vec![ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
    )];
    for f in fragments {
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": f}}),
        ));
    }
    events.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": index}),
    ));
    events
}

fn message_end(stop_reason: &str, output_tokens: u64) -> Vec<String> {
    vec![
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

fn text_answer(parts: &[&str]) -> Vec<String> {
    let mut events = vec![message_start(10), ev("ping", json!({"type": "ping"}))];
    events.extend(text_block(0, parts));
    events.extend(message_end("end_turn", parts.len() as u64));
    events
}

fn ask(messages: Vec<Message>) -> Request {
    Request {
        messages,
        tools: tools(),
        max_tokens: None,
        temperature: Some(0.7),
        model: None,
    }
}

async fn run(model: &Anthropic, request: Request) -> (Vec<Event>, Option<LlmError>) {
    match model.stream(request, CancellationToken::new()).await {
        Ok(stream) => collect(stream).await,
        Err(e) => (Vec::new(), Some(e)),
    }
}

#[tokio::test]
async fn a_two_step_conversation_with_parallel_tool_calls_sends_and_reads_the_exact_wire_format() {
    let mut first = vec![message_start(472)];
    first.extend(text_block(0, &["I'll check ", "both."]));
    first.extend(tool_block(
        1,
        "toolu_01A",
        "host_cli",
        &["", "{\"command\": ", "\"list flows\"}"],
    ));
    first.extend(tool_block(
        2,
        "toolu_01B",
        "search_kb",
        &["{\"query\":", " \"schedules\"}"],
    ));
    first.extend(message_end("tool_use", 89));
    let mock = Mock::start(vec![
        Reply::sse(&first),
        Reply::sse(&text_answer(&["No flows; ", "schedules run flows."])),
    ])
    .await;
    let model = provider(&mock);
    let mut conversation = vec![
        Message::system("You are the agent."),
        Message::user("what flows do I have, and what is a schedule?"),
    ];

    let (events, error) = run(&model, ask(conversation.clone())).await;
    assert_eq!(error, None);
    let a = ToolCall {
        id: "toolu_01A".into(),
        name: "host_cli".into(),
        arguments: json!({"command": "list flows"}),
    };
    let b = ToolCall {
        id: "toolu_01B".into(),
        name: "search_kb".into(),
        arguments: json!({"query": "schedules"}),
    };
    assert_eq!(
        events,
        vec![
            Event::Text("I'll check ".into()),
            Event::Text("both.".into()),
            Event::ToolCall(a.clone()),
            Event::ToolCall(b.clone()),
            Event::Usage(Usage {
                input_tokens: 472,
                output_tokens: 89
            }),
            Event::Finish(FinishReason::ToolCalls),
        ]
    );

    conversation.push(Message::assistant(
        "I'll check both.",
        vec![a.clone(), b.clone()],
    ));
    conversation.push(Message::tool_result(&a, true, "no flows", json!({})));
    conversation.push(Message::tool_result(
        &b,
        false,
        "the knowledge base is not built",
        json!({}),
    ));
    let (events, error) = run(&model, ask(conversation)).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "No flows; schedules run flows.");
    assert_eq!(events.last(), Some(&Event::Finish(FinishReason::Stop)));

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/messages");
        assert_eq!(request.header("x-api-key"), Some(KEY));
        assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("accept"), Some("text/event-stream"));
        assert_eq!(request.header("authorization"), None);
    }
    let tools_json = json!([
        {"name": "host_cli", "description": "Runs host-language statements.",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
        {"name": "search_kb", "description": "Searches the knowledge base.",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
    ]);
    assert_eq!(
        seen[0].body,
        json!({
            "model": "claude-test",
            "max_tokens": 4096,
            "system": "You are the agent.",
            "messages": [{"role": "user", "content": "what flows do I have, and what is a schedule?"}],
            "tools": tools_json,
            "temperature": 0.7,
            "stream": true,
        })
    );
    assert_eq!(
        seen[1].body["messages"],
        json!([
            {"role": "user", "content": "what flows do I have, and what is a schedule?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "I'll check both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "host_cli", "input": {"command": "list flows"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "search_kb", "input": {"query": "schedules"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "no flows", "is_error": false},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "content": "the knowledge base is not built", "is_error": true},
            ]},
        ])
    );
}

#[tokio::test]
async fn tool_input_split_over_many_deltas_and_network_reads_is_put_back_together() {
    let input =
        r#"{"command": "create flow orders source=inbox object='*.csv' — ✓", "dry_run": false}"#;
    let fragments: Vec<String> = input.chars().map(|c| c.to_string()).collect();
    let fragments: Vec<&str> = fragments.iter().map(String::as_str).collect();
    let mut events = vec![message_start(30)];
    events.extend(tool_block(0, "toolu_X", "host_cli", &fragments));
    // A tool call with no input at all: `{}`.
    events.extend(tool_block(1, "toolu_Y", "search_kb", &[]));
    events.extend(message_end("tool_use", 61));
    let crlf: Vec<String> = events.iter().map(|e| e.replace('\n', "\r\n")).collect();
    let mock = Mock::start(vec![Reply::sse_in_pieces(&crlf, 5)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("go")])).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::ToolCall(ToolCall {
                id: "toolu_X".into(),
                name: "host_cli".into(),
                arguments: serde_json::from_str(input).unwrap(),
            }),
            Event::ToolCall(ToolCall {
                id: "toolu_Y".into(),
                name: "search_kb".into(),
                arguments: json!({}),
            }),
            Event::Usage(Usage {
                input_tokens: 30,
                output_tokens: 61
            }),
            Event::Finish(FinishReason::ToolCalls),
        ]
    );
}

#[tokio::test]
async fn a_429_and_an_overloaded_529_are_retried_honouring_retry_after() {
    let limited = Reply::json(
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}),
    )
    .header("retry-after", "1");
    let overloaded = Reply::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    let mock = Mock::start(vec![
        limited,
        overloaded,
        Reply::sse(&text_answer(&["Hello"])),
    ])
    .await;
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
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.body == seen[0].body));
}

#[tokio::test]
async fn an_overloaded_error_event_before_any_output_is_retried() {
    let overloaded = Reply::sse(&[
        message_start(10),
        ev(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
    ]);
    let mock = Mock::start(vec![overloaded, Reply::sse(&text_answer(&["Fine"]))]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "Fine");
    assert_eq!(
        events.last(),
        Some(&Event::Finish(FinishReason::Stop)),
        "{events:?}"
    );
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn an_error_event_after_output_is_surfaced_and_not_retried() {
    let mut events = vec![message_start(10)];
    events.push(ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    events.push(ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Half"}}),
    ));
    events.push(ev(
        "error",
        json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
    ));
    let mock = Mock::start(vec![Reply::sse(&events), Reply::sse(&text_answer(&["no"]))]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(events, vec![Event::Text("Half".into())]);
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "Anthropic at {} reported an error in its answer: Internal server error (type \
             api_error)",
            mock.url
        )
    );
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(mock.unanswered(), 1);
}

#[tokio::test]
async fn a_connection_lost_mid_answer_is_an_error() {
    let mut events = vec![message_start(10)];
    events.extend(text_block(0, &["Partial"]));
    let broken = Reply::sse(&events)
        .then(Part::Wait(Duration::from_millis(100)))
        .then(Part::Abort);
    let mock = Mock::start(vec![broken, Reply::sse(&text_answer(&["no"]))]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(events, vec![Event::Text("Partial".into())]);
    let why = error.unwrap().to_string();
    assert!(
        why.starts_with(&format!("Anthropic at {} broke off its answer", mock.url)),
        "{why}"
    );
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn a_stalled_stream_ends_in_an_error_and_pings_keep_a_slow_one_alive() {
    let stalled = Reply::sse(&[message_start(10)]).then(Part::Stall);
    let mut slow = Reply::sse(&[message_start(10)]);
    for _ in 0..6 {
        slow = slow
            .then(Part::Wait(Duration::from_millis(100)))
            .then(Part::Send(ev("ping", json!({"type": "ping"}))));
    }
    for e in text_block(0, &["Worth the wait"])
        .into_iter()
        .chain(message_end("end_turn", 4))
    {
        slow = slow.then(Part::Send(e));
    }
    let mock = Mock::start(vec![stalled, slow]).await;
    let model = provider_with(&mock, |c| c.http.idle_timeout = Duration::from_millis(600));
    let started = Instant::now();
    let (events, error) = run(&model, ask(vec![Message::user("hi")])).await;
    // Far below the 120 s default idle timeout, with room for a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(events.is_empty());
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "Anthropic at {} sent nothing for 0.6 s (idle_timeout); the stalled answer was \
             abandoned",
            mock.url
        )
    );
    assert_eq!(mock.seen().len(), 1, "a stall is not retried");

    let (events, error) = run(&model, ask(vec![Message::user("hi")])).await;
    assert_eq!(error, None);
    assert_eq!(text(&events), "Worth the wait");
}

#[tokio::test]
async fn malformed_json_in_an_event_names_the_provider_and_shows_the_event() {
    let mut events = vec![message_start(10)];
    events.extend(text_block(0, &["Hi"]));
    events.push("event: message_delta\ndata: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\"\n\n".into());
    let mock = Mock::start(vec![Reply::sse(&events)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("hi")])).await;
    assert_eq!(events, vec![Event::Text("Hi".into())]);
    assert_eq!(
        error.unwrap().to_string(),
        format!(
            "Anthropic at {} sent an event that is not valid JSON (EOF while parsing an object \
             at line 1 column 61): {{\"type\": \"message_delta\", \"delta\": {{\"stop_reason\": \
             \"end_turn\"",
            mock.url
        )
    );
}

#[tokio::test]
async fn a_refusal_finishes_refused() {
    let mut events = vec![message_start(10)];
    events.extend(text_block(0, &["I can't help with that."]));
    events.extend(message_end("refusal", 8));
    let mock = Mock::start(vec![Reply::sse(&events)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("bad")])).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Text("I can't help with that.".into()),
            Event::Usage(Usage {
                input_tokens: 10,
                output_tokens: 8
            }),
            Event::Finish(FinishReason::Refused),
        ]
    );
}

#[tokio::test]
async fn max_tokens_stops_with_length_and_the_request_names_the_limit() {
    let mut events = vec![message_start(10)];
    events.extend(text_block(0, &["A long"]));
    events.extend(message_end("max_tokens", 2));
    let mock = Mock::start(vec![Reply::sse(&events)]).await;
    let request = Request {
        max_tokens: Some(2),
        temperature: None,
        tools: Vec::new(),
        model: Some("claude-other".into()),
        ..ask(vec![Message::user("hi")])
    };
    let (events, error) = run(&provider(&mock), request).await;
    assert_eq!(error, None);
    assert_eq!(events.last(), Some(&Event::Finish(FinishReason::Length)));
    assert_eq!(
        mock.seen()[0].body,
        json!({
            "model": "claude-other",
            "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
        })
    );
}

#[tokio::test]
async fn cancelling_the_stream_closes_the_providers_connection() {
    let mut opening = vec![message_start(10)];
    opening.push(ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    opening.push(ev(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Once"}}),
    ));
    let endless = Reply::sse(&opening).then(Part::KeepAlive(Duration::from_millis(50)));
    let mock = Mock::start(vec![endless]).await;
    let cancel = CancellationToken::new();
    let mut stream = provider(&mock)
        .stream(ask(vec![Message::user("hi")]), cancel.clone())
        .await
        .unwrap();
    assert_eq!(stream.next().await, Some(Ok(Event::Text("Once".into()))));
    let waiting = tokio::spawn(async move { stream.next().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(mock.closed(), 0, "the answer is still streaming");
    cancel.cancel();
    let next = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("cancel ends the stream at once")
        .unwrap();
    assert_eq!(next, Some(Err(LlmError::Canceled)));
    assert!(
        mock.wait_closed(1, Duration::from_secs(3)).await,
        "the server saw the connection go"
    );
}

#[tokio::test]
async fn a_non_streamed_message_is_read_too() {
    let message = json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-test",
        "content": [
            {"type": "text", "text": "Running it."},
            {"type": "tool_use", "id": "toolu_Z", "name": "host_cli", "input": {"command": "run flow orders"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "output_tokens": 15},
    });
    let mock = Mock::start(vec![Reply::json(200, message)]).await;
    let (events, error) = run(&provider(&mock), ask(vec![Message::user("run it")])).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Event::Text("Running it.".into()),
            Event::ToolCall(ToolCall {
                id: "toolu_Z".into(),
                name: "host_cli".into(),
                arguments: json!({"command": "run flow orders"}),
            }),
            Event::Usage(Usage {
                input_tokens: 120,
                output_tokens: 15
            }),
            Event::Finish(FinishReason::ToolCalls),
        ]
    );
}

#[tokio::test]
async fn check_finds_the_model_and_says_exactly_what_is_wrong() {
    let found = json!({"type": "model", "id": "claude-test-20250101", "display_name": "Claude Test", "created_at": "2025-01-01T00:00:00Z"});
    let bad_key = Reply::json(
        401,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    )
    .header("request-id", "req_011");
    let unknown = Reply::json(
        404,
        json!({"type": "error", "error": {"type": "not_found_error", "message": "model: claude-nope"}}),
    );
    let mock = Mock::start(vec![Reply::json(200, found), bad_key, unknown]).await;
    let model = provider_with(&mock, |c| {
        c.base_url = format!("{}/v1/", mock.url);
        c.version = "2023-06-01".into();
        c.http.headers = vec![("anthropic-beta".into(), "tools-2024-04-04".into())];
    });
    assert_eq!(
        model.check().await.unwrap(),
        format!(
            "Anthropic at {} serves the model 'claude-test-20250101' (Claude Test)",
            mock.url
        )
    );
    assert_eq!(
        model.check().await.unwrap_err().to_string(),
        format!(
            "Anthropic at {} refused the API key (401 Unauthorized: invalid x-api-key (type \
             authentication_error)) [request id req_011]; check the key",
            mock.url
        )
    );
    let nope = provider_with(&mock, |c| c.model = "claude-nope".into());
    assert_eq!(
        nope.check().await.unwrap_err().to_string(),
        format!(
            "Anthropic at {} has nothing at /v1/models/claude-nope (404 Not Found: model: \
             claude-nope (type not_found_error)); check the base URL and the model name",
            mock.url
        )
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/v1/models/claude-test")
    );
    assert_eq!(seen[0].header("x-api-key"), Some(KEY));
    assert_eq!(seen[0].header("anthropic-beta"), Some("tools-2024-04-04"));

    let port = closed_port().await;
    let unreachable = Anthropic::new(AnthropicConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        http: etl_llm::HttpOptions {
            max_attempts: 1,
            ..quick_http()
        },
        ..AnthropicConfig::new("claude-test", None)
    })
    .unwrap();
    let error = unreachable.check().await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "cannot connect to http://127.0.0.1:{port}/v1/models/claude-test: Connection refused"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn settings_are_checked_and_the_key_never_shows() {
    let zero = Anthropic::new(AnthropicConfig {
        default_max_tokens: 0,
        ..AnthropicConfig::new("claude-test", None)
    })
    .unwrap_err();
    assert!(
        zero.to_string()
            .contains("default_max_tokens must be at least 1")
    );
    let newline = Anthropic::new(AnthropicConfig::new(
        "claude-test",
        Some(ApiKey::new("sk-ant\nsecret")),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        newline.contains("cannot be sent in the x-api-key header") && !newline.contains("secret"),
        "{newline}"
    );
    let config = AnthropicConfig::new("claude-test", Some(ApiKey::new(KEY)));
    let shown = format!("{config:?} {:?}", Anthropic::new(config.clone()).unwrap());
    assert!(
        !shown.contains(KEY) && shown.contains("ApiKey(***)"),
        "{shown}"
    );
}
