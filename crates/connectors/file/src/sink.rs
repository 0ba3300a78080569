//! Writing: one file per run, written to a hidden temporary file beside the target and renamed
//! into place by `finish`, so readers never see a half-written file and a failed run leaves
//! nothing behind. Blocking file I/O runs on the blocking pool, one batch at a time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use etl_model::{Batch, ConnectorError, RunContext, Sink, Value, WriteMode};

use crate::format::Format;
use crate::paths::io_error;

const WRITE_BUFFER: usize = 256 * 1024;

/// What `open_sink` decided.
pub struct SinkPlan {
    /// Final path and its name relative to the directory (for messages).
    pub target: PathBuf,
    pub target_rel: String,
    pub mode: WriteMode,
    pub format: Format,
    pub delimiter: u8,
    pub header: bool,
    pub pretty: bool,
    pub run_id: String,
}

pub struct FileSink {
    target: PathBuf,
    target_rel: String,
    tmp: PathBuf,
    mode: WriteMode,
    /// `None` only while a batch is being written on the blocking pool, or once finished.
    body: Option<Body>,
    rows: u64,
    done: bool,
    ctx: RunContext,
}

impl FileSink {
    /// Creates the target's folders and the temporary file.
    pub fn open(plan: SinkPlan, ctx: &RunContext) -> Result<FileSink, ConnectorError> {
        let parent = plan
            .target
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        fs::create_dir_all(&parent).map_err(|e| write_error("create the folder", &parent, &e))?;
        match fs::metadata(&plan.target) {
            Ok(m) if m.is_dir() => {
                return Err(ConnectorError::config(format!(
                    "target '{}' is an existing folder; name a file, e.g. {}/data.csv",
                    plan.target_rel, plan.target_rel
                )));
            }
            Ok(_) if plan.mode == WriteMode::Append => return Err(exists_error(&plan.target_rel)),
            _ => {}
        }
        let file_name = plan
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{file_name}.{}.tmp", plan.run_id));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| write_error("create", &tmp, &e))?;
        let mut body = Body {
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            format: plan.format,
            delimiter: plan.delimiter,
            header: plan.header,
            pretty: plan.pretty,
            columns: Vec::new(),
            index: HashMap::new(),
            first_width: None,
            records: 0,
            scratch: String::new(),
        };
        if plan.format == Format::Json {
            body.out
                .write_all(b"[")
                .map_err(|e| write_error("write", &tmp, &e))?;
        }
        Ok(FileSink {
            target: plan.target,
            target_rel: plan.target_rel,
            tmp,
            mode: plan.mode,
            body: Some(body),
            rows: 0,
            done: false,
            ctx: ctx.clone(),
        })
    }

    fn take_body(&mut self) -> Result<Body, ConnectorError> {
        self.body.take().ok_or_else(|| {
            ConnectorError::write(format!(
                "the output for '{}' was already finished or failed; run the flow again",
                self.target_rel
            ))
        })
    }

    fn remove_tmp(&self) {
        for p in [&self.tmp, &rewrite_path(&self.tmp)] {
            let _ = fs::remove_file(p);
        }
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, batch: Batch) -> Result<u64, ConnectorError> {
        let mut body = self.take_body()?;
        let tmp = self.tmp.clone();
        let (body, result) = tokio::task::spawn_blocking(move || {
            let result = body
                .write_batch(&batch)
                .map_err(|e| write_error("write", &tmp, &e));
            (body, result)
        })
        .await
        .map_err(|e| {
            ConnectorError::write(format!(
                "writing '{}' stopped unexpectedly ({e}); run the flow again",
                self.target_rel
            ))
        })?;
        // On error the body is dropped with its file handle; `abort` removes the file.
        let n = result?;
        self.body = Some(body);
        self.rows += n;
        // Nothing is visible until `finish` renames the file into place.
        Ok(0)
    }

    async fn finish(&mut self) -> Result<u64, ConnectorError> {
        let body = self.take_body()?;
        let tmp = self.tmp.clone();
        let target = self.target.clone();
        let target_rel = self.target_rel.clone();
        let mode = self.mode;
        let outcome = tokio::task::spawn_blocking(move || {
            body.complete(&tmp)?;
            publish(&tmp, &target, &target_rel, mode)
        })
        .await
        .map_err(|e| {
            ConnectorError::write(format!(
                "finishing '{}' stopped unexpectedly ({e}); run the flow again",
                self.target_rel
            ))
        })
        .and_then(|r| r);
        if let Err(e) = outcome {
            self.remove_tmp();
            self.done = true;
            return Err(e);
        }
        self.done = true;
        self.ctx.info(&format!(
            "wrote {} row(s) to '{}'",
            self.rows, self.target_rel
        ));
        Ok(self.rows)
    }

