//! Writing: creates the destination table from the first batch's inferred types, adds columns a
//! batch brings, and loads rows by mode. PostgreSQL loads through `COPY ... FROM STDIN`;
//! MySQL and SQLite through multi-row `INSERT`s with bound values, chunked under the
//! placeholder limits.
//!
//! Batches are committed in groups: `append` and `merge` keep one transaction (for PostgreSQL
//! append, one open `COPY`) across `write` calls and commit when the group holds `commit_rows`
//! rows, when a batch brings other columns, or at `finish`. A commit costs a round trip plus a
//! ~30-60 ms wait for the server's delayed ACK on PostgreSQL (the driver leaves Nagle on), so
//! paying it once per group instead of once per batch is what makes loads approach `psql \copy`.
//! A failure or a stop rolls back the open group only. `replace` groups the same way into a
//! staging table that `finish` swaps in and `abort` drops.

use std::borrow::Cow;
use std::io::Write as _;

use etl_model::{
    Batch, ColumnType, ConnectorError, ErrorKind, RunContext, Sink, SinkRequest, Value, WriteMode,
};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Database, Encode, Executor, Type};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conn::{Db, Pool};
use crate::dialect::{Dialect, TableRef, classify_declared};

/// Rows per commit group when the flow does not set `destination.commit_rows`: ten of the
/// engine's default batches, so the per-commit cost is paid once per 100,000 rows while a
/// failure rolls back at most that many.
pub(crate) const DEFAULT_COMMIT_ROWS: u64 = 100_000;
/// Upper bound on the bound-value bytes of one INSERT: MariaDB's default packet limit is
/// 16 MB, so statements stay well under it even with wide text rows.
const INSERT_BYTES: usize = 4 << 20;
/// COPY data is sent in pieces of about this size.
const COPY_CHUNK: usize = 1 << 20;
/// COPY pieces queued for a group's writer task: encoding the next batch overlaps sending this
/// one, and memory stays bounded by a few pieces.
const COPY_QUEUE: usize = 4;

/// Binds one engine value as the natural parameter type of the database.
pub(crate) fn bind_value<'q, DB>(
    q: Query<'q, DB, <DB as Database>::Arguments>,
    v: &Value,
) -> Query<'q, DB, <DB as Database>::Arguments>
where
    DB: Database,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> f64: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
{
    match v {
        Value::Null => q.bind(None::<&str>),
        Value::Bool(b) => q.bind(*b),
        Value::Int(i) => q.bind(*i),
        Value::Float(f) => q.bind(*f),
        Value::Text(s) => q.bind(s.as_str()),
    }
}

/// A destination column as the sink knows it.
#[derive(Clone, Debug)]
struct Col {
    name: String,
    /// The engine type values are coerced to before writing; `None` leaves them alone.
    ty: Option<ColumnType>,
}

/// Converts a value to the destination column's type where the database would not: "true"
/// into a MySQL BOOLEAN, `1` into a float column, ISO timestamps with `T`/`Z` into MySQL
/// DATETIME. A value that does not convert is written as is, so the database reports it.
fn coerce<'a>(v: &'a Value, ty: Option<ColumnType>, d: Dialect) -> Cow<'a, Value> {
    let Some(ty) = ty else {
        return Cow::Borrowed(v);
    };
    match (ty, v) {
        (_, Value::Null)
        | (ColumnType::Integer, Value::Int(_))
        | (ColumnType::Float, Value::Float(_))
        | (ColumnType::Boolean, Value::Bool(_)) => Cow::Borrowed(v),
        (ColumnType::Timestamp, Value::Text(s)) if d == Dialect::Mysql => {
            mysql_datetime(s).map_or(Cow::Borrowed(v), |t| Cow::Owned(Value::Text(t)))
        }
        (
            ColumnType::Text | ColumnType::Json | ColumnType::Date | ColumnType::Timestamp,
            Value::Text(_),
        ) => Cow::Borrowed(v),
        (ty, v) => v.cast(ty).map_or(Cow::Borrowed(v), Cow::Owned),
    }
}

/// ISO-8601 as MySQL DATETIME accepts it: offsets converted to UTC, `T` replaced by a space.
fn mysql_datetime(s: &str) -> Option<String> {
    let t = s.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string());
    }
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|dt| dt.format("%Y-%m-%d %H:%M:%S%.f").to_string())
}

/// Appends one value in COPY text format: `\N` for null, backslash escapes for the
/// characters that delimit fields and rows.
fn copy_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.extend_from_slice(b"\\N"),
        Value::Bool(b) => buf.push(if *b { b't' } else { b'f' }),
        Value::Int(i) => {
            let _ = write!(buf, "{i}");
        }
        Value::Float(f) if f.is_nan() => buf.extend_from_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => {
            buf.extend_from_slice(if *f > 0.0 { b"Infinity" } else { b"-Infinity" })
        }
        Value::Float(f) => {
            let _ = write!(buf, "{f}");
        }
        Value::Text(s) => {
            let bytes = s.as_bytes();
            if !bytes
                .iter()
                .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
            {
                buf.extend_from_slice(bytes);
                return;
            }
            for &b in bytes {
                match b {
                    b'\\' => buf.extend_from_slice(b"\\\\"),
                    b'\n' => buf.extend_from_slice(b"\\n"),
                    b'\r' => buf.extend_from_slice(b"\\r"),
                    b'\t' => buf.extend_from_slice(b"\\t"),
                    b => buf.push(b),
                }
            }
        }
    }
}

