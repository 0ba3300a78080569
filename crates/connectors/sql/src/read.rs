//! Reading: builds one SELECT from the flow's table or query, options and incremental bound,
//! then streams its rows on a background task into batches handed over a one-slot channel, so
//! at most about two batches exist at once however large the table.

use etl_model::{Batch, ConnectorError, ErrorKind, RunContext, Source, SourceRequest, Value};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::conn::{Db, Pool};
use crate::decode::{self, Kind};
use crate::write::bind_value;

/// The statement a source runs, with its bound parameter and (PostgreSQL) decoding plan.
pub(crate) struct Select {
    pub sql: String,
    pub bound: Option<Value>,
    pub plan: Option<Vec<Kind>>,
}

/// A user-written statement without the trailing semicolon that would break wrapping it.
pub(crate) fn trim_statement(sql: &str) -> &str {
    sql.trim().trim_end_matches(';').trim_end()
}

/// The SELECT for a source request: `SELECT cols FROM table|(query) WHERE (where)`, wrapped as
/// `SELECT ... FROM (inner) etl_src WHERE inc > ? ORDER BY inc|order_by`. Wrapping keeps the
/// user's `where` and `query` text intact; every database flattens the derived table, so
/// indexes on the incremental column are still used.
pub(crate) async fn build_select(db: &Db, req: &SourceRequest) -> Result<Select, ConnectorError> {
    let d = db.dialect;
    let opts = &req.options;
    let columns = opts.list("columns");
    let cols = if columns.is_empty() {
        "*".to_string()
    } else {
        d.column_list(&columns)
    };
    let from = match opts.get("query") {
        Some(q) => format!("({}) AS etl_q", trim_statement(q)),
        None => db.table(&req.object)?.sql(d),
    };
    let mut inner = format!("SELECT {cols} FROM {from}");
    if let Some(w) = opts.get("where") {
        inner.push_str(&format!(" WHERE ({w})"));
    }

    let mut list = "*".to_string();
    let mut plan = None;
    let mut cast_of_bound = None;
    if let Pool::Postgres(pool) = &db.pool {
        let stmt = pool
            .prepare(AssertSqlSafe(inner.clone()).into_sql_str())
            .await
            .map_err(|e| {
                db.error(
                    ErrorKind::Read,
                    &format!("reading {}", describe_source(req)),
                    e,
                )
            })?;
        let cols = stmt.columns();
        if let Some(inc) = &req.incremental {
            let col = cols.iter().find(|c| c.name() == inc.column).ok_or_else(|| {
                ConnectorError::config(format!(
                    "the incremental column '{}' is not among the columns of {} ({}); name one of them",
                    inc.column,
                    req.object,
                    cols.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                ))
            })?;
            cast_of_bound = Some(col.type_info().name().to_string());
        }
        if cols
            .iter()
            .any(|c| decode::pg_needs_text_cast(c.type_info().name()))
        {
            list = cols
                .iter()
                .map(|c| {
                    let q = d.quote(c.name());
                    if decode::pg_needs_text_cast(c.type_info().name()) {
                        format!("{q}::text AS {q}")
                    } else {
                        q
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
        }
        plan = Some(
            cols.iter()
                .map(|c| decode::pg_cast_kind(c.type_info().name()))
                .collect(),
        );
    }

    let mut sql = format!("SELECT {list} FROM ({inner}) AS etl_src");
    let mut bound = None;
    if let Some(inc) = &req.incremental {
        let col = d.quote(&inc.column);
        if let Some(after) = inc.after.as_ref().filter(|v| !v.is_null()) {
            let ph = d.placeholder(1);
            // PostgreSQL does not compare e.g. timestamp with a text parameter: bind the bound
            // as text and cast it to the column's own type, which parses it exactly.
            match &cast_of_bound {
                Some(t) => {
                    sql.push_str(&format!(" WHERE {col} > CAST({ph} AS {t})"));
                    bound = Some(Value::Text(
                        after.as_text().unwrap_or_default().into_owned(),
                    ));
                }
                None => {
                    sql.push_str(&format!(" WHERE {col} > {ph}"));
                    bound = Some(after.clone());
                }
            }
        }
        sql.push_str(&format!(" ORDER BY {col}"));
    } else if let Some(o) = opts.get("order_by") {
        sql.push_str(&format!(" ORDER BY {o}"));
    }
    Ok(Select { sql, bound, plan })
}

/// "table orders" or "the query of orders", for messages.
pub(crate) fn describe_source(req: &SourceRequest) -> String {
    match req.options.get("query") {
        Some(_) => format!("the query of {}", req.object),
        None => format!("table {}", req.object),
    }
}

/// Streams the rows of a SELECT as batches.
pub(crate) struct SqlSource {
    rx: mpsc::Receiver<Result<Batch, ConnectorError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SqlSource {
    fn drop(&mut self) {
        // Stopping early (cancel, error downstream) must not leave a query running.
        self.task.abort();
    }
}

#[async_trait::async_trait]
impl Source for SqlSource {
    async fn next_batch(&mut self) -> Result<Option<Batch>, ConnectorError> {
        self.rx.recv().await.transpose()
    }
}

impl SqlSource {
    pub fn start(
        db: Db,
        select: Select,
        batch_size: usize,
        what: String,
        ctx: &RunContext,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let cancel = ctx.cancel.clone();
        let batch_size = batch_size.max(1);
        let task = tokio::spawn(async move {
            let doing = format!("reading {what}");
            let result = match &db.pool {
                Pool::Postgres(p) => {
                    let mut q = sqlx::query(AssertSqlSafe(select.sql));
                    if let Some(b) = &select.bound {
                        q = bind_value(q, b);
                    }
                    pump(
                        q.fetch(p),
                        decode::pg_plan,
                        decode::decode_pg,
                        select.plan,
                        &tx,
                        batch_size,
                        &cancel,
                        &db,
                        &doing,
                    )
                    .await
                }
                Pool::Mysql(p) => {
                    let mut q = sqlx::query(AssertSqlSafe(select.sql));
                    if let Some(b) = &select.bound {
                        q = bind_value(q, b);
                    }
                    pump(
                        q.fetch(p),
                        decode::mysql_plan,
                        decode::decode_mysql,
                        None,
                        &tx,
                        batch_size,
                        &cancel,
                        &db,
                        &doing,
                    )
                    .await
                }
                Pool::Sqlite(p) => {
                    let mut q = sqlx::query(AssertSqlSafe(select.sql));
                    if let Some(b) = &select.bound {
                        q = bind_value(q, b);
                    }
                    pump(
                        q.fetch(p),
                        decode::sqlite_plan,
                        decode::decode_sqlite,
                        None,
                        &tx,
                        batch_size,
                        &cancel,
                        &db,
                        &doing,
                    )
                    .await
                }
            };
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        SqlSource { rx, task }
    }
}

/// Moves rows from the database stream into batches on the channel. Returns when the stream
/// ends, the receiver is gone, or the run is canceled.
#[allow(clippy::too_many_arguments)]
async fn pump<R: Row>(
    mut stream: BoxStream<'_, Result<R, sqlx::Error>>,
    plan_of: fn(&R) -> Vec<Kind>,
    decode: fn(&R, &[Kind]) -> Result<Vec<Value>, String>,
    mut plan: Option<Vec<Kind>>,
    tx: &mpsc::Sender<Result<Batch, ConnectorError>>,
    batch_size: usize,
    cancel: &CancellationToken,
    db: &Db,
    doing: &str,
) -> Result<(), ConnectorError> {
    let mut batch: Option<Batch> = None;
    loop {
        let row = tokio::select! {
            r = stream.try_next() => r.map_err(|e| db.error(ErrorKind::Read, doing, e))?,
            _ = cancel.cancelled() => return Err(ConnectorError::canceled()),
        };
        let Some(row) = row else { break };
        let plan = plan.get_or_insert_with(|| plan_of(&row));
        let b = batch.get_or_insert_with(|| {
            let mut b = Batch::new(row.columns().iter().map(|c| c.name().to_string()).collect());
            b.rows.reserve(batch_size.min(100_000));
            b
        });
        b.rows
            .push(decode(&row, plan).map_err(|e| ConnectorError::read(format!("{doing}: {e}")))?);
        if b.rows.len() >= batch_size {
            let full = batch.take().unwrap_or_default();
            if tx.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    if let Some(b) = batch.filter(|b| !b.is_empty()) {
        let _ = tx.send(Ok(b)).await;
    }
    Ok(())
}

/// Runs an ad-hoc statement: a SELECT answers up to `limit` rows, anything else the number of
/// rows it affected as one row `rows_affected`.
pub(crate) async fn run_query(db: &Db, sql: &str, limit: usize) -> Result<Batch, ConnectorError> {
    let sql = trim_statement(sql);
    let doing = format!("running the query on {}", db.label);
    let fail = |e| db.error(ErrorKind::Read, &doing, e);
    let affected = |n: u64| Batch {
        columns: vec!["rows_affected".to_string()],
        rows: vec![vec![Value::Int(n as i64)]],
    };
    match &db.pool {
        Pool::Postgres(p) => {
            let stmt = p
                .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
                .await
                .map_err(fail)?;
            if stmt.columns().is_empty() {
                return Ok(affected(db.execute(sql.to_string()).await.map_err(fail)?));
            }
            let names: Vec<String> = stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            let first = sql
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            let wrap = matches!(first.as_str(), "select" | "with" | "values" | "table")
                && stmt
                    .columns()
                    .iter()
                    .any(|c| decode::pg_needs_text_cast(c.type_info().name()));
            let (text, plan) = if wrap {
                let list = stmt
                    .columns()
                    .iter()
                    .map(|c| {
                        let q = db.dialect.quote(c.name());
                        if decode::pg_needs_text_cast(c.type_info().name()) {
                            format!("{q}::text AS {q}")
                        } else {
                            q
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let plan = stmt
                    .columns()
                    .iter()
                    .map(|c| decode::pg_cast_kind(c.type_info().name()))
                    .collect();
                (format!("SELECT {list} FROM ({sql}) AS etl_src"), Some(plan))
            } else {
                (sql.to_string(), None)
            };
            collect(
                sqlx::query(AssertSqlSafe(text)).fetch(p),
                decode::pg_plan,
                decode::decode_pg,
                plan,
                names,
                limit,
                db,
                &doing,
            )
            .await
        }
        Pool::Mysql(p) => {
            let stmt = p
                .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
                .await
                .map_err(fail)?;
            if stmt.columns().is_empty() {
                return Ok(affected(db.execute(sql.to_string()).await.map_err(fail)?));
            }
            let names = stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            collect(
                sqlx::query(AssertSqlSafe(sql.to_string())).fetch(p),
                decode::mysql_plan,
                decode::decode_mysql,
                None,
                names,
                limit,
                db,
                &doing,
            )
            .await
        }
        Pool::Sqlite(p) => {
            let stmt = p
                .prepare(AssertSqlSafe(sql.to_string()).into_sql_str())
                .await
                .map_err(fail)?;
            if stmt.columns().is_empty() {
                return Ok(affected(db.execute(sql.to_string()).await.map_err(fail)?));
            }
            let names = stmt
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            collect(
                sqlx::query(AssertSqlSafe(sql.to_string())).fetch(p),
                decode::sqlite_plan,
                decode::decode_sqlite,
                None,
                names,
                limit,
                db,
                &doing,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn collect<R: Row>(
    mut stream: BoxStream<'_, Result<R, sqlx::Error>>,
    plan_of: fn(&R) -> Vec<Kind>,
    decode: fn(&R, &[Kind]) -> Result<Vec<Value>, String>,
    mut plan: Option<Vec<Kind>>,
    names: Vec<String>,
    limit: usize,
    db: &Db,
    doing: &str,
) -> Result<Batch, ConnectorError> {
    let mut batch = Batch::new(names);
    while batch.rows.len() < limit {
        let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| db.error(ErrorKind::Read, doing, e))?
        else {
            break;
        };
        let plan = plan.get_or_insert_with(|| plan_of(&row));
        batch
            .rows
            .push(decode(&row, plan).map_err(|e| ConnectorError::read(format!("{doing}: {e}")))?);
    }
    Ok(batch)
}
