//! The SQLite metadata store: one database file in the data directory, WAL mode, migrations
//! applied at open.
//!
//! Writes go through a pool of exactly one connection and reads through a pool of several.
//! SQLite allows one writer at a time anyway; queueing writers in-process (on the pool) instead
//! of letting them collide in the file means no `SQLITE_BUSY` between our own tasks, no busy-wait
//! sleeps, and no read transaction that deadlocks when it tries to upgrade to a write. WAL lets
//! the readers run while the writer writes. `busy_timeout` (5 s) still covers other processes
//! that open the same file, such as a CLI next to a running server.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use etl_agent::keys::{ApiKey, KeyStore};
use etl_agent::sessions::{NewMessage, Session, SessionMessage, SessionStore};
use etl_agent::usage::{GroupBy, UsageFilter, UsageRecord, UsageStore, UsageTotals};
use etl_engine::{
    Connection, Flow, LogLine, Run, RunQuery, RunStatus, Schedule, Store, StoreError, StoreResult,
    Timestamp,
};
use sqlx::error::ErrorKind;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

use crate::codec::{self, Columns};
use crate::sql;

/// How long a statement waits for another process's lock before failing with "database is
/// locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers: enough for the API, the scheduler and a few runs reading at once; each is a thread
/// plus a page cache, so keep it small.
const READERS: u32 = 4;
/// The table that records applied migrations (sqlx's default is `_sqlx_migrations`).
const MIGRATIONS_TABLE: &str = "schema_migrations";

/// The schema, embedded at compile time and applied in version order at open. Append new files;
/// never edit one that has shipped (its checksum is recorded and checked at every open).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "run liveness",
        include_str!("../migrations/sqlite/0002_run_liveness.sql"),
    ),
    (
        3,
        "api keys",
        include_str!("../migrations/sqlite/0003_api_keys.sql"),
    ),
    (
        4,
        "sessions",
        include_str!("../migrations/sqlite/0004_sessions.sql"),
    ),
    (
        5,
        "usage",
        include_str!("../migrations/sqlite/0005_usage.sql"),
    ),
];

/// The SQLite implementation of [`Store`]. Cheap to clone (the pools are shared handles).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    location: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its parent directories when missing) the database file at
    /// `path`, sets WAL mode, `synchronous=NORMAL`, foreign keys and a 5 s busy timeout, and
    /// applies any migration not yet applied.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Backend(format!(
                    "cannot create the directory {} for the metadata database: {e}; check that \
                     the data directory is writable by this user",
                    parent.display()
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let open_error = |e: sqlx::Error| {
            StoreError::Backend(format!(
                "cannot open the metadata database {}: {e}; check that the file is a SQLite \
                 database, that this user may read and write it and its directory, and that the \
                 disk is not full",
                path.display()
            ))
        };
        // The writer opens first: it creates the file and switches it to WAL, which readers
        // then find already set.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        let store = SqliteStore {
            reader: SqlitePoolOptions::new()
                .max_connections(READERS)
                .connect_with(options)
                .await
                .map_err(open_error)?,
            writer,
            location: path.to_path_buf(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A private database in memory, gone when the store is dropped; for tests and throwaway
    /// tools. It has a single connection (an in-memory database is per connection), which both
    /// reads and writes share and which never expires.
    pub async fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Backend(format!("cannot open an in-memory SQLite database: {e}"))
            })?;
        let store = SqliteStore {
            reader: pool.clone(),
            writer: pool,
            location: PathBuf::from(":memory:"),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.location
    }

    /// Waits for in-flight statements, then closes every connection (checkpointing the WAL into
    /// the main file). Calls made after this fail.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let mut migrator = Migrator::with_migrations(migrations);
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.writer).await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot bring the metadata database {} up to date: {e}; if it was last used by a \
                 newer etlworks-agent, upgrade this one; if it was edited by hand, restore it \
                 from a backup",
                self.location.display()
            ))
        })
    }
}

impl Columns for SqliteRow {
    fn text(&self, column: &str) -> StoreResult<String> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn int(&self, column: &str) -> StoreResult<i64> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn flag(&self, column: &str) -> StoreResult<bool> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn opt_flag(&self, column: &str) -> StoreResult<Option<bool>> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
}

fn column_error(column: &str, e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!(
        "cannot read column {column}: {e}; the schema does not match this version of \
         etlworks-agent"
    ))
}