/// Appends one row in COPY text format.
fn copy_row(buf: &mut Vec<u8>, row: &[Value], types: &[Option<ColumnType>]) {
    for (i, (v, ty)) in row.iter().zip(types).enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        copy_value(buf, &coerce(v, *ty, Dialect::Postgres));
    }
    buf.push(b'\n');
}

/// What a PostgreSQL group's writer task is told.
enum PgCmd {
    /// A piece of COPY text.
    Data(Vec<u8>),
    /// Complete the COPY and commit.
    Commit,
}

/// The statements of one PostgreSQL group: `setup` before the COPY, `after` once it completes.
struct PgPlan {
    setup: Vec<String>,
    copy: String,
    after: Vec<String>,
    /// The group runs inside BEGIN ... COMMIT (merge) and must be rolled back on abort.
    in_tx: bool,
}

/// A PostgreSQL group: a task that owns a connection with one `COPY ... FROM STDIN` open for
/// the whole group. The task owns the connection because the driver's COPY handle borrows
/// it; it also means a `write` stopped half-way (the engine drops the future on cancel) never
/// leaves a half-sent message on the wire: the task only ever sees whole pieces.
struct PgGroup {
    tx: mpsc::Sender<PgCmd>,
    task: JoinHandle<Result<Option<u64>, sqlx::Error>>,
}

impl PgGroup {
    fn start(pool: PgPool, plan: PgPlan) -> PgGroup {
        let (tx, rx) = mpsc::channel(COPY_QUEUE);
        PgGroup {
            tx,
            task: tokio::spawn(pg_group(pool, plan, rx)),
        }
    }

    /// Encodes a batch as COPY text and queues it. Fails only when the task already ended
    /// (its error is collected by [`PgGroup::commit`] or [`PgGroup::rollback`]).
    async fn send(&self, batch: &Batch, types: &[Option<ColumnType>]) -> bool {
        let mut buf = Vec::with_capacity(COPY_CHUNK + 64 * 1024);
        for row in &batch.rows {
            copy_row(&mut buf, row, types);
            if buf.len() >= COPY_CHUNK {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(COPY_CHUNK + 64 * 1024));
                if self.tx.send(PgCmd::Data(full)).await.is_err() {
                    return false;
                }
            }
        }
        buf.is_empty() || self.tx.send(PgCmd::Data(buf)).await.is_ok()
    }

    /// Completes the COPY and commits; answers the rows the server loaded. Borrows the group
    /// so that a stop while the commit is in flight still finds it and can tell what happened.
    async fn commit(&mut self) -> Result<u64, sqlx::Error> {
        // A closed channel means the task ended with an error, which joining reports.
        let _ = self.tx.send(PgCmd::Commit).await;
        match (&mut self.task).await {
            Ok(Ok(Some(n))) => Ok(n),
            Ok(Ok(None)) => Err(sqlx::Error::Protocol(
                "the COPY was discarded before it could be committed".into(),
            )),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(sqlx::Error::Protocol(format!(
                "the task streaming the COPY stopped: {join}"
            ))),
        }
    }

    /// Discards the open COPY (and the group's transaction). Answers the rows that were
    /// committed after all, which happens only when a stop interrupted a commit in flight.
    async fn rollback(self) -> Option<u64> {
        drop(self.tx);
        match self.task.await {
            Ok(Ok(n)) => n,
            _ => None,
        }
    }
}

/// The writer task of a PostgreSQL group. A connection that saw an error is closed rather
/// than returned to the pool, so no half-finished COPY or transaction is ever reused; closing
/// it makes the server roll back whatever was open.
async fn pg_group(
    pool: PgPool,
    plan: PgPlan,
    mut rx: mpsc::Receiver<PgCmd>,
) -> Result<Option<u64>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let result = pg_group_on(&mut conn, &plan, &mut rx).await;
    if result.is_err() {
        drop(conn.detach());
    }
    result
}

async fn pg_group_on(
    conn: &mut PgConnection,
    plan: &PgPlan,
    rx: &mut mpsc::Receiver<PgCmd>,
) -> Result<Option<u64>, sqlx::Error> {
    for sql in &plan.setup {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&mut *conn)
            .await?;
    }
    let mut copy = conn.copy_in_raw(&plan.copy).await?;
    loop {
        match rx.recv().await {
            Some(PgCmd::Data(buf)) => {
                copy.send(buf).await?;
            }
            Some(PgCmd::Commit) => {
                let n = copy.finish().await?;
                for sql in &plan.after {
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .execute(&mut *conn)
                        .await?;
                }
                return Ok(Some(n));
            }
            None => {
                copy.abort("etlworks-agent: the run failed or was stopped, so the open commit group is discarded")
                    .await?;
                if plan.in_tx {
                    sqlx::query("ROLLBACK").execute(&mut *conn).await?;
                }
                return Ok(None);
            }
        }
    }
}

/// A MySQL or SQLite group: one pooled connection inside BEGIN ... COMMIT.
struct TxGroup<DB: Database> {
    /// Taken out on commit or rollback; still here on drop only when neither completed.
    conn: Option<PoolConnection<DB>>,
    /// A statement is in flight. Set while awaiting, so if the engine drops a `write` half-way
    /// the connection is known to be in an unknown state and is closed instead of reused.
    busy: bool,
}