    async fn abort(&mut self) -> Result<(), ConnectorError> {
        // Close the file before removing it (matters on Windows, harmless elsewhere).
        self.body = None;
        if !self.done {
            self.remove_tmp();
            self.done = true;
        }
        Ok(())
    }
}

impl Drop for FileSink {
    /// A sink dropped without `finish` or `abort` (a panic, a canceled task) must not leave its
    /// temporary file behind either.
    fn drop(&mut self) {
        if !self.done {
            self.body = None;
            self.remove_tmp();
        }
    }
}

/// Moves the completed temporary file into place: `replace` renames over any existing file
/// (atomic on one file system); `append` refuses to overwrite, checked atomically with a hard
/// link where the file system supports one.
fn publish(
    tmp: &Path,
    target: &Path,
    target_rel: &str,
    mode: WriteMode,
) -> Result<(), ConnectorError> {
    if mode == WriteMode::Append {
        match fs::hard_link(tmp, target) {
            Ok(()) => {
                let _ = fs::remove_file(tmp);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(exists_error(target_rel));
            }
            // No hard links here (some network and FUSE file systems): check, then rename.
            Err(_) => {
                if target.exists() {
                    return Err(exists_error(target_rel));
                }
            }
        }
    }
    fs::rename(tmp, target).map_err(|e| write_error("move the finished file to", target, &e))
}

fn exists_error(target_rel: &str) -> ConnectorError {
    ConnectorError::write(format!(
        "'{target_rel}' already exists and mode=append never overwrites a file; put {{run_id}} or \
         {{timestamp}} in the target name to write a new file each run, or use mode=replace to \
         overwrite it"
    ))
}

fn write_error(action: &str, path: &Path, e: &io::Error) -> ConnectorError {
    let mut err = io_error(action, path, e);
    if err.kind != etl_model::ErrorKind::Connect {
        err.kind = etl_model::ErrorKind::Write;
    }
    err
}

/// Where a CSV is rewritten when later batches added columns.
fn rewrite_path(tmp: &Path) -> PathBuf {
    let mut name = tmp.as_os_str().to_owned();
    name.push("2");
    PathBuf::from(name)
}

/// The open output file and what has been written to it.
struct Body {
    out: BufWriter<File>,
    format: Format,
    delimiter: u8,
    header: bool,
    pretty: bool,
    /// Union of all batches' columns, in order of first appearance.
    columns: Vec<String>,
    index: HashMap<String, usize>,
    /// CSV: the number of columns the rows (and header) were first written with.
    first_width: Option<usize>,
    records: u64,
    /// Reused for formatting numbers without an allocation per value.
    scratch: String,
}

impl Body {
    fn write_batch(&mut self, batch: &Batch) -> io::Result<u64> {
        // Where each of this batch's columns sits in the file's column list.
        let mut positions = Vec::with_capacity(batch.columns.len());
        for name in &batch.columns {
            let pos = match self.index.get(name) {
                Some(&p) => p,
                None => {
                    self.columns.push(name.clone());
                    self.index.insert(name.clone(), self.columns.len() - 1);
                    self.columns.len() - 1
                }
            };
            positions.push(pos);
        }
        match self.format {
            Format::Csv => self.write_csv(batch, &positions)?,
            Format::Json | Format::Ndjson => self.write_json(batch)?,
        }
        Ok(batch.rows.len() as u64)
    }

    fn write_csv(&mut self, batch: &Batch, positions: &[usize]) -> io::Result<()> {
        if batch.columns.is_empty() {
            return Ok(());
        }
        let mut csv = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .from_writer(&mut self.out);
        if self.first_width.is_none() {
            self.first_width = Some(self.columns.len());
            if self.header {
                csv.write_record(&self.columns)?;
            }
        }
        let width = self.columns.len();
        let in_order = positions.iter().enumerate().all(|(i, &p)| i == p);
        let mut cells: Vec<Option<&Value>> = Vec::new();
        for row in &batch.rows {
            if in_order {
                for v in row {
                    write_cell(&mut csv, v, &mut self.scratch)?;
                }
                for _ in row.len()..width {
                    csv.write_field(b"")?;
                }
            } else {
                cells.clear();
                cells.resize(width, None);
                for (v, &p) in row.iter().zip(positions) {
                    cells[p] = Some(v);
                }
                for cell in &cells {
                    match cell {
                        Some(v) => write_cell(&mut csv, v, &mut self.scratch)?,
                        None => csv.write_field(b"")?,
                    }
                }
            }
            csv.write_record(None::<&[u8]>)?;
        }
        csv.flush()?;
        Ok(())
    }

