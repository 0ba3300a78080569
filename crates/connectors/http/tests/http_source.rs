//! End-to-end tests of the http connector against a real axum server on 127.0.0.1:0: every
//! pagination style, every auth style, retries, timeouts, bad bodies and cancellation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use etl_http::HttpConnector;
use etl_model::{
    Batch, ConnectionConfig, Connector, ConnectorError, ErrorKind, Incremental, Props, RunContext,
    RunLogger, SourceRequest, Value,
};
use serde_json::{Value as Json, json};

const TOTAL: usize = 237;

#[derive(Default)]
struct Server {
    hits: AtomicUsize,
    /// Query strings and selected headers of every request, for assertions.
    seen: Mutex<Vec<(String, HashMap<String, String>)>>,
}

type Shared = State<Arc<Server>>;
type Q = Query<HashMap<String, String>>;

fn item(i: usize) -> Json {
    json!({"id": i, "name": format!("item {i}")})
}

fn slice(from: usize, n: usize) -> Vec<Json> {
    (from..(from + n).min(TOTAL + 1)).map(item).collect()
}

fn num(q: &HashMap<String, String>, key: &str, default: usize) -> usize {
    q.get(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn host(h: &HeaderMap) -> String {
    h.get(header::HOST).unwrap().to_str().unwrap().to_string()
}

fn record(s: &Server, h: &HeaderMap, q: &HashMap<String, String>) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut q = q.clone();
    for name in ["authorization", "x-api-key", "x-trace", "accept"] {
        if let Some(v) = h.get(name) {
            q.insert(format!("header:{name}"), v.to_str().unwrap().to_string());
        }
    }
    s.seen.lock().unwrap().push((String::new(), q));
}

/// Ids 1..=TOTAL, `per_page` per page (default 50), as a bare array.
async fn by_page(State(s): Shared, h: HeaderMap, Query(q): Q) -> Json2 {
    record(&s, &h, &q);
    let size = num(&q, "per_page", 50);
    let page = num(&q, "page", 1);
    Json2(Json::Array(slice((page - 1) * size + 1, size)))
}

async fn by_offset(State(s): Shared, h: HeaderMap, Query(q): Q) -> Json2 {
    record(&s, &h, &q);
    let limit = num(&q, "limit", 40);
    let offset = num(&q, "offset", 0);
    Json2(json!({"data": slice(offset + 1, limit), "total": TOTAL}))
}

async fn by_cursor(State(s): Shared, h: HeaderMap, Query(q): Q) -> Json2 {
    record(&s, &h, &q);
    let from = q
        .get("after")
        .map(|c| c.trim_start_matches("c").parse::<usize>().unwrap() + 1)
        .unwrap_or(1);
    let items = slice(from, 30);
    let last = from + items.len() - 1;
    let next = if last < TOTAL {
        json!(format!("c{last}"))
    } else {
        Json::Null
    };
    Json2(json!({"items": items, "meta": {"next_cursor": next}}))
}

async fn by_next_url(State(s): Shared, h: HeaderMap, Query(q): Q) -> Json2 {
    record(&s, &h, &q);
    let from = num(&q, "from", 1);
    let items = slice(from, 45);
    let next_from = from + items.len();
    let next = if next_from > TOTAL {
        Json::Null
    } else if q.contains_key("absolute") {
        json!(format!(
            "http://{}/next?absolute=1&from={next_from}",
            host(&h)
        ))
    } else {
        json!(format!("next?from={next_from}"))
    };
    Json2(json!({"results": items, "links": {"next": next}}))
}

async fn by_link(State(s): Shared, h: HeaderMap, Query(q): Q) -> Response {
    record(&s, &h, &q);
    let page = num(&q, "page", 1);
    let items = slice((page - 1) * 60 + 1, 60);
    let mut links = vec![format!("<http://{}/link?page=1>; rel=\"first\"", host(&h))];
    if page * 60 < TOTAL {
        links.push(format!(
            "<http://{}/link?page={}>; rel=\"next\"",
            host(&h),
            page + 1
        ));
    }
    (
        [(header::LINK, links.join(", "))],
        Json2(Json::Array(items)),
    )
        .into_response()
}

async fn search(State(s): Shared, h: HeaderMap, body: String) -> Json2 {
    let b: Json = serde_json::from_str(&body).unwrap();
    let mut q = HashMap::new();
    q.insert("body".to_string(), body.clone());
    record(&s, &h, &q);
    assert_eq!(b["filter"], "active");
    let size = b["size"].as_u64().unwrap() as usize;
    let page = b["page"].as_u64().unwrap() as usize;
    Json2(json!({"hits": slice(page * size + 1, size)}))
}

/// Accepts exactly one credential form, chosen by the `kind` query parameter.
async fn guarded(State(s): Shared, h: HeaderMap, Query(q): Q) -> Response {
    record(&s, &h, &q);
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ok = match q.get("kind").map(String::as_str) {
        Some("bearer") => get("authorization") == "Bearer tok-123456",
        Some("basic") => get("authorization") == "Basic YWxpY2U6czNjcmV0IQ==",
        Some("header") => get("x-api-key") == "key-abcdef",
        Some("custom_header") => get("x-token") == "key-abcdef",
        Some("query") => q.get("apikey").map(String::as_str) == Some("key-abcdef"),
        _ => false,
    };
    if ok {
        Json2(json!([{"ok": true}])).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json2(json!({"message": "Bad credentials"})),
        )
            .into_response()
    }
}

