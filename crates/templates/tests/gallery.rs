//! The gallery against the real engine: every bundled template loads, passes the connector
//! specs, imports into a fresh engine and validates; two REST templates import against a local
//! API and really run; collisions, bad parameters, unknown ids, search ranking and the docs
//! table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use etl_engine::{Engine, RunStatus, RunTrigger};
use etl_model::Value;
use etl_templates::{ConnectionAction, Gallery, TemplateError};
use serde_json::{Value as Json, json};

const TENANT: &str = "default";

async fn fresh_engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings =
        etlworks_agent::Settings::resolve(dir.path().to_path_buf(), 2).expect("settings");
    let engine = etlworks_agent::open_engine(&settings)
        .await
        .expect("engine");
    (dir, engine)
}

fn gallery() -> Gallery {
    Gallery::bundled().unwrap_or_else(|e| panic!("bundled templates must load: {e}"))
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every parameter's example (what a person would type), without the secrets when asked.
fn example_params(t: &etl_templates::Template, with_secrets: bool) -> BTreeMap<String, String> {
    t.parameters
        .iter()
        .filter(|p| with_secrets || !p.secret)
        .filter_map(|p| p.example.clone().map(|e| (p.name.clone(), e)))
        .collect()
}

#[test]
fn bundled_templates_load_and_match_the_connector_specs() {
    let g = gallery();
    assert!(g.len() >= 30, "only {} templates", g.len());
    g.check_connectors(&etlworks_agent::registry())
        .unwrap_or_else(|e| panic!("{e}"));
    // Every pagination style of the http connector is covered by some template.
    for style in ["page", "offset", "cursor", "next_url", "link_header"] {
        assert!(
            g.templates().iter().any(|t| t
                .flow
                .source
                .options
                .get("pagination")
                .map(String::as_str)
                == Some(style)),
            "no template uses pagination={style}"
        );
    }
}

#[tokio::test]
async fn every_template_imports_and_its_flow_validates() {
    let (_dir, engine) = fresh_engine().await;
    let g = gallery();
    for t in g.templates() {
        let report = g
            .import(&engine, TENANT, &t.id, None, &example_params(t, true))
            .await
            .unwrap_or_else(|e| panic!("importing {}: {e}", t.id));
        assert!(report.missing.is_empty(), "{}: {:?}", t.id, report.missing);
        let flow = engine
            .flow(TENANT, &report.flow)
            .await
            .unwrap_or_else(|e| panic!("{}: flow {} missing: {e}", t.id, report.flow));
        engine
            .validate_flow(TENANT, &flow.spec)
            .await
            .unwrap_or_else(|e| panic!("{}: imported flow invalid: {e}", t.id));
        assert_eq!(flow.description, t.flow.description);
        // Secrets went through the engine: stored encrypted, shown as ***.
        for c in report
            .connections
            .iter()
            .filter(|c| c.action == ConnectionAction::Created)
        {
            let shown = engine
                .get_connection(TENANT, &c.name)
                .await
                .expect("connection");
            let raw = engine.connection_raw(TENANT, &c.name).await.expect("raw");
            for p in t.parameters.iter().filter(|p| p.secret) {
                let example = p.example.as_deref().expect("secret example");
                assert!(
                    !shown.props.0.values().any(|v| v.contains(example))
                        && !raw.props.0.values().any(|v| v.contains(example)),
                    "{}: secret {} stored or shown in clear",
                    t.id,
                    p.name
                );
            }
        }
        assert!(
            report
                .parameters
                .iter()
                .all(|(k, v)| { !t.parameter(k).is_some_and(|p| p.secret) || v == "***" }),
            "{}: report shows a secret",
            t.id
        );
    }
}

#[tokio::test]
async fn missing_credentials_are_reported_with_the_command_that_sets_them() {
    let (_dir, engine) = fresh_engine().await;
    let g = gallery();
    let t = g.get("github-issues-to-postgres").expect("template");
    let report = g
        .import(&engine, TENANT, &t.id, None, &example_params(t, false))
        .await
        .expect("import without the token");
    let missing: Vec<_> = report.missing.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(missing, vec!["token"]);
    assert_eq!(
        report.missing[0].fix,
        vec!["update connection github token=<token>"]
    );
    assert_eq!(
        report.next_steps[0],
        "update connection github token=<token>"
    );
    let conn = engine
        .get_connection(TENANT, "github")
        .await
        .expect("github");
    assert!(conn.props.get("token").is_none());

    // A required parameter that the flow itself needs refuses the import, creating nothing.
    let (_dir2, fresh) = fresh_engine().await;
    let mut p = example_params(t, true);
    p.remove("repo");
    p.remove("postgres_database");
    let err = g
        .import(&fresh, TENANT, &t.id, None, &p)
        .await
        .expect_err("repo is needed");
    let text = err.to_string();
    assert!(
        matches!(&err, TemplateError::MissingParameters { missing, .. } if missing.len() == 1),
        "{text}"
    );
    assert!(
        text.contains("repo (Repository name.)") && text.contains("repo=rust"),
        "{text}"
    );
    assert!(fresh.list_flows(TENANT).await.expect("flows").is_empty());
    let names: Vec<String> = fresh
        .list_connections(TENANT)
        .await
        .expect("connections")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["warehouse"], "nothing may be created");
}

