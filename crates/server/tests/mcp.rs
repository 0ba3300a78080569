//! MCP at /rest/v1/ai-agent/mcp against the real binary, spoken as raw Streamable HTTP (the
//! Python interop tests drive it with the official SDK): protocol versions negotiated, the
//! tools' JSON as clients read it, sessions bound to their key, ended by DELETE and answered
//! with 404 after, the per-key session cap, the Host check and its flag, progress
//! notifications, read-only keys, usage recorded and caps enforced for the assistant, and the
//! API's error body for every refusal.

mod api_util;

use api_util::{Server, assert_error, temp_data};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

const MCP: &str = "/rest/v1/ai-agent/mcp";

/// One answer of the MCP endpoint: its status, headers and the JSON-RPC messages it carried
/// (from an SSE stream or a JSON body), or the API's error body.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    messages: Vec<Json>,
    body: Json,
}

impl Reply {
    /// The result of the (last) response message.
    fn result(&self) -> &Json {
        let last = self
            .messages
            .iter()
            .rev()
            .find(|m| {
                m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
            })
            .unwrap_or_else(|| panic!("no response in {self:?}"));
        assert!(last.get("error").is_none(), "a JSON-RPC error: {last}");
        &last["result"]
    }

    fn session(&self) -> String {
        self.headers["mcp-session-id"].to_str().unwrap().to_string()
    }
}

async fn post(
    server: &Server,
    key: Option<&str>,
    session: Option<&str>,
    body: Json,
    extra: &[(&str, &str)],
) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(
        "accept",
        "application/json, text/event-stream".parse().unwrap(),
    );
    headers.insert("content-type", "application/json".parse().unwrap());
    if let Some(session) = session {
        headers.insert("mcp-session-id", session.parse().unwrap());
        headers.insert("mcp-protocol-version", "2025-11-25".parse().unwrap());
    }
    // Extra headers replace the defaults, so a test can send a wrong one.
    for (name, value) in extra {
        let name: reqwest::header::HeaderName = name.parse().unwrap();
        headers.insert(name, value.parse().unwrap());
    }
    let mut request = server
        .http
        .post(format!("{}{MCP}", server.root))
        .headers(headers)
        .body(body.to_string());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    read(request.send().await.expect("the server answers")).await
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.text().await.expect("a body");
    let mut messages = Vec::new();
    let mut body = Json::Null;
    if content_type.starts_with("text/event-stream") {
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim();
                if !data.is_empty() {
                    messages.push(serde_json::from_str(data).expect("SSE data is JSON"));
                }
            }
        }
    } else if !text.is_empty() {
        body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the {status} body is not JSON ({e}): {text}"));
        if body.get("jsonrpc").is_some() {
            messages.push(body.clone());
        }
    }
    Reply {
        status,
        headers,
        messages,
        body,
    }
}

fn initialize_body(version: &str) -> Json {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "rust-test", "version": "1"}
    }})
}