async fn flaky_429(State(s): Shared, h: HeaderMap, Query(q): Q) -> Response {
    record(&s, &h, &q);
    if s.hits.load(Ordering::SeqCst) == 1 {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "slow down",
        )
            .into_response()
    } else {
        Json2(json!([{"id": 1}])).into_response()
    }
}

async fn flaky_500(State(s): Shared, h: HeaderMap, Query(q): Q) -> Response {
    record(&s, &h, &q);
    if s.hits.load(Ordering::SeqCst) <= 2 {
        (StatusCode::INTERNAL_SERVER_ERROR, "temporary glitch").into_response()
    } else {
        Json2(json!([{"id": 1}, {"id": 2}])).into_response()
    }
}

async fn always_500(State(s): Shared, h: HeaderMap, Query(q): Q) -> Response {
    record(&s, &h, &q);
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "{\"error\": \"database unavailable\"}",
    )
        .into_response()
}

async fn stall(State(s): Shared, h: HeaderMap, Query(q): Q) -> Json2 {
    record(&s, &h, &q);
    tokio::time::sleep(Duration::from_secs(20)).await;
    Json2(json!([]))
}

async fn html() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html")],
        "<html><body>Welcome to our portal</body></html>",
    )
        .into_response()
}

async fn nested() -> Json2 {
    Json2(json!({
        "data": {"items": [
            {"id": 1, "address": {"city": "Paris", "geo": {"lat": 48.85}}, "tags": ["a", "b"]},
            {"id": 2, "address": {"city": "Oslo"}, "extra": true}
        ]},
        "meta": {"count": 2}
    }))
}

async fn same_page(State(s): Shared, h: HeaderMap, Query(q): Q) -> Json2 {
    record(&s, &h, &q);
    Json2(Json::Array(slice(1, 10)))
}

/// Redirects to the same server under another host name.
async fn moved(h: HeaderMap) -> Response {
    let port = host(&h).rsplit(':').next().unwrap().to_string();
    (
        StatusCode::FOUND,
        [(
            header::LOCATION,
            format!("http://localhost:{port}/page?per_page=5"),
        )],
    )
        .into_response()
}

async fn echo(State(s): Shared, h: HeaderMap, Query(q): Q) -> Json2 {
    record(&s, &h, &q);
    Json2(json!([q]))
}

/// A JSON response with the proper content type.
struct Json2(Json);
impl IntoResponse for Json2 {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            self.0.to_string(),
        )
            .into_response()
    }
}

async fn start() -> (String, Arc<Server>) {
    let state = Arc::new(Server::default());
    let app = Router::new()
        .route("/page", get(by_page))
        .route("/offset", get(by_offset))
        .route("/cursor", get(by_cursor))
        .route("/next", get(by_next_url))
        .route("/link", get(by_link))
        .route("/search", post(search))
        .route("/guarded", get(guarded))
        .route("/flaky429", get(flaky_429))
        .route("/flaky500", get(flaky_500))
        .route("/always500", get(always_500))
        .route("/stall", get(stall))
        .route("/html", get(html))
        .route("/nested", get(nested))
        .route("/same", get(same_page))
        .route("/echo", get(echo))
        .route("/moved", get(moved))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);
impl RunLogger for Lines {
    fn log(&self, level: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{level}: {message}"));
    }
}

