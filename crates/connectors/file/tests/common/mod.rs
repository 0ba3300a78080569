//! Helpers shared by the integration tests: connections on temp dirs, a recording logger,
//! and draining a source.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use etl_file::FileConnector;
use etl_model::{
    Batch, ConnectionConfig, Connector, ConnectorError, Props, RunContext, RunLogger, Sink,
    SinkRequest, SourceRequest, WriteMode,
};
use tokio_util::sync::CancellationToken;

pub fn conn(dir: &Path) -> ConnectionConfig {
    conn_with(dir, &[])
}

pub fn conn_with(dir: &Path, extra: &[(&str, &str)]) -> ConnectionConfig {
    let mut props = Props::new().with("directory", dir.to_string_lossy().to_string());
    for (k, v) in extra {
        props.set(*k, *v);
    }
    ConnectionConfig {
        name: "files".into(),
        type_name: "file".into(),
        props,
    }
}

/// Keeps every log line so tests can check warnings.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<(String, String)>>);

impl RunLogger for Recorder {
    fn log(&self, level: &str, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push((level.to_string(), message.to_string()));
    }
}

impl Recorder {
    pub fn lines(&self, level: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

pub fn ctx() -> (RunContext, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (
        RunContext {
            cancel: CancellationToken::new(),
            logger: rec.clone(),
        },
        rec,
    )
}

pub fn source_request(object: &str, options: &[(&str, &str)], batch_size: usize) -> SourceRequest {
    SourceRequest {
        object: object.into(),
        options: options.iter().map(|(k, v)| (*k, *v)).collect(),
        incremental: None,
        batch_size,
    }
}

/// Reads a whole source into its batches.
pub async fn read_batches(
    conn: &ConnectionConfig,
    object: &str,
    options: &[(&str, &str)],
    batch_size: usize,
) -> Result<Vec<Batch>, ConnectorError> {
    let (ctx, _) = ctx();
    read_batches_ctx(conn, object, options, batch_size, &ctx).await
}

pub async fn read_batches_ctx(
    conn: &ConnectionConfig,
    object: &str,
    options: &[(&str, &str)],
    batch_size: usize,
    ctx: &RunContext,
) -> Result<Vec<Batch>, ConnectorError> {
    let mut source = FileConnector::new()
        .open_source(conn, source_request(object, options, batch_size), ctx)
        .await?;
    let mut out = Vec::new();
    while let Some(batch) = source.next_batch().await? {
        out.push(batch);
    }
    Ok(out)
}

/// All rows as text cells (None for null), with the column list of the first batch.
pub fn texts(batches: &[Batch]) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let columns = batches
        .first()
        .map(|b| b.columns.clone())
        .unwrap_or_default();
    let rows = batches
        .iter()
        .flat_map(|b| {
            b.rows.iter().map(|r| {
                r.iter()
                    .map(|v| v.as_text().map(|t| t.into_owned()))
                    .collect()
            })
        })
        .collect();
    (columns, rows)
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

pub fn sink_request(
    object: &str,
    options: &[(&str, &str)],
    mode: WriteMode,
    run_id: &str,
) -> SinkRequest {
    SinkRequest {
        object: object.into(),
        options: options.iter().map(|(k, v)| (*k, *v)).collect(),
        mode,
        keys: Vec::new(),
        create: true,
        run_id: run_id.into(),
        column_types: Vec::new(),
    }
}

pub async fn open_sink(
    conn: &ConnectionConfig,
    object: &str,
    options: &[(&str, &str)],
    mode: WriteMode,
    run_id: &str,
) -> Result<Box<dyn Sink>, ConnectorError> {
    let (ctx, _) = ctx();
    FileConnector::new()
        .open_sink(conn, sink_request(object, options, mode, run_id), &ctx)
        .await
}

/// Every file below `dir`, hidden ones included, as sorted relative paths.
pub fn all_files(dir: &Path) -> Vec<String> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                go(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}
