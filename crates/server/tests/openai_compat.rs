//! The OpenAI-compatible endpoint (/v1) against the real binary, on the wire (the Python
//! interop tests drive it with the `openai` package): the model list, a completion's exact
//! shape, a stream frame by frame, OpenAI-style errors for keys, limits, bad bodies and spent
//! caps, and a read-only key that may chat but not act.

mod api_util;

use api_util::{Server, temp_data};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

async fn v1(
    server: &Server,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Json>,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = server
        .http
        .request(method, format!("{}/v1{path}", server.root));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("a body"))
}

async fn json_call(
    server: &Server,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Json>,
) -> (StatusCode, Json) {
    let (status, _, text) = v1(server, method, path, key, body).await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the {status} body is not JSON ({e}): {text}"));
    (status, json)
}

/// Asserts OpenAI's error shape; answers the message.
fn assert_openai_error(
    got: &(StatusCode, Json),
    status: StatusCode,
    kind: &str,
    code: &str,
) -> String {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    let error = &body["error"];
    assert_eq!(error["type"], kind, "{body}");
    assert_eq!(error["code"], code, "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "only 'error': {body}");
    let message = error["message"].as_str().expect("a message").to_string();
    assert!(message.len() > 20, "{message}");
    message
}

/// The `data:` payloads of an SSE body, in order.
fn frames(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

fn user(text: &str) -> Json {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn the_agent_is_one_model_and_errors_have_openai_shape() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();

    let got = json_call(&server, Method::GET, "/models", None, None).await;
    let m = assert_openai_error(
        &got,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "unauthorized",
    );
    assert!(m.contains("Bearer"), "{m}");
    let got = json_call(&server, Method::GET, "/models", Some("nope"), None).await;
    assert_openai_error(
        &got,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "unauthorized",
    );

    let (status, list) = json_call(&server, Method::GET, "/models", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    let models = list["data"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["id"], "etlworks-agent");
    assert_eq!(models[0]["object"], "model");
    assert!(models[0]["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        models[0]["etlworks"]["underlying_model"],
        "built-in-planner"
    );
    assert_eq!(models[0]["etlworks"]["tools"].as_array().unwrap().len(), 7);
    let (status, one) = json_call(
        &server,
        Method::GET,
        "/models/etlworks-agent",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, models[0]);
    let got = json_call(&server, Method::GET, "/models/gpt-4o", Some(&key), None).await;
    assert_openai_error(
        &got,
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "model_not_found",
    );

    let (status, headers, text) = v1(
        &server,
        Method::POST,
        "/models",
        Some(&key),
        Some(json!({})),
    )
    .await;
    let body: Json = serde_json::from_str(&text).unwrap();
    assert_openai_error(
        &(status, body),
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "bad_request",
    );
    assert_eq!(headers["allow"], "GET");
    let got = json_call(&server, Method::GET, "/chat/completions", Some(&key), None).await;
    assert_openai_error(
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "bad_request",
    );
    let got = json_call(
        &server,
        Method::POST,
        "/embeddings",
        Some(&key),
        Some(json!({})),
    )
    .await;
    let m = assert_openai_error(
        &got,
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
    );
    assert!(m.contains("/v1/chat/completions"), "{m}");

    // Bodies the agent cannot honour name the parameter at fault.
    for (body, param) in [
        (json!({"model": "etlworks-agent"}), "messages"),
        (json!({"messages": user("hi"), "n": 3}), "n"),
        (
            json!({"messages": user("hi"), "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "messages[0].content",
        ),
    ] {
        let got = json_call(
            &server,
            Method::POST,
            "/chat/completions",
            Some(&key),
            Some(body.clone()),
        )
        .await;
        assert_openai_error(
            &got,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "bad_request",
        );
        assert_eq!(got.1["error"]["param"], param, "{body}");
    }
    let got = json_call(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&key),
        Some(json!({"messages": user("hi"), "model": "gpt-4o"})),
    )
    .await;
    let m = assert_openai_error(
        &got,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "bad_request",
    );
    assert!(m.contains("gpt-4o"), "{m}");
    let long = "x".repeat(70 * 1024);
    let got = json_call(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&key),
        Some(json!({"messages": user(&long)})),
    )
    .await;
    assert_openai_error(
        &got,
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "payload_too_large",
    );
    let response = server
        .http
        .post(format!("{}/v1/chat/completions", server.root))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Json = response.json().await.unwrap();
    assert_openai_error(
        &(status, body),
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "bad_request",
    );
}

#[tokio::test]
async fn completions_whole_and_streamed_say_the_same() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();
    let request = json!({
        "model": "etlworks-agent",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "list connections"}],
        "temperature": 0.3,
        "top_p": 0.9,
        "user": "someone",
    });

    let (status, whole) = json_call(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&key),
        Some(request.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "etlworks-agent");
    let id = whole["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-run_"), "{id}");
    assert!(whole["created"].as_u64().unwrap() > 1_700_000_000);
    let choices = whole["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["finish_reason"], "stop");
    assert_eq!(choices[0]["message"]["role"], "assistant");
    let content = choices[0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(content.contains("warehouse"), "{content}");
    let usage = &whole["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 0 && completion > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), prompt + completion);
    assert_eq!(whole["etlworks"]["tools_used"], json!(["host_cli"]));
    assert_eq!(
        whole["etlworks"]["run_id"],
        id.trim_start_matches("chatcmpl-")
    );
    // No session is made: OpenAI clients send the conversation every time.
    let (_, sessions) = server.get("/sessions", &key).await;
    assert_eq!(sessions["total"], 0, "{sessions}");

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) = v1(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&key),
        Some(streamed),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let data = frames(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Json> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("a chunk is JSON"))
        .collect();
    let stream_id = chunks[0]["id"].as_str().unwrap();
    assert!(stream_id.starts_with("chatcmpl-run_") && stream_id != id);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        assert_eq!(chunk["id"], stream_id);
        assert_eq!(chunk["model"], "etlworks-agent");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text_streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    assert_eq!(text_streamed, content);
    let finishes: Vec<&Json> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("stop")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"].as_u64().unwrap(), prompt);
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["usage"].is_null())
    );

    // Without include_usage no chunk carries usage, and none is without a choice.
    let mut plain = request;
    plain["stream"] = json!(true);
    let (_, _, text) = v1(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&key),
        Some(plain),
    )
    .await;
    let data = frames(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    for d in &data[..data.len() - 1] {
        let chunk: Json = serde_json::from_str(d).unwrap();
        assert!(chunk.get("usage").is_none(), "{chunk}");
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1, "{chunk}");
    }
}

