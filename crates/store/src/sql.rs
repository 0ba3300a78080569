//! The store's SQL text, written once for every backend.
//!
//! Only constructs that SQLite (3.35+) and PostgreSQL both accept are used: `$n` parameters
//! (sqlx's SQLite driver numbers them the same way), `ON CONFLICT ... DO UPDATE SET x =
//! excluded.x`, booleans bound as parameters rather than written as literals, and a bound large
//! integer for "no limit" instead of SQLite's `LIMIT -1` or PostgreSQL's `LIMIT ALL`.
//! Statements are static strings (no SQL is assembled at run time), so each is prepared once per
//! connection and cached. `ORDER BY name` compares bytes in SQLite; a PostgreSQL schema should
//! declare the name columns `COLLATE "C"` so both backends list in the same order.

// ---- connections ----------------------------------------------------------------------------

pub const LIST_CONNECTIONS: &str = "SELECT tenant, id, name, type_name, props, tags, description, \
     created_at, updated_at FROM connections WHERE tenant = $1 ORDER BY name";

pub const GET_CONNECTION: &str = "SELECT tenant, id, name, type_name, props, tags, description, \
     created_at, updated_at FROM connections WHERE tenant = $1 AND name = $2";

pub const INSERT_CONNECTION: &str = "INSERT INTO connections (tenant, id, name, type_name, props, \
     tags, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Addressed by id so a connection can be renamed; `created_at` never changes.
pub const UPDATE_CONNECTION: &str = "UPDATE connections SET name = $3, type_name = $4, props = $5, \
     tags = $6, description = $7, updated_at = $8 WHERE tenant = $1 AND id = $2";

pub const DELETE_CONNECTION: &str = "DELETE FROM connections WHERE tenant = $1 AND name = $2";

// ---- flows ----------------------------------------------------------------------------------

pub const LIST_FLOWS: &str = "SELECT tenant, id, name, description, spec, created_at, updated_at \
     FROM flows WHERE tenant = $1 ORDER BY name";

/// A name match wins over an id match, because people type names; ids are UUIDs, so the two
/// only meet if someone names a flow after another flow's id.
pub const GET_FLOW: &str = "SELECT tenant, id, name, description, spec, created_at, updated_at \
     FROM flows WHERE tenant = $1 AND (name = $2 OR id = $2) \
     ORDER BY CASE WHEN name = $2 THEN 0 ELSE 1 END LIMIT 1";

pub const INSERT_FLOW: &str = "INSERT INTO flows (tenant, id, name, description, spec, created_at, \
     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub const UPDATE_FLOW: &str = "UPDATE flows SET name = $3, description = $4, spec = $5, \
     updated_at = $6 WHERE tenant = $1 AND id = $2";

/// Keeps the schedule's copy of the flow name true after a rename (same transaction).
pub const RENAME_FLOW_IN_SCHEDULE: &str =
    "UPDATE schedules SET flow_name = $3 WHERE tenant = $1 AND flow_id = $2";

pub const DELETE_FLOW_LOGS: &str = "DELETE FROM run_logs WHERE tenant = $1 AND run_id IN \
     (SELECT id FROM runs WHERE tenant = $1 AND flow_id = $2)";
pub const DELETE_FLOW_RUNS: &str = "DELETE FROM runs WHERE tenant = $1 AND flow_id = $2";
pub const DELETE_FLOW_SCHEDULE: &str = "DELETE FROM schedules WHERE tenant = $1 AND flow_id = $2";
pub const DELETE_FLOW_WATERMARK: &str = "DELETE FROM watermarks WHERE tenant = $1 AND flow_id = $2";
pub const DELETE_FLOW: &str = "DELETE FROM flows WHERE tenant = $1 AND id = $2";

// ---- schedules ------------------------------------------------------------------------------

/// Column lists are macros so `concat!` can splice them into `&'static str` statements (sqlx
/// takes only static SQL unless it is explicitly asserted safe).
macro_rules! schedule_cols {
    () => {
        "tenant, id, flow_id, flow_name, trigger_spec, enabled, retries, retry_delay_secs, \
         next_run_at, last_run_at, last_run_id, created_at, updated_at"
    };
}

pub const LIST_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_cols!(),
    " FROM schedules WHERE tenant = $1 ORDER BY flow_name",
);

