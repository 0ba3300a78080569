//! Test support: a throwaway database per test (SQLite file, PostgreSQL schema, MySQL
//! database) and small helpers to write and read batches, so every scenario runs unchanged
//! against all three dialects.

#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use etl_model::{
    Batch, ConnectionConfig, Connector, Incremental, Props, RunContext, RunLogger, SinkRequest,
    SourceRequest, Value, WriteMode,
};
use futures::FutureExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

pub fn pg_url() -> String {
    std::env::var("ETL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn mysql_url() -> String {
    std::env::var("ETL_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// Collects a run's log lines so tests can check what was reported.
#[derive(Default)]
pub struct Lines(pub Mutex<Vec<String>>);
impl RunLogger for Lines {
    fn log(&self, _level: &str, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

pub struct Env {
    pub kind: Kind,
    pub connector: Box<dyn Connector>,
    pub conn: ConnectionConfig,
    pub lines: Arc<Lines>,
    /// Kept alive for the test's duration (SQLite).
    _dir: Option<tempfile::TempDir>,
    admin: Option<String>,
    scope: String,
}

impl Env {
    pub fn ctx(&self) -> RunContext {
        RunContext {
            cancel: Default::default(),
            logger: self.lines.clone(),
        }
    }

    pub fn logged(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    pub async fn sql(&self, sql: &str) -> Batch {
        self.connector
            .query(&self.conn, sql, 1000)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Writes batches in one run of `mode`, finishing it.
    pub async fn write(&self, table: &str, mode: WriteMode, keys: &[&str], batches: Vec<Batch>) {
        let mut sink = self
            .connector
            .open_sink(&self.conn, sink_req(table, mode, keys), &self.ctx())
            .await
            .unwrap_or_else(|e| panic!("open sink {table}: {e}"));
        for b in batches {
            sink.write(b)
                .await
                .unwrap_or_else(|e| panic!("write {table}: {e}"));
        }
        sink.finish()
            .await
            .unwrap_or_else(|e| panic!("finish {table}: {e}"));
    }

    /// Reads every batch of a source request.
    pub async fn read_req(&self, req: SourceRequest) -> Vec<Batch> {
        let mut src = self
            .connector
            .open_source(&self.conn, req, &self.ctx())
            .await
            .unwrap_or_else(|e| panic!("open source: {e}"));
        let mut out = Vec::new();
        while let Some(b) = src
            .next_batch()
            .await
            .unwrap_or_else(|e| panic!("read: {e}"))
        {
            out.push(b);
        }
        out
    }

    /// All rows of a table, ordered by `order`, as one batch.
    pub async fn read(&self, table: &str, order: &str) -> Batch {
        let req = source_req(table, Props::new().with("order_by", order), None, 10_000);
        let batches = self.read_req(req).await;
        let mut all = Batch::default();
        for b in batches {
            all.columns = b.columns;
            all.rows.extend(b.rows);
        }
        all
    }

    pub fn q(&self, ident: &str) -> String {
        match self.kind {
            Kind::Mysql => format!("`{ident}`"),
            _ => format!("\"{ident}\""),
        }
    }
}

pub fn sink_req(table: &str, mode: WriteMode, keys: &[&str]) -> SinkRequest {
    SinkRequest {
        object: table.into(),
        options: Props::new(),
        mode,
        keys: keys.iter().map(|k| k.to_string()).collect(),
        create: true,
        run_id: uuid::Uuid::new_v4().to_string(),
        column_types: Vec::new(),
    }
}

pub fn source_req(
    table: &str,
    options: Props,
    incremental: Option<Incremental>,
    batch_size: usize,
) -> SourceRequest {
    SourceRequest {
        object: table.into(),
        options,
        incremental,
        batch_size,
    }
}

pub fn batch(columns: &[&str], rows: Vec<Vec<Value>>) -> Batch {
    Batch {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

pub fn t(s: &str) -> Value {
    Value::Text(s.into())
}

async fn admin_exec(kind: Kind, url: &str, sql: &str) {
    use sqlx::Executor;
    match kind {
        Kind::Postgres => {
            let pool = sqlx::PgPool::connect(url)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL test server at {url} is required: {e}"));
            pool.execute(sqlx::AssertSqlSafe(sql.to_string()))
                .await
                .unwrap();
            pool.close().await;
        }
        Kind::Mysql => {
            let pool = sqlx::MySqlPool::connect(url)
                .await
                .unwrap_or_else(|e| panic!("MySQL/MariaDB test server at {url} is required: {e}"));
            pool.execute(sqlx::AssertSqlSafe(sql.to_string()))
                .await
                .unwrap();
            pool.close().await;
        }
        Kind::Sqlite => {}
    }
}

/// Sets up a fresh database of `kind`, runs the scenario, and always cleans up (then re-raises
/// a failure).
pub async fn with_env<F, Fut>(kind: Kind, scenario: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let scope = format!("etl_t_{}", uuid::Uuid::new_v4().simple());
    let (connector, props, dir, admin): (Box<dyn Connector>, Props, _, _) = match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("test.db");
            (
                Box::new(etl_sql::SqliteConnector::new()),
                Props::new().with("path", path.to_string_lossy()),
                Some(dir),
                None,
            )
        }
        Kind::Postgres => {
            let url = pg_url();
            admin_exec(kind, &url, &format!("CREATE SCHEMA {scope}")).await;
            (
                Box::new(etl_sql::PostgresConnector::new()),
                Props::new()
                    .with("url", url.clone())
                    .with("schema", scope.clone()),
                None,
                Some(url),
            )
        }
        Kind::Mysql => {
            let url = mysql_url();
            admin_exec(kind, &url, &format!("CREATE DATABASE {scope}")).await;
            (
                Box::new(etl_sql::MysqlConnector::new()),
                Props::new()
                    .with("url", url.clone())
                    .with("database", scope.clone()),
                None,
                Some(url),
            )
        }
    };
    let env = Env {
        kind,
        connector,
        conn: ConnectionConfig {
            name: "t".into(),
            type_name: format!("{kind:?}").to_lowercase(),
            props,
        },
        lines: Arc::new(Lines::default()),
        _dir: dir,
        admin: admin.clone(),
        scope: scope.clone(),
    };
    let result = AssertUnwindSafe(scenario(env)).catch_unwind().await;
    if let Some(url) = admin {
        let drop = match kind {
            Kind::Postgres => format!("DROP SCHEMA {scope} CASCADE"),
            _ => format!("DROP DATABASE {scope}"),
        };
        admin_exec(kind, &url, &drop).await;
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
