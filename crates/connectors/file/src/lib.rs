//! The `file` connector: CSV, JSON and NDJSON files in a local directory, read by glob and
//! written one file per run.
//!
//! Reading streams every format (a blocking worker feeding a one-batch channel), so memory stays
//! at about one batch whatever the file size. Writing goes to a hidden temporary file that
//! `finish` renames into place, so a failed run never leaves a half-written file.
//! The user documentation is `docs/connectors/file.md`.

mod format;
mod paths;
mod sink;
mod source;

use std::fs;
use std::path::Path;

use async_trait::async_trait;
use etl_model::{
    ConnectionConfig, Connector, ConnectorError, ConnectorSpec, DEFAULT_BATCH_SIZE, ObjectInfo,
    PropSpec, Props, RunContext, Sink, SinkRequest, Source, SourceRequest, WriteMode,
};

pub use format::Format;
pub use source::FILE_COLUMN;

use paths::{check_relative, configured_dir, existing_root, expand_placeholders, io_error};
use sink::{FileSink, SinkPlan};
use source::{CsvOptions, FileSource, Plan, Planned};

/// `list_objects` stops after this many files so a huge tree cannot produce a huge answer.
pub const MAX_LISTED_FILES: usize = 10_000;

static SPEC: ConnectorSpec = ConnectorSpec {
    type_name: "file",
    title: "Files in a local directory",
    description: "CSV, JSON and NDJSON files in a folder on the server: read one file or a glob \
                  of files, write one file per run with a name pattern.",
    can_read: true,
    can_write: true,
    source_object: "a file name or glob relative to the directory, e.g. orders/*.csv or **/*.ndjson",
    destination_object: "a file name relative to the directory, with optional placeholders \
                         {run_id}, {date}, {time}, {timestamp}, e.g. exports/orders_{date}.csv",
    connection: &[
        PropSpec::string(
            "directory",
            "the folder holding the files (absolute path recommended); must exist to read, \
             created on the first write",
        )
        .required()
        .example("/data/files"),
        PropSpec::choice(
            "format",
            Format::NAMES,
            "default format for every flow on this connection; when unset the file extension \
             decides (.csv/.tsv, .json, .ndjson/.jsonl)",
        )
        .example("csv"),
    ],
    source: &[
        PropSpec::choice(
            "format",
            Format::NAMES,
            "format of the files read; overrides the connection's format and the extension",
        )
        .example("ndjson"),
        PropSpec::string(
            "delimiter",
            "CSV field separator: one character, or tab (also \\t), comma, semicolon, pipe, space",
        )
        .default(",")
        .example(";"),
        PropSpec::boolean(
            "header",
            "CSV: the first row holds the column names; when false columns are col1..colN",
        )
        .default("true"),
        PropSpec::string("quote", "CSV quote character, or none to turn quoting off")
            .default("\"")
            .example("'"),
        PropSpec::string(
            "records_path",
            "JSON: dot path to the records array inside the document; when unset the document \
             must be an array of records (or one record object)",
        )
        .example("data.items"),
        PropSpec::choice(
            "on_error",
            &["fail", "skip"],
            "what a malformed CSV row or NDJSON line does: fail the run, or skip it with a warning",
        )
        .default("fail"),
        PropSpec::boolean(
            "include_file_name",
            "add a _file column holding each row's file path relative to the directory",
        )
        .default("false"),
    ],
    destination: &[
        PropSpec::choice(
            "format",
            Format::NAMES,
            "format of the file written; overrides the connection's format and the extension",
        )
        .example("json"),
        PropSpec::string(
            "delimiter",
            "CSV field separator: one character, or tab (also \\t), comma, semicolon, pipe, space",
        )
        .default(",")
        .example(";"),
        PropSpec::boolean("header", "CSV: write a header row with the column names")
            .default("true"),
        PropSpec::boolean("pretty", "JSON: indent the records for people to read").default("false"),
    ],
};

/// The `file` connector. Stateless: every call reads its connection's properties afresh.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileConnector;

impl FileConnector {
    pub fn new() -> Self {
        FileConnector
    }

    /// The connector's specification (also available through [`Connector::spec`]).
    pub fn spec() -> &'static ConnectorSpec {
        &SPEC
    }
}