impl<DB: Database> Drop for TxGroup<DB> {
    fn drop(&mut self) {
        // Never hand a connection with an open transaction back to the pool: closing it
        // makes the database roll the transaction back.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl<DB> TxGroup<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: sqlx::IntoArguments<DB>,
{
    async fn begin(pool: &sqlx::Pool<DB>, begin: &'static str) -> Result<Self, sqlx::Error> {
        let mut g = TxGroup {
            conn: Some(pool.acquire().await?),
            busy: true,
        };
        g.exec(begin).await?;
        g.busy = false;
        Ok(g)
    }

    fn conn(&mut self) -> &mut DB::Connection {
        self.conn
            .as_deref_mut()
            .expect("a group's connection is present until it commits or rolls back")
    }

    async fn exec(&mut self, sql: &'static str) -> Result<(), sqlx::Error> {
        sqlx::query(sql).execute(self.conn()).await.map(|_| ())
    }

    async fn commit(&mut self) -> Result<(), sqlx::Error> {
        self.busy = true;
        self.exec("COMMIT").await?;
        self.busy = false;
        // Back to the pool, outside any transaction.
        self.conn.take();
        Ok(())
    }

    async fn rollback(mut self) {
        if self.busy {
            // Dropping closes the connection, which rolls back.
            return;
        }
        self.busy = true;
        if self.exec("ROLLBACK").await.is_ok() {
            self.busy = false;
            self.conn.take();
        }
    }
}

/// Multi-row INSERTs (MySQL, SQLite) on a connection inside the group's transaction, each
/// under the placeholder and byte limits. `tail` is the upsert clause for merge.
async fn insert_rows<DB>(
    conn: &mut DB::Connection,
    d: Dialect,
    table: &str,
    batch: &Batch,
    types: &[Option<ColumnType>],
    tail: &str,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> f64: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
{
    let ncols = batch.columns.len().max(1);
    let max_rows = (d.max_params() / ncols).max(1);
    let mut start = 0;
    let mut cached: Option<(usize, String)> = None;
    while start < batch.rows.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < batch.rows.len()
            && end - start < max_rows
            && (bytes < INSERT_BYTES || end == start)
        {
            bytes += batch.rows[end]
                .iter()
                .map(|v| match v {
                    Value::Text(s) => s.len() + 4,
                    _ => 9,
                })
                .sum::<usize>();
            end += 1;
        }
        let n = end - start;
        // Full chunks repeat, so their statement text is built once per batch.
        let sql = match &cached {
            Some((rows, sql)) if *rows == n => sql.clone(),
            _ => {
                let sql = d.insert_sql(table, &batch.columns, n) + tail;
                cached = Some((n, sql.clone()));
                sql
            }
        };
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for row in &batch.rows[start..end] {
            for (v, ty) in row.iter().zip(types) {
                q = bind_value(q, &coerce(v, *ty, d));
            }
        }
        q.execute(&mut *conn).await?;
        start = end;
    }
    Ok(())
}

/// The transaction (or COPY) a group of batches shares, by database.
enum GroupTx {
    Postgres(PgGroup),
    Mysql(TxGroup<sqlx::MySql>),
    Sqlite(TxGroup<sqlx::Sqlite>),
}

/// The batches written since the last commit.
struct Group {
    tx: GroupTx,
    /// The columns every batch of the group has, in this order (COPY and INSERT name them).
    columns: Vec<String>,
    rows: u64,
    batches: u64,
    /// The commit was started; if it is still here, a stop interrupted it.
    committing: bool,
}

/// Where a group stands relative to the batch being written, for messages.
#[derive(Clone, Copy)]
enum Phase {
    /// The current batch is the group's last.
    Joined,
    /// The group ends before the current batch (which brings other columns).
    Before,
    /// `finish` commits the run's last batches.
    Finish,
}

impl Group {
    /// "this batch and the 2 before it (30000 rows)", as the engine names the failing batch.
    fn describe(&self, phase: Phase) -> String {
        let b = self.batches;
        let what = match phase {
            Phase::Joined if b <= 1 => "this batch".to_string(),
            Phase::Joined if b == 2 => "this batch and the one before it".to_string(),
            Phase::Joined => format!("this batch and the {} before it", b - 1),
            Phase::Before if b == 1 => "the batch before this one".to_string(),
            Phase::Before => format!("the {b} batches before this one"),
            Phase::Finish if b == 1 => "the last batch".to_string(),
            Phase::Finish => format!("the last {b} batches"),
        };
        format!("{what} ({} rows)", self.rows)
    }
}

/// The columns of a table, or `None` when it does not exist.
async fn columns_of(db: &Db, t: &TableRef) -> Result<Option<Vec<Col>>, sqlx::Error> {
    let rows = match db.dialect {
        Dialect::Postgres => {
            db.text_rows(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)::text, '0' \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
                 AND NOT a.attisdropped ORDER BY a.attnum"
                    .to_string(),
                &[Some(&t.sql(Dialect::Postgres))],
            )
            .await?
        }
        Dialect::Mysql => {
            db.text_rows(
                "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), '0' \
                 FROM information_schema.columns \
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? \
                 ORDER BY ordinal_position"
                    .to_string(),
                &[t.schema.as_deref(), Some(&t.name)],
            )
            .await?
        }
        Dialect::Sqlite => {
            db.text_rows(
                "SELECT name, type FROM pragma_table_info(?, ?) ORDER BY cid".to_string(),
                &[Some(&t.name), Some(t.schema.as_deref().unwrap_or("main"))],
            )
            .await?
        }
    };
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let name = it.next().flatten().unwrap_or_default();
                let decl = it.next().flatten().unwrap_or_default();
                Col {
                    name,
                    ty: classify_declared(&decl),
                }
            })
            .collect(),
    ))
}

