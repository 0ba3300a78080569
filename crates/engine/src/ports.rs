//! What the engine needs from persistence. The `etl-store` crate implements it for SQLite (and,
//! later, PostgreSQL); the engine never sees SQL for its own metadata.
//!
//! Every method that reads or writes tenant data takes the tenant id, so no caller can forget it.
//! The scheduler's `due_schedules` is the one cross-tenant read.

use async_trait::async_trait;

use crate::entity::{Connection, Flow, LogLine, Run, RunStatus, Schedule, Timestamp};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique name is already taken.
    #[error("{0}")]
    Conflict(String),
    /// The backend failed (I/O, SQL); the text is for logs.
    #[error("metadata store: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Filters for listing runs.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    pub flow_id: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: usize,
}

#[async_trait]
pub trait Store: Send + Sync {
    // Connections: unique by (tenant, name).
    async fn list_connections(&self, tenant: &str) -> StoreResult<Vec<Connection>>;
    async fn get_connection(&self, tenant: &str, name: &str) -> StoreResult<Option<Connection>>;
    /// Fails with `Conflict` when the name is taken.
    async fn insert_connection(&self, conn: &Connection) -> StoreResult<()>;
    async fn update_connection(&self, conn: &Connection) -> StoreResult<()>;
    async fn delete_connection(&self, tenant: &str, name: &str) -> StoreResult<bool>;

    // Flows: unique by (tenant, name); also addressable by id.
    async fn list_flows(&self, tenant: &str) -> StoreResult<Vec<Flow>>;
    /// By name or by id.
    async fn get_flow(&self, tenant: &str, name_or_id: &str) -> StoreResult<Option<Flow>>;
    async fn insert_flow(&self, flow: &Flow) -> StoreResult<()>;
    async fn update_flow(&self, flow: &Flow) -> StoreResult<()>;
    /// Deletes the flow with its schedule, runs, logs and high-water mark.
    async fn delete_flow(&self, tenant: &str, flow_id: &str) -> StoreResult<bool>;

    // Schedules: at most one per flow.
    async fn list_schedules(&self, tenant: &str) -> StoreResult<Vec<Schedule>>;
    async fn get_schedule(&self, tenant: &str, flow_id: &str) -> StoreResult<Option<Schedule>>;
    /// Inserts or replaces the flow's schedule.
    async fn upsert_schedule(&self, schedule: &Schedule) -> StoreResult<()>;
    async fn delete_schedule(&self, tenant: &str, flow_id: &str) -> StoreResult<bool>;
    /// Enabled schedules of every tenant whose `next_run_at` is at or before `now`.
    async fn due_schedules(&self, now: Timestamp) -> StoreResult<Vec<Schedule>>;
    /// The earliest `next_run_at` of any enabled schedule, to know how long to sleep.
    async fn next_due_at(&self) -> StoreResult<Option<Timestamp>>;

    // Runs.
    async fn insert_run(&self, run: &Run) -> StoreResult<()>;
    async fn update_run(&self, run: &Run) -> StoreResult<()>;
    async fn get_run(&self, tenant: &str, run_id: &str) -> StoreResult<Option<Run>>;
    /// Newest first.
    async fn list_runs(&self, tenant: &str, query: &RunQuery) -> StoreResult<Vec<Run>>;
    /// Marks runs left `queued`/`running` by a process that died as `error` with `reason`;
    /// answers how many. Called once at start-up.
    async fn fail_unfinished_runs(&self, reason: &str) -> StoreResult<u64>;

    // Run logs.
    async fn append_logs(&self, tenant: &str, lines: &[LogLine]) -> StoreResult<()>;
    /// The last `tail` lines of a run, oldest first.
    async fn run_logs(&self, tenant: &str, run_id: &str, tail: usize) -> StoreResult<Vec<LogLine>>;

    // High-water marks, per flow, as JSON text.
    async fn get_watermark(&self, tenant: &str, flow_id: &str) -> StoreResult<Option<String>>;
    async fn set_watermark(
        &self,
        tenant: &str,
        flow_id: &str,
        value: Option<&str>,
    ) -> StoreResult<()>;
}
