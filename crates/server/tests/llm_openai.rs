//! The real `etlworks-agent serve` pointed (`--llm openai --llm-base-url`) at a local server
//! speaking OpenAI's Chat Completions streaming format: multi-step tool conversations through
//! `/chat`, `/chat/stream` and a session, with the requests the agent sends checked (system
//! prompt, tools, tool calls and results, trimmed history, key, model); a read-only key whose
//! model asks for `host_cli`; a stalled provider; a provider unreachable or refusing the key at
//! start-up; the allowed models.

mod api_util;
mod llm_util;

use api_util::{Server, assert_error, send, temp_data};
use llm_util::{Part, Provider, Reply, Wire, flags, oa_text, oa_tools, stream, tokens};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

fn args(provider: &Provider, extra: &[&str]) -> Vec<String> {
    let mut a = flags(provider, Wire::OpenAi);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn start(data: &std::path::Path, args: &[String], env: &[(&str, &str)]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with_env(data, &args, env)
}

/// The role/content pairs of a request's messages, for compact assertions.
fn roles(messages: &[Json]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_conversation_through_chat_stream_and_a_session() {
    let provider = Provider::start(
        Wire::OpenAi,
        vec![
            // /chat: a tool call, then the answer.
            oa_tools(
                &[(
                    "call_a1",
                    "host_cli",
                    json!({"command": "list connections"}),
                )],
                (1200, 15),
            ),
            oa_text(&["You have one ", "connection: ", "warehouse."], (1300, 9)),
            // /chat/stream: two tool calls in one answer (run in order), then the answer.
            oa_tools(
                &[
                    (
                        "call_b1",
                        "search_knowledge_base",
                        json!({"query": "merge keys", "limit": 2}),
                    ),
                    ("call_b2", "get_connector_info", json!({"type": "postgres"})),
                ],
                (1250, 30),
            ),
            oa_text(
                &[
                    "Use mode=merge ",
                    "with keys=id.\n\nSources: docs/flows.md#merge",
                ],
                (1600, 20),
            ),
            // A session: two turns.
            oa_text(&["Bonjour !"], (1100, 3)),
            oa_text(&["Toujours ", "là."], (1150, 4)),
        ],
    )
    .await;
    let (_tmp, data) = temp_data();
    let server = start(
        &data,
        &args(&provider, &["--llm-api-key-env", "FAKE_LLM_KEY"]),
        &[("FAKE_LLM_KEY", "sk-test-0123456789")],
    );
    assert!(
        server
            .banner
            .contains("model: fake-1 (openai at http://127.0.0.1:"),
        "the start-up line names the model: {}",
        server.banner
    );
    assert!(
        server.banner.contains("serves the model 'fake-1'"),
        "{}",
        server.banner
    );
    let key = server.admin_key();

    let (status, health) = send(server.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["model"], "fake-1");
    assert_eq!(health["llm"]["provider"], "openai");
    assert_eq!(health["llm"]["reachable"], true);
    assert_eq!(health["llm"]["base_url"], provider.base_url());
    assert!(health["llm"]["checked_at"].is_string(), "{health}");

    // --- /chat: the model calls host_cli, reads the result, answers.
    let (status, body) = server
        .post(
            "/chat",
            &key,
            json!({"message": "what connections do I have?"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["response"], "You have one connection: warehouse.");
    assert_eq!(body["tools_used"], json!(["host_cli"]));
    assert_eq!(body["tool_calls"][0]["id"], "call_a1");
    assert_eq!(
        body["tool_calls"][0]["arguments"],
        json!({"command": "list connections"})
    );
    assert_eq!(body["tool_calls"][0]["success"], true);
    assert_eq!(body["model"], "fake-1");
    assert_eq!(body["finish"], "stop");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 2500, "output_tokens": 24, "total_tokens": 2524, "tool_calls": 1, "llm_calls": 2}),
        "usage is the provider's, summed over the two calls"
    );

    let calls = provider.calls();
    assert_eq!(calls.len(), 2);
    let first = &calls[0];
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(
        first.header("authorization"),
        Some("Bearer sk-test-0123456789"),
        "the key from --llm-api-key-env goes as a bearer token"
    );
    assert_eq!(first.body["model"], "fake-1");
    assert_eq!(first.body["stream"], true);
    assert_eq!(first.body["stream_options"], json!({"include_usage": true}));
    let messages = first.messages();
    assert_eq!(roles(&messages), ["system", "user"]);
    let system = messages[0]["content"].as_str().unwrap();
    for promise in [
        "etlworks-agent",
        "`search_knowledge_base`",
        "`host_cli`",
        "Ask before anything destructive",
        "Sources:",
        "Never reveal secrets",
    ] {
        assert!(
            system.contains(promise),
            "the system prompt says {promise:?}"
        );
    }
    assert_eq!(messages[1]["content"], "what connections do I have?");
    assert_eq!(
        first.tool_names(),
        [
            "search_knowledge_base",
            "host_list_commands",
            "host_cli",
            "search_templates",
            "import_template",
            "get_connector_info",
            "diagnose_flow"
        ],
        "an admin key is offered every tool"
    );
    let host_cli = &first.body["tools"][2];
    assert_eq!(host_cli["type"], "function");
    assert_eq!(
        host_cli["function"]["parameters"]["required"],
        json!(["command"])
    );
    let second = calls[1].messages();
    assert_eq!(roles(&second), ["system", "user", "assistant", "tool"]);
    assert_eq!(second[2]["tool_calls"][0]["id"], "call_a1");
    assert_eq!(second[2]["tool_calls"][0]["function"]["name"], "host_cli");
    assert_eq!(
        serde_json::from_str::<Json>(
            second[2]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        )
        .unwrap(),
        json!({"command": "list connections"}),
        "the arguments streamed in pieces were assembled"
    );
    assert_eq!(second[3]["tool_call_id"], "call_a1");
    assert!(
        second[3]["content"].as_str().unwrap().contains("warehouse"),
        "the tool's result goes back to the model: {}",
        second[3]
    );

    // --- /chat/stream: two tool calls in one answer, events in order.
    let frames = stream(
        &server,
        "/chat/stream",
        &key,
        json!({"message": "how do merge keys work with postgres?"}),
    )
    .await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds[0], "start");
    assert_eq!(frames[0].data["model"], "fake-1");
    assert_eq!(*kinds.last().unwrap(), "done", "{kinds:?}");
    let tools: Vec<(&str, &str)> = frames
        .iter()
        .filter(|f| f.event.starts_with("tool_"))
        .map(|f| (f.event.as_str(), f.data["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        tools,
        [
            ("tool_start", "search_knowledge_base"),
            ("tool_end", "search_knowledge_base"),
            ("tool_start", "get_connector_info"),
            ("tool_end", "get_connector_info")
        ]
    );
    let done = &frames.last().unwrap().data;
    assert_eq!(tokens(&frames), done["response"].as_str().unwrap());
    assert_eq!(
        done["response"],
        "Use mode=merge with keys=id.\n\nSources: docs/flows.md#merge"
    );
    assert_eq!(done["usage"]["llm_calls"], 2);
    assert_eq!(done["usage"]["tool_calls"], 2);
    let usage_events = frames.iter().filter(|f| f.event == "usage").count();
    assert_eq!(usage_events, 2, "one usage event per model call");
    let calls = provider.calls();
    let results: Vec<&Json> = calls[3].body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["tool_call_id"], "call_b1");
    assert!(
        results[0]["content"]
            .as_str()
            .unwrap()
            .contains("docs/flows.md"),
        "knowledge-base results carry their citations: {}",
        results[0]
    );
    assert_eq!(results[1]["tool_call_id"], "call_b2");

    // --- a session: its system prompt follows the product's; turn 2 sees turn 1.
    let (status, created) = server
        .post(
            "/sessions",
            &key,
            json!({"system_prompt": "Réponds en français."}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let sid = created["session_id"].as_str().unwrap().to_string();
    let (_, one) = server
        .post(
            &format!("/sessions/{sid}/chat"),
            &key,
            json!({"message": "hello"}),
        )
        .await;
    assert_eq!(one["response"], "Bonjour !", "{one}");
    assert_eq!(one["session_id"], sid.as_str());
    let frames = stream(
        &server,
        &format!("/sessions/{sid}/chat/stream"),
        &key,
        json!({"message": "still there?"}),
    )
    .await;
    assert_eq!(frames[0].data["session_id"], sid.as_str());
    assert_eq!(frames.last().unwrap().data["response"], "Toujours là.");
    let turn2 = provider.calls()[5].messages();
    assert_eq!(roles(&turn2), ["system", "user", "assistant", "user"]);
    let system = turn2[0]["content"].as_str().unwrap();
    assert!(
        system.ends_with("# Instructions from the application\n\nRéponds en français."),
        "the session's prompt follows the product's: …{}",
        &system[system.len().saturating_sub(80)..]
    );
    assert_eq!(turn2[1]["content"], "hello");
    assert_eq!(turn2[2]["content"], "Bonjour !");
    assert_eq!(turn2[3]["content"], "still there?");
    let (_, messages) = server.get(&format!("/sessions/{sid}/messages"), &key).await;
    assert_eq!(messages["count"], 4, "{messages}");
    assert_eq!(provider.unanswered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_to_the_context_budget_by_whole_turns() {
    // Turn 1 is huge; turn 2 makes a tool call; turn 3's request must leave turn 1 out and
    // keep turn 2 whole (the call with its result).
    let huge = "data ".repeat(9_000);
    let provider = Provider::start(
        Wire::OpenAi,
        vec![
            oa_text(&["Noted."], (9000, 2)),
            oa_tools(
                &[("call_t2", "host_cli", json!({"command": "list flows"}))],
                (500, 10),
            ),
            oa_text(&["No flows yet."], (600, 4)),
            oa_text(&["Create one with 'create flow'."], (700, 8)),
        ],
    )
    .await;
    let (_tmp, data) = temp_data();
    let server = start(
        &data,
        &args(&provider, &["--llm-context-tokens", "8000"]),
        &[],
    );
    let key = server.admin_key();
    let (_, created) = server.post("/sessions", &key, json!({})).await;
    let sid = created["session_id"].as_str().unwrap().to_string();
    let path = format!("/sessions/{sid}/chat");
    for message in [huge.as_str(), "what flows do I have?", "how do I make one?"] {
        let (status, body) = server
            .post(&path, &key, json!({"message": message, "max_tokens": 200}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["success"], true, "{body}");
    }
    let calls = provider.calls();
    assert_eq!(calls.len(), 4);
    // Turn 2 could not carry turn 1 either (9,000 tokens do not fit in 8,000).
    let turn2 = calls[1].messages();
    assert_eq!(roles(&turn2), ["system", "user"], "{turn2:?}");
    let turn3 = calls[3].messages();
    assert_eq!(
        roles(&turn3),
        ["system", "user", "assistant", "tool", "assistant", "user"],
        "turn 1 left out, turn 2 kept whole"
    );
    assert_eq!(turn3[1]["content"], "what flows do I have?");
    assert_eq!(turn3[2]["tool_calls"][0]["id"], "call_t2");
    assert_eq!(
        turn3[3]["tool_call_id"], "call_t2",
        "the result stays with its call"
    );
    assert!(
        !calls[3].body.to_string().contains("data data data"),
        "nothing of turn 1 is sent"
    );
    assert_eq!(calls[3].body["max_tokens"], 200);
    // Everything is still stored.
    let (_, messages) = server.get(&format!("/sessions/{sid}/messages"), &key).await;
    assert_eq!(messages["count"], 8, "{messages}");
    assert!(
        server
            .log_text()
            .contains("earlier messages left out to fit the model's context"),
        "the trimming is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_keys_model_never_gets_host_cli_run() {
    let provider = Provider::start(
        Wire::OpenAi,
        vec![
            oa_tools(
                &[
                    (
                        "call_r1",
                        "host_cli",
                        json!({"command": "create connection sneaky type=http url=https://x.example.com"}),
                    ),
                    ("call_r2", "search_knowledge_base", json!({"query": "connections"})),
                ],
                (900, 30),
            ),
            oa_text(&["This key is read-only, so I could not create it."], (1000, 12)),
        ],
    )
    .await;
    let (_tmp, data) = temp_data();
    let server = start(&data, &args(&provider, &[]), &[]);
    let admin = server.admin_key();
    let (_, reader) = server
        .create_key(&admin, json!({"name": "viewer", "role": "readonly"}))
        .await;
    let (status, body) = server
        .post(
            "/chat",
            &reader,
            json!({"message": "create a connection to x.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["tool_calls"][0]["name"], "host_cli");
    assert_eq!(body["tool_calls"][0]["success"], false, "refused: {body}");
    assert_eq!(
        body["tool_calls"][1]["success"], true,
        "a non-agentic tool still runs"
    );
    let calls = provider.calls();
    let offered = calls[0].tool_names();
    assert!(
        !offered.contains(&"host_cli".to_string())
            && !offered.contains(&"import_template".to_string()),
        "a read-only key is not offered agentic tools: {offered:?}"
    );
    assert_eq!(offered.len(), 5, "{offered:?}");
    let refusal = calls[1]
        .messages()
        .into_iter()
        .find(|m| m["tool_call_id"] == "call_r1")
        .expect("the refused call is answered");
    assert!(
        refusal["content"].as_str().unwrap().contains("read-only")
            && refusal["content"].as_str().unwrap().contains("was not run"),
        "{refusal}"
    );
    let (_, list) = server
        .tool(&admin, "host_cli", json!({"command": "list connections"}))
        .await;
    assert!(
        !list["result"].as_str().unwrap().contains("sneaky"),
        "nothing was created: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_provider_ends_the_stream_with_an_error_event() {
    let stalled_after_a_token = Reply::sse(vec![
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"fake-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Let me \"},\"finish_reason\":null}]}\n\n".to_string(),
    ])
    .then(Part::Stall);
    let stalled_at_once = Reply::sse(vec![]).then(Part::Stall);
    let provider =
        Provider::start(Wire::OpenAi, vec![stalled_after_a_token, stalled_at_once]).await;
    let (_tmp, data) = temp_data();
    let server = start(
        &data,
        &args(
            &provider,
            &["--llm-idle-timeout", "1", "--llm-max-attempts", "1"],
        ),
        &[],
    );
    let key = server.admin_key();
    let started = std::time::Instant::now();
    let frames = stream(&server, "/chat/stream", &key, json!({"message": "hello"})).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "no hang: {:?}",
        started.elapsed()
    );
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(tokens(&frames), "Let me ", "what was said is streamed");
    let last = frames.last().unwrap();
    assert_eq!(last.event, "error", "{kinds:?}");
    assert_eq!(last.data["code"], "llm_unavailable");
    let error = last.data["error"].as_str().unwrap();
    assert!(
        error.contains("sent nothing for 1 s") && error.contains("fake-1"),
        "the error says the provider stalled: {error}"
    );
    let (status, body) = server
        .post("/chat", &key, json!({"message": "again"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], "llm_unavailable", "{body}");
    assert!(
        provider
            .seen()
            .iter()
            .any(|s| s.path == "/v1/chat/completions"),
        "the calls reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_at_start_up_serves_degraded() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let base = format!("http://127.0.0.1:{port}/v1");
    let (_tmp, data) = temp_data();
    let server = Server::start(
        &data,
        &[
            "--llm",
            "openai",
            "--llm-base-url",
            &base,
            "--llm-model",
            "fake-1",
            "--llm-max-attempts",
            "1",
        ],
    );
    assert!(
        server
            .banner
            .contains("LLM UNAVAILABLE: openai model fake-1")
            && server.banner.contains("Connection refused"),
        "the start-up says exactly what is wrong: {}",
        server.banner
    );
    let key = server.admin_key();
    let (_, health) = send(server.request(Method::GET, "/health", None)).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["llm"]["reachable"], false);
    let detail = health["llm"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("cannot connect to {base}/models")),
        "{detail}"
    );
    // Chat answers at once, with the cause; nothing hangs.
    let started = std::time::Instant::now();
    let (status, body) = server
        .post("/chat", &key, json!({"message": "hello"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "llm_unavailable");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{body}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let frames = stream(&server, "/chat/stream", &key, json!({"message": "hello"})).await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds, ["start", "error"]);
    assert_eq!(frames[1].data["code"], "llm_unavailable");
    // A session turn is refused before the question is stored.
    let (_, created) = server.post("/sessions", &key, json!({})).await;
    let sid = created["session_id"].as_str().unwrap();
    let (_, body) = server
        .post(
            &format!("/sessions/{sid}/chat"),
            &key,
            json!({"message": "hello"}),
        )
        .await;
    assert_eq!(body["code"], "llm_unavailable");
    let (_, messages) = server.get(&format!("/sessions/{sid}/messages"), &key).await;
    assert_eq!(messages["count"], 0, "{messages}");
    // Everything else works.
    let (status, _) = server.get("/tools", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(server.log_text().contains("the LLM is unreachable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_reported_at_start_up_with_the_providers_words() {
    let provider = Provider::start(Wire::OpenAi, vec![]).await;
    provider.fail_check(Reply::json(
        401,
        json!({"error": {"message": "Incorrect API key provided: sk-wrong. You can find your API key at https://platform.openai.com/account/api-keys.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    ));
    let (_tmp, data) = temp_data();
    let server = start(
        &data,
        &args(&provider, &[]),
        &[("OPENAI_API_KEY", "sk-wrong")],
    );
    assert!(
        server.banner.contains("LLM UNAVAILABLE")
            && server.banner.contains("Incorrect API key provided"),
        "{}",
        server.banner
    );
    assert_eq!(
        provider.seen()[0].header("authorization"),
        Some("Bearer sk-wrong"),
        "OPENAI_API_KEY is read by default"
    );
    let (_, health) = send(server.request(Method::GET, "/health", None)).await;
    assert_eq!(health["llm"]["reachable"], false);
    assert!(
        health["llm"]["detail"].as_str().unwrap().contains("401"),
        "{health}"
    );
    let key = server.admin_key();
    let (_, body) = server
        .post("/chat", &key, json!({"message": "hello"}))
        .await;
    assert_eq!(body["code"], "llm_unavailable");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Incorrect API key"),
        "{body}"
    );
    assert!(
        provider.calls().is_empty(),
        "no model call is made while degraded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_name_only_an_allowed_model() {
    let provider = Provider::start(Wire::OpenAi, vec![oa_text(&["Hi."], (10, 2))]).await;
    let (_tmp, data) = temp_data();
    let server = start(
        &data,
        &args(&provider, &["--llm-models", "fake-2,fake-3"]),
        &[],
    );
    let key = server.admin_key();
    let (_, health) = send(server.request(Method::GET, "/health", None)).await;
    assert_eq!(
        health["llm"]["models"],
        json!(["fake-1", "fake-2", "fake-3"])
    );
    let got = server
        .post("/chat", &key, json!({"message": "hi", "model": "gpt-9"}))
        .await;
    let message = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        message.contains("the model 'gpt-9' is not offered by this server; ask for one of: fake-1, fake-2, fake-3"),
        "{message}"
    );
    assert!(provider.calls().is_empty());
    let (_, body) = server
        .post(
            "/chat",
            &key,
            json!({"message": "hi", "model": "fake-3", "temperature": 0.2}),
        )
        .await;
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(
        body["model"], "fake-3",
        "the answer names the model asked for"
    );
    let call = &provider.calls()[0];
    assert_eq!(call.body["model"], "fake-3");
    assert_eq!(call.body["temperature"], 0.2);
}