/// The column sets of the table's unique indexes (primary key included).
async fn unique_sets(db: &Db, t: &TableRef) -> Result<Vec<Vec<String>>, sqlx::Error> {
    let rows = match db.dialect {
        Dialect::Postgres => {
            db.text_rows(
                "SELECT ix.indexrelid::text, a.attname::text FROM pg_index ix \
                 CROSS JOIN LATERAL unnest(ix.indkey) AS k(attnum) \
                 JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum \
                 WHERE ix.indrelid = to_regclass($1) AND ix.indisunique \
                 AND ix.indpred IS NULL AND ix.indexprs IS NULL"
                    .to_string(),
                &[Some(&t.sql(Dialect::Postgres))],
            )
            .await?
        }
        Dialect::Mysql => {
            db.text_rows(
                "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR) \
                 FROM information_schema.statistics \
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? AND non_unique = 0"
                    .to_string(),
                &[t.schema.as_deref(), Some(&t.name)],
            )
            .await?
        }
        Dialect::Sqlite => {
            let schema = t.schema.as_deref().unwrap_or("main");
            let mut rows = db
                .text_rows(
                    "SELECT il.name, ii.name FROM pragma_index_list(?, ?) AS il \
                     JOIN pragma_index_info(il.name, ?) AS ii WHERE il.\"unique\" = 1"
                        .to_string(),
                    &[Some(&t.name), Some(schema), Some(schema)],
                )
                .await?;
            // An INTEGER PRIMARY KEY is the rowid and has no index entry of its own.
            rows.extend(
                db.text_rows(
                    "SELECT 'primary key', name FROM pragma_table_info(?, ?) WHERE pk > 0"
                        .to_string(),
                    &[Some(&t.name), Some(schema)],
                )
                .await?,
            );
            rows
        }
    };
    let mut sets: Vec<(String, Vec<String>)> = Vec::new();
    for r in rows {
        let mut it = r.into_iter();
        let index = it.next().flatten().unwrap_or_default();
        let col = it.next().flatten().unwrap_or_default();
        match sets.iter_mut().find(|(i, _)| *i == index) {
            Some((_, cols)) => cols.push(col),
            None => sets.push((index, vec![col])),
        }
    }
    Ok(sets.into_iter().map(|(_, c)| c).collect())
}

/// A sink writing into one table.
pub(crate) struct SqlSink {
    db: Db,
    mode: WriteMode,
    keys: Vec<String>,
    create: bool,
    /// The table the flow names.
    table: TableRef,
    /// Where rows go: the table, or the staging table for `replace`.
    target: TableRef,
    /// The target's columns, once known.
    columns: Option<Vec<Col>>,
    /// The table's columns when the run started (`None` when it did not exist).
    existing: Option<Vec<Col>>,
    staged: bool,
    /// Merge: the unique index on the keys was found or created.
    keys_checked: bool,
    /// Types the flow declares (`cast=`), used instead of inference for new columns.
    declared: Vec<(String, ColumnType)>,
    /// Replace: rows written to the staging table, visible once it is swapped in.
    staged_rows: u64,
    /// Rows per commit group (`destination.commit_rows`).
    commit_rows: u64,
    /// The batches written but not yet committed.
    group: Option<Group>,
    ctx: RunContext,
}

impl SqlSink {
    pub async fn open(
        db: Db,
        req: SinkRequest,
        ctx: &RunContext,
    ) -> Result<SqlSink, ConnectorError> {
        let db = db.dedicated();
        let d = db.dialect;
        let table = db.table(&req.object)?;
        if req.mode == WriteMode::Merge && req.keys.is_empty() {
            return Err(ConnectorError::config(format!(
                "merge into {table} needs key columns to match rows on; add keys=id (or keys=a,b)"
            )));
        }
        let existing = columns_of(&db, &table)
            .await
            .map_err(|e| db.error(ErrorKind::Write, &format!("looking up table {table}"), e))?;
        if existing.is_none() && !req.create {
            return Err(ConnectorError::not_found(format!(
                "table {table} does not exist in {} and create=false; create the table first or let the flow create it (create=true)",
                db.label
            )));
        }
        let target = match req.mode {
            WriteMode::Replace => table.sibling(table.scratch_name(d, "stage", &req.run_id)),
            _ => table.clone(),
        };
        let commit_rows = req.options.u64_or("commit_rows", DEFAULT_COMMIT_ROWS)?;
        if commit_rows == 0 {
            return Err(ConnectorError::config(format!(
                "destination option commit_rows must be at least 1 (rows per commit) for {table}, got 0; use commit_rows=1 to commit every batch on its own"
            )));
        }
        let columns = if req.mode == WriteMode::Replace {
            None
        } else {
            existing.clone()
        };
        Ok(SqlSink {
            db,
            mode: req.mode,
            keys: req.keys,
            create: req.create,
            table,
            target,
            columns,
            existing,
            staged: false,
            keys_checked: false,
            declared: req.column_types,
            staged_rows: 0,
            commit_rows,
            group: None,
            ctx: ctx.clone(),
        })
    }

    fn d(&self) -> Dialect {
        self.db.dialect
    }

    fn err(&self, doing: String, e: sqlx::Error) -> ConnectorError {
        self.db.error(ErrorKind::Write, &doing, e)
    }

    async fn exec(
        &self,
        sql: String,
        doing: impl FnOnce() -> String,
    ) -> Result<(), ConnectorError> {
        self.db
            .execute(sql)
            .await
            .map(|_| ())
            .map_err(|e| self.err(doing(), e))
    }

    async fn refresh_columns(&mut self) -> Result<(), ConnectorError> {
        let cols = columns_of(&self.db, &self.target)
            .await
            .map_err(|e| self.err(format!("looking up table {}", self.target), e))?;
        self.columns = Some(cols.unwrap_or_default());
        Ok(())
    }

