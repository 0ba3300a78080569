//! The contract between the engine and a connector: open a source, open a sink, test, list.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{Batch, ConnectorError, ConnectorSpec, Props, Value};

/// A connection as a connector sees it: secrets already decrypted.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    pub name: String,
    pub type_name: String,
    pub props: Props,
}

/// How a destination treats what is already there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Add rows.
    #[default]
    Append,
    /// Replace the whole table (or file) atomically: written to a staging copy, swapped on success.
    Replace,
    /// Upsert on the key columns.
    Merge,
}

impl WriteMode {
    pub const NAMES: &'static [&'static str] = &["append", "replace", "merge"];

    pub fn parse(s: &str) -> Option<WriteMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "append" | "insert" => Some(WriteMode::Append),
            "replace" | "overwrite" | "truncate" => Some(WriteMode::Replace),
            "merge" | "upsert" => Some(WriteMode::Merge),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Append => "append",
            WriteMode::Replace => "replace",
            WriteMode::Merge => "merge",
        }
    }
}

/// Incremental reading: only rows whose `column` is greater than `after`.
#[derive(Clone, Debug)]
pub struct Incremental {
    pub column: String,
    pub after: Option<Value>,
}

/// What to read.
#[derive(Clone, Debug)]
pub struct SourceRequest {
    /// Table name, file glob or API path, as the connector's spec describes (`source_object`).
    pub object: String,
    /// Source options, already validated against the spec's `source` properties.
    pub options: Props,
    /// When set, the connector should push the filter down if it can; the engine filters again
    /// and tracks the new high-water mark, so a connector that cannot is still correct.
    pub incremental: Option<Incremental>,
    pub batch_size: usize,
}

/// Where to write.
#[derive(Clone, Debug)]
pub struct SinkRequest {
    /// Table name or file-name pattern (`destination_object`).
    pub object: String,
    pub options: Props,
    pub mode: WriteMode,
    /// Key columns for `merge`.
    pub keys: Vec<String>,
    /// Create the table when it does not exist.
    pub create: bool,
    /// Used in staging-table and file names, so concurrent runs never collide.
    pub run_id: String,
    /// Column types the flow declares (its `cast=` mapping). A destination that creates a table
    /// or adds a column uses these instead of inferring the type from the values, so
    /// `cast=zip:text` gives a text column even when every zip code looks like a number.
    pub column_types: Vec<(String, crate::ColumnType)>,
}

impl SinkRequest {
    /// The declared type of a column, if the flow declares one.
    pub fn declared_type(&self, column: &str) -> Option<crate::ColumnType> {
        self.column_types
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, t)| *t)
    }
}

/// A table, file or endpoint a connection offers.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectInfo {
    pub name: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Receives a run's log lines. The engine stores them with the run.
pub trait RunLogger: Send + Sync {
    fn log(&self, level: &str, message: &str);
}

/// Discards log lines; for previews and tests.
pub struct NoLog;
impl RunLogger for NoLog {
    fn log(&self, _level: &str, _message: &str) {}
}

/// What a connector gets for the duration of one operation.
#[derive(Clone)]
pub struct RunContext {
    pub cancel: CancellationToken,
    pub logger: Arc<dyn RunLogger>,
}

impl RunContext {
    pub fn detached() -> Self {
        RunContext {
            cancel: CancellationToken::new(),
            logger: Arc::new(NoLog),
        }
    }
    pub fn info(&self, message: &str) {
        self.logger.log("info", message);
    }
    pub fn warn(&self, message: &str) {
        self.logger.log("warn", message);
    }
    pub fn check_canceled(&self) -> Result<(), ConnectorError> {
        if self.cancel.is_cancelled() {
            Err(ConnectorError::canceled())
        } else {
            Ok(())
        }
    }
}

/// Yields batches until exhausted. Never holds more than about one batch in memory.
#[async_trait]
pub trait Source: Send {
    /// The next batch, or `None` when the source is exhausted.
    async fn next_batch(&mut self) -> Result<Option<Batch>, ConnectorError>;
}

/// Consumes batches.
///
/// `append` and `merge` commit as they go: a batch may be committed on its own or together with
/// the batches before it (a sink may group batches into one transaction to commit less often),
/// so a failure rolls back at most the open group and earlier commits stay. `replace` writes to
/// a staging copy that only [`Sink::finish`] makes visible; [`Sink::abort`] discards it, leaving
/// the destination as it was.
///
/// Counts are of rows made durable and visible in the destination: `write` answers the rows
/// it committed during that call (0 when the batch joined an open group or a staging copy),
/// `finish` the rows it committed at the end. Their sum is the run's rows written, and after a
/// failure the sum so far is exactly what stays in the destination.
#[async_trait]
pub trait Sink: Send {
    /// Writes one batch; answers the rows committed by this call.
    async fn write(&mut self, batch: Batch) -> Result<u64, ConnectorError>;
    /// Commits what is open and makes the run's output visible (swap staging table, rename temp
    /// file); answers the rows committed by this call.
    async fn finish(&mut self) -> Result<u64, ConnectorError>;
    /// Discards whatever is staged. Must be safe to call after a failed `write`.
    async fn abort(&mut self) -> Result<(), ConnectorError>;
}

/// One connector type.
#[async_trait]
pub trait Connector: Send + Sync {
    fn spec(&self) -> &'static ConnectorSpec;

    /// Really connects (and authenticates); answers a one-line description of what it reached.
    async fn test(&self, conn: &ConnectionConfig) -> Result<String, ConnectorError>;

    /// Tables, files or endpoints the connection offers.
    async fn list_objects(
        &self,
        conn: &ConnectionConfig,
    ) -> Result<Vec<ObjectInfo>, ConnectorError>;

    async fn open_source(
        &self,
        conn: &ConnectionConfig,
        request: SourceRequest,
        ctx: &RunContext,
    ) -> Result<Box<dyn Source>, ConnectorError>;

    async fn open_sink(
        &self,
        conn: &ConnectionConfig,
        request: SinkRequest,
        ctx: &RunContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        let _ = (conn, request, ctx);
        Err(ConnectorError::unsupported(format!(
            "a {} connection can only be read from, not written to; choose a database or file connection as the destination",
            self.spec().type_name
        )))
    }

    /// Runs a query (SQL connectors) and answers up to `limit` rows.
    async fn query(
        &self,
        conn: &ConnectionConfig,
        sql: &str,
        limit: usize,
    ) -> Result<Batch, ConnectorError> {
        let _ = (conn, sql, limit);
        Err(ConnectorError::unsupported(format!(
            "'query' needs a database connection (sqlite, postgres, mysql); '{}' is a {} connection",
            conn.name,
            self.spec().type_name
        )))
    }
}
