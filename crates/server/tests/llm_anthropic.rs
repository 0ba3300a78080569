//! The real `etlworks-agent serve` pointed (`--llm anthropic --llm-base-url`) at a local server
//! speaking Anthropic's Messages streaming format: a multi-step tool conversation through
//! `/chat` and `/chat/stream` with the requests checked (key and version headers, the system
//! prompt in `system`, tools with `input_schema`, `tool_use` and `tool_result` blocks), and a
//! stream that stalls after its first block.

mod api_util;
mod llm_util;

use api_util::{Server, send, temp_data};
use llm_util::{Part, Provider, Wire, an_text, an_tools, flags, stream, tokens};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

fn start(provider: &Provider, extra: &[&str]) -> (tempfile::TempDir, Server) {
    let (tmp, data) = temp_data();
    let mut args = flags(provider, Wire::Anthropic);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_env(&data, &args, &[("ANTHROPIC_API_KEY", "sk-ant-test-42")]);
    (tmp, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_conversation_over_the_messages_api() {
    let provider = Provider::start(
        Wire::Anthropic,
        vec![
            an_tools(
                Some("Let me look."),
                &[(
                    "toolu_1",
                    "host_cli",
                    json!({"command": "list connections"}),
                )],
                (1400, 40),
            ),
            an_text(&["You have ", "one connection: warehouse."], (1500, 11)),
            an_tools(
                None,
                &[
                    ("toolu_2", "get_connector_info", json!({"type": "http"})),
                    (
                        "toolu_3",
                        "search_templates",
                        json!({"query": "github issues"}),
                    ),
                ],
                (1300, 50),
            ),
            an_text(&["The http connector and a GitHub template."], (1700, 12)),
        ],
    )
    .await;
    let (_tmp, server) = start(&provider, &[]);
    assert!(
        server
            .banner
            .contains("serves the model 'fake-1' (Fake Claude)"),
        "{}",
        server.banner
    );
    let check = &provider.seen()[0];
    assert_eq!(
        check.path, "/v1/models/fake-1",
        "the start-up check asks for the model"
    );
    let (_, health) = send(server.request(Method::GET, "/health", None)).await;
    assert_eq!(health["llm"]["provider"], "anthropic");
    assert_eq!(health["llm"]["reachable"], true, "{health}");

    let key = server.admin_key();
    let (status, body) = server
        .post(
            "/chat",
            &key,
            json!({"message": "what connections do I have?"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(
        body["response"], "Let me look.\n\nYou have one connection: warehouse.",
        "text of both model calls, a paragraph apart"
    );
    assert_eq!(body["tools_used"], json!(["host_cli"]));
    assert_eq!(
        body["tool_calls"][0]["arguments"],
        json!({"command": "list connections"})
    );
    assert_eq!(body["usage"]["input_tokens"], 2900);
    assert_eq!(body["usage"]["output_tokens"], 51);
    assert_eq!(body["usage"]["llm_calls"], 2);

    let calls = provider.calls();
    let first = &calls[0];
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.header("x-api-key"), Some("sk-ant-test-42"));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(first.body["model"], "fake-1");
    assert_eq!(first.body["stream"], true);
    assert!(
        first.body["max_tokens"].as_u64().unwrap() > 0,
        "Anthropic requires max_tokens"
    );
    let system = first.body["system"]
        .as_str()
        .expect("the prompt goes in `system`");
    assert!(system.contains("etlworks-agent") && system.contains("Never reveal secrets"));
    assert!(
        first.messages().iter().all(|m| m["role"] != "system"),
        "no system message among the messages"
    );
    let tool = first.body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "host_cli")
        .expect("host_cli offered");
    assert_eq!(tool["input_schema"]["required"], json!(["command"]));
    let second = calls[1].messages();
    let roles: Vec<&str> = second.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    let assistant = second[1]["content"].as_array().unwrap();
    assert_eq!(
        assistant[0],
        json!({"type": "text", "text": "Let me look."})
    );
    assert_eq!(assistant[1]["type"], "tool_use");
    assert_eq!(assistant[1]["id"], "toolu_1");
    assert_eq!(
        assistant[1]["input"],
        json!({"command": "list connections"})
    );
    let result = &second[2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], "toolu_1");
    let text = match &result["content"] {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert!(text.contains("warehouse"), "{result}");

    // Streamed, with two tool calls whose results go back in one user message.
    let frames = stream(
        &server,
        "/chat/stream",
        &key,
        json!({"message": "how do I pull GitHub issues?"}),
    )
    .await;
    let done = &frames.last().unwrap().data;
    assert_eq!(frames.last().unwrap().event, "done", "{frames:?}");
    assert_eq!(tokens(&frames), done["response"].as_str().unwrap());
    assert_eq!(
        done["tools_used"],
        json!(["get_connector_info", "search_templates"])
    );
    let results = &provider.calls()[3].messages()[2]["content"];
    let ids: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["tool_use_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["toolu_2", "toolu_3"],
        "both results in one user message"
    );
    assert_eq!(provider.unanswered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_stream_that_stalls_ends_with_an_error_event() {
    let mut stalls = an_text(&["Thinking"], (100, 1));
    // Keep message_start, the block start, the ping and one delta; then silence.
    stalls.parts.truncate(4);
    let stalls = stalls.then(Part::Stall);
    let provider = Provider::start(Wire::Anthropic, vec![stalls]).await;
    let (_tmp, server) = start(&provider, &["--llm-idle-timeout", "1"]);
    let key = server.admin_key();
    let frames = stream(&server, "/chat/stream", &key, json!({"message": "hi"})).await;
    assert_eq!(tokens(&frames), "Thinking");
    let last = frames.last().unwrap();
    assert_eq!(last.event, "error", "{frames:?}");
    assert_eq!(last.data["code"], "llm_unavailable");
    assert!(
        last.data["error"]
            .as_str()
            .unwrap()
            .contains("sent nothing for 1 s"),
        "{}",
        last.data
    );
}