#[tokio::test]
async fn name_collisions_get_suffixes_and_identical_connections_are_reused() {
    let (_dir, engine) = fresh_engine().await;
    let g = gallery();
    let t = g.get("csv-files-to-postgres").expect("template");
    let p = example_params(t, false);
    let first = g
        .import(&engine, TENANT, &t.id, None, &p)
        .await
        .expect("first");
    assert_eq!(first.flow, "csv_to_postgres");
    assert!(
        first
            .connections
            .iter()
            .all(|c| c.action == ConnectionAction::Created)
    );

    // Same parameters, no secrets: both connections are identical and reused; the flow is new.
    let second = g
        .import(&engine, TENANT, &t.id, None, &p)
        .await
        .expect("second");
    assert_eq!(second.flow, "csv_to_postgres_2");
    assert_eq!(second.requested_flow_name, "csv_to_postgres");
    assert!(
        second
            .connections
            .iter()
            .all(|c| c.action == ConnectionAction::Reused)
    );
    assert!(second.summary().contains("'csv_to_postgres' was taken"));

    // A different directory: the file connection differs and gets a suffix; postgres is reused.
    let mut other = p.clone();
    other.insert("directory".into(), "/data/other".into());
    let third = g
        .import(&engine, TENANT, &t.id, Some("nightly_csv"), &other)
        .await
        .expect("third");
    assert_eq!(third.flow, "nightly_csv");
    let files = third
        .connections
        .iter()
        .find(|c| c.template_name == "files")
        .expect("files");
    assert_eq!(
        (files.name.as_str(), files.action),
        ("files_2", ConnectionAction::Created)
    );
    let pg = third
        .connections
        .iter()
        .find(|c| c.template_name == "postgres")
        .expect("pg");
    assert_eq!(pg.action, ConnectionAction::Reused);
    let flow = engine.flow(TENANT, "nightly_csv").await.expect("flow");
    assert_eq!(flow.spec.source.connection, "files_2");
    assert_eq!(flow.spec.destination.connection, "postgres");

    // Connections holding a secret are never assumed identical.
    let mut secret = p.clone();
    secret.insert("postgres_password".into(), "pw".into());
    let fourth = g
        .import(&engine, TENANT, &t.id, None, &secret)
        .await
        .expect("fourth");
    let pg = fourth
        .connections
        .iter()
        .find(|c| c.template_name == "postgres")
        .expect("pg");
    assert_eq!(
        (pg.name.as_str(), pg.action),
        ("postgres_2", ConnectionAction::Created)
    );
    let again = g
        .import(&engine, TENANT, &t.id, None, &secret)
        .await
        .expect("fifth");
    let pg = again
        .connections
        .iter()
        .find(|c| c.template_name == "postgres")
        .expect("pg");
    assert_eq!(pg.name, "postgres_3");
    assert_eq!(again.flow, "csv_to_postgres_4");

    // An invalid explicit name is refused before anything happens.
    let err = g
        .import(&engine, TENANT, &t.id, Some("bad name"), &p)
        .await
        .expect_err("bad name");
    assert!(matches!(err, TemplateError::InvalidName { .. }), "{err}");
}

