//! The engine's persistent entities: connections, flows, schedules, runs and their log lines.
//! Every one carries its tenant id; the store keeps them, the engine gives them meaning.

use chrono::{DateTime, Utc};
use etl_model::{ColumnType, Props, WriteMode};
use serde::{Deserialize, Serialize};

pub type Timestamp = DateTime<Utc>;

/// The tenant everything belongs to when nobody says otherwise (the CLI, single-user servers).
pub const DEFAULT_TENANT: &str = "default";

/// A named connection to a system. Secret properties are held encrypted (see `secrets`) except
/// transiently inside a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub props: Props,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One side of a flow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub connection: String,
    /// Table, file glob / file-name pattern, or API path.
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub options: Props,
}

/// Column-level changes applied between source and destination, in this order:
/// filter, rename, exclude, constant, cast.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    /// Keep only rows for which this expression holds (`status = 'active' and amount > 10`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// (from, to) pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rename: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// (column, value) pairs added to every row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constants: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub casts: Vec<(String, ColumnType)>,
}

impl Mapping {
    pub fn is_empty(&self) -> bool {
        self == &Mapping::default()
    }
}

/// What a flow does, independent of its identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSpec {
    pub source: Endpoint,
    pub destination: Endpoint,
    #[serde(default)]
    pub mode: WriteMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Create the destination table when missing.
    #[serde(default = "yes")]
    pub create: bool,
    /// High-water-mark column for incremental reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<String>,
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub mapping: Mapping,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub spec: FlowSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// When a schedule fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Trigger {
    /// A cron expression (5 fields, or 6 with seconds first) in a time zone.
    Cron { expr: String, timezone: String },
    /// A fixed interval in seconds.
    Every { seconds: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub tenant: String,
    pub flow_id: String,
    pub flow_name: String,
    pub trigger: Trigger,
    pub enabled: bool,
    /// Extra attempts after a failed run.
    pub retries: u32,
    pub retry_delay_secs: u64,
    pub next_run_at: Option<Timestamp>,
    pub last_run_at: Option<Timestamp>,
    pub last_run_id: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Success,
    Error,
    Canceled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Error => "error",
            RunStatus::Canceled => "canceled",
        }
    }
    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "success" => RunStatus::Success,
            "error" => RunStatus::Error,
            "canceled" => RunStatus::Canceled,
            _ => return None,
        })
    }
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Error | RunStatus::Canceled
        )
    }
}

/// Who started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunTrigger {
    Manual,
    Schedule,
    Api,
    Agent,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Manual => "manual",
            RunTrigger::Schedule => "schedule",
            RunTrigger::Api => "api",
            RunTrigger::Agent => "agent",
        }
    }
    pub fn parse(s: &str) -> Option<RunTrigger> {
        Some(match s {
            "manual" => RunTrigger::Manual,
            "schedule" => RunTrigger::Schedule,
            "api" => RunTrigger::Api,
            "agent" => RunTrigger::Agent,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub tenant: String,
    pub flow_id: String,
    pub flow_name: String,
    pub trigger: RunTrigger,
    pub status: RunStatus,
    pub attempt: u32,
    pub rows_read: u64,
    pub rows_written: u64,
    pub batches: u64,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl Run {
    pub fn duration_ms(&self) -> Option<i64> {
        Some((self.finished_at? - self.started_at?).num_milliseconds())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub run_id: String,
    pub seq: u64,
    pub at: Timestamp,
    pub level: String,
    pub message: String,
}