#[async_trait]
impl Connector for FileConnector {
    fn spec(&self) -> &'static ConnectorSpec {
        &SPEC
    }

    async fn test(&self, conn: &ConnectionConfig) -> Result<String, ConnectorError> {
        let dir = configured_dir(&conn.props)?;
        blocking(move || test_directory(&dir)).await
    }

    async fn list_objects(
        &self,
        conn: &ConnectionConfig,
    ) -> Result<Vec<ObjectInfo>, ConnectorError> {
        let dir = configured_dir(&conn.props)?;
        let props = conn.props.clone();
        blocking(move || list_files(&dir, &props)).await
    }

    async fn open_source(
        &self,
        conn: &ConnectionConfig,
        request: SourceRequest,
        ctx: &RunContext,
    ) -> Result<Box<dyn Source>, ConnectorError> {
        let dir = configured_dir(&conn.props)?;
        let conn_props = conn.props.clone();
        let req = request.clone();
        let (plan, warnings) = blocking(move || plan_source(&dir, &conn_props, &req)).await?;
        for w in &warnings {
            ctx.warn(w);
        }
        let names: Vec<&str> = plan
            .files
            .iter()
            .take(5)
            .map(|f| f.file.rel.as_str())
            .collect();
        let more = plan.files.len().saturating_sub(names.len());
        ctx.info(&format!(
            "reading {} file(s) matching '{}': {}{}",
            plan.files.len(),
            request.object,
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
        Ok(Box::new(FileSource::start(
            plan,
            ctx.cancel.clone(),
            ctx.logger.clone(),
        )))
    }

    async fn open_sink(
        &self,
        conn: &ConnectionConfig,
        request: SinkRequest,
        ctx: &RunContext,
    ) -> Result<Box<dyn Sink>, ConnectorError> {
        let dir = configured_dir(&conn.props)?;
        let plan = plan_sink(&dir, &conn.props, &request)?;
        let ctx2 = ctx.clone();
        let sink = blocking(move || FileSink::open(plan, &ctx2)).await?;
        Ok(Box::new(sink))
    }
}

/// Runs file-system work on the blocking pool so the async workers stay free.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConnectorError> + Send + 'static,
) -> Result<T, ConnectorError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ConnectorError::read(format!(
            "a file operation stopped unexpectedly ({e}); try again"
        ))
    })?
}

fn test_directory(dir: &Path) -> Result<String, ConnectorError> {
    let shown = dir.display();
    match fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A destination-only connection may point at a folder its first run creates.
            let parent = dir.ancestors().skip(1).find(|p| p.is_dir());
            return match parent {
                Some(p) if probe_writable(p).is_ok() => Ok(format!(
                    "directory '{shown}' does not exist yet; the first flow that writes to it \
                     will create it (its parent '{}' is writable), but reading needs it to exist",
                    p.display()
                )),
                _ => Err(ConnectorError::not_found(format!(
                    "directory '{shown}' does not exist and cannot be created by the server; \
                     create it, or fix the connection's directory property"
                ))),
            };
        }
        Err(e) => return Err(io_error("open", dir, &e)),
        Ok(m) if !m.is_dir() => {
            return Err(ConnectorError::config(format!(
                "directory '{shown}' is a file, not a folder; set directory= to the folder that \
                 holds the files"
            )));
        }
        Ok(_) => {}
    }
    let entries = fs::read_dir(dir).map_err(|e| io_error("list", dir, &e))?;
    let mut files = 0usize;
    let mut folders = 0usize;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => folders += 1,
            Ok(_) => files += 1,
            Err(_) => {}
        }
    }
    let contents = format!("{files} file(s) and {folders} folder(s) at the top level");
    match probe_writable(dir) {
        Ok(()) => Ok(format!(
            "directory '{shown}' is readable and writable ({contents})"
        )),
        Err(e) => Ok(format!(
            "directory '{shown}' is readable but NOT writable ({e}): it can be a flow source \
             but not a destination ({contents})"
        )),
    }
}

/// Creates and removes a hidden probe file: the only reliable writability check.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let probe = dir.join(format!(".etl-write-test-{}-{nanos}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