#[tokio::test]
async fn wrong_parameter_types_and_unknown_parameters_are_clear_errors() {
    let (_dir, engine) = fresh_engine().await;
    let g = gallery();
    let t = g.get("rest-api-page-to-warehouse").expect("template");
    let mut p = example_params(t, false);
    p.insert("page_size".into(), "lots".into());
    let err = g
        .import(&engine, TENANT, &t.id, None, &p)
        .await
        .expect_err("type");
    assert_eq!(
        err.to_string(),
        "parameter 'page_size' must be an integer (a whole number such as 100), got 'lots'"
    );
    assert_eq!(err.code(), "invalid");

    let mut p = example_params(t, false);
    p.insert("page_sise".into(), "10".into());
    let err = g
        .import(&engine, TENANT, &t.id, None, &p)
        .await
        .expect_err("unknown");
    let text = err.to_string();
    assert!(
        text.starts_with("template 'rest-api-page-to-warehouse' has no parameter 'page_sise'; did you mean 'page_size'?"),
        "{text}"
    );

    // A secret of the wrong type is not echoed back.
    let t = g.get("hacker-news-stories-to-warehouse").expect("template");
    let err = g
        .import(
            &engine,
            TENANT,
            &t.id,
            None,
            &params(&[("max_pages", "ten")]),
        )
        .await
        .expect_err("type");
    assert!(
        err.to_string().contains("'max_pages' must be an integer"),
        "{err}"
    );
    assert!(engine.list_flows(TENANT).await.expect("flows").is_empty());
}

#[tokio::test]
async fn unknown_template_ids_suggest_the_nearest() {
    let (_dir, engine) = fresh_engine().await;
    let g = gallery();
    let err = g.get("github-issues-to-postgre").expect_err("unknown");
    match &err {
        TemplateError::UnknownTemplate { suggestions, .. } => {
            assert_eq!(suggestions[0], "github-issues-to-postgres")
        }
        other => panic!("{other}"),
    }
    assert_eq!(err.code(), "not_found");
    let err = g
        .import(&engine, TENANT, "stripe-payments", None, &BTreeMap::new())
        .await
        .expect_err("unknown");
    assert!(
        err.to_string().contains("'stripe-charges-to-postgres'"),
        "{err}"
    );
    // Nothing near: a hint to search instead, and no echo of a huge id.
    let err = g.get(&"#".repeat(1_000_000)).expect_err("unknown");
    assert!(err.to_string().len() < 400, "{}", err.to_string().len());
    assert!(err.to_string().contains("search templates"), "{err}");
}

fn top(g: &Gallery, q: &str, n: usize) -> Vec<String> {
    g.search(q, n).into_iter().map(|h| h.id).collect()
}

#[test]
fn search_ranks_typical_asks() {
    let g = gallery();
    assert_eq!(
        top(&g, "salesforce to postgres", 1),
        ["salesforce-soql-to-postgres"]
    );
    let gh = top(&g, "github issues", 2);
    assert!(
        gh.contains(&"github-issues-to-postgres".to_string()),
        "{gh:?}"
    );
    assert!(
        gh.contains(&"github-issues-to-warehouse".to_string()),
        "{gh:?}"
    );
    assert_eq!(top(&g, "csv into mysql", 1), ["csv-files-to-mysql"]);
    assert_eq!(top(&g, "CSV into MariaDB", 1), ["csv-files-to-mysql"]);
    let export = top(&g, "export table to csv", 3);
    assert!(
        export.iter().all(|id| id.ends_with("-table-to-csv")),
        "{export:?}"
    );
    assert_eq!(
        top(&g, "load stripe charges into pg", 1),
        ["stripe-charges-to-postgres"]
    );
    assert_eq!(
        top(&g, "replicate mysql to postgresql", 1),
        ["mysql-to-postgres-replication"]
    );
    assert_eq!(
        top(&g, "hubspot contacts", 1),
        ["hubspot-contacts-to-postgres"]
    );
    assert_eq!(top(&g, "shopify orders", 1), ["shopify-orders-to-mysql"]);
    assert_eq!(
        top(&g, "rest api cursor pagination into warehouse", 1),
        ["rest-api-cursor-to-warehouse"]
    );
    assert_eq!(
        top(&g, "link header pagination", 1),
        ["rest-api-link-header-to-postgres"]
    );
    assert_eq!(top(&g, "weather", 1), ["open-meteo-weather-to-warehouse"]);
    assert_eq!(top(&g, "zendesk", 1), ["zendesk-tickets-to-mysql"]);
    // Scores are ordered.
    let hits = g.search("postgres", 50);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(hits.len() > 10);
}