pub const GET_SCHEDULE: &str = concat!(
    "SELECT ",
    schedule_cols!(),
    " FROM schedules WHERE tenant = $1 AND flow_id = $2",
);

/// One schedule per flow: a second upsert for the same flow replaces every column, id included.
pub const UPSERT_SCHEDULE: &str = "INSERT INTO schedules (tenant, id, flow_id, flow_name, \
     trigger_spec, enabled, retries, retry_delay_secs, next_run_at, last_run_at, last_run_id, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (tenant, flow_id) DO UPDATE SET id = excluded.id, \
     flow_name = excluded.flow_name, trigger_spec = excluded.trigger_spec, \
     enabled = excluded.enabled, retries = excluded.retries, \
     retry_delay_secs = excluded.retry_delay_secs, next_run_at = excluded.next_run_at, \
     last_run_at = excluded.last_run_at, last_run_id = excluded.last_run_id, \
     created_at = excluded.created_at, updated_at = excluded.updated_at";

pub const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE tenant = $1 AND flow_id = $2";

/// Cross-tenant on purpose: the scheduler serves every tenant. `$1` is `true`, bound rather
/// than written, because SQLite spells it 1 and PostgreSQL `true`.
pub const DUE_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_cols!(),
    " FROM schedules WHERE enabled = $1 AND next_run_at IS NOT NULL AND next_run_at <= $2 \
     ORDER BY next_run_at, tenant, id",
);

pub const NEXT_DUE_AT: &str = "SELECT MIN(next_run_at) AS next_run_at FROM schedules \
     WHERE enabled = $1 AND next_run_at IS NOT NULL";

// ---- runs -----------------------------------------------------------------------------------

macro_rules! run_cols {
    () => {
        "tenant, id, flow_id, flow_name, run_trigger, status, attempt, rows_read, rows_written, \
         batches, error, created_at, started_at, finished_at"
    };
}

pub const INSERT_RUN: &str = "INSERT INTO runs (tenant, id, flow_id, flow_name, run_trigger, \
     status, attempt, rows_read, rows_written, batches, error, created_at, started_at, \
     finished_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
     $14, $12)";

/// One statement, so the check and the insert cannot interleave with another process's.
/// `$15` is the liveness bound.
pub const INSERT_RUN_EXCLUSIVE: &str = "INSERT INTO runs (tenant, id, flow_id, flow_name, \
     run_trigger, status, attempt, rows_read, rows_written, batches, error, created_at, \
     started_at, finished_at, heartbeat_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12, $13, $14, $12 WHERE NOT EXISTS (SELECT 1 FROM runs WHERE tenant = $1 AND flow_id = $3 \
     AND status IN ('queued', 'running') AND heartbeat_at > $15)";

pub const LIVE_RUN_OF_FLOW: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE tenant = $1 AND flow_id = $2 AND status IN ('queued', 'running') \
     AND heartbeat_at > $3 ORDER BY created_at DESC, id DESC LIMIT 1",
);

pub const HEARTBEAT_RUN: &str = "UPDATE runs SET heartbeat_at = $3 WHERE tenant = $1 AND id = $2 \
     RETURNING cancel_requested";

pub const REQUEST_RUN_CANCEL: &str = "UPDATE runs SET cancel_requested = 1 WHERE tenant = $1 \
     AND id = $2 AND status IN ('queued', 'running')";

/// A run's flow and creation time are fixed; everything that progresses is updated.
pub const UPDATE_RUN: &str = "UPDATE runs SET flow_name = $3, run_trigger = $4, status = $5, \
     attempt = $6, rows_read = $7, rows_written = $8, batches = $9, error = $10, \
     started_at = $11, finished_at = $12, heartbeat_at = $13 WHERE tenant = $1 AND id = $2";

pub const GET_RUN: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE tenant = $1 AND id = $2",
);

// Four fixed statements rather than `($2 IS NULL OR flow_id = $2)`: a planner cannot use the
// (tenant, flow_id, created_at) index for an optional filter it only learns about at run time.
// `$n` is the limit in each (a very large number stands for "no limit").

pub const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE tenant = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
);

pub const LIST_RUNS_BY_FLOW: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE tenant = $1 AND flow_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3",
);

pub const LIST_RUNS_BY_STATUS: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE tenant = $1 AND status = $2 ORDER BY created_at DESC, id DESC LIMIT $3",
);

