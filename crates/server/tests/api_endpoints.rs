//! The Agent API's endpoints against the real binary: tools list and execute, every error code
//! and status of those, health, the OpenAPI document, request ids, body and rate limits, and
//! the tenant's knowledge-base documents.

mod api_util;

use api_util::{BASE, Server, assert_error, send, temp_data};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

#[tokio::test]
async fn tools_are_listed_and_executed_with_the_public_shapes() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();

    let (status, list) = server.get("/tools", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["success"], true);
    let tools = list["tools"].as_array().unwrap();
    assert_eq!(list["count"], tools.len());
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for name in [
        "search_knowledge_base",
        "host_list_commands",
        "host_cli",
        "search_templates",
        "import_template",
        "get_connector_info",
        "diagnose_flow",
    ] {
        assert!(names.contains(&name), "{name} is listed: {names:?}");
    }
    for t in tools {
        assert!(t["description"].as_str().unwrap().len() > 10, "{t}");
        assert_eq!(t["parameters"]["type"], "object", "{t}");
        assert!(t["agentic"].is_boolean(), "{t}");
    }
    let host_cli = tools.iter().find(|t| t["name"] == "host_cli").unwrap();
    assert_eq!(host_cli["agentic"], true);

    // A tool that succeeds.
    let (status, out) = server
        .tool(&key, "host_cli", json!({"command": "list connections"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["success"], true);
    assert_eq!(out["tool"], "host_cli");
    assert!(
        out["result"].as_str().unwrap().contains("warehouse"),
        "{out}"
    );
    assert!(out["data"].is_object(), "{out}");
    assert!(out["duration_ms"].is_u64(), "{out}");
    assert!(out.get("code").is_none(), "no code on success: {out}");

    // No arguments: an empty body and `{}` are the same.
    let empty = send(
        server
            .request(
                Method::POST,
                "/tools/host_list_commands/execute",
                Some(&key),
            )
            .header("content-type", "application/json"),
    )
    .await;
    assert_eq!(empty.0, StatusCode::OK, "{}", empty.1);
    assert_eq!(empty.1["success"], true);
    let (status, out) = server
        .tool(
            &key,
            "search_knowledge_base",
            json!({"query": "merge mode keys", "limit": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert!(out["data"]["count"].as_u64().unwrap() >= 1, "{out}");

    // A tool that ran and failed: 200 with success false and tool_failed.
    let (status, out) = server
        .tool(
            &key,
            "host_cli",
            json!({"command": "get flow no_such_flow"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["success"], false);
    assert_eq!(out["code"], "tool_failed");
    assert!(
        out["error"].as_str().unwrap().contains("no_such_flow"),
        "{out}"
    );
    assert_eq!(out["tool"], "host_cli");
}

#[tokio::test]
async fn bad_calls_answer_the_error_body_with_the_right_status_and_code() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();

    // Unknown tool.
    let got = server.tool(&key, "drop_everything", json!({})).await;
    let m = assert_error(&got, StatusCode::NOT_FOUND, "tool_not_found");
    assert!(
        m.contains("drop_everything") && m.contains("host_cli"),
        "{m}"
    );

    // Arguments that fail the schema name the field.
    let got = server.tool(&key, "host_cli", json!({})).await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "invalid_arguments");
    assert!(m.contains("'command'"), "{m}");
    let got = server.tool(&key, "host_cli", json!({"command": 5})).await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "invalid_arguments");
    assert!(m.contains("'command'") && m.contains("string"), "{m}");
    let got = server
        .tool(
            &key,
            "search_knowledge_base",
            json!({"query": "x", "limit": 0}),
        )
        .await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "invalid_arguments");
    assert!(m.contains("'limit'"), "{m}");
    let got = server.tool(&key, "host_cli", json!([1, 2])).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_arguments");

    // Malformed JSON and the wrong content type are the API's 400, not axum's text.
    let got = send(
        server
            .request(Method::POST, "/tools/host_cli/execute", Some(&key))
            .header("content-type", "application/json")
            .body("{\"command\": "),
    )
    .await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("not valid JSON"), "{m}");
    let got = send(
        server
            .request(Method::POST, "/tools/host_cli/execute", Some(&key))
            .header("content-type", "text/plain")
            .body("{\"command\": \"list flows\"}"),
    )
    .await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("application/json"), "{m}");

    // A wrong type in a typed body names the field.
    let got = server.post("/keys", &key, json!({"name": 7})).await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("string"), "{m}");
    let got = server.post("/keys", &key, json!({"role": "user"})).await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("name"), "{m}");

    // Over the body limit (1 MiB by default).
    let big = json!({"command": "x".repeat(2 * 1024 * 1024)});
    let got = server.tool(&key, "host_cli", big).await;
    let m = assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(m.contains("1048576"), "{m}");

    // Unknown paths and methods.
    let got = server.get("/nowhere", &key).await;
    let m = assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    assert!(m.contains("openapi.json"), "{m}");
    let got = send(server.request(Method::DELETE, "/tools", Some(&key))).await;
    assert_error(&got, StatusCode::METHOD_NOT_ALLOWED, "bad_request");

    // The server is still up and serving after all of that.
    assert_eq!(server.get("/tools", &key).await.0, StatusCode::OK);
}

