//! Turning entities into column values and rows back into entities, for every backend.
//!
//! The encoding is the store's on-disk contract: timestamps are RFC 3339 UTC text with exactly
//! six fractional digits (so text order is time order, and PostgreSQL's microsecond precision
//! gives the same values back as SQLite); props, tags, flow specs and triggers are JSON text;
//! counters are 64-bit signed integers. A backend only implements [`Columns`] for its row type
//! and gets the entity mapping below for free.

use chrono::{DateTime, SecondsFormat, Utc};
use etl_agent::keys::ApiKey;
use etl_agent::sessions::{Session, SessionMessage};
use etl_engine::{
    Connection, Flow, FlowSpec, LogLine, Run, RunStatus, RunTrigger, Schedule, StoreError,
    StoreResult, Timestamp, Trigger,
};
use etl_model::Props;

/// Formats a timestamp for storage: `2025-01-31T08:15:00.123456Z`. Anything finer than a
/// microsecond is dropped, so every backend keeps exactly the same value.
pub fn ts(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn opt_ts(t: Option<Timestamp>) -> Option<String> {
    t.map(ts)
}

fn parse_ts(what: &str, column: &str, text: &str) -> StoreResult<Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            StoreError::Backend(format!(
                "{what} has an unreadable {column} '{text}' ({e}); the database was changed \
                 outside etlworks-agent: restore it from a backup or fix the value to RFC 3339 \
                 UTC such as 2025-01-31T08:15:00.000000Z"
            ))
        })
}

/// Encodes an unsigned counter for a signed 64-bit column.
pub fn int(what: &str, field: &str, value: u64) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| {
        StoreError::Backend(format!(
            "{what} has {field} = {value}, larger than the store can hold ({}); this is a bug in \
             the caller, not a storage problem",
            i64::MAX
        ))
    })
}

/// Converts a `usize` limit to SQL, with 0 meaning "no limit".
pub fn limit(n: usize) -> i64 {
    if n == 0 {
        i64::MAX
    } else {
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

pub fn json<T: serde::Serialize>(what: &str, field: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| {
        StoreError::Backend(format!("cannot encode the {field} of {what} as JSON: {e}"))
    })
}

fn from_json<T: serde::de::DeserializeOwned>(
    what: &str,
    field: &str,
    text: &str,
) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Backend(format!(
            "{what} has unreadable {field} JSON ({e}); the row was written by an incompatible \
             version or edited by hand: fix or delete it"
        ))
    })
}

/// Typed access to one result row, implemented by each backend for its row type.
pub trait Columns {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn flag(&self, column: &str) -> StoreResult<bool>;
    fn opt_flag(&self, column: &str) -> StoreResult<Option<bool>>;
}

/// Small helpers on top of [`Columns`] that name the row in their errors.
trait ColumnsExt: Columns {
    fn time(&self, what: &str, column: &str) -> StoreResult<Timestamp> {
        parse_ts(what, column, &self.text(column)?)
    }

    fn opt_time(&self, what: &str, column: &str) -> StoreResult<Option<Timestamp>> {
        self.opt_text(column)?
            .map(|t| parse_ts(what, column, &t))
            .transpose()
    }

    fn count<T: TryFrom<i64>>(&self, what: &str, column: &str) -> StoreResult<T> {
        let n = self.int(column)?;
        T::try_from(n).map_err(|_| {
            StoreError::Backend(format!(
                "{what} has {column} = {n}, which is not a valid count; the database was changed \
                 outside etlworks-agent: fix the value"
            ))
        })
    }
}

impl<R: Columns + ?Sized> ColumnsExt for R {}

pub fn connection(row: &impl Columns) -> StoreResult<Connection> {
    let name = row.text("name")?;
    let what = format!("connection '{name}'");
    let props: Props = from_json(&what, "props", &row.text("props")?)?;
    let tags: Vec<String> = from_json(&what, "tags", &row.text("tags")?)?;
    Ok(Connection {
        id: row.text("id")?,
        tenant: row.text("tenant")?,
        type_name: row.text("type_name")?,
        props,
        tags,
        description: row.text("description")?,
        created_at: row.time(&what, "created_at")?,
        updated_at: row.time(&what, "updated_at")?,
        name,
    })
}

