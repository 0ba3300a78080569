//! Chat, streaming and sessions against the real binary with the built-in planner: `/chat`
//! bodies, `/chat/stream` parsed frame by frame, a multi-turn session that survives a restart,
//! tenant isolation, a client that leaves mid-stream, the session cap and bad bodies.

mod api_util;

use api_util::{Server, assert_error, cli, send, temp_data};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::time::Duration;

/// One parsed SSE frame.
#[derive(Debug)]
struct Frame {
    event: String,
    data: Json,
}

/// Posts to a stream endpoint and reads every frame to the end; checks each frame's `event`
/// equals its data's `type`.
async fn stream(server: &Server, path: &str, key: &str, body: Json) -> Vec<Frame> {
    let response = server
        .request(Method::POST, path, Some(key))
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let text = response.text().await.expect("the stream ends");
    parse(&text)
}

fn parse(text: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            } else {
                assert!(line.starts_with(':'), "an unexpected line: {line:?}");
            }
        }
        let Some(event) = event else { continue };
        let data: Json = serde_json::from_str(&data).expect("each frame's data is JSON");
        assert_eq!(data["type"], event.as_str(), "event and type agree: {data}");
        frames.push(Frame { event, data });
    }
    frames
}

/// The checks every complete stream must pass; answers the `done` body.
fn check_stream(frames: &[Frame]) -> Json {
    assert_eq!(frames.first().unwrap().event, "start", "{frames:?}");
    let last = frames.last().unwrap();
    assert_eq!(last.event, "done", "{frames:?}");
    let tokens: String = frames
        .iter()
        .filter(|f| f.event == "token")
        .map(|f| f.data["content"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, last.data["response"].as_str().unwrap());
    // Every tool_start is followed by its tool_end before the next tool starts.
    let mut open: Option<String> = None;
    for f in frames {
        match f.event.as_str() {
            "tool_start" => {
                assert!(open.is_none(), "a tool started inside another: {frames:?}");
                open = Some(f.data["id"].as_str().unwrap().to_string());
            }
            "tool_end" => {
                assert_eq!(open.take().as_deref(), f.data["id"].as_str(), "{frames:?}");
                assert!(f.data["success"].is_boolean() && f.data["duration_ms"].is_u64());
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "every tool_start has its tool_end");
    let starts: Vec<&str> = frames
        .iter()
        .filter(|f| f.event == "tool_start")
        .map(|f| f.data["name"].as_str().unwrap())
        .collect();
    let used: Vec<&str> = last.data["tools_used"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(starts, used);
    last.data.clone()
}

#[tokio::test]
async fn chat_answers_whole_and_streamed_with_the_same_shapes() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();

    let (status, health) = send(server.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["model"], "built-in-planner", "{health}");

    let (status, body) = server
        .post("/chat", &key, json!({"message": "list my connections"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["tools_used"], json!(["host_cli"]), "{body}");
    assert!(
        body["response"].as_str().unwrap().contains("warehouse"),
        "{body}"
    );
    let usage = &body["usage"];
    for field in [
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "tool_calls",
        "llm_calls",
    ] {
        assert!(usage[field].as_u64().unwrap() > 0, "{field}: {body}");
    }
    assert_eq!(body["tool_calls"][0]["name"], "host_cli");
    assert_eq!(body["tool_calls"][0]["success"], true);
    assert_eq!(body["model"], "built-in-planner");
    assert!(body["duration_ms"].is_u64());
    assert!(body.get("session_id").is_none(), "{body}");

    let frames = stream(
        &server,
        "/chat/stream",
        &key,
        json!({"message": "list my connections"}),
    )
    .await;
    let done = check_stream(&frames);
    assert_eq!(frames[0].data["session_id"], Json::Null);
    assert_eq!(frames[0].data["model"], "built-in-planner");
    assert!(frames.iter().any(|f| f.event == "usage"), "{frames:?}");
    assert_eq!(done["tools_used"], json!(["host_cli"]));
    assert_eq!(
        done["response"], body["response"],
        "same question, same answer"
    );
    assert_eq!(done["usage"], body["usage"], "same question, same usage");

    // A read-only key may chat; agentic tools are refused inside the loop, not with a 403.
    let (_, readonly) = server
        .create_key(&key, json!({"name": "viewer", "role": "readonly"}))
        .await;
    let (status, body) = server
        .post(
            "/chat",
            &readonly,
            json!({"message": "create a connection to api.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    if let Some(call) = body["tool_calls"].as_array().unwrap().first() {
        assert_eq!(
            call["success"], false,
            "refused for a read-only key: {body}"
        );
    }
    let (_, list) = server
        .tool(&key, "host_cli", json!({"command": "list connections"}))
        .await;
    assert!(
        !list["result"].as_str().unwrap().contains("example"),
        "nothing was created by a read-only key: {list}"
    );
}

#[tokio::test]
async fn bad_chat_bodies_are_refused_clearly() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--max-message-bytes", "2048"]);
    let key = server.admin_key();
    for path in ["/chat", "/chat/stream"] {
        for (body, needle) in [
            (json!({}), "no 'message'"),
            (json!({"message": ""}), "empty"),
            (json!({"message": 42}), "must be a string"),
            (
                json!({"message": "hi", "include_tools": "no"}),
                "include_tools",
            ),
            (json!({"message": "hi", "max_tokens": "many"}), "max_tokens"),
        ] {
            let got = server.post(path, &key, body.clone()).await;
            let message = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
            assert!(message.contains(needle), "{path} {body}: {message}");
        }
        let got = send(
            server
                .request(Method::POST, path, Some(&key))
                .header("content-type", "application/json")
                .body("{\"message\": "),
        )
        .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
        let got = server
            .post(path, &key, json!({"message": "x".repeat(3000)}))
            .await;
        let message = assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        assert!(message.contains("2048 bytes"), "{message}");
        let got = send(
            server
                .request(Method::POST, path, None)
                .json(&json!({"message": "hi"})),
        )
        .await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (status, health) = send(server.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::OK, "still up: {health}");
}

#[tokio::test]
async fn a_session_keeps_its_history_across_a_restart() {
    let (_tmp, data) = temp_data();
    let mut server = Server::start(&data, &[]);
    let key = server.admin_key();

    let (status, created) = server
        .post(
            "/sessions",
            &key,
            json!({"title": "billing api", "metadata": {"team": "finance"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["success"], true);
    let id = created["session_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ses_"), "{created}");
    assert!(created["created_at"].is_string());

    let (status, first) = server
        .post(
            &format!("/sessions/{id}/chat"),
            &key,
            json!({"message": "create a connection to api.example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["session_id"], id.as_str());
    assert!(
        first["response"]
            .as_str()
            .unwrap()
            .contains("Created connection 'example'"),
        "{first}"
    );

    // The second turn streams; "it" is the connection of the first turn.
    let frames = stream(
        &server,
        &format!("/sessions/{id}/chat/stream"),
        &key,
        json!({"message": "schedule it every hour"}),
    )
    .await;
    let done = check_stream(&frames);
    assert_eq!(frames[0].data["session_id"], id.as_str());
    assert_eq!(done["session_id"], id.as_str());
    let said = done["response"].as_str().unwrap();
    assert!(said.contains("example_to_warehouse"), "{said}");
    assert!(said.contains("every 1h"), "{said}");

    // Right after `done` the session already holds the whole turn.
    let (status, messages) = server.get(&format!("/sessions/{id}/messages"), &key).await;
    assert_eq!(status, StatusCode::OK, "{messages}");
    let before = messages["count"].as_u64().unwrap();
    let list = messages["messages"].as_array().unwrap();
    assert_eq!(list.len() as u64, before);
    assert_eq!(list[0]["role"], "user");
    assert_eq!(list[0]["content"], "create a connection to api.example.com");
    assert_eq!(list[0]["id"], 1);
    assert!(list.iter().any(|m| m["role"] == "tool"), "{messages}");
    assert!(
        list.iter()
            .any(|m| m["role"] == "assistant" && !m["tool_calls"].as_array().unwrap().is_empty()),
        "{messages}"
    );
    assert_eq!(list.last().unwrap()["role"], "assistant");
    assert!(list.iter().all(|m| m["created_at"].is_string()));

    let exit = server.stop();
    assert!(exit.success(), "clean stop: {exit}");
    let server = Server::start(&data, &[]);

    let (status, one) = server.get(&format!("/sessions/{id}"), &key).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["session"]["title"], "billing api");
    assert_eq!(one["session"]["metadata"]["team"], "finance");
    assert_eq!(one["session"]["message_count"], before);

    let (status, third) = server
        .post(
            &format!("/sessions/{id}/chat"),
            &key,
            json!({"message": "list flows"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert!(
        third["response"]
            .as_str()
            .unwrap()
            .contains("example_to_warehouse"),
        "{third}"
    );
    let (_, messages) = server
        .get(&format!("/sessions/{id}/messages?limit=1000"), &key)
        .await;
    assert!(
        messages["count"].as_u64().unwrap() > before + 1,
        "{messages}"
    );
    let (_, page) = server
        .get(&format!("/sessions/{id}/messages?limit=2&offset=1"), &key)
        .await;
    assert_eq!(page["count"], 2);
    assert_eq!(page["messages"][0]["id"], 2);

    let (status, sessions) = server.get("/sessions", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sessions["sessions"][0]["id"], id.as_str(), "{sessions}");
    assert!(sessions["sessions"][0]["message_count"].as_u64().unwrap() > before);

    let (status, deleted) = server.delete(&format!("/sessions/{id}"), &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted, json!({"success": true}));
    let got = server.get(&format!("/sessions/{id}"), &key).await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
}

#[tokio::test]
async fn sessions_are_private_to_their_tenant_and_capped() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--max-sessions", "3"]);
    let key = server.admin_key();
    // A key of another tenant, made on the command line while the server runs.
    let out = cli(
        &data,
        &[
            "keys", "create", "--name", "other", "--role", "admin", "--tenant", "acme",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (_, created) = server.post("/sessions", &key, json!({})).await;
    let id = created["session_id"].as_str().unwrap().to_string();

    for id in [id.as_str(), "ses_doesnotexist0000000"] {
        let got = server.get(&format!("/sessions/{id}"), &other).await;
        let message = assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
        assert!(message.contains(id), "{message}");
        let got = server
            .get(&format!("/sessions/{id}/messages"), &other)
            .await;
        assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
        let got = server
            .post(
                &format!("/sessions/{id}/chat"),
                &other,
                json!({"message": "hi"}),
            )
            .await;
        assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
        let got = server
            .post(
                &format!("/sessions/{id}/chat/stream"),
                &other,
                json!({"message": "hi"}),
            )
            .await;
        assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
        let got = server.delete(&format!("/sessions/{id}"), &other).await;
        assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    }
    let (_, theirs) = server.get("/sessions", &other).await;
    assert_eq!(theirs["count"], 0, "{theirs}");
    let (_, ours) = server.get("/sessions", &key).await;
    assert_eq!(
        ours["count"], 1,
        "the session survived the attempts: {ours}"
    );

    // Bad session bodies and queries.
    let got = server
        .post("/sessions", &key, json!({"metadata": [1]}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    let got = server.post("/sessions", &key, json!({"title": 5})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    let got = server.get("/sessions?limit=0", &key).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    let got = server.get("/sessions?limit=abc", &key).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");

    // The cap: three per tenant, counted per tenant.
    for _ in 0..2 {
        let (status, body) = server.post("/sessions", &key, json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let got = server.post("/sessions", &key, json!({})).await;
    let message = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("--max-sessions"), "{message}");
    let (status, body) = server.post("/sessions", &other, json!({})).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another tenant has its own cap: {body}"
    );
}

/// A local API whose `/orders` answers after `delay` (and notifies the returned `Notify` when
/// a request arrives), a connection `shop` to it, a flow `orders` from it into the warehouse,
/// and a new session; answers the notifier and the session id.
async fn slow_shop_session(
    server: &Server,
    key: &str,
    delay: Duration,
) -> (std::sync::Arc<tokio::sync::Notify>, String) {
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let slow_api = axum::Router::new().route(
        "/orders",
        axum::routing::get({
            let started = started.clone();
            move || async move {
                started.notify_one();
                tokio::time::sleep(delay).await;
                axum::Json(json!([{"id": 1, "total": 9.5}]))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, slow_api).await });
    let (_, setup) = server
        .tool(
            key,
            "host_cli",
            json!({"command": format!(
                "create connection shop type=http url=http://{api_addr} max_retries=0; \
                 create flow orders source=shop object=/orders destination=warehouse target=orders"
            )}),
        )
        .await;
    assert_eq!(setup["success"], true, "{setup}");
    let (_, created) = server.post("/sessions", key, json!({})).await;
    let id = created["session_id"].as_str().unwrap().to_string();
    (started, id)
}

/// The client hangs up while the agent waits on a tool (a flow whose source API takes two
/// minutes): the run is canceled and the tool stopped at once, and the session keeps the
/// question, the tool call and its (canceled) result.
#[tokio::test]
async fn a_client_that_leaves_mid_stream_keeps_what_was_said() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();
    // Far longer than the test waits: the tool must be stopped, not awaited.
    let (started, id) = slow_shop_session(&server, &key, Duration::from_secs(120)).await;

    let mut response = server
        .request(
            Method::POST,
            &format!("/sessions/{id}/chat/stream"),
            Some(&key),
        )
        .json(&json!({"message": "run flow orders"}))
        .send()
        .await
        .expect("the stream starts");
    assert_eq!(response.status(), StatusCode::OK);
    // Read until the tool starts, then hang up while it runs.
    let mut seen = String::new();
    while !seen.contains("event: tool_start") {
        let chunk = response
            .chunk()
            .await
            .expect("a chunk")
            .unwrap_or_else(|| panic!("the stream ended before a tool started: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: start"), "{seen}");
    started.notified().await;
    drop(response);

    // The question is stored before the run; the call, and its result once the canceled run
    // stops the tool (it would otherwise wait two minutes on the API).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let list = loop {
        let (status, messages) = server.get(&format!("/sessions/{id}/messages"), &key).await;
        assert_eq!(status, StatusCode::OK);
        let list = messages["messages"].as_array().unwrap().clone();
        if list.len() >= 3 {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run's messages were not kept: {messages}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Give a run that was (wrongly) not canceled time to append its answer.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, messages) = server.get(&format!("/sessions/{id}/messages"), &key).await;
    assert_eq!(
        messages["count"], 3,
        "nothing after the tool result: {messages}"
    );
    assert_eq!(list[0]["role"], "user");
    assert_eq!(list[0]["content"], "run flow orders");
    assert_eq!(list[1]["role"], "assistant");
    assert_eq!(list[1]["tool_calls"][0]["name"], "host_cli");
    assert_eq!(list[2]["role"], "tool");
    assert_eq!(list[2]["tool_call_id"], list[1]["tool_calls"][0]["id"]);
    assert!(
        list[2]["content"]
            .as_str()
            .unwrap()
            .contains("canceled while 'host_cli' was running"),
        "{}",
        list[2]
    );

    // The server is fine and the session goes on, the earlier turn in its history.
    let (status, next) = server
        .post(
            &format!("/sessions/{id}/chat"),
            &key,
            json!({"message": "list flows"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["success"], true);
    assert!(
        next["response"].as_str().unwrap().contains("orders"),
        "{next}"
    );
}

/// SIGTERM while a stream waits on a tool: the stream ends with an `error` event (`canceled`)
/// at once (the tool is stopped), the session keeps the turn, and the process exits cleanly.
#[tokio::test]
async fn a_stopping_server_ends_open_streams_with_an_error_event() {
    let (_tmp, data) = temp_data();
    let mut server = Server::start(&data, &[]);
    let key = server.admin_key();
    let (started, id) = slow_shop_session(&server, &key, Duration::from_secs(1)).await;

    let response = server
        .request(
            Method::POST,
            &format!("/sessions/{id}/chat/stream"),
            Some(&key),
        )
        .json(&json!({"message": "run flow orders"}))
        .send()
        .await
        .expect("the stream starts");
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::spawn(response.text());
    started.notified().await;
    let stopped = tokio::task::spawn_blocking(move || {
        let status = server.stop();
        (status, server)
    });
    let text = body.await.unwrap().expect("the stream ends");
    let frames = parse(&text);
    let last = frames.last().expect("some frames");
    assert_eq!(last.event, "error", "{text}");
    assert_eq!(last.data["code"], "canceled", "{text}");
    assert!(
        frames.iter().any(|f| f.event == "tool_end"),
        "the stopped tool call is reported: {text}"
    );
    let (status, _server) = stopped.await.unwrap();
    assert!(status.success(), "a clean exit: {status:?}");

    let server = Server::start(&data, &[]);
    let (_, messages) = server.get(&format!("/sessions/{id}/messages"), &key).await;
    assert_eq!(
        messages["count"], 3,
        "question, call and result kept: {messages}"
    );
}