#[tokio::test]
async fn health_openapi_and_request_ids() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);

    for path in ["/health", &format!("{BASE}/health")] {
        let (status, health) = send(server.request(Method::GET, path, None)).await;
        assert_eq!(status, StatusCode::OK, "{health}");
        assert_eq!(health["success"], true);
        assert_eq!(health["status"], "ok");
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(health["model"], "built-in-planner");
        assert_eq!(health["tools"], 7);
    }

    let (status, doc) = send(server.request(Method::GET, "/openapi.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/health",
        "/rest/v1/ai-agent/api/openapi.json",
        "/rest/v1/ai-agent/api/tools",
        "/rest/v1/ai-agent/api/tools/{name}/execute",
        "/rest/v1/ai-agent/api/keys",
        "/rest/v1/ai-agent/api/keys/{id}",
        "/rest/v1/ai-agent/api/kb/documents",
        "/rest/v1/ai-agent/api/kb/documents/{name}",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} is in the OpenAPI paths: {:?}",
            paths.keys()
        );
    }
    assert!(paths["/rest/v1/ai-agent/api/keys"].get("post").is_some());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "ErrorBody",
        "ToolList",
        "ToolExecution",
        "CreateKey",
        "KeyInfo",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} is described"
        );
    }

    // Request ids: echoed when sent, generated otherwise, on successes and errors alike.
    let r = server
        .request(Method::GET, "/health", None)
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-42");
    let r = server
        .request(Method::GET, "/tools", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "a generated id: {id}");
    assert!(
        server.log_text().contains(&id),
        "the request id is in the server's log"
    );
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &["--rate-limit", "0.2", "--rate-burst", "3"]);
    let key = server.admin_key();
    for i in 0..3 {
        assert_eq!(
            server.get("/tools", &key).await.0,
            StatusCode::OK,
            "request {i}"
        );
    }
    let r = server
        .request(Method::GET, "/tools", Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    let body: Json = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["success"], false);

    // Another key has its own bucket; health is never limited.
    let (status, created) = server.post("/keys", &key, json!({"name": "other"})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{created}");
    let out = api_util::cli(&data, &["keys", "create", "--name", "other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(server.get("/tools", &other).await.0, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(
            send(server.request(Method::GET, "/health", None)).await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn knowledge_base_documents_are_uploaded_searched_listed_and_removed() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();
    let doc = "# Orders runbook\n\nWhen the zanzibar export stalls, restart the quokka relay \
               and rerun the orders flow.\n";

    let got = send(
        server
            .request(Method::PUT, "/kb/documents/runbooks/orders.md", Some(&key))
            .header("content-type", "text/markdown")
            .body(doc),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["success"], true);
    assert_eq!(got.1["document"]["name"], "runbooks/orders.md");
    assert_eq!(got.1["document"]["title"], "Orders runbook");
    assert_eq!(got.1["document"]["format"], "markdown");

    let (status, list) = server.get("/kb/documents", &key).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["count"], 1);
    assert_eq!(list["documents"][0]["name"], "runbooks/orders.md");
    assert!(list["bundled"].as_u64().unwrap() > 5, "{list}");

    let (_, found) = server
        .tool(
            &key,
            "search_knowledge_base",
            json!({"query": "zanzibar quokka"}),
        )
        .await;
    assert!(
        found["result"].as_str().unwrap().contains("Orders runbook"),
        "{found}"
    );

    // Not text: 400 with the knowledge base's reason. Over the size limit: 413.
    let got = send(
        server
            .request(Method::PUT, "/kb/documents/photo.md", Some(&key))
            .body(vec![0u8, 159, 146, 150, 0, 1, 2, 3]),
    )
    .await;
    let m = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("photo.md"), "{m}");
    let got = send(
        server
            .request(Method::PUT, "/kb/documents/huge.md", Some(&key))
            .body(vec![b'a'; 17 * 1024 * 1024]),
    )
    .await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let (status, removed) = server
        .delete("/kb/documents/runbooks/orders.md", &key)
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["removed"], "runbooks/orders.md");
    let got = server
        .delete("/kb/documents/runbooks/orders.md", &key)
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    let (_, found) = server
        .tool(
            &key,
            "search_knowledge_base",
            json!({"query": "zanzibar quokka"}),
        )
        .await;
    assert!(
        !found["result"].as_str().unwrap().contains("Orders runbook"),
        "removed documents are no longer found: {found}"
    );
}