pub const LIST_RUNS_BY_FLOW_AND_STATUS: &str = concat!(
    "SELECT ",
    run_cols!(),
    " FROM runs WHERE tenant = $1 AND flow_id = $2 AND status = $3 \
     ORDER BY created_at DESC, id DESC LIMIT $4",
);

/// Cross-tenant on purpose: start-up recovery after a crash.
pub const FAIL_UNFINISHED_RUNS: &str = "UPDATE runs SET status = 'error', error = $1, \
     finished_at = $2 WHERE status IN ('queued', 'running') \
     AND (heartbeat_at IS NULL OR heartbeat_at < $3)";

// ---- run logs -------------------------------------------------------------------------------

pub const INSERT_LOG: &str = "INSERT INTO run_logs (tenant, run_id, seq, at, level, message) VALUES ($1, $2, $3, $4, $5, $6)";

/// The newest `$3` lines, handed back oldest first.
pub const TAIL_LOGS: &str = "SELECT run_id, seq, at, level, message FROM \
     (SELECT run_id, seq, at, level, message FROM run_logs WHERE tenant = $1 AND run_id = $2 \
     ORDER BY seq DESC LIMIT $3) AS tail ORDER BY seq";

// ---- watermarks -----------------------------------------------------------------------------

pub const GET_WATERMARK: &str = "SELECT value FROM watermarks WHERE tenant = $1 AND flow_id = $2";

pub const SET_WATERMARK: &str = "INSERT INTO watermarks (tenant, flow_id, value, updated_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, flow_id) DO UPDATE SET value = excluded.value, \
     updated_at = excluded.updated_at";

pub const CLEAR_WATERMARK: &str = "DELETE FROM watermarks WHERE tenant = $1 AND flow_id = $2";

// ---- API keys -------------------------------------------------------------------------------

macro_rules! key_cols {
    () => {
        "id, tenant, name, role, prefix, key_hash, created_at, expires_at, revoked_at, \
         last_used_at"
    };
}

pub const INSERT_KEY: &str = "INSERT INTO api_keys (id, tenant, name, role, prefix, key_hash, \
     created_at, expires_at, revoked_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
     $9, $10)";

/// Cross-tenant on purpose: the presented key decides the tenant.
pub const FIND_KEY_BY_HASH: &str =
    concat!("SELECT ", key_cols!(), " FROM api_keys WHERE key_hash = $1");

pub const LIST_KEYS: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys WHERE tenant = $1 ORDER BY created_at, id"
);

/// Cross-tenant on purpose: the local operator's `keys list`.
pub const LIST_ALL_KEYS: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys ORDER BY tenant, created_at, id"
);

pub const REVOKE_KEY: &str = "UPDATE api_keys SET revoked_at = $3 WHERE tenant = $1 AND id = $2 \
     AND revoked_at IS NULL";

/// Cross-tenant on purpose: the local operator revokes by id alone (ids are unique).
pub const REVOKE_KEY_ANY_TENANT: &str =
    "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

pub const TOUCH_KEY: &str = "UPDATE api_keys SET last_used_at = $3 WHERE tenant = $1 AND id = $2";

pub const COUNT_KEYS: &str = "SELECT COUNT(*) AS n FROM api_keys";

// ---- chat sessions --------------------------------------------------------------------------

macro_rules! session_cols {
    () => {
        "id, tenant, title, system_prompt, include_tools, metadata, message_count, created_at, \
         updated_at"
    };
}

/// Inserts only while the tenant has fewer than `$9` sessions; SQLite runs the count and the
/// insert in one write transaction, so concurrent inserts cannot pass the cap together.
pub const INSERT_SESSION: &str = "INSERT INTO sessions (tenant, id, title, system_prompt, \
     include_tools, metadata, message_count, created_at, updated_at) \
     SELECT $1, $2, $3, $4, $5, $6, 0, $7, $8 \
     WHERE (SELECT count(*) FROM sessions WHERE tenant = $1) < $9";

pub const GET_SESSION: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM sessions WHERE tenant = $1 AND id = $2"
);

pub const LIST_SESSIONS: &str = concat!(
    "SELECT ",
    session_cols!(),
    " FROM sessions WHERE tenant = $1 ORDER BY updated_at DESC, created_at DESC, id DESC \
     LIMIT $2 OFFSET $3"
);