pub fn flow(row: &impl Columns) -> StoreResult<Flow> {
    let name = row.text("name")?;
    let what = format!("flow '{name}'");
    let spec: FlowSpec = from_json(&what, "spec", &row.text("spec")?)?;
    Ok(Flow {
        id: row.text("id")?,
        tenant: row.text("tenant")?,
        description: row.text("description")?,
        spec,
        created_at: row.time(&what, "created_at")?,
        updated_at: row.time(&what, "updated_at")?,
        name,
    })
}

pub fn schedule(row: &impl Columns) -> StoreResult<Schedule> {
    let flow_name = row.text("flow_name")?;
    let what = format!("the schedule of flow '{flow_name}'");
    let trigger: Trigger = from_json(&what, "trigger", &row.text("trigger_spec")?)?;
    Ok(Schedule {
        id: row.text("id")?,
        tenant: row.text("tenant")?,
        flow_id: row.text("flow_id")?,
        trigger,
        enabled: row.flag("enabled")?,
        retries: row.count(&what, "retries")?,
        retry_delay_secs: row.count(&what, "retry_delay_secs")?,
        next_run_at: row.opt_time(&what, "next_run_at")?,
        last_run_at: row.opt_time(&what, "last_run_at")?,
        last_run_id: row.opt_text("last_run_id")?,
        created_at: row.time(&what, "created_at")?,
        updated_at: row.time(&what, "updated_at")?,
        flow_name,
    })
}

pub fn run(row: &impl Columns) -> StoreResult<Run> {
    let id = row.text("id")?;
    let what = format!("run '{id}'");
    let trigger_text = row.text("run_trigger")?;
    let trigger = RunTrigger::parse(&trigger_text).ok_or_else(|| {
        StoreError::Backend(format!(
            "{what} has an unknown trigger '{trigger_text}' (expected manual, schedule, api or \
             agent); the database was changed outside etlworks-agent: fix the value"
        ))
    })?;
    let status_text = row.text("status")?;
    let status = RunStatus::parse(&status_text).ok_or_else(|| {
        StoreError::Backend(format!(
            "{what} has an unknown status '{status_text}' (expected queued, running, success, \
             error or canceled); the database was changed outside etlworks-agent: fix the value"
        ))
    })?;
    Ok(Run {
        tenant: row.text("tenant")?,
        flow_id: row.text("flow_id")?,
        flow_name: row.text("flow_name")?,
        trigger,
        status,
        attempt: row.count(&what, "attempt")?,
        rows_read: row.count(&what, "rows_read")?,
        rows_written: row.count(&what, "rows_written")?,
        batches: row.count(&what, "batches")?,
        error: row.opt_text("error")?,
        created_at: row.time(&what, "created_at")?,
        started_at: row.opt_time(&what, "started_at")?,
        finished_at: row.opt_time(&what, "finished_at")?,
        id,
    })
}

pub fn log_line(row: &impl Columns) -> StoreResult<LogLine> {
    let run_id = row.text("run_id")?;
    let what = format!("a log line of run '{run_id}'");
    Ok(LogLine {
        seq: row.count(&what, "seq")?,
        at: row.time(&what, "at")?,
        level: row.text("level")?,
        message: row.text("message")?,
        run_id,
    })
}

pub fn api_key(row: &impl Columns) -> StoreResult<ApiKey> {
    let id = row.text("id")?;
    let what = format!("API key '{id}'");
    let role_text = row.text("role")?;
    let role = etl_agent::keys::parse_role(&role_text).map_err(|_| {
        StoreError::Backend(format!(
            "{what} has an unknown role '{role_text}' (expected admin, user or readonly); the \
             database was changed outside etlworks-agent: fix the value"
        ))
    })?;
    Ok(ApiKey {
        tenant: row.text("tenant")?,
        name: row.text("name")?,
        role,
        prefix: row.text("prefix")?,
        hash: row.text("key_hash")?,
        created_at: row.time(&what, "created_at")?,
        expires_at: row.opt_time(&what, "expires_at")?,
        revoked_at: row.opt_time(&what, "revoked_at")?,
        last_used_at: row.opt_time(&what, "last_used_at")?,
        id,
    })
}

pub fn session(row: &impl Columns) -> StoreResult<Session> {
    let id = row.text("id")?;
    let what = format!("session '{id}'");
    Ok(Session {
        tenant: row.text("tenant")?,
        title: row.opt_text("title")?,
        system_prompt: row.opt_text("system_prompt")?,
        include_tools: row.flag("include_tools")?,
        metadata: from_json(&what, "metadata", &row.text("metadata")?)?,
        message_count: row.count(&what, "message_count")?,
        created_at: row.time(&what, "created_at")?,
        updated_at: row.time(&what, "updated_at")?,
        id,
    })
}