fn conn(base: &str, extra: &[(&str, &str)]) -> ConnectionConfig {
    let mut props = Props::new().with("url", base).with("retry_delay", "10ms");
    for (k, v) in extra {
        props.set(*k, *v);
    }
    ConnectionConfig {
        name: "api".into(),
        type_name: "http".into(),
        props,
    }
}

fn request(object: &str, options: &[(&str, &str)], batch_size: usize) -> SourceRequest {
    SourceRequest {
        object: object.into(),
        options: options.iter().copied().collect(),
        incremental: None,
        batch_size,
    }
}

async fn read_all_with(
    c: &ConnectionConfig,
    req: SourceRequest,
    ctx: &RunContext,
) -> Result<Vec<Batch>, ConnectorError> {
    let mut source = HttpConnector::new().open_source(c, req, ctx).await?;
    let mut batches = Vec::new();
    while let Some(b) = source.next_batch().await? {
        batches.push(b);
    }
    Ok(batches)
}

async fn read_all(c: &ConnectionConfig, req: SourceRequest) -> Result<Vec<Batch>, ConnectorError> {
    read_all_with(c, req, &RunContext::detached()).await
}

fn ids(batches: &[Batch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let i = b.column_index("id").expect("an id column");
            b.rows.iter().map(move |r| match r[i] {
                Value::Int(v) => v,
                ref other => panic!("id is not an integer: {other:?}"),
            })
        })
        .collect()
}

fn all_ids() -> Vec<i64> {
    (1..=TOTAL as i64).collect()
}

fn logging() -> (RunContext, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    let mut ctx = RunContext::detached();
    ctx.logger = lines.clone();
    (ctx, lines)
}

#[tokio::test]
async fn page_pagination_reads_every_record_once_in_order() {
    let (base, server) = start().await;
    let c = conn(&base, &[]);
    // page_size known: the short last page (37 of 50) ends the read without an extra request.
    let batches = read_all(
        &c,
        request("/page", &[("pagination", "page"), ("page_size", "50")], 70),
    )
    .await
    .unwrap();
    assert_eq!(ids(&batches), all_ids());
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        vec![70, 70, 70, 27],
        "batches are filled across page boundaries"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 5);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[0].1.get("page").map(String::as_str), Some("1"));
    assert_eq!(seen[0].1.get("per_page").map(String::as_str), Some("50"));
    assert_eq!(seen[4].1.get("page").map(String::as_str), Some("5"));
}

#[tokio::test]
async fn page_pagination_without_page_size_stops_on_the_empty_page() {
    let (base, server) = start().await;
    let c = conn(&base, &[]);
    let batches = read_all(
        &c,
        request(
            "page",
            &[
                ("pagination", "page"),
                ("page_param", "page"),
                ("page_start", "1"),
            ],
            1000,
        ),
    )
    .await
    .unwrap();
    assert_eq!(ids(&batches), all_ids());
    // Five full-or-short pages of the server's default 50, then one empty page.
    assert_eq!(server.hits.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn offset_pagination_sends_limit_and_advances_by_records() {
    let (base, server) = start().await;
    let c = conn(&base, &[]);
    let batches = read_all(
        &c,
        request(
            "/offset",
            &[("pagination", "offset"), ("page_size", "40")],
            100,
        ),
    )
    .await
    .unwrap();
    assert_eq!(ids(&batches), all_ids());
    let seen = server.seen.lock().unwrap();
    let offsets: Vec<&str> = seen.iter().map(|(_, q)| q["offset"].as_str()).collect();
    assert_eq!(offsets, ["0", "40", "80", "120", "160", "200"]);
    assert!(seen.iter().all(|(_, q)| q["limit"] == "40"));
    // Records were found in the only array field, "data"; "total" did not become a row.
    assert!(batches.iter().all(|b| b.column_index("total").is_none()));
}

#[tokio::test]
async fn cursor_pagination_follows_the_cursor_until_it_is_null() {
    let (base, server) = start().await;
    let c = conn(&base, &[]);
    let batches = read_all(
        &c,
        request(
            "/cursor",
            &[
                ("cursor_param", "after"),
                ("cursor_path", "meta.next_cursor"),
                ("records_path", "items"),
                ("page_size", "30"),
                ("page_size_param", "limit"),
            ],
            64,
        ),
    )
    .await
    .unwrap();
    assert_eq!(ids(&batches), all_ids());
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 8, "ceil(237 / 30) pages");
    assert!(
        !seen[0].1.contains_key("after"),
        "no cursor on the first page"
    );
    assert_eq!(seen[1].1["after"], "c30");
    assert!(seen.iter().all(|(_, q)| q["limit"] == "30"));
}

#[tokio::test]
async fn next_url_pagination_follows_relative_and_absolute_links() {
    let (base, _server) = start().await;
    let c = conn(&base, &[]);
    for object in ["/next", "/next?absolute=1"] {
        let batches = read_all(
            &c,
            request(
                object,
                &[("pagination", "next_url"), ("next_url_path", "links.next")],
                100,
            ),
        )
        .await
        .unwrap();
        assert_eq!(ids(&batches), all_ids(), "{object}");
    }
}

#[tokio::test]
async fn link_header_pagination_follows_rel_next() {
    let (base, server) = start().await;
    let c = conn(&base, &[("header.X-Trace", "t-1")]);
    let (ctx, lines) = logging();
    let batches = read_all_with(
        &c,
        request("/link", &[("pagination", "link_header")], 500),
        &ctx,
    )
    .await
    .unwrap();
    assert_eq!(ids(&batches), all_ids());
    assert_eq!(server.hits.load(Ordering::SeqCst), 4);
    let seen = server.seen.lock().unwrap();
    assert!(
        seen.iter().all(|(_, q)| q["header:x-trace"] == "t-1"),
        "extra header on every page"
    );
    let lines = lines.0.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("page 4: GET") && l.contains("with 57 records")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stopped because the Link header has no rel=\"next\""))
    );
}