    fn write_json(&mut self, batch: &Batch) -> io::Result<()> {
        for row in &batch.rows {
            if self.format == Format::Json {
                self.out
                    .write_all(if self.records == 0 { b"\n" } else { b",\n" })?;
            }
            // NDJSON needs one record per line, so `pretty` applies to JSON documents only.
            if self.pretty && self.format == Format::Json {
                let mut map = serde_json::Map::with_capacity(batch.columns.len());
                for (c, v) in batch.columns.iter().zip(row) {
                    map.insert(c.clone(), v.to_json());
                }
                let text = serde_json::to_string_pretty(&serde_json::Value::Object(map))?;
                // Indent the record one level inside the array.
                self.out.write_all(b"  ")?;
                self.out.write_all(text.replace('\n', "\n  ").as_bytes())?;
            } else {
                self.write_record_compact(&batch.columns, row)?;
            }
            if self.format == Format::Ndjson {
                self.out.write_all(b"\n")?;
            }
            self.records += 1;
        }
        Ok(())
    }

    fn write_record_compact(&mut self, columns: &[String], row: &[Value]) -> io::Result<()> {
        self.out.write_all(b"{")?;
        for (i, (c, v)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut self.out, c)?;
            self.out.write_all(b":")?;
            match v {
                Value::Null => self.out.write_all(b"null")?,
                Value::Bool(b) => self.out.write_all(if *b { b"true" } else { b"false" })?,
                Value::Int(n) => {
                    self.scratch.clear();
                    let _ = write!(self.scratch, "{n}");
                    self.out.write_all(self.scratch.as_bytes())?;
                }
                Value::Float(_) => serde_json::to_writer(&mut self.out, &v.to_json())?,
                Value::Text(s) => serde_json::to_writer(&mut self.out, s)?,
            }
        }
        self.out.write_all(b"}")
    }

    /// Closes the document, pads a CSV whose columns grew, flushes and syncs to disk.
    fn complete(mut self, tmp: &Path) -> Result<(), ConnectorError> {
        let werr = |e: io::Error| write_error("write", tmp, &e);
        if self.format == Format::Json {
            self.out
                .write_all(if self.records == 0 { b"]\n" } else { b"\n]\n" })
                .map_err(werr)?;
        }
        let delimiter = self.delimiter;
        let header = self.header;
        let columns = std::mem::take(&mut self.columns);
        let grew =
            self.format == Format::Csv && self.first_width.is_some_and(|w| w < columns.len());
        let file = self
            .out
            .into_inner()
            .map_err(|e| write_error("write", tmp, e.error()))?;
        file.sync_all().map_err(werr)?;
        drop(file);
        if grew {
            rewrite_csv(tmp, delimiter, header, &columns).map_err(werr)?;
        }
        Ok(())
    }
}

fn write_cell<W: Write>(
    csv: &mut csv::Writer<W>,
    v: &Value,
    scratch: &mut String,
) -> csv::Result<()> {
    match v {
        Value::Null => csv.write_field(b""),
        Value::Text(s) => csv.write_field(s),
        other => {
            scratch.clear();
            let _ = write!(scratch, "{other}");
            csv.write_field(scratch.as_bytes())
        }
    }
}

/// Rewrites a CSV whose later batches brought new columns: the full header first, earlier rows
/// padded with empty fields. Streams record by record, so memory stays flat.
fn rewrite_csv(tmp: &Path, delimiter: u8, header: bool, columns: &[String]) -> io::Result<()> {
    let second = rewrite_path(tmp);
    {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(header)
            .flexible(true)
            .buffer_capacity(WRITE_BUFFER)
            .from_path(tmp)?;
        let out = BufWriter::with_capacity(WRITE_BUFFER, File::create(&second)?);
        let mut writer = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(out);
        if header {
            writer.write_record(columns)?;
        }
        let mut record = csv::ByteRecord::new();
        while reader.read_byte_record(&mut record)? {
            for field in record.iter() {
                writer.write_field(field)?;
            }
            for _ in record.len()..columns.len() {
                writer.write_field(b"")?;
            }
            writer.write_record(None::<&[u8]>)?;
        }
        let file = writer
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))?
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))?;
        file.sync_all()?;
    }
    fs::rename(&second, tmp)
}