/// Any backend failure, with what we were doing.
fn failed(doing: impl std::fmt::Display, e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!("{doing} failed: {e}"))
}

fn kind(e: &sqlx::Error) -> Option<ErrorKind> {
    match e {
        sqlx::Error::Database(db) => Some(db.kind()),
        _ => None,
    }
}

/// Whether a unique violation is about the `name` column rather than the id. SQLite says
/// "UNIQUE constraint failed: flows.tenant, flows.name"; PostgreSQL names the constraint
/// (`flows_tenant_name_key`), so the same test works for both.
fn names_clash(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.message().contains("name") || db.constraint().is_some_and(|c| c.contains("name"))
        }
        _ => false,
    }
}

/// Maps an insert or rename error of a named thing to `Conflict` when a unique key is taken.
fn named_write_error(e: sqlx::Error, thing: &str, name: &str, id: &str, doing: &str) -> StoreError {
    if kind(&e) == Some(ErrorKind::UniqueViolation) {
        if names_clash(&e) {
            StoreError::Conflict(format!("a {thing} named '{name}' already exists"))
        } else {
            StoreError::Conflict(format!("a {thing} with id '{id}' already exists"))
        }
    } else {
        failed(format!("{doing} {thing} '{name}'"), e)
    }
}

fn missing_flow(what: &str, flow_id: &str, tenant: &str) -> StoreError {
    StoreError::Backend(format!(
        "{what} refers to flow '{flow_id}', which does not exist in tenant '{tenant}'; save the \
         flow first (or it was deleted meanwhile)"
    ))
}

fn not_found(what: &str, tenant: &str, action: &str) -> StoreError {
    StoreError::Backend(format!(
        "{what} does not exist in tenant '{tenant}', so it cannot be {action}; it may have been \
         deleted meanwhile: read it again before changing it"
    ))
}

impl SqliteStore {
    /// Inserts a new run with `statement` (plain or exclusive); answers whether a row was
    /// written (the exclusive form writes none when a live run of the flow exists).
    async fn write_new_run(
        &self,
        statement: &'static str,
        run: &Run,
        live_after: Option<Timestamp>,
    ) -> StoreResult<bool> {
        let what = format!("run '{}'", run.id);
        let mut query = sqlx::query(statement)
            .bind(&run.tenant)
            .bind(&run.id)
            .bind(&run.flow_id)
            .bind(&run.flow_name)
            .bind(run.trigger.as_str())
            .bind(run.status.as_str())
            .bind(i64::from(run.attempt))
            .bind(codec::int(&what, "rows_read", run.rows_read)?)
            .bind(codec::int(&what, "rows_written", run.rows_written)?)
            .bind(codec::int(&what, "batches", run.batches)?)
            .bind(&run.error)
            .bind(codec::ts(run.created_at))
            .bind(codec::opt_ts(run.started_at))
            .bind(codec::opt_ts(run.finished_at));
        if let Some(live_after) = live_after {
            query = query.bind(codec::ts(live_after));
        }
        let done = query
            .execute(&self.writer)
            .await
            .map_err(|e| match kind(&e) {
                Some(ErrorKind::ForeignKeyViolation) => {
                    missing_flow(&what, &run.flow_id, &run.tenant)
                }
                Some(ErrorKind::UniqueViolation) => {
                    StoreError::Conflict(format!("a run with id '{}' already exists", run.id))
                }
                _ => failed(format!("saving {what}"), e),
            })?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl Store for SqliteStore {
    // ---- connections ------------------------------------------------------------------------

    async fn list_connections(&self, tenant: &str) -> StoreResult<Vec<Connection>> {
        let rows = sqlx::query(sql::LIST_CONNECTIONS)
            .bind(tenant)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("listing the connections of tenant '{tenant}'"), e))?;
        rows.iter().map(codec::connection).collect()
    }