#[tokio::test]
async fn post_with_paging_in_the_body() {
    let (base, server) = start().await;
    let c = conn(&base, &[]);
    let batches = read_all(
        &c,
        request(
            "/search",
            &[
                ("method", "post"),
                ("body", r#"{"filter": "active"}"#),
                ("pagination", "page"),
                ("page_start", "0"),
                ("page_size", "100"),
                ("page_size_param", "size"),
                ("pagination_in", "body"),
            ],
            1000,
        ),
    )
    .await
    .unwrap();
    assert_eq!(ids(&batches), all_ids());
    let seen = server.seen.lock().unwrap();
    let first: Json = serde_json::from_str(&seen[0].1["body"]).unwrap();
    assert_eq!(first, json!({"filter": "active", "page": 0, "size": 100}));
}

#[tokio::test]
async fn each_auth_style_sends_its_credential() {
    let (base, server) = start().await;
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("bearer", vec![("auth", "bearer"), ("token", "tok-123456")]),
        // Inferred from the credential that is set.
        ("bearer", vec![("token", "tok-123456")]),
        (
            "basic",
            vec![
                ("auth", "basic"),
                ("user", "alice"),
                ("password", "s3cret!"),
            ],
        ),
        (
            "header",
            vec![("auth", "api_key"), ("api_key", "key-abcdef")],
        ),
        (
            "custom_header",
            vec![
                ("auth", "api_key"),
                ("api_key", "key-abcdef"),
                ("api_key_name", "X-Token"),
            ],
        ),
        (
            "query",
            vec![
                ("auth", "api_key"),
                ("api_key", "key-abcdef"),
                ("api_key_in", "query"),
                ("api_key_name", "apikey"),
            ],
        ),
    ];
    for (kind, props) in cases {
        let c = conn(&base, &props);
        let path = format!("/guarded?kind={kind}");
        let batches = read_all(&c, request(&path, &[], 10))
            .await
            .unwrap_or_else(|e| panic!("{kind} {props:?}: {e}"));
        assert_eq!(batches[0].rows, vec![vec![Value::Bool(true)]], "{kind}");
        let test = HttpConnector::new()
            .test(&conn(
                &base,
                &[props.as_slice(), &[("test_path", &path)]].concat(),
            ))
            .await
            .unwrap();
        assert!(test.starts_with("GET http://127.0.0.1:"), "{test}");
        assert!(test.contains("answered HTTP 200 in "), "{test}");
        assert!(!test.contains("key-abcdef"), "secret in {test}");
    }
    assert!(server.hits.load(Ordering::SeqCst) >= 12);
}

