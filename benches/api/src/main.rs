//! `bench-api`: the paginated JSON API used by `benches/run.sh` (load 2, HTTP → PostgreSQL).
//!
//! It reads an NDJSON file (one JSON record per line, written by the benchmark driver), cuts it
//! into pages of `--page-size` records and pre-renders every page as the bytes of
//! `{"data": [...]}` before it starts listening, so answering a request is a cheap clone of an
//! in-memory buffer: the API is never the bottleneck of the load being measured.
//!
//! `POST /v1/chat/completions` is a scripted OpenAI-compatible model for the provider-overhead
//! benchmark: whatever it is asked, it streams `--llm-tokens` chunks of text (`" tok"`), the
//! first after `--llm-first-token-ms`, then one every `--llm-interval-ms`, then the finish and a
//! usage chunk and `data: [DONE]`; `GET /v1/models` lists the one model `fake`.
//!
//! `GET /slow?ms=N` answers `{"data": []}` after N milliseconds (the Agent API benchmark uses it
//! as a tool that keeps a stream open).
//!
//! `GET /records?page=N` (1-based, `per_page` optional but must equal `--page-size`) answers page
//! N; a page past the end answers `{"data": []}`. Once listening, the bound address is printed
//! on stdout as `listening on http://127.0.0.1:PORT` (bind to port 0 for a free port). It stops
//! on SIGTERM or Ctrl-C and then prints how many requests it served on stderr.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use serde::Deserialize;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "bench-api",
    about = "Serve an NDJSON file as a paginated JSON API"
)]
struct Args {
    /// NDJSON file: one JSON object per line.
    #[arg(long)]
    ndjson: PathBuf,
    /// Records per page.
    #[arg(long, default_value_t = 10_000)]
    page_size: usize,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Text chunks a chat completion streams.
    #[arg(long, default_value_t = 100)]
    llm_tokens: usize,
    /// Milliseconds before the first chunk.
    #[arg(long, default_value_t = 20)]
    llm_first_token_ms: u64,
    /// Milliseconds between chunks.
    #[arg(long, default_value_t = 5)]
    llm_interval_ms: u64,
}

/// How the scripted model answers.
#[derive(Clone, Copy, Debug)]
struct FakeLlm {
    tokens: usize,
    first: std::time::Duration,
    interval: std::time::Duration,
}

/// A streamed chat completion, paced as configured.
async fn completion(llm: FakeLlm) -> Response {
    use futures::StreamExt;
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\
             \"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let first = chunk(r#"{"role":"assistant","content":" tok"}"#, "null");
    let next = chunk(r#"{"content":" tok"}"#, "null");
    let tail = format!(
        "{}data: {{\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":0,\
         \"model\":\"fake\",\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\
         \"completion_tokens\":{},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
        chunk("{}", "\"stop\""),
        llm.tokens,
        llm.tokens + 10
    );
    let stream = futures::stream::iter(0..=llm.tokens).then(move |i| {
        let (first, next, tail) = (first.clone(), next.clone(), tail.clone());
        async move {
            let wait = if i == 0 { llm.first } else { llm.interval };
            tokio::time::sleep(wait).await;
            let text = match i {
                0 => first,
                i if i == llm.tokens => tail,
                _ => next,
            };
            Ok::<_, std::convert::Infallible>(Bytes::from(text))
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// The pre-rendered pages and a request counter, shared by all handlers.
struct Pages {
    bodies: Vec<Bytes>,
    page_size: usize,
    served: AtomicU64,
}

/// Query parameters of `GET /records`.
#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<usize>,
    per_page: Option<usize>,
}

/// The body of a page past the last one.
const EMPTY_PAGE: &[u8] = br#"{"data":[]}"#;

/// Reads the NDJSON file and renders it as `{"data":[...]}` bodies of `page_size` records each.
/// Lines are copied verbatim (blank lines skipped), so the file must hold valid JSON objects.
fn render_pages(path: &PathBuf, page_size: usize) -> anyhow::Result<(Vec<Bytes>, usize)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let mut bodies = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut in_page = 0usize;
    let mut records = 0usize;
    for line in reader.lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('{') {
            bail!(
                "{} line {}: expected a JSON object, found {:.40}",
                path.display(),
                records + 1,
                line
            );
        }
        current.extend_from_slice(if in_page == 0 { b"{\"data\":[" } else { b"," });
        current.extend_from_slice(line.as_bytes());
        in_page += 1;
        records += 1;
        if in_page == page_size {
            current.extend_from_slice(b"]}");
            bodies.push(Bytes::from(std::mem::take(&mut current)));
            in_page = 0;
        }
    }
    if in_page > 0 {
        current.extend_from_slice(b"]}");
        bodies.push(Bytes::from(current));
    }
    Ok((bodies, records))
}

/// `GET /records?page=N`: the pre-rendered page N (1-based), or an empty page past the end.
async fn records(State(pages): State<Arc<Pages>>, Query(query): Query<PageQuery>) -> Response {
    pages.served.fetch_add(1, Ordering::Relaxed);
    if let Some(per_page) = query.per_page
        && per_page != pages.page_size
    {
        let message = format!(
            "per_page={per_page} but this server was started with --page-size {}",
            pages.page_size
        );
        return (StatusCode::BAD_REQUEST, message).into_response();
    }
    let page = query.page.unwrap_or(1);
    let body = match page.checked_sub(1).and_then(|i| pages.bodies.get(i)) {
        Some(body) => body.clone(),
        None if page == 0 => {
            return (StatusCode::BAD_REQUEST, "pages are numbered from 1").into_response();
        }
        None => Bytes::from_static(EMPTY_PAGE),
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Resolves when the process receives SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Query of `GET /slow`.
#[derive(Debug, Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

/// An empty page after `ms` milliseconds (1,000 by default, 10 minutes at most).
async fn slow(Query(query): Query<SlowQuery>) -> Response {
    let ms = query.ms.unwrap_or(1_000).min(600_000);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    ([(header::CONTENT_TYPE, "application/json")], EMPTY_PAGE).into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.page_size == 0 {
        bail!("--page-size must be at least 1");
    }
    let (bodies, record_count) = render_pages(&args.ndjson, args.page_size)?;
    let page_count = bodies.len();
    let llm = FakeLlm {
        tokens: args.llm_tokens.max(1),
        first: std::time::Duration::from_millis(args.llm_first_token_ms),
        interval: std::time::Duration::from_millis(args.llm_interval_ms),
    };
    let pages = Arc::new(Pages {
        bodies,
        page_size: args.page_size,
        served: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/records", get(records))
        .route("/slow", get(slow))
        .route(
            "/v1/models",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"object":"list","data":[{"id":"fake","object":"model","owned_by":"bench"}]}"#,
                )
            }),
        )
        .route(
            "/v1/chat/completions",
            axum::routing::post(move || completion(llm)),
        )
        .with_state(Arc::clone(&pages));
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "bench-api: {record_count} records in {page_count} pages of {}",
        args.page_size
    );
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;
    }
    // TCP_NODELAY, as real providers and APIs do: otherwise a small chunk written right after
    // the headers waits for the client's delayed ACK (~40 ms) and the benchmark measures that.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    eprintln!(
        "bench-api: served {} requests",
        pages.served.load(Ordering::Relaxed)
    );
    Ok(())
}