pub const COUNT_SESSIONS: &str = "SELECT COUNT(*) AS n FROM sessions WHERE tenant = $1";

/// Messages go with it (ON DELETE CASCADE); the explicit delete in the same transaction keeps
/// that true on a connection where foreign keys are off.
pub const DELETE_SESSION_MESSAGES: &str =
    "DELETE FROM session_messages WHERE tenant = $1 AND session_id = $2";

pub const DELETE_SESSION: &str = "DELETE FROM sessions WHERE tenant = $1 AND id = $2";

/// Reserves `$3` positions and answers the new count; the new messages take the positions
/// after the old one. No row: the session does not exist in this tenant.
pub const RESERVE_MESSAGES: &str = "UPDATE sessions SET message_count = message_count + $3, \
     updated_at = $4 WHERE tenant = $1 AND id = $2 RETURNING message_count";

pub const INSERT_MESSAGE: &str = "INSERT INTO session_messages (tenant, session_id, seq, role, \
     content, tool_calls, tool_call_id, name, data, success, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

pub const LIST_MESSAGES: &str = "SELECT seq, role, content, tool_calls, tool_call_id, name, data, \
     success, created_at FROM session_messages WHERE tenant = $1 AND session_id = $2 \
     ORDER BY seq LIMIT $3 OFFSET $4";

// ---- AI usage -------------------------------------------------------------------------------

pub const INSERT_USAGE: &str = "INSERT INTO usage_records (tenant, run_id, key_id, session_id, \
     model, input_tokens, output_tokens, tool_calls, llm_calls, cost_micros, at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// The sums every usage query answers, as `runs`, `input_tokens`, ... (0 when no row matches).
const USAGE_SUMS: &str = "COUNT(*) AS runs, \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
     CAST(COALESCE(SUM(tool_calls), 0) AS BIGINT) AS tool_calls, \
     CAST(COALESCE(SUM(llm_calls), 0) AS BIGINT) AS llm_calls, \
     CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros";

/// The column a usage breakdown groups by, as `grp`.
fn usage_group(by: etl_agent::usage::GroupBy) -> &'static str {
    use etl_agent::usage::GroupBy;
    match by {
        GroupBy::Tenant => "tenant",
        GroupBy::Key => "key_id",
        GroupBy::Model => "model",
        GroupBy::Session => "COALESCE(session_id, '')",
        // Timestamps are RFC 3339 UTC text: the first ten characters are the day.
        GroupBy::Day => "substr(at, 1, 10)",
    }
}

/// The WHERE clause of a usage query and the values to bind to it, in order: only the filter's
/// set fields, numbered from $1 (`since` inclusive, `until` exclusive; timestamps compare as
/// text because they are all written in one fixed-width UTC format).
pub fn usage_where(filter: &etl_agent::usage::UsageFilter) -> (String, Vec<String>) {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    let mut add = |condition: &str, value: String| {
        binds.push(value);
        conditions.push(format!("{condition} ${}", binds.len()));
    };
    if let Some(t) = &filter.tenant {
        add("tenant =", t.clone());
    }
    if let Some(k) = &filter.key_id {
        add("key_id =", k.clone());
    }
    if let Some(s) = &filter.session_id {
        add("session_id =", s.clone());
    }
    if let Some(t) = filter.since {
        add("at >=", crate::codec::ts(t));
    }
    if let Some(t) = filter.until {
        add("at <", crate::codec::ts(t));
    }
    let clause = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    (clause, binds)
}

/// Sums of the rows a filter selects.
pub fn usage_totals(filter: &etl_agent::usage::UsageFilter) -> (String, Vec<String>) {
    let (clause, binds) = usage_where(filter);
    (
        format!("SELECT {USAGE_SUMS} FROM usage_records{clause}"),
        binds,
    )
}

/// Sums per group, ordered by the group.
pub fn usage_groups(
    filter: &etl_agent::usage::UsageFilter,
    by: etl_agent::usage::GroupBy,
) -> (String, Vec<String>) {
    let (clause, binds) = usage_where(filter);
    let group = usage_group(by);
    (
        format!(
            "SELECT {group} AS grp, {USAGE_SUMS} FROM usage_records{clause} GROUP BY {group} \
             ORDER BY {group}"
        ),
        binds,
    )
}