#[tokio::test]
async fn wrong_credentials_say_to_check_auth() {
    let (base, _server) = start().await;
    let c = conn(&base, &[("auth", "bearer"), ("token", "wrong-token")]);
    let err = read_all(&c, request("/guarded?kind=bearer", &[], 10))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert!(
        err.message.contains("answered HTTP 401 Unauthorized"),
        "{}",
        err.message
    );
    assert!(err.message.contains("Bad credentials"), "{}", err.message);
    assert!(
        err.message
            .contains("check the auth properties of connection 'api'"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("wrong-token"), "{}", err.message);

    let err = HttpConnector::new()
        .test(&conn(&base, &[("test_path", "/guarded?kind=basic")]))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("it sends no credentials (auth=none)"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn retry_after_is_honoured_on_429() {
    let (base, server) = start().await;
    let (ctx, lines) = logging();
    let started = Instant::now();
    let batches = read_all_with(&conn(&base, &[]), request("/flaky429", &[], 10), &ctx)
        .await
        .unwrap();
    assert_eq!(ids(&batches), vec![1]);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    // retry_delay is 10ms, so only Retry-After: 1 explains a wait of about a second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let lines = lines.0.lock().unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("warn: GET")
            && l.contains("answered HTTP 429 Too Many Requests")
            && l.contains("(attempt 1 of 6); retrying in 1 s")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn transient_500s_are_retried() {
    let (base, server) = start().await;
    let batches = read_all(&conn(&base, &[]), request("/flaky500", &[], 10))
        .await
        .unwrap();
    assert_eq!(ids(&batches), vec![1, 2]);
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn persistent_500_gives_a_clear_error_without_the_key() {
    let (base, server) = start().await;
    let c = conn(
        &base,
        &[
            ("api_key", "key-abcdef"),
            ("api_key_in", "query"),
            ("api_key_name", "apikey"),
            ("max_retries", "2"),
        ],
    );
    let err = read_all(&c, request("/always500", &[("query.state", "open")], 10))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Read);
    assert_eq!(
        err.message,
        format!(
            "GET {base}/always500?state=open&apikey=*** answered HTTP 500 Internal Server Error after 3 attempts: '{{\"error\": \"database unavailable\"}}'; the API is failing: retry later or check its status page"
        )
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[0].1["apikey"], "key-abcdef", "the real key was sent");
}

#[tokio::test]
async fn a_stalled_response_times_out() {
    let (base, server) = start().await;
    let c = conn(&base, &[("timeout", "300ms"), ("max_retries", "1")]);
    let started = Instant::now();
    let err = read_all(&c, request("/stall", &[], 10)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind, ErrorKind::Read);
    assert_eq!(
        err.message,
        format!(
            "GET {base}/stall timed out after 300 ms (2 attempts); the API is slow or stalled: raise the connection's timeout (e.g. timeout=2m) or request smaller pages (source.page_size)"
        )
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_names_the_url() {
    // Bind then drop a listener: nothing listens on that port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = conn(&format!("http://{addr}"), &[("max_retries", "1")]);
    let err = HttpConnector::new().test(&c).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert!(
        err.message.starts_with(&format!(
            "GET http://{addr}/ could not connect (2 attempts): "
        )),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("check the connection's url"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_non_json_body_is_explained() {
    let (base, _server) = start().await;
    let err = read_all(&conn(&base, &[]), request("/html", &[], 10))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Read);
    assert!(
        err.message.starts_with(&format!(
            "GET {base}/html: the response is not JSON (Content-Type: text/html): expected value at line 1 column 1; body starts with '<html><body>Welcome to our portal</body></html>'"
        )),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("it looks like HTML"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_missing_records_path_names_what_is_there() {
    let (base, _server) = start().await;
    let err = read_all(
        &conn(&base, &[]),
        request("/nested", &[("records_path", "data.rows")], 10),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        format!(
            "GET {base}/nested: the response has nothing at records_path 'data.rows'; it has an object with fields data (an object), meta (an object) — set source.records_path to the path of the records array (dot-separated, e.g. data.items), or remove it to let the connector find the array"
        )
    );
}

#[tokio::test]
async fn nested_records_are_flattened() {
    let (base, _server) = start().await;
    let batches = read_all(
        &conn(&base, &[]),
        request("/nested", &[("records_path", "data.items")], 10),
    )
    .await
    .unwrap();
    let b = &batches[0];
    assert_eq!(
        b.columns,
        ["id", "address_city", "address_geo_lat", "tags", "extra"]
    );
    assert_eq!(
        b.rows,
        vec![
            vec![
                Value::Int(1),
                Value::from("Paris"),
                Value::Float(48.85),
                Value::from("[\"a\",\"b\"]"),
                Value::Null
            ],
            vec![
                Value::Int(2),
                Value::from("Oslo"),
                Value::Null,
                Value::Null,
                Value::Bool(true)
            ],
        ]
    );
}

#[tokio::test]
async fn cancellation_stops_a_request_in_flight_and_a_retry_wait() {
    let (base, _server) = start().await;
    for (object, props) in [
        ("/stall", vec![]),
        ("/always500", vec![("retry_delay", "20s")]),
    ] {
        let ctx = RunContext::detached();
        let cancel = ctx.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        let err = read_all_with(&conn(&base, &props), request(object, &[], 10), &ctx)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Canceled, "{object}: {}", err.message);
        // Well below the 20 s retry delay, with room for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{object}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_api_that_ignores_the_page_parameter_is_caught() {
    let (base, server) = start().await;
    let err = read_all(
        &conn(&base, &[]),
        request("/same", &[("pagination", "page")], 100),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.starts_with(&format!(
            "page 2 (GET {base}/same?page=2) is identical to the page before it"
        )),
        "{}",
        err.message
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn max_pages_bounds_the_read() {
    let (base, server) = start().await;
    let batches = read_all(
        &conn(&base, &[]),
        request("/page", &[("pagination", "page"), ("max_pages", "2")], 1000),
    )
    .await
    .unwrap();
    assert_eq!(ids(&batches), (1..=100).collect::<Vec<_>>());
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn since_param_carries_the_high_water_mark() {
    let (base, server) = start().await;
    let mut req = request(
        "/echo",
        &[("since_param", "updated_since"), ("query.q", "a b")],
        10,
    );
    req.incremental = Some(Incremental {
        column: "updated_at".into(),
        after: Some(Value::from("2024-05-01T10:00:00Z")),
    });
    let batches = read_all(&conn(&base, &[]), req).await.unwrap();
    let b = &batches[0];
    let col = b.column_index("updated_since").unwrap();
    assert_eq!(b.rows[0][col], Value::from("2024-05-01T10:00:00Z"));
    assert_eq!(b.rows[0][b.column_index("q").unwrap()], Value::from("a b"));
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen[0].1["header:accept"], "application/json");
}

#[tokio::test]
async fn the_connector_explains_what_it_cannot_do() {
    let (base, _server) = start().await;
    let c = conn(&base, &[]);
    let err = HttpConnector::new().list_objects(&c).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert!(
        err.message
            .contains("name the API path in the flow's object="),
        "{}",
        err.message
    );

    // A 404 at the test URL still proves the server answers.
    let ok = HttpConnector::new()
        .test(&conn(&base, &[("test_path", "/nowhere")]))
        .await
        .unwrap();
    assert!(
        ok.contains("answered HTTP 404 in") && ok.contains("set test_path"),
        "{ok}"
    );

    let err = read_all(&c, request("/nowhere", &[], 10))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message.contains("answered HTTP 404 Not Found"),
        "{}",
        err.message
    );

    let err = read_all(
        &c,
        request("/page", &[("method", "POST"), ("body", "{oops")], 10),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(
        err.message
            .starts_with("source option 'body' is not valid JSON"),
        "{}",
        err.message
    );

    let errors = HttpConnector::new()
        .spec()
        .validate_source(&[("pagnation", "page")].into_iter().collect());
    assert_eq!(
        errors,
        ["unknown property 'pagnation'; did you mean 'pagination'?"]
    );
}

#[tokio::test]
async fn credentials_never_follow_a_redirect_to_another_host() {
    let (base, _server) = start().await;
    // Without credentials the redirect is followed.
    let batches = read_all(&conn(&base, &[]), request("/moved", &[], 10))
        .await
        .unwrap();
    assert_eq!(ids(&batches), vec![1, 2, 3, 4, 5]);

    let c = conn(&base, &[("api_key", "key-abcdef")]);
    let err = read_all(&c, request("/moved", &[], 10)).await.unwrap_err();
    let port = base.rsplit(':').next().unwrap();
    assert!(
        err.message.starts_with(&format!(
            "GET {base}/moved answered HTTP 302 Found redirecting to http://localhost:{port}/page?per_page=5; redirects to another host are not followed"
        )),
        "{}",
        err.message
    );
}