#[test]
fn search_accepts_any_input() {
    let g = gallery();
    // Empty: the gallery in id order.
    let all = g.search("", 1000);
    assert_eq!(all.len(), g.len());
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(g.search("   ", 3).len(), 3);
    // Only punctuation or query syntax: nothing, no error.
    assert!(g.search("?!.,;:()[]{}", 10).is_empty());
    assert!(g.search("\0\u{1F600}\u{202E}", 10).is_empty());
    // 1 MB: answered, quickly.
    let big = "postgres ".repeat(120_000);
    let started = std::time::Instant::now();
    let hits = g.search(&big, 5);
    assert_eq!(hits.len(), 5);
    assert!(started.elapsed() < Duration::from_secs(10));
    let random: String = (0..1_000_000u64)
        .map(|i| char::from(32 + ((i * 7919) % 95) as u8))
        .collect();
    assert!(g.search(&random, 5).len() <= 5);
    assert!(g.search("postgres", 0).is_empty());
}

#[test]
fn broken_templates_are_rejected_with_every_problem() {
    let yaml = r#"
id: Bad_Id
name: ""
description: x
source_system: A
destination_system: B
parameters:
  - name: used
    description: a value
    type: integer
    default: abc
  - name: idle
    description: never used
connections:
  - name: api
    type: http
    properties:
      url: "{{used}}/{{nope}}"
flow:
  name: f
  source: {connection: api, object: /x}
  destination: {connection: elsewhere, target: t}
  mode: sideways
"#;
    let err = Gallery::parse("bad.yaml", yaml).expect_err("invalid");
    let text = err.to_string();
    for needle in [
        "id 'Bad_Id' must be kebab-case",
        "must equal the file name",
        "'name' must not be empty",
        "default 'abc' is not an integer",
        "'{{nope}}' but no parameter 'nope' is declared",
        "parameter 'idle' is declared but never used",
        "flow destination connection 'elsewhere'",
        "flow mode 'sideways'",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in: {text}");
    }
    let err = Gallery::parse("x.yaml", "id: x\nsurprise: 1\n").expect_err("unknown field");
    assert!(err.to_string().contains("surprise"), "{err}");
    assert!(Gallery::parse("x.yaml", "\u{0}\u{1}::: [").is_err());
}

#[test]
fn docs_list_every_bundled_template() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/templates.md"
    ))
    .expect("docs/templates.md");
    for t in gallery().templates() {
        assert!(
            docs.contains(&format!("| `{}` |", t.id)),
            "docs/templates.md does not list template {} in its table",
            t.id
        );
        for p in &t.parameters {
            let row = docs
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", t.id)))
                .unwrap_or_default();
            assert!(
                row.contains(&p.name),
                "docs row of {} lacks parameter {}",
                t.id,
                p.name
            );
        }
    }
}

// ---- running imported templates against a local API -------------------------------------

#[derive(Default)]
struct ApiState {
    requests: AtomicUsize,
}

fn record(i: usize) -> Json {
    json!({"id": i, "name": format!("item {i}"), "owner": {"city": if i.is_multiple_of(2) { "Paris" } else { "Oslo" }}})
}

const TOTAL: usize = 23;

async fn page_api(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> axum::Json<Json> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let per: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(10);
    let data: Vec<Json> = (1..=TOTAL)
        .skip((page - 1) * per)
        .take(per)
        .map(record)
        .collect();
    axum::Json(json!({"data": data, "page": page}))
}

