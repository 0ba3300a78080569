//! A fake LLM provider for the end-to-end tests: a real HTTP server on 127.0.0.1 speaking
//! OpenAI's Chat Completions or Anthropic's Messages streaming wire format, as published. It
//! records every request the agent server sends (path, headers, JSON body) and answers each
//! model call with the next scripted reply, written piece by piece (with waits or a stall).
//! The start-up check (`GET /v1/models`, `GET /v1/models/{model}`) answers 200 unless told
//! otherwise.

#![allow(dead_code)] // each llm_* test file uses a different part

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{Value as Json, json};

/// Which provider the fake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// One piece of a reply body.
#[derive(Clone, Debug)]
pub enum Part {
    Send(String),
    Wait(Duration),
    /// Sends nothing more, ever (the connection stays open).
    Stall,
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub parts: Vec<Part>,
}

impl Reply {
    pub fn sse(events: Vec<String>) -> Reply {
        Reply {
            status: 200,
            content_type: "text/event-stream",
            parts: events.into_iter().map(Part::Send).collect(),
        }
    }

    pub fn json(status: u16, body: Json) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            parts: vec![Part::Send(body.to_string())],
        }
    }

    pub fn then(mut self, part: Part) -> Reply {
        self.parts.push(part);
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Json,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// OpenAI: the `messages`; Anthropic: the `messages` (the system prompt is separate).
    pub fn messages(&self) -> Vec<Json> {
        self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The names of the tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        self.body["tools"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .map(|t| {
                        t.pointer("/function/name")
                            .or_else(|| t.get("name"))
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Shared {
    wire: Wire,
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// The answer to the start-up check, when not the default 200.
    check: Mutex<Option<Reply>>,
}

/// A running fake provider.
pub struct Provider {
    /// `http://127.0.0.1:PORT`
    pub root: String,
    shared: Arc<Shared>,
}

impl Provider {
    pub async fn start(wire: Wire, replies: Vec<Reply>) -> Provider {
        let shared = Arc::new(Shared {
            wire,
            replies: Mutex::new(replies.into()),
            seen: Mutex::new(Vec::new()),
            check: Mutex::new(None),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Provider { root, shared }
    }

    /// What `--llm-base-url` takes: `<root>/v1` for OpenAI, `<root>` for Anthropic.
    pub fn base_url(&self) -> String {
        match self.shared.wire {
            Wire::OpenAi => format!("{}/v1", self.root),
            Wire::Anthropic => self.root.clone(),
        }
    }

    /// Answers the start-up check with `reply` from now on.
    pub fn fail_check(&self, reply: Reply) {
        *self.shared.check.lock().unwrap() = Some(reply);
    }

    pub fn push(&self, reply: Reply) {
        self.shared.replies.lock().unwrap().push_back(reply);
    }

    /// Every request received, the start-up check included.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The model calls (POSTs) received, in order.
    pub fn calls(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST")
            .collect()
    }

    pub fn unanswered(&self) -> usize {
        self.shared.replies.lock().unwrap().len()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Json::Null),
    };
    shared.seen.lock().unwrap().push(seen);
    let reply = if method == Method::GET {
        let failed = shared.check.lock().unwrap().clone();
        failed.unwrap_or_else(|| match shared.wire {
            Wire::OpenAi => Reply::json(
                200,
                json!({"object": "list", "data": [{"id": "fake-1", "object": "model", "owned_by": "test"}]}),
            ),
            Wire::Anthropic => {
                let model = uri.path().rsplit('/').next().unwrap_or_default().to_string();
                Reply::json(
                    200,
                    json!({"type": "model", "id": model, "display_name": "Fake Claude", "created_at": "2025-01-01T00:00:00Z"}),
                )
            }
        })
    } else {
        let next = shared.replies.lock().unwrap().pop_front();
        next.unwrap_or_else(|| {
            Reply::json(
                500,
                json!({"error": {"message": "the test scripted no more replies", "type": "server_error"}}),
            )
        })
    };
    let parts = reply.parts.clone();
    let stream = futures::stream::unfold(parts.into_iter(), |mut parts| async move {
        loop {
            match parts.next()? {
                Part::Send(text) => {
                    return Some((Ok::<_, std::io::Error>(Bytes::from(text)), parts));
                }
                Part::Wait(d) => tokio::time::sleep(d).await,
                Part::Stall => futures::future::pending::<()>().await,
            }
        }
    });
    Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .body(Body::from_stream(stream))
        .unwrap()
}

// ---- OpenAI Chat Completions streaming --------------------------------------------------------

fn oa_chunk(delta: Json, finish: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake-1",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {chunk}\n\n")
}

fn oa_usage(input: u64, output: u64) -> String {
    let chunk = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "fake-1",
        "choices": [],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    });
    format!("data: {chunk}\n\n")
}

/// An answer in text, streamed in `parts`, with usage.
pub fn oa_text(parts: &[&str], usage: (u64, u64)) -> Reply {
    let mut events = vec![oa_chunk(json!({"role": "assistant", "content": ""}), None)];
    for p in parts {
        events.push(oa_chunk(json!({"content": p}), None));
    }
    events.push(oa_chunk(json!({}), Some("stop")));
    events.push(oa_usage(usage.0, usage.1));
    events.push("data: [DONE]\n\n".into());
    Reply::sse(events)
}

/// Tool calls (id, name, arguments), each call's arguments streamed in 7-character pieces,
/// with usage and `finish_reason: tool_calls`.
pub fn oa_tools(calls: &[(&str, &str, Json)], usage: (u64, u64)) -> Reply {
    let mut events = vec![oa_chunk(
        json!({"role": "assistant", "content": null}),
        None,
    )];
    for (index, (id, name, args)) in calls.iter().enumerate() {
        events.push(oa_chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        let text = args.to_string();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(7) {
            let piece: String = piece.iter().collect();
            events.push(oa_chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(oa_chunk(json!({}), Some("tool_calls")));
    events.push(oa_usage(usage.0, usage.1));
    events.push("data: [DONE]\n\n".into());
    Reply::sse(events)
}

// ---- Anthropic Messages streaming ---------------------------------------------------------------

fn an_event(kind: &str, data: Json) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

fn an_start(input: u64) -> String {
    an_event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_test", "type": "message", "role": "assistant", "content": [], "model": "claude-fake", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
    )
}

fn an_end(stop: &str, output: u64) -> Vec<String> {
    vec![
        an_event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output}}),
        ),
        an_event("message_stop", json!({"type": "message_stop"})),
    ]
}

/// An answer in text, streamed in `parts`, with usage.
pub fn an_text(parts: &[&str], usage: (u64, u64)) -> Reply {
    let mut events = vec![
        an_start(usage.0),
        an_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        an_event("ping", json!({"type": "ping"})),
    ];
    for p in parts {
        events.push(an_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    events.push(an_event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.extend(an_end("end_turn", usage.1));
    Reply::sse(events)
}

/// Optional text, then tool_use blocks whose input is streamed as `input_json_delta` pieces
/// of 5 characters, with usage and `stop_reason: tool_use`.
pub fn an_tools(text: Option<&str>, calls: &[(&str, &str, Json)], usage: (u64, u64)) -> Reply {
    let mut events = vec![an_start(usage.0)];
    let mut index = 0;
    if let Some(t) = text {
        events.push(an_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(an_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
        ));
        events.push(an_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    for (id, name, args) in calls {
        events.push(an_event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        ));
        let text = args.to_string();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(5) {
            let piece: String = piece.iter().collect();
            events.push(an_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(an_event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    events.extend(an_end("tool_use", usage.1));
    Reply::sse(events)
}

// ---- SSE frames from the agent server -----------------------------------------------------------

/// One parsed frame of `/chat/stream`.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub data: Json,
}

/// Parses a whole event stream (comment lines skipped).
pub fn frames(text: &str) -> Vec<Frame> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        let Some(event) = event else { continue };
        let data: Json = serde_json::from_str(&data).expect("each frame's data is JSON");
        assert_eq!(data["type"], event.as_str(), "event and type agree: {data}");
        out.push(Frame { event, data });
    }
    out
}

/// The concatenated `token` contents.
pub fn tokens(frames: &[Frame]) -> String {
    frames
        .iter()
        .filter(|f| f.event == "token")
        .map(|f| f.data["content"].as_str().unwrap_or_default())
        .collect()
}

/// Posts `body` to a stream endpoint and reads the whole event stream.
pub async fn stream(
    server: &crate::api_util::Server,
    path: &str,
    key: &str,
    body: Json,
) -> Vec<Frame> {
    let response = server
        .request(reqwest::Method::POST, path, Some(key))
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    frames(&response.text().await.expect("the stream ends"))
}

/// The flags that point `serve` at `provider` with model `fake-1`.
pub fn flags(provider: &Provider, wire: Wire) -> Vec<String> {
    let name = match wire {
        Wire::OpenAi => "openai",
        Wire::Anthropic => "anthropic",
    };
    vec![
        "--llm".into(),
        name.into(),
        "--llm-base-url".into(),
        provider.base_url(),
        "--llm-model".into(),
        "fake-1".into(),
    ]
}