/// Initialises a session with `version`; answers its id and the initialize result.
async fn initialize(server: &Server, key: &str, version: &str) -> (String, Json) {
    let reply = post(server, Some(key), None, initialize_body(version), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let session = reply.session();
    let result = reply.result().clone();
    let done = post(
        server,
        Some(key),
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        &[],
    )
    .await;
    assert_eq!(done.status, StatusCode::ACCEPTED, "{done:?}");
    (session, result)
}

async fn call(
    server: &Server,
    key: &str,
    session: &str,
    id: u64,
    method: &str,
    params: Json,
) -> Reply {
    post(
        server,
        Some(key),
        Some(session),
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        &[],
    )
    .await
}

async fn delete(server: &Server, key: &str, session: &str) -> Reply {
    let response = server
        .http
        .delete(format!("{}{MCP}", server.root))
        .bearer_auth(key)
        .header("mcp-session-id", session)
        .send()
        .await
        .expect("the server answers");
    read(response).await
}

#[tokio::test]
async fn versions_are_negotiated_and_sessions_belong_to_their_key() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let admin = server.admin_key();

    for (asked, answered) in [
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        // Versions this server does not speak are answered with its newest.
        ("2024-11-05", "2025-11-25"),
        ("2025-03-26", "2025-11-25"),
        ("2026-07-28", "2025-11-25"),
    ] {
        let (session, result) = initialize(&server, &admin, asked).await;
        assert_eq!(
            result["protocolVersion"], answered,
            "asked {asked}: {result}"
        );
        assert_eq!(result["serverInfo"]["name"], "etlworks-agent");
        assert!(result["capabilities"]["tools"].is_object(), "{result}");
        assert_eq!(
            delete(&server, &admin, &session).await.status,
            StatusCode::NO_CONTENT
        );
    }

    let (session, _) = initialize(&server, &admin, "2025-11-25").await;
    let listed = call(&server, &admin, &session, 2, "tools/list", json!({})).await;
    let tools = listed.result()["tools"].as_array().unwrap().clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "search_knowledge_base",
            "host_list_commands",
            "host_cli",
            "search_templates",
            "import_template",
            "get_connector_info",
            "diagnose_flow",
            "etlworks_assistant"
        ]
    );
    for tool in &tools {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        let hints = &tool["annotations"];
        let read_only = hints["readOnlyHint"].as_bool().expect("readOnlyHint");
        let destructive = hints["destructiveHint"].as_bool().expect("destructiveHint");
        assert!(!(read_only && destructive), "{tool}");
        assert!(hints["title"].is_string(), "{tool}");
    }
    let hint = |name: &str, field: &str| {
        tools.iter().find(|t| t["name"] == name).unwrap()["annotations"][field].clone()
    };
    assert_eq!(hint("host_cli", "destructiveHint"), true);
    assert_eq!(hint("import_template", "destructiveHint"), false);
    assert_eq!(hint("search_knowledge_base", "readOnlyHint"), true);

    // Another key that presents this session's id is told it does not exist.
    let (_, other) = server
        .create_key(&admin, json!({"name": "other", "role": "admin"}))
        .await;
    let stolen = call(&server, &other, &session, 3, "tools/list", json!({})).await;
    let m = assert_error(
        &(stolen.status, stolen.body.clone()),
        StatusCode::NOT_FOUND,
        "session_not_found",
    );
    assert!(m.contains("initialize"), "{m}");
    assert_eq!(
        delete(&server, &other, &session).await.status,
        StatusCode::NOT_FOUND
    );
    // Its owner still uses it; once deleted it is gone for the owner too.
    let again = call(&server, &admin, &session, 4, "tools/list", json!({})).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        delete(&server, &admin, &session).await.status,
        StatusCode::NO_CONTENT
    );
    let gone = call(&server, &admin, &session, 5, "tools/list", json!({})).await;
    assert_error(
        &(gone.status, gone.body),
        StatusCode::NOT_FOUND,
        "session_not_found",
    );
    let unknown = call(
        &server,
        &admin,
        "0f6d6b1e-unknown",
        6,
        "tools/list",
        json!({}),
    )
    .await;
    assert_error(
        &(unknown.status, unknown.body),
        StatusCode::NOT_FOUND,
        "session_not_found",
    );
}