#[tokio::test]
async fn a_spent_cap_is_insufficient_quota_and_a_read_only_key_cannot_act() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--key-cap-tokens", "1"]);
    let admin = server.admin_key();
    let (_, capped) = server
        .create_key(&admin, json!({"name": "capped", "role": "user"}))
        .await;
    let body = json!({"model": "etlworks-agent", "messages": user("list connections")});
    // The first run is stopped at the cap after its first model call; the next one is refused
    // before it starts; a stream says so in an error chunk, without [DONE].
    let got = json_call(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&capped),
        Some(body.clone()),
    )
    .await;
    let m = assert_openai_error(
        &got,
        StatusCode::TOO_MANY_REQUESTS,
        "insufficient_quota",
        "cap_exceeded",
    );
    assert!(m.starts_with("AI usage cap exceeded ("), "{m}");
    let got = json_call(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&capped),
        Some(body.clone()),
    )
    .await;
    assert_openai_error(
        &got,
        StatusCode::TOO_MANY_REQUESTS,
        "insufficient_quota",
        "cap_exceeded",
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, _, text) = v1(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&capped),
        Some(streamed),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let data = frames(&text);
    assert!(!data.iter().any(|d| d == "[DONE]"), "{text}");
    let error: Json = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "cap_exceeded", "{text}");

    let (_, reader) = server
        .create_key(&admin, json!({"name": "reader", "role": "readonly"}))
        .await;
    let (status, answer) = json_call(
        &server,
        Method::POST,
        "/chat/completions",
        Some(&reader),
        Some(json!({"messages": user("delete connection warehouse")})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 10
    );
    let (_, connections) = server
        .tool(&admin, "host_cli", json!({"command": "list connections"}))
        .await;
    assert!(
        connections["result"]
            .as_str()
            .unwrap()
            .contains("warehouse"),
        "{connections}"
    );
}

#[tokio::test]
async fn the_rate_limit_answers_in_openai_shape_with_retry_after() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--rate-limit", "0.5", "--rate-burst", "1"]);
    let key = server.admin_key();
    let (status, _, _) = v1(&server, Method::GET, "/models", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, text) = v1(&server, Method::GET, "/models", Some(&key), None).await;
    let body: Json = serde_json::from_str(&text).unwrap();
    assert_openai_error(
        &(status, body),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "rate_limited",
    );
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
}
