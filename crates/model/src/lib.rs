//! The engine's shared vocabulary: values and batches, connector specifications, properties,
//! the source/sink contract every connector implements, and the one retry policy.
//!
//! This crate knows nothing about any particular system; connectors depend on it, the engine
//! drives them through it.

mod batch;
mod connector;
mod error;
mod flatten;
mod json_stream;
mod props;
mod retry;
mod spec;
mod value;

pub use batch::{Batch, RecordBuilder};
pub use connector::{
    ConnectionConfig, Connector, Incremental, NoLog, ObjectInfo, RunContext, RunLogger, Sink,
    SinkRequest, Source, SourceRequest, WriteMode,
};
pub use error::{ConnectorError, ErrorKind};
pub use flatten::flatten_json;
pub use json_stream::{
    Emit, FieldSink, FlatRecord, FlatRecordSeed, FlattenInto, JsonKey, StreamError, flatten_map,
    flatten_map_into, stream_records, stream_records_from_slice,
};
pub use props::{Props, parse_duration};
pub use retry::RetryPolicy;
pub use spec::{ConnectorSpec, PropKind, PropSpec, nearest, validate};
pub use value::{ColumnType, Value};

/// Rows per batch unless a flow or connector says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 10_000;