/// Parses a role as stored (`system`, `user`, `assistant`, `tool`).
pub fn role(what: &str, text: &str) -> StoreResult<etl_llm::Role> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        StoreError::Backend(format!(
            "{what} has an unknown role '{text}' (expected system, user, assistant or tool); \
             the database was changed outside etlworks-agent: fix the value"
        ))
    })
}

/// The stored text of a role.
pub fn role_str(role: etl_llm::Role) -> &'static str {
    match role {
        etl_llm::Role::System => "system",
        etl_llm::Role::User => "user",
        etl_llm::Role::Assistant => "assistant",
        etl_llm::Role::Tool => "tool",
    }
}

pub fn session_message(session_id: &str, row: &impl Columns) -> StoreResult<SessionMessage> {
    let seq: u64 = row.count(&format!("a message of session '{session_id}'"), "seq")?;
    let what = format!("message {seq} of session '{session_id}'");
    let data = row
        .opt_text("data")?
        .map(|d| from_json(&what, "data", &d))
        .transpose()?;
    Ok(SessionMessage {
        seq,
        message: etl_llm::Message {
            role: role(&what, &row.text("role")?)?,
            content: row.text("content")?,
            tool_calls: from_json(&what, "tool_calls", &row.text("tool_calls")?)?,
            tool_call_id: row.opt_text("tool_call_id")?,
            name: row.opt_text("name")?,
            data,
            success: row.opt_flag("success")?,
        },
        created_at: row.time(&what, "created_at")?,
    })
}

/// The earliest due time, from `NEXT_DUE_AT` (NULL when nothing is scheduled).
pub fn next_due(row: &impl Columns) -> StoreResult<Option<Timestamp>> {
    row.opt_time("the earliest schedule", "next_run_at")
}

/// The sums of a usage query (`runs`, `input_tokens`, ... as `sql::usage_totals` names them).
pub fn usage_totals(row: &impl Columns) -> StoreResult<etl_agent::usage::UsageTotals> {
    let n = |c: &str| -> StoreResult<u64> { Ok(u64::try_from(row.int(c)?).unwrap_or(0)) };
    Ok(etl_agent::usage::UsageTotals {
        runs: n("runs")?,
        input_tokens: n("input_tokens")?,
        output_tokens: n("output_tokens")?,
        tool_calls: n("tool_calls")?,
        llm_calls: n("llm_calls")?,
        cost_micros: n("cost_micros")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_are_fixed_width_utc_with_microseconds() {
        let t = Utc.with_ymd_and_hms(2025, 1, 31, 8, 15, 0).unwrap();
        assert_eq!(ts(t), "2025-01-31T08:15:00.000000Z");
        let fine = t + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(ts(fine), "2025-01-31T08:15:00.123456Z");
        assert_eq!(
            parse_ts("t", "at", &ts(fine)).unwrap(),
            t + chrono::Duration::microseconds(123_456),
            "sub-microsecond digits are dropped, the rest round-trips"
        );
    }

    #[test]
    fn text_order_is_time_order() {
        let base = Utc.with_ymd_and_hms(2025, 1, 31, 8, 15, 0).unwrap();
        let mut times: Vec<Timestamp> = [0i64, 1, 999_999, 1_000_000, 59_999_999, 86_400_000_000]
            .iter()
            .map(|us| base + chrono::Duration::microseconds(*us))
            .collect();
        times.reverse();
        let mut texts: Vec<String> = times.iter().copied().map(ts).collect();
        texts.sort();
        times.sort();
        assert_eq!(texts, times.into_iter().map(ts).collect::<Vec<_>>());
    }

    #[test]
    fn limit_zero_means_unbounded() {
        assert_eq!(limit(0), i64::MAX);
        assert_eq!(limit(25), 25);
    }

    #[test]
    fn counters_beyond_i64_are_refused_with_the_field_name() {
        let err = int("run 'r1'", "rows_read", u64::MAX).unwrap_err();
        assert!(err.to_string().contains("rows_read"), "{err}");
        assert_eq!(int("run 'r1'", "rows_read", 42).unwrap(), 42);
    }

    #[test]
    fn a_bad_stored_timestamp_names_the_row_and_column() {
        let err = parse_ts("run 'r1'", "started_at", "yesterday").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("run 'r1'") && text.contains("started_at"),
            "{text}"
        );
    }
}