async fn cursor_api(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> axum::Json<Json> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let start: usize = q
        .get("cursor")
        .and_then(|c| c.strip_prefix("c").and_then(|n| n.parse().ok()))
        .unwrap_or(1);
    let limit: usize = q.get("limit").and_then(|p| p.parse().ok()).unwrap_or(10);
    let data: Vec<Json> = (start..=TOTAL).take(limit).map(record).collect();
    let next = start + limit;
    let cursor = if next <= TOTAL {
        json!(format!("c{next}"))
    } else {
        Json::Null
    };
    axum::Json(json!({"data": data, "meta": {"next_cursor": cursor}}))
}

async fn serve() -> (String, Arc<ApiState>) {
    let state = Arc::new(ApiState::default());
    let app = Router::new()
        .route("/items", get(page_api))
        .route("/events", get(cursor_api))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}"), state)
}

async fn run(engine: &Engine, flow: &str) {
    let run = engine
        .start_run(TENANT, flow, RunTrigger::Manual, 1)
        .await
        .expect("start");
    let done = engine
        .wait_run(TENANT, &run.id, Some(Duration::from_secs(60)))
        .await
        .expect("wait");
    assert_eq!(
        done.status,
        RunStatus::Success,
        "run failed: {:?}",
        done.error
    );
    assert_eq!(done.rows_written, TOTAL as u64);
}

async fn warehouse_rows(engine: &Engine, sql: &str) -> Vec<Vec<Value>> {
    engine
        .query(TENANT, "warehouse", sql, 1000)
        .await
        .expect("query")
        .rows
}

#[tokio::test]
async fn page_and_cursor_templates_run_against_a_local_api() {
    let (_dir, engine) = fresh_engine().await;
    let (url, state) = serve().await;
    let g = gallery();

    let page = g
        .import(
            &engine,
            TENANT,
            "rest-api-page-to-warehouse",
            None,
            &params(&[
                ("api_url", &url),
                ("path", "/items"),
                ("records_path", "data"),
                ("page_size", "5"),
                ("table", "items"),
            ]),
        )
        .await
        .expect("import page template");
    run(&engine, &page.flow).await;
    // 23 records in pages of 5: four full pages and a short one end the read.
    assert_eq!(state.requests.swap(0, Ordering::SeqCst), 5);
    let rows = warehouse_rows(
        &engine,
        "SELECT id, name, owner_city FROM items ORDER BY id",
    )
    .await;
    assert_eq!(rows.len(), TOTAL);
    assert_eq!(
        rows[0],
        vec![
            Value::Int(1),
            Value::Text("item 1".into()),
            Value::Text("Oslo".into())
        ]
    );
    // Merge on id: running again updates, never duplicates.
    run(&engine, &page.flow).await;
    assert_eq!(
        warehouse_rows(&engine, "SELECT count(*) FROM items").await[0][0],
        Value::Int(TOTAL as i64)
    );
    state.requests.store(0, Ordering::SeqCst);

    let cursor = g
        .import(
            &engine,
            TENANT,
            "rest-api-cursor-to-warehouse",
            Some("events_flow"),
            &params(&[
                ("api_url", &url),
                ("path", "/events"),
                ("records_path", "data"),
                ("page_size", "10"),
                ("table", "events"),
            ]),
        )
        .await
        .expect("import cursor template");
    assert_eq!(cursor.flow, "events_flow");
    // Same url and no token: the http connection of the first import is reused.
    let api = cursor
        .connections
        .iter()
        .find(|c| c.template_name == "rest_api")
        .expect("api");
    assert_eq!(api.action, ConnectionAction::Reused);
    run(&engine, &cursor.flow).await;
    assert_eq!(state.requests.load(Ordering::SeqCst), 3);
    let rows = warehouse_rows(
        &engine,
        "SELECT min(id), max(id), count(DISTINCT id) FROM events",
    )
    .await;
    assert_eq!(
        rows[0],
        vec![
            Value::Int(1),
            Value::Int(TOTAL as i64),
            Value::Int(TOTAL as i64)
        ]
    );
}