    async fn get_connection(&self, tenant: &str, name: &str) -> StoreResult<Option<Connection>> {
        let row = sqlx::query(sql::GET_CONNECTION)
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| failed(format!("reading connection '{name}'"), e))?;
        row.as_ref().map(codec::connection).transpose()
    }

    async fn insert_connection(&self, conn: &Connection) -> StoreResult<()> {
        let what = format!("connection '{}'", conn.name);
        sqlx::query(sql::INSERT_CONNECTION)
            .bind(&conn.tenant)
            .bind(&conn.id)
            .bind(&conn.name)
            .bind(&conn.type_name)
            .bind(codec::json(&what, "props", &conn.props)?)
            .bind(codec::json(&what, "tags", &conn.tags)?)
            .bind(&conn.description)
            .bind(codec::ts(conn.created_at))
            .bind(codec::ts(conn.updated_at))
            .execute(&self.writer)
            .await
            .map_err(|e| named_write_error(e, "connection", &conn.name, &conn.id, "saving"))?;
        Ok(())
    }

    async fn update_connection(&self, conn: &Connection) -> StoreResult<()> {
        let what = format!("connection '{}'", conn.name);
        let done = sqlx::query(sql::UPDATE_CONNECTION)
            .bind(&conn.tenant)
            .bind(&conn.id)
            .bind(&conn.name)
            .bind(&conn.type_name)
            .bind(codec::json(&what, "props", &conn.props)?)
            .bind(codec::json(&what, "tags", &conn.tags)?)
            .bind(&conn.description)
            .bind(codec::ts(conn.updated_at))
            .execute(&self.writer)
            .await
            .map_err(|e| named_write_error(e, "connection", &conn.name, &conn.id, "updating"))?;
        if done.rows_affected() == 0 {
            return Err(not_found(
                &format!("connection '{}' (id '{}')", conn.name, conn.id),
                &conn.tenant,
                "updated",
            ));
        }
        Ok(())
    }

    async fn delete_connection(&self, tenant: &str, name: &str) -> StoreResult<bool> {
        let done = sqlx::query(sql::DELETE_CONNECTION)
            .bind(tenant)
            .bind(name)
            .execute(&self.writer)
            .await
            .map_err(|e| failed(format!("deleting connection '{name}'"), e))?;
        Ok(done.rows_affected() > 0)
    }

    // ---- flows ------------------------------------------------------------------------------

    async fn list_flows(&self, tenant: &str) -> StoreResult<Vec<Flow>> {
        let rows = sqlx::query(sql::LIST_FLOWS)
            .bind(tenant)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("listing the flows of tenant '{tenant}'"), e))?;
        rows.iter().map(codec::flow).collect()
    }

    async fn get_flow(&self, tenant: &str, name_or_id: &str) -> StoreResult<Option<Flow>> {
        let row = sqlx::query(sql::GET_FLOW)
            .bind(tenant)
            .bind(name_or_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| failed(format!("reading flow '{name_or_id}'"), e))?;
        row.as_ref().map(codec::flow).transpose()
    }

    async fn insert_flow(&self, flow: &Flow) -> StoreResult<()> {
        let what = format!("flow '{}'", flow.name);
        sqlx::query(sql::INSERT_FLOW)
            .bind(&flow.tenant)
            .bind(&flow.id)
            .bind(&flow.name)
            .bind(&flow.description)
            .bind(codec::json(&what, "spec", &flow.spec)?)
            .bind(codec::ts(flow.created_at))
            .bind(codec::ts(flow.updated_at))
            .execute(&self.writer)
            .await
            .map_err(|e| named_write_error(e, "flow", &flow.name, &flow.id, "saving"))?;
        Ok(())
    }

    async fn update_flow(&self, flow: &Flow) -> StoreResult<()> {
        let what = format!("flow '{}'", flow.name);
        let spec = codec::json(&what, "spec", &flow.spec)?;
        let fail = |e| named_write_error(e, "flow", &flow.name, &flow.id, "updating");
        let mut tx = self.writer.begin().await.map_err(fail)?;
        let done = sqlx::query(sql::UPDATE_FLOW)
            .bind(&flow.tenant)
            .bind(&flow.id)
            .bind(&flow.name)
            .bind(&flow.description)
            .bind(spec)
            .bind(codec::ts(flow.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        if done.rows_affected() == 0 {
            return Err(not_found(
                &format!("flow '{}' (id '{}')", flow.name, flow.id),
                &flow.tenant,
                "updated",
            ));
        }
        sqlx::query(sql::RENAME_FLOW_IN_SCHEDULE)
            .bind(&flow.tenant)
            .bind(&flow.id)
            .bind(&flow.name)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)
    }

    async fn delete_flow(&self, tenant: &str, flow_id: &str) -> StoreResult<bool> {
        let fail = |e| {
            failed(
                format!("deleting flow '{flow_id}' with its runs and schedule"),
                e,
            )
        };
        let mut tx = self.writer.begin().await.map_err(fail)?;
        // Children first, so the deletes do not depend on foreign-key enforcement being on.
        for statement in [
            sql::DELETE_FLOW_LOGS,
            sql::DELETE_FLOW_RUNS,
            sql::DELETE_FLOW_SCHEDULE,
            sql::DELETE_FLOW_WATERMARK,
        ] {
            sqlx::query(statement)
                .bind(tenant)
                .bind(flow_id)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        let done = sqlx::query(sql::DELETE_FLOW)
            .bind(tenant)
            .bind(flow_id)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(done.rows_affected() > 0)
    }

    // ---- schedules --------------------------------------------------------------------------

    async fn list_schedules(&self, tenant: &str) -> StoreResult<Vec<Schedule>> {
        let rows = sqlx::query(sql::LIST_SCHEDULES)
            .bind(tenant)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("listing the schedules of tenant '{tenant}'"), e))?;
        rows.iter().map(codec::schedule).collect()
    }

    async fn get_schedule(&self, tenant: &str, flow_id: &str) -> StoreResult<Option<Schedule>> {
        let row = sqlx::query(sql::GET_SCHEDULE)
            .bind(tenant)
            .bind(flow_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| failed(format!("reading the schedule of flow '{flow_id}'"), e))?;
        row.as_ref().map(codec::schedule).transpose()
    }

    async fn upsert_schedule(&self, s: &Schedule) -> StoreResult<()> {
        let what = format!("the schedule of flow '{}'", s.flow_name);
        sqlx::query(sql::UPSERT_SCHEDULE)
            .bind(&s.tenant)
            .bind(&s.id)
            .bind(&s.flow_id)
            .bind(&s.flow_name)
            .bind(codec::json(&what, "trigger", &s.trigger)?)
            .bind(s.enabled)
            .bind(i64::from(s.retries))
            .bind(codec::int(&what, "retry_delay_secs", s.retry_delay_secs)?)
            .bind(codec::opt_ts(s.next_run_at))
            .bind(codec::opt_ts(s.last_run_at))
            .bind(&s.last_run_id)
            .bind(codec::ts(s.created_at))
            .bind(codec::ts(s.updated_at))
            .execute(&self.writer)
            .await
            .map_err(|e| match kind(&e) {
                Some(ErrorKind::ForeignKeyViolation) => missing_flow(&what, &s.flow_id, &s.tenant),
                Some(ErrorKind::UniqueViolation) => StoreError::Conflict(format!(
                    "a schedule with id '{}' already exists for another flow",
                    s.id
                )),
                _ => failed(format!("saving {what}"), e),
            })?;
        Ok(())
    }

    async fn delete_schedule(&self, tenant: &str, flow_id: &str) -> StoreResult<bool> {
        let done = sqlx::query(sql::DELETE_SCHEDULE)
            .bind(tenant)
            .bind(flow_id)
            .execute(&self.writer)
            .await
            .map_err(|e| failed(format!("deleting the schedule of flow '{flow_id}'"), e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn due_schedules(&self, now: Timestamp) -> StoreResult<Vec<Schedule>> {
        let rows = sqlx::query(sql::DUE_SCHEDULES)
            .bind(true)
            .bind(codec::ts(now))
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed("looking for due schedules", e))?;
        rows.iter().map(codec::schedule).collect()
    }

    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>> {
        let row = sqlx::query(sql::NEXT_DUE_AT)
            .bind(true)
            .fetch_one(&self.reader)
            .await
            .map_err(|e| failed("looking for the next due schedule", e))?;
        codec::next_due(&row)
    }

    // ---- runs -------------------------------------------------------------------------------

    async fn insert_run(&self, run: &Run) -> StoreResult<()> {
        self.write_new_run(sql::INSERT_RUN, run, None)
            .await
            .map(|_| ())
    }

    async fn insert_run_exclusive(
        &self,
        run: &Run,
        live_after: Timestamp,
    ) -> StoreResult<Option<Run>> {
        // Between a refused insert and the look-up the live run may finish: try again then.
        for _ in 0..3 {
            if self
                .write_new_run(sql::INSERT_RUN_EXCLUSIVE, run, Some(live_after))
                .await?
            {
                return Ok(None);
            }
            if let Some(live) = self
                .live_run_of_flow(&run.tenant, &run.flow_id, live_after)
                .await?
            {
                return Ok(Some(live));
            }
        }
        Err(StoreError::Backend(format!(
            "could not record run '{}': runs of flow '{}' kept starting and finishing at the same \
             moment; try again",
            run.id, run.flow_name
        )))
    }

    async fn heartbeat_run(&self, tenant: &str, run_id: &str, at: Timestamp) -> StoreResult<bool> {
        let row = sqlx::query(sql::HEARTBEAT_RUN)
            .bind(tenant)
            .bind(run_id)
            .bind(codec::ts(at))
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| failed(format!("recording the heartbeat of run '{run_id}'"), e))?;
        match row {
            Some(row) => Ok(row
                .try_get::<i64, _>("cancel_requested")
                .map_err(|e| failed(format!("reading run '{run_id}'"), e))?
                != 0),
            None => Err(not_found(&format!("run '{run_id}'"), tenant, "updated")),
        }
    }

    async fn request_run_cancel(&self, tenant: &str, run_id: &str) -> StoreResult<bool> {
        let done = sqlx::query(sql::REQUEST_RUN_CANCEL)
            .bind(tenant)
            .bind(run_id)
            .execute(&self.writer)
            .await
            .map_err(|e| failed(format!("asking run '{run_id}' to stop"), e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn live_run_of_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        live_after: Timestamp,
    ) -> StoreResult<Option<Run>> {
        let row = sqlx::query(sql::LIVE_RUN_OF_FLOW)
            .bind(tenant)
            .bind(flow_id)
            .bind(codec::ts(live_after))
            .fetch_optional(&self.writer)
            .await
            .map_err(|e| failed(format!("looking for a live run of flow '{flow_id}'"), e))?;
        row.as_ref().map(codec::run).transpose()
    }

    async fn update_run(&self, run: &Run) -> StoreResult<()> {
        let what = format!("run '{}'", run.id);
        let done = sqlx::query(sql::UPDATE_RUN)
            .bind(&run.tenant)
            .bind(&run.id)
            .bind(&run.flow_name)
            .bind(run.trigger.as_str())
            .bind(run.status.as_str())
            .bind(i64::from(run.attempt))
            .bind(codec::int(&what, "rows_read", run.rows_read)?)
            .bind(codec::int(&what, "rows_written", run.rows_written)?)
            .bind(codec::int(&what, "batches", run.batches)?)
            .bind(&run.error)
            .bind(codec::opt_ts(run.started_at))
            .bind(codec::opt_ts(run.finished_at))
            .bind(codec::ts(Utc::now()))
            .execute(&self.writer)
            .await
            .map_err(|e| failed(format!("updating {what}"), e))?;
        if done.rows_affected() == 0 {
            return Err(not_found(&what, &run.tenant, "updated"));
        }
        Ok(())
    }

    async fn get_run(&self, tenant: &str, run_id: &str) -> StoreResult<Option<Run>> {
        let row = sqlx::query(sql::GET_RUN)
            .bind(tenant)
            .bind(run_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| failed(format!("reading run '{run_id}'"), e))?;
        row.as_ref().map(codec::run).transpose()
    }

    async fn list_runs(&self, tenant: &str, query: &RunQuery) -> StoreResult<Vec<Run>> {
        let limit = codec::limit(query.limit);
        let status = query.status.map(RunStatus::as_str);
        let statement = match (&query.flow_id, status) {
            (None, None) => sqlx::query(sql::LIST_RUNS).bind(tenant),
            (Some(flow), None) => sqlx::query(sql::LIST_RUNS_BY_FLOW)
                .bind(tenant)
                .bind(flow.as_str()),
            (None, Some(status)) => sqlx::query(sql::LIST_RUNS_BY_STATUS)
                .bind(tenant)
                .bind(status),
            (Some(flow), Some(status)) => sqlx::query(sql::LIST_RUNS_BY_FLOW_AND_STATUS)
                .bind(tenant)
                .bind(flow.as_str())
                .bind(status),
        };
        let rows = statement
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("listing the runs of tenant '{tenant}'"), e))?;
        rows.iter().map(codec::run).collect()
    }

    async fn fail_unfinished_runs(
        &self,
        reason: &str,
        stale_before: Timestamp,
    ) -> StoreResult<u64> {
        let done = sqlx::query(sql::FAIL_UNFINISHED_RUNS)
            .bind(reason)
            .bind(codec::ts(Utc::now()))
            .bind(codec::ts(stale_before))
            .execute(&self.writer)
            .await
            .map_err(|e| failed("marking unfinished runs as failed", e))?;
        Ok(done.rows_affected())
    }

    // ---- run logs ---------------------------------------------------------------------------

    async fn append_logs(&self, tenant: &str, lines: &[LogLine]) -> StoreResult<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let fail = |e| failed("saving run log lines", e);
        // One transaction for the batch: one fsync-free WAL commit instead of one per line.
        let mut tx = self.writer.begin().await.map_err(fail)?;
        for line in lines {
            let what = format!("log line {} of run '{}'", line.seq, line.run_id);
            sqlx::query(sql::INSERT_LOG)
                .bind(tenant)
                .bind(&line.run_id)
                .bind(codec::int(&what, "seq", line.seq)?)
                .bind(codec::ts(line.at))
                .bind(&line.level)
                .bind(&line.message)
                .execute(&mut *tx)
                .await
                .map_err(|e| match kind(&e) {
                    Some(ErrorKind::ForeignKeyViolation) => StoreError::Backend(format!(
                        "cannot save {what}: run '{}' does not exist in tenant '{tenant}'; save \
                         the run before its log lines (or it was deleted with its flow)",
                        line.run_id
                    )),
                    Some(ErrorKind::UniqueViolation) => {
                        StoreError::Conflict(format!("{what} is already stored"))
                    }
                    _ => failed(format!("saving {what}"), e),
                })?;
        }
        tx.commit().await.map_err(fail)
    }

    async fn run_logs(&self, tenant: &str, run_id: &str, tail: usize) -> StoreResult<Vec<LogLine>> {
        let rows = sqlx::query(sql::TAIL_LOGS)
            .bind(tenant)
            .bind(run_id)
            .bind(codec::limit(tail))
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("reading the log of run '{run_id}'"), e))?;
        rows.iter().map(codec::log_line).collect()
    }

    // ---- watermarks -------------------------------------------------------------------------

    async fn get_watermark(&self, tenant: &str, flow_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query(sql::GET_WATERMARK)
            .bind(tenant)
            .bind(flow_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| {
                failed(
                    format!("reading the high-water mark of flow '{flow_id}'"),
                    e,
                )
            })?;
        row.map(|r| r.text("value")).transpose()
    }

    async fn set_watermark(
        &self,
        tenant: &str,
        flow_id: &str,
        value: Option<&str>,
    ) -> StoreResult<()> {
        let doing = format!("saving the high-water mark of flow '{flow_id}'");
        let statement = match value {
            Some(value) => sqlx::query(sql::SET_WATERMARK)
                .bind(tenant)
                .bind(flow_id)
                .bind(value)
                .bind(codec::ts(Utc::now())),
            None => sqlx::query(sql::CLEAR_WATERMARK).bind(tenant).bind(flow_id),
        };
        statement
            .execute(&self.writer)
            .await
            .map_err(|e| match kind(&e) {
                Some(ErrorKind::ForeignKeyViolation) => {
                    missing_flow("the high-water mark", flow_id, tenant)
                }
                _ => failed(doing, e),
            })?;
        Ok(())
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(sql::INSERT_KEY)
            .bind(&key.id)
            .bind(&key.tenant)
            .bind(&key.name)
            .bind(key.role.as_str())
            .bind(&key.prefix)
            .bind(&key.hash)
            .bind(codec::ts(key.created_at))
            .bind(codec::opt_ts(key.expires_at))
            .bind(codec::opt_ts(key.revoked_at))
            .bind(codec::opt_ts(key.last_used_at))
            .execute(&self.writer)
            .await
            .map_err(|e| match kind(&e) {
                // The hash itself never goes into a message: it identifies the key.
                Some(ErrorKind::UniqueViolation) => StoreError::Conflict(format!(
                    "an API key with id '{}' or the same secret already exists",
                    key.id
                )),
                _ => failed(format!("saving API key '{}'", key.name), e),
            })?;
        Ok(())
    }

    async fn find_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query(sql::FIND_KEY_BY_HASH)
            .bind(hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| failed("looking up an API key", e))?;
        row.as_ref().map(codec::api_key).transpose()
    }

    async fn list_keys(&self, tenant: Option<&str>) -> StoreResult<Vec<ApiKey>> {
        let statement = match tenant {
            Some(tenant) => sqlx::query(sql::LIST_KEYS).bind(tenant),
            None => sqlx::query(sql::LIST_ALL_KEYS),
        };
        let rows = statement.fetch_all(&self.reader).await.map_err(|e| {
            failed(
                match tenant {
                    Some(t) => format!("listing the API keys of tenant '{t}'"),
                    None => "listing the API keys".to_string(),
                },
                e,
            )
        })?;
        rows.iter().map(codec::api_key).collect()
    }

    async fn revoke_key(&self, tenant: Option<&str>, id: &str, at: Timestamp) -> StoreResult<bool> {
        let statement = match tenant {
            Some(tenant) => sqlx::query(sql::REVOKE_KEY)
                .bind(tenant)
                .bind(id)
                .bind(codec::ts(at)),
            None => sqlx::query(sql::REVOKE_KEY_ANY_TENANT)
                .bind(id)
                .bind(codec::ts(at)),
        };
        let done = statement
            .execute(&self.writer)
            .await
            .map_err(|e| failed(format!("revoking API key '{id}'"), e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_key(&self, tenant: &str, id: &str, at: Timestamp) -> StoreResult<()> {
        sqlx::query(sql::TOUCH_KEY)
            .bind(tenant)
            .bind(id)
            .bind(codec::ts(at))
            .execute(&self.writer)
            .await
            .map_err(|e| failed(format!("recording the use of API key '{id}'"), e))?;
        Ok(())
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        let row = sqlx::query(sql::COUNT_KEYS)
            .fetch_one(&self.reader)
            .await
            .map_err(|e| failed("counting the API keys", e))?;
        let n = row.int("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, session: &Session, max_per_tenant: u64) -> StoreResult<bool> {
        let what = format!("session '{}'", session.id);
        let done = sqlx::query(sql::INSERT_SESSION)
            .bind(&session.tenant)
            .bind(&session.id)
            .bind(&session.title)
            .bind(&session.system_prompt)
            .bind(session.include_tools)
            .bind(codec::json(&what, "metadata", &session.metadata)?)
            .bind(codec::ts(session.created_at))
            .bind(codec::ts(session.updated_at))
            .bind(i64::try_from(max_per_tenant).unwrap_or(i64::MAX))
            .execute(&self.writer)
            .await
            .map_err(|e| match kind(&e) {
                Some(ErrorKind::UniqueViolation) => StoreError::Conflict(format!(
                    "a session with id '{}' already exists",
                    session.id
                )),
                _ => failed(format!("saving {what}"), e),
            })?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_sessions(
        &self,
        tenant: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<Session>> {
        let rows = sqlx::query(sql::LIST_SESSIONS)
            .bind(tenant)
            .bind(codec::limit(limit))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("listing the sessions of tenant '{tenant}'"), e))?;
        rows.iter().map(codec::session).collect()
    }

    async fn count_sessions(&self, tenant: &str) -> StoreResult<u64> {
        let row = sqlx::query(sql::COUNT_SESSIONS)
            .bind(tenant)
            .fetch_one(&self.reader)
            .await
            .map_err(|e| failed(format!("counting the sessions of tenant '{tenant}'"), e))?;
        Ok(u64::try_from(row.int("n")?).unwrap_or(0))
    }

    async fn get_session(&self, tenant: &str, id: &str) -> StoreResult<Option<Session>> {
        let row = sqlx::query(sql::GET_SESSION)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(|e| failed(format!("reading session '{id}'"), e))?;
        row.as_ref().map(codec::session).transpose()
    }

    async fn delete_session(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let fail = |e| failed(format!("deleting session '{id}'"), e);
        let mut tx = self.writer.begin().await.map_err(fail)?;
        sqlx::query(sql::DELETE_SESSION_MESSAGES)
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        let done = sqlx::query(sql::DELETE_SESSION)
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(done.rows_affected() > 0)
    }

    async fn append_messages(
        &self,
        tenant: &str,
        session_id: &str,
        messages: &[NewMessage],
    ) -> StoreResult<Option<Vec<SessionMessage>>> {
        let doing = format!("saving messages of session '{session_id}'");
        let fail = |e| failed(&doing, e);
        let Some(last) = messages.last() else {
            return Ok(self
                .get_session(tenant, session_id)
                .await?
                .map(|_| Vec::new()));
        };
        let n = i64::try_from(messages.len()).unwrap_or(i64::MAX);
        // One transaction: the positions are reserved and the messages written together, or
        // nothing is.
        let mut tx = self.writer.begin().await.map_err(fail)?;
        let Some(row) = sqlx::query(sql::RESERVE_MESSAGES)
            .bind(tenant)
            .bind(session_id)
            .bind(n)
            .bind(codec::ts(last.created_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?
        else {
            return Ok(None);
        };
        let first = u64::try_from(row.int("message_count")? - n + 1).unwrap_or(1);
        let mut stored = Vec::with_capacity(messages.len());
        for (i, new) in messages.iter().enumerate() {
            let seq = first + i as u64;
            let what = format!("message {seq} of session '{session_id}'");
            let m = &new.message;
            let data = m
                .data
                .as_ref()
                .map(|d| codec::json(&what, "data", d))
                .transpose()?;
            sqlx::query(sql::INSERT_MESSAGE)
                .bind(tenant)
                .bind(session_id)
                .bind(codec::int(&what, "seq", seq)?)
                .bind(codec::role_str(m.role))
                .bind(&m.content)
                .bind(codec::json(&what, "tool_calls", &m.tool_calls)?)
                .bind(&m.tool_call_id)
                .bind(&m.name)
                .bind(data)
                .bind(m.success)
                .bind(codec::ts(new.created_at))
                .execute(&mut *tx)
                .await
                .map_err(|e| failed(format!("saving {what}"), e))?;
            stored.push(SessionMessage {
                seq,
                message: m.clone(),
                created_at: new.created_at,
            });
        }
        tx.commit().await.map_err(fail)?;
        Ok(Some(stored))
    }

    async fn list_messages(
        &self,
        tenant: &str,
        session_id: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<SessionMessage>> {
        let rows = sqlx::query(sql::LIST_MESSAGES)
            .bind(tenant)
            .bind(session_id)
            .bind(codec::limit(limit))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("reading the messages of session '{session_id}'"), e))?;
        rows.iter()
            .map(|r| codec::session_message(session_id, r))
            .collect()
    }
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn record_usage(&self, r: &UsageRecord) -> StoreResult<()> {
        let what = format!("the usage of run '{}'", r.run_id);
        sqlx::query(sql::INSERT_USAGE)
            .bind(&r.tenant)
            .bind(&r.run_id)
            .bind(&r.key_id)
            .bind(&r.session_id)
            .bind(&r.model)
            .bind(codec::int(&what, "input_tokens", r.input_tokens)?)
            .bind(codec::int(&what, "output_tokens", r.output_tokens)?)
            .bind(codec::int(&what, "tool_calls", r.tool_calls)?)
            .bind(codec::int(&what, "llm_calls", r.llm_calls)?)
            .bind(codec::int(&what, "cost_micros", r.cost_micros)?)
            .bind(codec::ts(r.at))
            .execute(&self.writer)
            .await
            .map_err(|e| match kind(&e) {
                Some(ErrorKind::UniqueViolation) => StoreError::Conflict(format!(
                    "the usage of run '{}' is already recorded",
                    r.run_id
                )),
                _ => failed(format!("saving {what}"), e),
            })?;
        Ok(())
    }

    async fn usage_totals(&self, filter: &UsageFilter) -> StoreResult<UsageTotals> {
        let (statement, binds) = sql::usage_totals(filter);
        // Built from fixed fragments only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
        for b in &binds {
            query = query.bind(b);
        }
        let row = query
            .fetch_one(&self.reader)
            .await
            .map_err(|e| failed("summing AI usage", e))?;
        codec::usage_totals(&row)
    }

    async fn usage_groups(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> StoreResult<Vec<(String, UsageTotals)>> {
        let (statement, binds) = sql::usage_groups(filter, by);
        // Built from fixed fragments only; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
        for b in &binds {
            query = query.bind(b);
        }
        let rows = query
            .fetch_all(&self.reader)
            .await
            .map_err(|e| failed(format!("summing AI usage by {}", by.as_str()), e))?;
        rows.iter()
            .map(|row| Ok((row.text("grp")?, codec::usage_totals(row)?)))
            .collect()
    }
}
