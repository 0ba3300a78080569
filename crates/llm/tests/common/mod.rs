//! A scripted provider server for the tests: a real axum server on 127.0.0.1 that records every
//! request (method, path, query, headers, JSON body) and answers each with the next scripted
//! reply, streamed part by part with waits, stalls, keep-alives and aborted connections.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use etl_llm::{Event, EventStream, LlmError};
use futures::StreamExt;
use serde_json::Value as Json;

/// One piece of a reply body.
#[derive(Clone, Debug)]
pub enum Part {
    Send(String),
    Wait(Duration),
    /// Ends the connection abruptly (no proper end of the chunked body).
    Abort,
    /// Sends nothing more, ever (the connection stays open).
    Stall,
    /// Sends an SSE comment at this interval, forever.
    KeepAlive(Duration),
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Wait before sending the status and headers.
    pub delay: Duration,
    pub parts: Vec<Part>,
}

impl Reply {
    /// A 200 event stream, each string sent as its own write.
    pub fn sse<S: AsRef<str>>(events: &[S]) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            delay: Duration::ZERO,
            parts: events
                .iter()
                .map(|e| Part::Send(e.as_ref().to_string()))
                .collect(),
        }
    }

    /// A 200 event stream whose bytes are cut every `every` bytes, wherever that falls (inside
    /// a field name, a JSON string, a multi-byte character's neighbourhood), each piece written
    /// after a short pause so the client reads them separately.
    pub fn sse_in_pieces<S: AsRef<str>>(events: &[S], every: usize) -> Reply {
        let text: String = events.iter().map(|e| e.as_ref()).collect();
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut start = 0;
        while start < bytes.len() {
            let mut end = (start + every).min(bytes.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            parts.push(Part::Send(text[start..end].to_string()));
            if parts.len() % 17 == 16 {
                parts.push(Part::Wait(Duration::from_millis(1)));
            }
            start = end;
        }
        Reply {
            parts,
            ..Reply::sse::<&str>(&[])
        }
    }

    /// A JSON answer with `status`.
    pub fn json(status: u16, body: Json) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            delay: Duration::ZERO,
            parts: vec![Part::Send(body.to_string())],
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn then(mut self, part: Part) -> Reply {
        self.parts.push(part);
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    /// The body as JSON (`Null` when empty).
    pub body: Json,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// Reply bodies dropped: finished, or abandoned because the client went away.
    closed: AtomicUsize,
}

pub struct Mock {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    shared: Arc<Shared>,
}

impl Mock {
    pub async fn start(replies: Vec<Reply>) -> Mock {
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            ..Shared::default()
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mock { url, shared }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn unanswered(&self) -> usize {
        self.shared.replies.lock().unwrap().len()
    }

    /// Waits until `n` reply bodies have been dropped by the server.
    pub async fn wait_closed(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.shared.closed.load(Ordering::SeqCst) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    pub fn closed(&self) -> usize {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

struct Guard(Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
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
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
        body: if body.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&body).expect("the client sent JSON")
        },
    };
    shared.seen.lock().unwrap().push(seen);
    let reply = shared.replies.lock().unwrap().pop_front();
    let Some(reply) = reply else {
        return Response::builder()
            .status(599)
            .body(Body::from("the test scripted no reply for this request"))
            .unwrap();
    };
    tokio::time::sleep(reply.delay).await;
    let parts: VecDeque<Part> = reply.parts.into();
    let guard = Guard(shared.clone());
    let body = futures::stream::unfold(
        (parts, guard, false),
        |(mut parts, guard, ended)| async move {
            if ended {
                return None;
            }
            loop {
                match parts.pop_front()? {
                    Part::Send(text) => return Some((Ok(text), (parts, guard, false))),
                    Part::Wait(d) => tokio::time::sleep(d).await,
                    Part::Abort => {
                        return Some((
                            Err(std::io::Error::other("aborted by the test")),
                            (parts, guard, true),
                        ));
                    }
                    Part::Stall => std::future::pending::<()>().await,
                    Part::KeepAlive(every) => {
                        tokio::time::sleep(every).await;
                        parts.push_front(Part::KeepAlive(every));
                        return Some((Ok(": keep-alive\n\n".to_string()), (parts, guard, false)));
                    }
                }
            }
        },
    );
    let mut response = Response::builder().status(reply.status);
    for (k, v) in reply.headers {
        response = response.header(k, v);
    }
    response.body(Body::from_stream(body)).unwrap()
}

/// Reads a stream to its end: the events, then the error that ended it, if any.
pub async fn collect(mut stream: EventStream) -> (Vec<Event>, Option<LlmError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(e) => {
                assert!(stream.next().await.is_none(), "nothing after an error");
                return (events, Some(e));
            }
        }
    }
    (events, None)
}

/// The text of the `Text` events.
pub fn text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// Options for tests: short waits, three attempts, a 2 s idle timeout.
pub fn quick_http() -> etl_llm::HttpOptions {
    etl_llm::HttpOptions {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
        headers: Vec::new(),
    }
}

/// A port nothing listens on.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// The tools both provider tests offer.
pub fn tools() -> Vec<etl_llm::ToolSpec> {
    vec![
        etl_llm::ToolSpec {
            name: "host_cli".into(),
            description: "Runs host-language statements.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            }),
        },
        etl_llm::ToolSpec {
            name: "search_kb".into(),
            description: "Searches the knowledge base.".into(),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            }),
        },
    ]
}