    /// CREATE TABLE from the batch's inferred types; with a primary key on the keys for merge.
    async fn create_from(&self, t: &TableRef, batch: &Batch) -> Result<(), ConnectorError> {
        let d = self.d();
        for k in &self.keys {
            if !batch.columns.iter().any(|c| d.same_name(c, k)) {
                return Err(ConnectorError::config(format!(
                    "key column '{k}' is not in the data written to {} (columns: {}); fix keys= or the mapping",
                    self.table,
                    batch.columns.join(", ")
                )));
            }
        }
        let defs: Vec<String> = batch
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = self.new_column_type(batch, i);
                let is_key = self.keys.iter().any(|k| d.same_name(k, c));
                let not_null = if is_key && self.mode == WriteMode::Merge {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("{} {}{not_null}", d.quote(c), d.column_type(ty, is_key))
            })
            .collect();
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({}",
            t.sql(d),
            defs.join(", ")
        );
        if self.mode == WriteMode::Merge {
            sql.push_str(&format!(", PRIMARY KEY ({})", d.column_list(&self.keys)));
        }
        sql.push(')');
        self.exec(sql, || format!("creating table {t}")).await?;
        self.ctx
            .info(&format!("created table {t} ({})", defs.join(", ")));
        Ok(())
    }

    /// A staging table with the destination's columns and keys.
    async fn create_stage_like(&self) -> Result<(), ConnectorError> {
        let d = self.d();
        let (stage, table) = (self.target.sql(d), self.table.sql(d));
        let sql = match d {
            Dialect::Postgres => format!("CREATE TABLE {stage} (LIKE {table} INCLUDING ALL)"),
            Dialect::Mysql => format!("CREATE TABLE {stage} LIKE {table}"),
            Dialect::Sqlite => {
                // SQLite has no CREATE TABLE ... LIKE: reuse the table's own definition, so
                // constraints (CHECK, UNIQUE, defaults, keys) hold for the new rows too.
                let master = self.sqlite_master();
                let rows = self
                    .db
                    .text_rows(
                        format!("SELECT sql FROM {master} WHERE type = 'table' AND name = ?"),
                        &[Some(&self.table.name)],
                    )
                    .await
                    .map_err(|e| self.err(format!("looking up table {}", self.table), e))?;
                let ddl = rows
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next().flatten());
                let body = ddl.as_deref().and_then(|t| t.find('(').map(|i| &t[i..]));
                match body {
                    Some(body) => format!("CREATE TABLE {stage} {body}"),
                    None => {
                        return Err(ConnectorError::write(format!(
                            "cannot read the definition of table {} to stage the replacement; check the database file",
                            self.table
                        )));
                    }
                }
            }
        };
        self.exec(sql, || format!("creating staging table {}", self.target))
            .await
    }

    /// SQLite's catalogue table for the destination's schema.
    fn sqlite_master(&self) -> String {
        match &self.table.schema {
            Some(schema) => format!("{}.sqlite_master", self.d().quote(schema)),
            None => "sqlite_master".to_string(),
        }
    }

    /// The type for a new column: the flow's declared type, else inferred from the batch.
    fn new_column_type(&self, batch: &Batch, i: usize) -> ColumnType {
        let d = self.d();
        let name = &batch.columns[i];
        self.declared
            .iter()
            .find(|(c, _)| d.same_name(c, name))
            .map(|(_, t)| *t)
            .unwrap_or_else(|| {
                ColumnType::infer(batch.rows.iter().map(|r| &r[i])).unwrap_or(ColumnType::Text)
            })
    }

    /// Makes sure the target exists and its columns are known.
    async fn ensure_target(&mut self, batch: &Batch) -> Result<(), ConnectorError> {
        if self.columns.is_some() {
            if self.mode == WriteMode::Merge && !self.keys_checked {
                self.ensure_unique_keys().await?;
                self.keys_checked = true;
            }
            return Ok(());
        }
        match (self.mode, self.existing.clone()) {
            (WriteMode::Replace, Some(_)) => {
                self.staged = true;
                self.create_stage_like().await?;
            }
            (WriteMode::Replace, None) => {
                self.staged = true;
                let stage = self.target.clone();
                self.create_from(&stage, batch).await?;
            }
            (_, None) if self.create => {
                let table = self.table.clone();
                self.create_from(&table, batch).await?;
            }
            (_, _) => {
                return Err(ConnectorError::not_found(format!(
                    "table {} does not exist in {} and create=false; create the table first or let the flow create it (create=true)",
                    self.table, self.db.label
                )));
            }
        }
        self.refresh_columns().await?;
        if self.mode == WriteMode::Merge {
            self.ensure_unique_keys().await?;
            self.keys_checked = true;
        }
        Ok(())
    }

    /// Merge needs a unique index on exactly the key columns; one is created when missing.
    async fn ensure_unique_keys(&self) -> Result<(), ConnectorError> {
        let d = self.d();
        let t = &self.table;
        let sets = unique_sets(&self.db, t)
            .await
            .map_err(|e| self.err(format!("looking up the indexes of {t}"), e))?;
        let covers = |set: &Vec<String>| {
            set.len() == self.keys.len()
                && self
                    .keys
                    .iter()
                    .all(|k| set.iter().any(|c| d.same_name(c, k)))
        };
        if sets.iter().any(covers) {
            return Ok(());
        }
        let index = t.scratch_name(d, "merge", "keys");
        let (index_sql, table_sql) = match (&t.schema, d) {
            (Some(s), Dialect::Sqlite) => (
                format!("{}.{}", d.quote(s), d.quote(&index)),
                d.quote(&t.name),
            ),
            _ => (d.quote(&index), t.sql(d)),
        };
        let sql = format!(
            "CREATE UNIQUE INDEX {index_sql} ON {table_sql} ({})",
            d.column_list(&self.keys)
        );
        self.db.execute(sql).await.map_err(|e| {
            ConnectorError::write(format!(
                "merge into {t} needs a unique index on ({}) and creating one failed: {}; remove duplicate key rows, make the keys unique (in MySQL key columns must be VARCHAR, not TEXT), or choose other keys",
                self.keys.join(", "),
                crate::conn::describe(d, &e)
            ))
        })?;
        self.ctx.info(&format!(
            "created unique index {index} on {t} ({}) so merge can upsert on the keys",
            self.keys.join(", ")
        ));
        Ok(())
    }

    /// ALTER TABLE ADD COLUMN for every batch column the target lacks.
    async fn evolve(&mut self, batch: &Batch) -> Result<(), ConnectorError> {
        let d = self.d();
        let known = self.columns.clone().unwrap_or_default();
        for (i, c) in batch.columns.iter().enumerate() {
            if known.iter().any(|k| d.same_name(&k.name, c)) {
                continue;
            }
            let ty = self.new_column_type(batch, i);
            let decl = d.column_type(ty, false);
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN {} {decl}",
                self.target.sql(d),
                d.quote(c)
            );
            self.exec(sql, || format!("adding column {c} to {}", self.target))
                .await?;
            self.ctx
                .info(&format!("added column {c} ({decl}) to {}", self.table));
            if let Some(cols) = self.columns.as_mut() {
                cols.push(Col {
                    name: c.clone(),
                    ty: Some(ty),
                });
            }
        }
        Ok(())
    }

    /// The engine types the batch's values are coerced to, from the target's columns.
    fn types_for(&self, columns: &[String]) -> Vec<Option<ColumnType>> {
        let d = self.d();
        let cols = self.columns.as_deref().unwrap_or_default();
        columns
            .iter()
            .map(|c| {
                cols.iter()
                    .find(|k| d.same_name(&k.name, c))
                    .and_then(|k| k.ty)
            })
            .collect()
    }

    /// Starts a group whose batches all have `columns`.
    async fn open_group(&mut self, columns: &[String]) -> Result<(), sqlx::Error> {
        let d = self.d();
        let target = self.target.sql(d);
        let col_list = d.column_list(columns);
        let tx = match &self.db.pool {
            Pool::Postgres(p) if self.mode == WriteMode::Merge => {
                // COPY into a temporary table, then one set-based upsert at commit. DISTINCT
                // ON keeps the last row per key (heap order of a fresh temp table is arrival
                // order, across the group's batches too), since ON CONFLICT may not touch a
                // row twice in one statement.
                let keys = d.column_list(&self.keys);
                let upsert = d.upsert_clause(columns, &self.keys);
                GroupTx::Postgres(PgGroup::start(
                    p.clone(),
                    PgPlan {
                        setup: vec![
                            "BEGIN".into(),
                            format!(
                                "CREATE TEMP TABLE etl_merge ON COMMIT DROP AS SELECT {col_list} FROM {target} WITH NO DATA"
                            ),
                        ],
                        copy: format!("COPY etl_merge ({col_list}) FROM STDIN"),
                        after: vec![
                            format!(
                                "INSERT INTO {target} ({col_list}) SELECT DISTINCT ON ({keys}) {col_list} FROM etl_merge ORDER BY {keys}, ctid DESC{upsert}"
                            ),
                            "COMMIT".into(),
                        ],
                        in_tx: true,
                    },
                ))
            }
            // One COPY statement is its own transaction: all of its rows or none.
            Pool::Postgres(p) => GroupTx::Postgres(PgGroup::start(
                p.clone(),
                PgPlan {
                    setup: Vec::new(),
                    copy: format!("COPY {target} ({col_list}) FROM STDIN"),
                    after: Vec::new(),
                    in_tx: false,
                },
            )),
            Pool::Mysql(p) => GroupTx::Mysql(TxGroup::begin(p, "BEGIN").await?),
            // IMMEDIATE takes the write lock now (waiting up to busy_timeout) rather than
            // failing on the first INSERT when another writer holds it.
            Pool::Sqlite(p) => GroupTx::Sqlite(TxGroup::begin(p, "BEGIN IMMEDIATE").await?),
        };
        self.group = Some(Group {
            tx,
            columns: columns.to_vec(),
            rows: 0,
            batches: 0,
            committing: false,
        });
        Ok(())
    }

    /// Adds a batch to the open group (whose columns are the batch's).
    async fn add_to_group(&mut self, batch: &Batch) -> Result<(), ConnectorError> {
        let d = self.d();
        let types = self.types_for(&batch.columns);
        let target = self.target.sql(d);
        let tail = if self.mode == WriteMode::Merge && d != Dialect::Postgres {
            d.upsert_clause(&batch.columns, &self.keys)
        } else {
            String::new()
        };
        let Some(group) = self.group.as_mut() else {
            return Err(ConnectorError::write(format!(
                "writing {} rows to {}: no commit group is open; this is a bug in the sink, please report it",
                batch.len(),
                self.table
            )));
        };
        group.batches += 1;
        group.rows += batch.len() as u64;
        let what = group.describe(Phase::Joined);
        let result = match &mut group.tx {
            GroupTx::Postgres(pg) => {
                if pg.send(batch, &types).await {
                    Ok(())
                } else {
                    Err(None)
                }
            }
            GroupTx::Mysql(g) => {
                g.busy = true;
                let r =
                    insert_rows::<sqlx::MySql>(g.conn(), d, &target, batch, &types, &tail).await;
                g.busy = false;
                r.map_err(Some)
            }
            GroupTx::Sqlite(g) => {
                g.busy = true;
                let r =
                    insert_rows::<sqlx::Sqlite>(g.conn(), d, &target, batch, &types, &tail).await;
                g.busy = false;
                r.map_err(Some)
            }
        };
        let e = match result {
            Ok(()) => return Ok(()),
            Err(Some(e)) => e,
            // The PostgreSQL writer stopped early: joining it gives its error.
            Err(None) => match self.group.take().map(|g| g.tx) {
                Some(GroupTx::Postgres(mut pg)) => match pg.commit().await {
                    Err(e) => e,
                    Ok(_) => {
                        sqlx::Error::Protocol("the COPY ended before all rows were sent".into())
                    }
                },
                _ => sqlx::Error::Protocol("the COPY ended before all rows were sent".into()),
            },
        };
        let mut err = self.err(format!("writing {} rows to {}", batch.len(), self.table), e);
        err.message
            .push_str(&format!("; the open commit group, {what}, was rolled back"));
        Err(err)
    }

    /// Commits the open group, if any; answers its rows. On failure the group is rolled back.
    async fn commit_group(&mut self, phase: Phase) -> Result<u64, ConnectorError> {
        let Some(group) = self.group.as_mut() else {
            return Ok(0);
        };
        let what = group.describe(phase);
        let rows = group.rows;
        group.committing = true;
        let result = match &mut group.tx {
            GroupTx::Postgres(pg) => pg.commit().await.map(|_| ()),
            GroupTx::Mysql(g) => g.commit().await,
            GroupTx::Sqlite(g) => g.commit().await,
        };
        // Dropping the group closes a connection whose COMMIT failed (its transaction is
        // rolled back) and returns a committed one to the pool.
        self.group = None;
        result.map_err(|e| {
            let mut err = self.err(format!("committing {what} to {}", self.table), e);
            err.message
                .push_str("; the group was rolled back, so none of its rows were kept");
            err
        })?;
        Ok(rows)
    }

    /// Rolls back the open group, if any.
    async fn rollback_group(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        let interrupted = group.committing;
        let committed = match group.tx {
            GroupTx::Postgres(pg) => pg.rollback().await,
            GroupTx::Mysql(g) => {
                g.rollback().await;
                None
            }
            GroupTx::Sqlite(g) => {
                g.rollback().await;
                None
            }
        };
        let (rows, table) = (group.rows, &self.table);
        match committed {
            // Only when a stop interrupted `write` while the commit was already under way.
            Some(n) => self.ctx.warn(&format!(
                "the run stopped while {n} rows were being committed to {table}; the commit completed, so those rows stay although the run does not count them"
            )),
            None if interrupted && !matches!(self.db.pool, Pool::Postgres(_)) => {
                self.ctx.warn(&format!(
                    "the run stopped while {rows} rows were being committed to {table}; the database may have completed that COMMIT, so check the table for them"
                ))
            }
            None if rows > 0 => self.ctx.info(&format!(
                "rolled back the uncommitted {rows} rows ({} batches) written to {table}",
                group.batches
            )),
            None => {}
        }
    }

    /// The body of `write`: any error leaves the open group to be rolled back by the caller.
    async fn write_batch(&mut self, batch: Batch) -> Result<u64, ConnectorError> {
        let mut committed = 0;
        // A batch with other columns closes the group first: a COPY or INSERT names its
        // columns once, and ALTER TABLE must not wait on the group's own locks.
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.columns != batch.columns)
        {
            committed += self.commit_group(Phase::Before).await?;
        }
        self.ensure_target(&batch).await?;
        self.evolve(&batch).await?;
        if self.group.is_none() {
            self.open_group(&batch.columns).await.map_err(|e| {
                self.err(
                    format!("starting a transaction to write to {}", self.table),
                    e,
                )
            })?;
        }
        self.add_to_group(&batch).await?;
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.rows >= self.commit_rows)
        {
            committed += self.commit_group(Phase::Joined).await?;
        }
        Ok(committed)
    }

    /// Swaps the staging table in for the destination in one step.
    async fn swap(&mut self) -> Result<(), ConnectorError> {
        let d = self.d();
        let (stage, table) = (self.target.sql(d), self.table.sql(d));
        let doing = || format!("replacing {} with the new rows", self.table);
        let exists = columns_of(&self.db, &self.table)
            .await
            .map_err(|e| self.err(doing(), e))?
            .is_some();
        match &self.db.pool {
            Pool::Mysql(_) => {
                if exists {
                    let old =
                        self.table
                            .sibling(self.table.scratch_name(d, "old", &self.target.name));
                    let old = old.sql(d);
                    // One RENAME TABLE is atomic: readers see the old or the new table.
                    self.exec(
                        format!("RENAME TABLE {table} TO {old}, {stage} TO {table}"),
                        doing,
                    )
                    .await?;
                    self.exec(format!("DROP TABLE {old}"), doing).await?;
                } else {
                    self.exec(format!("RENAME TABLE {stage} TO {table}"), doing)
                        .await?;
                }
            }
            Pool::Postgres(p) => {
                // Sequences owned by the old table's serial columns would be dropped with it
                // while the new table's defaults still use them: hand them over first.
                let owned = self
                    .db
                    .text_rows(
                        "SELECT quote_ident(sn.nspname) || '.' || quote_ident(s.relname), a.attname::text \
                         FROM pg_depend dep JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S' \
                         JOIN pg_namespace sn ON sn.oid = s.relnamespace \
                         JOIN pg_attribute a ON a.attrelid = dep.refobjid AND a.attnum = dep.refobjsubid \
                         WHERE dep.refobjid = to_regclass($1) AND dep.deptype = 'a' \
                         AND dep.classid = 'pg_class'::regclass"
                            .to_string(),
                        &[Some(&table)],
                    )
                    .await
                    .map_err(|e| self.err(doing(), e))?;
                let cols = self.columns.clone().unwrap_or_default();
                let mut tx = p.begin().await.map_err(|e| self.err(doing(), e))?;
                for r in owned {
                    let (Some(seq), Some(col)) = (r[0].clone(), r[1].clone()) else {
                        continue;
                    };
                    if cols.iter().any(|c| c.name == col) {
                        let sql =
                            format!("ALTER SEQUENCE {seq} OWNED BY {stage}.{}", d.quote(&col));
                        sqlx::query(AssertSqlSafe(sql))
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| self.err(doing(), e))?;
                    }
                }
                for sql in [
                    format!("DROP TABLE IF EXISTS {table}"),
                    format!(
                        "ALTER TABLE {stage} RENAME TO {}",
                        d.quote(&self.table.name)
                    ),
                ] {
                    sqlx::query(AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(doing(), e))?;
                }
                tx.commit().await.map_err(|e| self.err(doing(), e))?;
            }
            Pool::Sqlite(p) => {
                // Indexes and triggers go with the old table: recreate them on the new one.
                let master = self.sqlite_master();
                let extras: Vec<String> = self
                    .db
                    .text_rows(
                        format!(
                            "SELECT sql FROM {master} WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL"
                        ),
                        &[Some(&self.table.name)],
                    )
                    .await
                    .map_err(|e| self.err(doing(), e))?
                    .into_iter()
                    .filter_map(|r| r.into_iter().next().flatten())
                    .collect();
                let mut tx = p.begin().await.map_err(|e| self.err(doing(), e))?;
                let statements = [
                    format!("DROP TABLE IF EXISTS {table}"),
                    format!(
                        "ALTER TABLE {stage} RENAME TO {}",
                        d.quote(&self.table.name)
                    ),
                ];
                for sql in statements.into_iter().chain(extras) {
                    sqlx::query(AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| self.err(doing(), e))?;
                }
                tx.commit().await.map_err(|e| self.err(doing(), e))?;
            }
        }
        self.staged = false;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for SqlSink {
    async fn write(&mut self, mut batch: Batch) -> Result<u64, ConnectorError> {
        if let Err(e) = self.ctx.check_canceled() {
            self.rollback_group().await;
            return Err(e);
        }
        if batch.is_empty() {
            return Ok(0);
        }
        batch.normalize();
        match self.write_batch(batch).await {
            Ok(n) if self.mode == WriteMode::Replace => {
                // Staged: visible (and counted) when `finish` swaps the table in.
                self.staged_rows += n;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.rollback_group().await;
                Err(e)
            }
        }
    }

    async fn finish(&mut self) -> Result<u64, ConnectorError> {
        let committed = self.commit_group(Phase::Finish).await?;
        if self.mode != WriteMode::Replace {
            return Ok(committed);
        }
        self.staged_rows += committed;
        if !self.staged {
            match self.existing.clone() {
                // No rows arrived: replacing with nothing empties the table.
                Some(existing) => {
                    self.staged = true;
                    self.create_stage_like().await?;
                    self.columns = Some(existing);
                }
                None => {
                    self.ctx.info(&format!(
                        "no rows arrived, so table {} was not created",
                        self.table
                    ));
                    return Ok(0);
                }
            }
        }
        self.swap().await?;
        Ok(self.staged_rows)
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        self.rollback_group().await;
        if !self.staged {
            return Ok(());
        }
        let sql = format!("DROP TABLE IF EXISTS {}", self.target.sql(self.d()));
        self.exec(sql, || format!("dropping staging table {}", self.target))
            .await?;
        self.staged = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_delimiters() {
        let mut buf = Vec::new();
        copy_value(&mut buf, &Value::Text("a\tb\nc\\d\re".into()));
        assert_eq!(buf, b"a\\tb\\nc\\\\d\\re");
        buf.clear();
        copy_value(&mut buf, &Value::Null);
        copy_value(&mut buf, &Value::Float(f64::NEG_INFINITY));
        copy_value(&mut buf, &Value::Bool(true));
        assert_eq!(buf, b"\\N-Infinityt");
    }

    #[test]
    fn coerces_to_destination_types() {
        let v = Value::Text("true".into());
        assert_eq!(
            coerce(&v, Some(ColumnType::Boolean), Dialect::Mysql).into_owned(),
            Value::Bool(true)
        );
        let ts = Value::Text("2024-01-02T10:00:00+02:00".into());
        assert_eq!(
            coerce(&ts, Some(ColumnType::Timestamp), Dialect::Mysql).into_owned(),
            Value::Text("2024-01-02 08:00:00".into())
        );
        assert_eq!(
            coerce(&ts, Some(ColumnType::Timestamp), Dialect::Postgres).into_owned(),
            ts
        );
        let bad = Value::Text("abc".into());
        assert_eq!(
            coerce(&bad, Some(ColumnType::Integer), Dialect::Sqlite).into_owned(),
            bad
        );
    }
}
