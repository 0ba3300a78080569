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

    // Runs. Unfinished runs carry a heartbeat (set on insert, update and `heartbeat_run`), so
    // processes sharing the store can tell a live run from one whose process died.
    async fn insert_run(&self, run: &Run) -> StoreResult<()>;
    /// Inserts the run unless another `queued`/`running` run of the same flow has a heartbeat
    /// after `live_after`; then nothing is inserted and that live run is answered. Atomic, so
    /// two processes cannot both start the same flow.
    async fn insert_run_exclusive(
        &self,
        run: &Run,
        live_after: Timestamp,
    ) -> StoreResult<Option<Run>>;
    /// Also refreshes the run's heartbeat.
    async fn update_run(&self, run: &Run) -> StoreResult<()>;
    /// Refreshes the heartbeat of a run in progress; answers whether someone asked it to stop.
    async fn heartbeat_run(&self, tenant: &str, run_id: &str, at: Timestamp) -> StoreResult<bool>;
    /// Asks whichever process runs it to stop the run; answers false when it is not unfinished.
    async fn request_run_cancel(&self, tenant: &str, run_id: &str) -> StoreResult<bool>;
    /// The flow's `queued`/`running` run whose heartbeat is after `live_after`, if any.
    async fn live_run_of_flow(
        &self,
        tenant: &str,
        flow_id: &str,
        live_after: Timestamp,
    ) -> StoreResult<Option<Run>>;
    async fn get_run(&self, tenant: &str, run_id: &str) -> StoreResult<Option<Run>>;
    /// Newest first.
    async fn list_runs(&self, tenant: &str, query: &RunQuery) -> StoreResult<Vec<Run>>;
    /// Marks `queued`/`running` runs whose heartbeat is older than `stale_before` (their
    /// process died) as `error` with `reason`; answers how many. Every tenant: start-up and
    /// scheduler housekeeping.
    async fn fail_unfinished_runs(&self, reason: &str, stale_before: Timestamp)
    -> StoreResult<u64>;

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