#[tokio::test]
async fn refusals_speak_the_api_error_body() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--body-limit", "4096"]);
    let admin = server.admin_key();
    let init = initialize_body("2025-11-25");

    let none = post(&server, None, None, init.clone(), &[]).await;
    assert_error(
        &(none.status, none.body.clone()),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let bad = post(&server, Some("not-a-key"), None, init.clone(), &[]).await;
    assert_error(
        &(bad.status, bad.body),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // This server sends nothing unasked: no GET stream.
    for method in [Method::GET, Method::PUT] {
        let response = server
            .http
            .request(method.clone(), format!("{}{MCP}", server.root))
            .bearer_auth(&admin)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        let reply = read(response).await;
        let m = assert_error(
            &(reply.status, reply.body),
            StatusCode::METHOD_NOT_ALLOWED,
            "bad_request",
        );
        assert_eq!(reply.headers["allow"], "POST, DELETE", "{method}");
        assert!(m.contains("POST"), "{m}");
    }

    let no_accept = post(
        &server,
        Some(&admin),
        None,
        init.clone(),
        &[("accept", "application/json")],
    )
    .await;
    let m = assert_error(
        &(no_accept.status, no_accept.body),
        StatusCode::NOT_ACCEPTABLE,
        "bad_request",
    );
    assert!(m.contains("text/event-stream"), "{m}");
    let not_json = post(
        &server,
        Some(&admin),
        None,
        init.clone(),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_error(
        &(not_json.status, not_json.body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "bad_request",
    );
    let mut big = init.clone();
    big["params"]["clientInfo"]["name"] = json!("x".repeat(8000));
    let too_big = post(&server, Some(&admin), None, big, &[]).await;
    assert_error(
        &(too_big.status, too_big.body),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let garbage = server
        .http
        .post(format!("{}{MCP}", server.root))
        .bearer_auth(&admin)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let garbage = read(garbage).await;
    let m = assert_error(
        &(garbage.status, garbage.body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "bad_request",
    );
    assert!(m.contains("one JSON-RPC message"), "{m}");

    // A request without a session that is not initialize is refused, not served.
    let orphan = post(
        &server,
        Some(&admin),
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        &[],
    )
    .await;
    let m = assert_error(
        &(orphan.status, orphan.body),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(m.contains("send 'initialize' first"), "{m}");

    // The server still serves after all of that.
    initialize(&server, &admin, "2025-11-25").await;
}

#[tokio::test]
async fn the_host_header_is_checked_against_the_allowed_hosts() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let admin = server.admin_key();
    let init = initialize_body("2025-11-25");
    let refused = post(
        &server,
        Some(&admin),
        None,
        init.clone(),
        &[("host", "evil.example:8080")],
    )
    .await;
    let m = assert_error(
        &(refused.status, refused.body),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert!(m.contains("--mcp-allowed-hosts evil.example"), "{m}");
    for host in ["localhost", "127.0.0.1:1234"] {
        let ok = post(&server, Some(&admin), None, init.clone(), &[("host", host)]).await;
        assert_eq!(ok.status, StatusCode::OK, "{host}: {ok:?}");
    }
    drop(server);

    let (_tmp2, data2) = temp_data();
    let named = Server::start(
        &data2,
        &["--mcp-allowed-hosts", "agent.example.com,10.9.8.7"],
    );
    let admin = named.admin_key();
    for host in [
        "agent.example.com",
        "agent.example.com:443",
        "10.9.8.7",
        "localhost",
    ] {
        let ok = post(&named, Some(&admin), None, init.clone(), &[("host", host)]).await;
        assert_eq!(ok.status, StatusCode::OK, "{host}: {ok:?}");
    }
    let other = post(
        &named,
        Some(&admin),
        None,
        init.clone(),
        &[("host", "other.example.com")],
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    drop(named);

    let (_tmp3, data3) = temp_data();
    let any = Server::start(&data3, &["--mcp-allowed-hosts", "*"]);
    let admin = any.admin_key();
    let ok = post(
        &any,
        Some(&admin),
        None,
        init,
        &[("host", "whatever.example")],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
}

#[tokio::test]
async fn one_key_keeps_at_most_100_sessions() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--rate-limit", "0"]);
    let admin = server.admin_key();
    let mut sessions = Vec::new();
    for _ in 0..100 {
        let reply = post(
            &server,
            Some(&admin),
            None,
            initialize_body("2025-11-25"),
            &[],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        sessions.push(reply.session());
    }
    let over = post(
        &server,
        Some(&admin),
        None,
        initialize_body("2025-11-25"),
        &[],
    )
    .await;
    let m = assert_error(
        &(over.status, over.body.clone()),
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert!(m.contains("DELETE"), "{m}");
    assert_eq!(over.headers["retry-after"], "60");
    // Another key is not affected; a deleted session makes room.
    let (_, other) = server
        .create_key(&admin, json!({"name": "other", "role": "user"}))
        .await;
    initialize(&server, &other, "2025-11-25").await;
    assert_eq!(
        delete(&server, &admin, &sessions[0]).await.status,
        StatusCode::NO_CONTENT
    );
    initialize(&server, &admin, "2025-11-25").await;
}

#[tokio::test]
async fn tools_run_as_the_key_and_the_assistant_reports_progress() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let admin = server.admin_key();
    let (session, _) = initialize(&server, &admin, "2025-06-18").await;

    let listed = call(
        &server,
        &admin,
        &session,
        2,
        "tools/call",
        json!({"name": "host_cli", "arguments": {"command": "list connections"}}),
    )
    .await;
    let result = listed.result();
    assert_eq!(result["isError"], false, "{result}");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("warehouse")
    );
    assert_eq!(result["structuredContent"]["tool"], "host_cli");
    assert_eq!(result["structuredContent"]["success"], true);

    let asked = call(
        &server,
        &admin,
        &session,
        3,
        "tools/call",
        json!({"name": "etlworks_assistant", "arguments": {"message": "list connections"},
               "_meta": {"progressToken": "p-1"}}),
    )
    .await;
    let progress: Vec<&Json> = asked
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    let answer = asked.result()["structuredContent"].clone();
    let calls = answer["tool_calls"].as_array().unwrap().len();
    assert!(calls >= 1, "{answer}");
    assert_eq!(progress.len(), 2 * calls, "{asked:?}");
    for (i, note) in progress.iter().enumerate() {
        assert_eq!(note["params"]["progressToken"], "p-1");
        assert_eq!(note["params"]["progress"], json!((i + 1) as f64));
    }
    assert!(
        progress[0]["params"]["message"]
            .as_str()
            .unwrap()
            .starts_with("calling host_cli")
    );
    assert_eq!(answer["success"], true);
    assert!(answer["response"].as_str().unwrap().contains("warehouse"));
    let session_id = answer["session_id"].as_str().unwrap();
    assert!(session_id.starts_with("ses_"));
    // The conversation is a session of the Agent API, titled after the first message.
    let (status, details) = server.get(&format!("/sessions/{session_id}"), &admin).await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["session"]["metadata"]["source"], "mcp");
    assert!(
        details["session"]["title"]
            .as_str()
            .unwrap()
            .starts_with("MCP: list connections")
    );
    // Without a progress token there are no notifications.
    let quiet = call(
        &server,
        &admin,
        &session,
        4,
        "tools/call",
        json!({"name": "etlworks_assistant", "arguments": {"message": "list flows"}}),
    )
    .await;
    assert!(
        quiet.messages.iter().all(|m| m.get("method").is_none()),
        "{quiet:?}"
    );
    assert_eq!(
        quiet.result()["structuredContent"]["session_id"],
        session_id
    );

    // A read-only key may read but not act, and learns why as a tool error.
    let (_, reader) = server
        .create_key(&admin, json!({"name": "reader", "role": "readonly"}))
        .await;
    let (mine, _) = initialize(&server, &reader, "2025-11-25").await;
    let refused = call(
        &server,
        &reader,
        &mine,
        2,
        "tools/call",
        json!({"name": "host_cli", "arguments": {"command": "delete connection warehouse"}}),
    )
    .await;
    let result = refused.result();
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(result["structuredContent"]["code"], "forbidden");
    let wrong = call(
        &server,
        &reader,
        &mine,
        3,
        "tools/call",
        json!({"name": "search_templates", "arguments": {"limit": 3}}),
    )
    .await;
    assert_eq!(
        wrong.result()["structuredContent"]["code"],
        "invalid_arguments"
    );
    assert!(
        wrong.result()["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("missing required argument 'query'")
    );
    let unknown = call(
        &server,
        &reader,
        &mine,
        4,
        "tools/call",
        json!({"name": "nope", "arguments": {}}),
    )
    .await;
    let error = unknown
        .messages
        .iter()
        .find(|m| m.get("error").is_some())
        .expect("a JSON-RPC error");
    assert_eq!(error["error"]["code"], -32602);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("etlworks_assistant")
    );
    let (status, connections) = server
        .tool(&admin, "host_cli", json!({"command": "list connections"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        connections["result"]
            .as_str()
            .unwrap()
            .contains("warehouse")
    );
}

#[tokio::test]
async fn the_assistant_counts_against_usage_and_stops_at_the_cap() {
    let (_tmp, data) = temp_data();
    // One token: the first run starts (nothing used yet) and is stopped after its first model
    // call; the next is refused before it starts.
    let server = Server::start(&data, &["--key-cap-tokens", "1"]);
    let admin = server.admin_key();
    let (_, user) = server
        .create_key(&admin, json!({"name": "capped", "role": "user"}))
        .await;
    let (session, _) = initialize(&server, &user, "2025-11-25").await;
    let ask = |id: u64| {
        call(
            &server,
            &user,
            &session,
            id,
            "tools/call",
            json!({"name": "etlworks_assistant", "arguments": {"message": "list connections"}}),
        )
    };
    let first = ask(2).await;
    let stopped = first.result();
    assert_eq!(stopped["isError"], true, "{stopped}");
    assert_eq!(stopped["structuredContent"]["code"], "cap_exceeded");
    assert_eq!(stopped["content"][0]["text"], "AI usage cap exceeded");
    let detail = stopped["structuredContent"]["detail"].as_str().unwrap();
    assert!(detail.contains("during this run"), "{detail}");
    let second = ask(3).await;
    let refused = second.result();
    assert_eq!(
        refused["structuredContent"]["code"], "cap_exceeded",
        "{refused}"
    );
    assert!(
        !refused["structuredContent"]["detail"]
            .as_str()
            .unwrap()
            .contains("during this run"),
        "{refused}"
    );
    // The tools themselves stay free to call.
    let tool = call(
        &server,
        &user,
        &session,
        4,
        "tools/call",
        json!({"name": "host_list_commands", "arguments": {}}),
    )
    .await;
    assert_eq!(tool.result()["isError"], false);
    // The run that happened was recorded against the key; the refused one used nothing.
    let (status, report) = server.get("/usage?group_by=key", &admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["totals"]["runs"], 1, "{report}");
    assert!(
        report["totals"]["total_tokens"].as_u64().unwrap() > 0,
        "{report}"
    );
}