fn list_files(dir: &Path, conn: &Props) -> Result<Vec<ObjectInfo>, ConnectorError> {
    let root = existing_root(dir)?;
    let conn_format = format::explicit(&Props::new(), conn)?;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    paths::walk(&root, "", &mut warnings, &mut |rel, _path, size| {
        let detected = Format::from_name(rel).or(conn_format);
        out.push(ObjectInfo {
            name: rel.to_string(),
            kind: "file".to_string(),
            detail: Some(format!(
                "{}, {}",
                detected.map_or("unknown format (set format=)", Format::name),
                human_size(size)
            )),
        });
        out.len() < MAX_LISTED_FILES
    })?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

fn plan_source(
    dir: &Path,
    conn: &Props,
    request: &SourceRequest,
) -> Result<(Plan, Vec<String>), ConnectorError> {
    let opts = &request.options;
    // Options are checked before touching the disk, so a typo fails fast whatever the files.
    let delimiter = opts
        .get("delimiter")
        .map(|d| format::parse_delimiter("source.delimiter", d))
        .transpose()?;
    let quote = match opts.get("quote") {
        Some(q) => format::parse_quote("source.quote", q)?,
        None => Some(b'"'),
    };
    let header = opts.bool_or("header", true)?;
    let skip_errors = opts.choice("on_error", &["fail", "skip"], "fail")? == "skip";
    let include_file_name = opts.bool_or("include_file_name", false)?;
    let records_path: Vec<String> = opts
        .get("records_path")
        .map(|p| {
            p.trim()
                .trim_start_matches("$.")
                .split('.')
                // `$` alone (JSONPath's root) means the document itself.
                .filter(|s| !s.is_empty() && *s != "$")
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    format::explicit(opts, conn)?;

    check_relative(&request.object, "object", dir)?;
    let root = existing_root(dir)?;
    let (matched, warnings) = paths::find_files(&root, &request.object)?;
    let mut files = Vec::with_capacity(matched.len());
    for file in matched {
        let format = format::resolve(opts, conn, &file.rel, "source.format")?;
        if !records_path.is_empty() && format != Format::Json {
            return Err(ConnectorError::config(format!(
                "source.records_path applies to JSON documents, but '{}' is read as {}; remove \
                 records_path, or set source.format=json if the file is one JSON document",
                file.rel,
                format.name()
            )));
        }
        let csv = CsvOptions {
            delimiter: delimiter.unwrap_or(if format::is_tsv(&file.rel) {
                b'\t'
            } else {
                b','
            }),
            quote,
            header,
        };
        files.push(Planned { file, format, csv });
    }
    let batch_size = if request.batch_size == 0 {
        DEFAULT_BATCH_SIZE
    } else {
        request.batch_size
    };
    Ok((
        Plan {
            files,
            records_path,
            skip_errors,
            include_file_name,
            batch_size,
        },
        warnings,
    ))
}

fn plan_sink(dir: &Path, conn: &Props, request: &SinkRequest) -> Result<SinkPlan, ConnectorError> {
    if request.mode == WriteMode::Merge {
        return Err(ConnectorError::unsupported(format!(
            "the file connector cannot merge into '{}': a file has no keys to update rows by; use \
             mode=replace to rewrite the file, mode=append with {{run_id}} or {{date}} in the \
             target to write a new file per run, or a database connection to merge",
            request.object
        )));
    }
    let opts = &request.options;
    check_relative(&request.object, "target", dir)?;
    let name = expand_placeholders(request.object.trim(), &request.run_id, chrono::Utc::now())?;
    let name = name.trim_start_matches("./").to_string();
    check_relative(&name, "target", dir)?;
    if name.ends_with('/') || name.ends_with('\\') {
        return Err(ConnectorError::config(format!(
            "target '{}' names a folder; add a file name, e.g. {}data.csv",
            request.object, request.object
        )));
    }
    if paths::is_glob(&name) {
        return Err(ConnectorError::config(format!(
            "target '{}' holds glob characters (* ? [ {{); a destination names one file, e.g. \
             exports/orders_{{date}}.csv",
            request.object
        )));
    }
    let format = format::resolve(opts, conn, &name, "destination.format")?;
    let delimiter = match opts.get("delimiter") {
        Some(d) => format::parse_delimiter("destination.delimiter", d)?,
        None if format::is_tsv(&name) => b'\t',
        None => b',',
    };
    Ok(SinkPlan {
        target: dir.join(&name),
        target_rel: name,
        mode: request.mode,
        format,
        delimiter,
        header: opts.bool_or("header", true)?,
        pretty: opts.bool_or("pretty", false)?,
        run_id: temp_name_run_id(&request.run_id),
    })
}

/// The run id as used in temporary file names (never empty, never a path).
fn temp_name_run_id(run_id: &str) -> String {
    let cleaned = paths::sanitize(run_id);
    if cleaned.is_empty() {
        format!("pid{}", std::process::id())
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_valid_and_self_consistent() {
        let spec = FileConnector::spec();
        assert_eq!(spec.type_name, "file");
        assert!(spec.can_read && spec.can_write);
        let conn: Props = [("directory", "/tmp"), ("format", "csv")]
            .into_iter()
            .collect();
        assert!(spec.validate_connection(&conn).is_empty());
        let src: Props = [
            ("delimiter", "\\t"),
            ("header", "false"),
            ("on_error", "skip"),
            ("include_file_name", "true"),
        ]
        .into_iter()
        .collect();
        assert!(spec.validate_source(&src).is_empty());
        assert!(!spec.is_secret("directory"));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(12), "12 bytes");
        assert_eq!(human_size(2048), "2.0 KB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MB");
    }
}
