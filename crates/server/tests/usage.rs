//! AI usage and caps end to end: the real server with a price table and a tenant cap in a
//! config file and a key cap as a flag, driven against a local OpenAI-compatible provider that
//! reports usage. Runs are recorded with their cost; a run that spends the rest of an allowance
//! stops with `cap_exceeded`; later chats are refused with the public API's answer on `/chat`,
//! in the stream and in a session; a key's own cap stops that key only; `GET /usage` and
//! `etlworks-agent usage` report the same figures. The built-in planner's runs count too.

mod api_util;
mod llm_util;

use api_util::{Server, assert_error, cli, temp_data};
use llm_util::{Provider, Wire, flags, oa_text, oa_tools, stream};
use reqwest::StatusCode;
use serde_json::{Value as Json, json};

fn cli_json(data: &std::path::Path, args: &[&str]) -> Json {
    let out = cli(data, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on standard output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_stop_runs_and_usage_reports_agree() {
    let provider = Provider::start(
        Wire::OpenAi,
        vec![
            // 1. key A: 600 tokens.
            oa_text(&["Hello."], (500, 100)),
            // 2. admin: two calls, 810 tokens (tenant now 1410 of 1500).
            oa_tools(
                &[("call_1", "host_cli", json!({"command": "list connections"}))],
                (300, 50),
            ),
            oa_text(&["One connection."], (400, 60)),
            // 3. key A, allowed 90 more tokens: its first call uses 100, so the run stops
            //    before asking the model again.
            oa_tools(
                &[("call_2", "host_cli", json!({"command": "list flows"}))],
                (80, 20),
            ),
            // 4. key O of tenant 'other': 1050 tokens, over its key cap of 1000.
            oa_text(&["Hi from other."], (900, 150)),
        ],
    )
    .await;
    let (tmp, data) = temp_data();
    let config = tmp.path().join("agent.json");
    std::fs::write(
        &config,
        json!({
            "prices": {"fake-1": {"input": 2.0, "output": 8.0}},
            "caps": {"period": "month", "tenant": {"tokens": 1500}}
        })
        .to_string(),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let mut args = flags(&provider, Wire::OpenAi);
    args.extend([
        "--config".into(),
        config.clone(),
        "--key-cap-tokens".into(),
        "1000".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&data, &args);
    let admin = server.admin_key();
    let (key_a, a) = server
        .create_key(&admin, json!({"name": "analyst", "role": "user"}))
        .await;
    let made = cli(
        &data,
        &[
            "keys", "create", "--name", "o", "--tenant", "other", "--json",
        ],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: Json = serde_json::from_slice(&made.stdout).unwrap();
    let (key_o, o) = (
        made["id"].as_str().unwrap().to_string(),
        made["key"].as_str().unwrap().to_string(),
    );

    let chat = |key: &str, message: &str| {
        let (server, key, message) = (&server, key.to_string(), message.to_string());
        async move {
            server
                .post("/chat", &key, json!({"message": message}))
                .await
                .1
        }
    };
    let body = chat(&a, "hello").await;
    assert_eq!(body["success"], true, "{body}");
    let body = chat(&admin, "what connections?").await;
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["usage"]["total_tokens"], 810);

    // 3: the run stops at the cap, after the tool it asked for ran.
    let body = chat(&a, "and flows?").await;
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], "cap_exceeded");
    assert_eq!(
        body["error"], "AI usage cap exceeded",
        "the public API's words"
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("reached during this run after 1 model calls and 100 tokens"),
        "{detail}"
    );
    assert_eq!(provider.calls().len(), 4, "the model was not asked again");

    // 4: the tenant's cap is spent: refused before the model is asked.
    let got = chat(&admin, "anything").await;
    assert_eq!(
        got.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["success", "error", "code", "detail"]
    );
    assert_eq!(got["code"], "cap_exceeded");
    assert_eq!(got["error"], "AI usage cap exceeded");
    let detail = got["detail"].as_str().unwrap();
    assert!(
        detail.contains("tenant 'default' has used 1510 of its 1500 tokens this month")
            && detail.contains("the cap resets at")
            && detail.contains("--tenant-cap-tokens"),
        "{detail}"
    );
    let frames = stream(
        &server,
        "/chat/stream",
        &admin,
        json!({"message": "anything"}),
    )
    .await;
    let kinds: Vec<&str> = frames.iter().map(|f| f.event.as_str()).collect();
    assert_eq!(kinds, ["start", "error"]);
    assert_eq!(frames[1].data["code"], "cap_exceeded");
    assert_eq!(frames[1].data["error"], "AI usage cap exceeded");
    assert!(
        frames[1].data["detail"]
            .as_str()
            .unwrap()
            .contains("1510 of its 1500")
    );
    let (_, created) = server.post("/sessions", &admin, json!({})).await;
    let sid = created["session_id"].as_str().unwrap();
    let (status, body) = server
        .post(
            &format!("/sessions/{sid}/chat"),
            &admin,
            json!({"message": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["code"], "cap_exceeded");
    let (_, messages) = server
        .get(&format!("/sessions/{sid}/messages"), &admin)
        .await;
    assert_eq!(messages["count"], 0, "a refused question is not stored");
    assert_eq!(provider.calls().len(), 4);

    // Another tenant has its own allowance; its key has its own cap.
    let body = chat(&o, "hi").await;
    assert_eq!(body["success"], true, "{body}");
    let body = chat(&o, "hi again").await;
    assert_eq!(body["code"], "cap_exceeded", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "API key '{key_o}' has used 1050 of its 1000 tokens"
        )) && detail.contains("--key-cap-tokens"),
        "{detail}"
    );

    // GET /usage: the tenant's figures, priced at $2 / $8 per million tokens.
    let (status, report) = server.get("/usage", &admin).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["success"], true);
    assert_eq!(report["tenant"], "default");
    assert_eq!(
        report["totals"],
        json!({"runs": 3, "input_tokens": 1280, "output_tokens": 230, "total_tokens": 1510,
               "tool_calls": 2, "llm_calls": 4, "cost": 0.0044}),
        "{report}"
    );
    assert_eq!(report["group_by"], "key");
    let groups: Vec<(String, u64)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["value"].as_str().unwrap().to_string(),
                g["total_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    let admin_id = groups
        .iter()
        .find(|(k, _)| *k != key_a)
        .map(|(k, _)| k.clone())
        .unwrap();
    assert!(groups.contains(&(key_a.clone(), 700)), "{groups:?}");
    assert!(groups.contains(&(admin_id, 810)), "{groups:?}");
    let cap = &report["caps"][0];
    assert_eq!(cap["scope"], "tenant");
    assert_eq!(cap["tokens_cap"], 1500);
    assert_eq!(cap["tokens_used"], 1510);
    assert_eq!(cap["exceeded"], true);
    let (_, by_model) = server
        .get("/usage?group_by=model&since=month", &admin)
        .await;
    assert_eq!(by_model["groups"][0]["value"], "fake-1", "{by_model}");
    assert_eq!(by_model["groups"][0]["cost"], 0.0044);
    let (_, one_key) = server.get(&format!("/usage?key_id={key_a}"), &admin).await;
    assert_eq!(one_key["totals"]["runs"], 2);
    assert_eq!(one_key["caps"][1]["scope"], "key", "{one_key}");
    assert_eq!(one_key["caps"][1]["tokens_cap"], 1000);
    let (_, future) = server.get("/usage?since=2999-01-01", &admin).await;
    assert_eq!(future["totals"]["runs"], 0);
    let got = server.get("/usage?since=yesterdayish", &admin).await;
    let message = assert_error(&got, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        message.contains("cannot read the time 'yesterdayish'"),
        "{message}"
    );
    let got = server.get("/usage", &a).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");

    // The command line reads the same records and reports the same figures.
    let from_cli = cli_json(
        &data,
        &[
            "--config", &config, "usage", "--tenant", "default", "--json",
        ],
    );
    for field in ["totals", "groups", "group_by", "tenant"] {
        assert_eq!(from_cli[field], report[field], "{field}: {from_cli}");
    }
    assert_eq!(from_cli["caps"][0]["tokens_used"], 1510);
    let everyone = cli_json(&data, &["usage", "--json"]);
    let tenants: Vec<(&str, u64)> = everyone["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["value"].as_str().unwrap(), g["runs"].as_u64().unwrap()))
        .collect();
    assert_eq!(tenants, [("default", 3), ("other", 1)]);
    assert_eq!(everyone["totals"]["total_tokens"], 2560);
    let text = cli(
        &data,
        &["--config", &config, "usage", "--tenant", "default"],
    );
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("AI usage of tenant 'default', all time"),
        "{text}"
    );
    assert!(
        text.contains("TOTAL") && text.contains("0.004400"),
        "{text}"
    );
    assert!(
        text.contains("cap of tenant default: 1510 of 1500 tokens this month"),
        "{text}"
    );
    let bad = cli(&data, &["usage", "--by", "colour"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(
            "--by: cannot group usage by 'colour'; use tenant, key, model, session or day"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_planners_runs_are_recorded_at_no_cost() {
    let (_tmp, data) = temp_data();
    let server = Server::start(&data, &[]);
    let key = server.admin_key();
    let (_, body) = server
        .post("/chat", &key, json!({"message": "list my connections"}))
        .await;
    assert_eq!(body["success"], true, "{body}");
    let (_, report) = server.get("/usage?group_by=model", &key).await;
    assert_eq!(report["totals"]["runs"], 1, "{report}");
    assert_eq!(
        report["totals"]["input_tokens"],
        body["usage"]["input_tokens"]
    );
    assert_eq!(
        report["totals"]["output_tokens"],
        body["usage"]["output_tokens"]
    );
    assert_eq!(report["totals"]["llm_calls"], 2);
    assert_eq!(report["totals"]["cost"], 0.0);
    assert_eq!(report["groups"][0]["value"], "built-in-planner");
    assert_eq!(report["caps"], json!([]), "no caps configured");
    let (_, openapi) = api_util::send(server.request(
        reqwest::Method::GET,
        "/rest/v1/ai-agent/api/openapi.json",
        None,
    ))
    .await;
    let usage = &openapi["paths"]["/rest/v1/ai-agent/api/usage"]["get"];
    assert_eq!(
        usage["tags"],
        json!(["usage"]),
        "GET /usage is documented: {usage}"
    );
    let params: Vec<&str> = usage["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        ["since", "until", "key_id", "session_id", "group_by"]
    );
}
