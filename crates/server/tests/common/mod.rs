//! Test support: an engine on a temporary data directory, throwaway PostgreSQL schemas and
//! MariaDB databases, and a local paginated JSON API with injectable failures and delays.

#![allow(dead_code)] // each test file uses a different part

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use etl_engine::host::{Caller, Host};
use etl_engine::{Engine, EngineError};
use serde_json::{Value as Json, json};

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
    pub host: Host,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::open(dir).await
    }

    /// An engine on an existing data directory (a "restart").
    pub async fn open(dir: tempfile::TempDir) -> TestEnv {
        let settings =
            etlworks_agent::Settings::resolve(dir.path().to_path_buf(), 4).expect("settings");
        let engine = etlworks_agent::open_engine(&settings)
            .await
            .expect("engine");
        let host = Host::new(engine.clone());
        TestEnv { dir, engine, host }
    }

    /// Runs a script that must succeed; answers the last statement's data.
    pub async fn ok(&self, script: &str) -> Json {
        let outcomes = self.host.run(&Caller::local(), script).await;
        for o in &outcomes {
            if let Err(e) = &o.result {
                panic!(
                    "statement '{}' failed: {} ({})",
                    o.statement, e.message, e.code
                );
            }
        }
        outcomes
            .last()
            .expect("an outcome")
            .result
            .clone()
            .expect("ok")
    }

    /// Runs a script whose last statement must fail; answers that error.
    pub async fn err(&self, script: &str) -> EngineError {
        let outcomes = self.host.run(&Caller::local(), script).await;
        match &outcomes.last().expect("an outcome").result {
            Err(e) => e.clone(),
            Ok(v) => panic!("expected '{script}' to fail, got {v}"),
        }
    }

    pub fn text(&self, outcomes: &[etl_engine::host::Outcome]) -> String {
        Host::render(outcomes)
    }

    /// Rows of a query on a connection, as JSON objects.
    pub async fn rows(&self, conn: &str, sql: &str) -> Vec<Json> {
        let q = format!(
            "query {conn} sql=\"{}\" limit=100000",
            sql.replace('"', "\\\"")
        );
        self.ok(&q).await["rows"].as_array().expect("rows").clone()
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn pg_url() -> String {
    std::env::var("ETL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn mysql_url() -> String {
    std::env::var("ETL_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A PostgreSQL schema of its own, dropped when the value is dropped.
pub struct PgSchema {
    pub name: String,
    pub pool: sqlx::PgPool,
}

impl PgSchema {
    pub async fn new() -> PgSchema {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&pg_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} is required for this test: {e}; run ./scripts/services",
                    pg_url()
                )
            });
        let name = unique("e2e");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(&pool)
            .await
            .expect("create schema");
        PgSchema { name, pool }
    }

    /// Host-language properties for a connection to this schema.
    pub fn props(&self) -> String {
        format!("url='{}' schema={}", pg_url(), self.name)
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM \"{}\".\"{table}\"", self.name);
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = pg_url();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: clean up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                    )))
                    .execute(&pool)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A MariaDB/MySQL database of its own, dropped when the value is dropped.
pub struct MyDb {
    pub name: String,
    pub pool: sqlx::MySqlPool,
}

impl MyDb {
    pub async fn new() -> MyDb {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(2)
            .connect(&mysql_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "MariaDB/MySQL at {} is required for this test: {e}; run ./scripts/services",
                    mysql_url()
                )
            });
        let name = unique("e2e");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&pool)
            .await
            .expect("create database");
        MyDb { name, pool }
    }

    pub fn props(&self) -> String {
        format!("url='{}' database={}", mysql_url(), self.name)
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM `{}`.`{table}`", self.name);
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let url = mysql_url();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(pool) = sqlx::MySqlPool::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS `{name}`"
                    )))
                    .execute(&pool)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A paginated JSON API: `GET /orders?page=N&per_page=M` answers `{"data": [...], "page": N}`.
/// Records are `{"id", "customer": {"name", "city"}, "amount", "tags", "updated_at"}`.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub state: Arc<ApiState>,
}

pub struct ApiState {
    pub records: std::sync::Mutex<Vec<Json>>,
    /// Answer 500 to this many requests first.
    pub fail_next: AtomicUsize,
    /// Always answer 500.
    pub always_fail: std::sync::atomic::AtomicBool,
    /// Delay each page by this many milliseconds.
    pub delay_ms: AtomicUsize,
    pub requests: AtomicUsize,
    /// Required bearer token, if any.
    pub token: Option<String>,
}

pub fn order(id: i64, updated: &str) -> Json {
    json!({
        "id": id,
        "customer": {"name": format!("customer {id}"), "city": if id % 2 == 0 { "Paris" } else { "Berlin" }},
        "amount": (id as f64) * 1.5,
        "tags": ["a", "b"],
        "updated_at": updated,
    })
}

impl Api {
    pub async fn start(records: Vec<Json>, token: Option<&str>) -> Api {
        let state = Arc::new(ApiState {
            records: std::sync::Mutex::new(records),
            fail_next: AtomicUsize::new(0),
            always_fail: std::sync::atomic::AtomicBool::new(false),
            delay_ms: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            token: token.map(str::to_string),
        });
        let app = Router::new()
            .route("/orders", get(orders))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Api { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, record: Json) {
        self.state.records.lock().expect("lock").push(record);
    }
}

#[derive(serde::Deserialize)]
struct PageQuery {
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn orders(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    if let Some(token) = &state.token {
        let want = format!("Bearer {token}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            return (StatusCode::UNAUTHORIZED, "missing or wrong token").into_response();
        }
    }
    if state.always_fail.load(Ordering::SeqCst)
        || state
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
    }
    let page = q.page.unwrap_or(1).max(1);
    let per = q.per_page.unwrap_or(100).clamp(1, 1000);
    let records = state.records.lock().expect("lock");
    let slice: Vec<Json> = records
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .cloned()
        .collect();
    axum::Json(json!({"data": slice, "page": page})).into_response()
}
