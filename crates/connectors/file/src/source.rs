//! Reading: a blocking worker parses the matched files one after another and hands batches to
//! the async side through a channel of capacity one, so at most about two batches exist at a
//! time however large the files are.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use async_trait::async_trait;
use etl_model::{
    Batch, ConnectorError, FlatRecord, RecordBuilder, RunLogger, Source, StreamError, Value,
    stream_records,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::format::Format;
use crate::paths::{Matched, io_error};

/// The name of the column `include_file_name` adds.
pub const FILE_COLUMN: &str = "_file";

/// Individually logged skipped rows per run; the rest are only counted, so a file full of bad
/// rows cannot flood the run log.
const MAX_SKIP_WARNINGS: u64 = 100;

/// Buffer size for file reads: large enough that syscalls do not dominate CSV parsing.
const READ_BUFFER: usize = 256 * 1024;

/// CSV dialect for one file.
#[derive(Clone, Copy, Debug)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: Option<u8>,
    pub header: bool,
}

/// One file to read and how.
#[derive(Clone, Debug)]
pub struct Planned {
    pub file: Matched,
    pub format: Format,
    pub csv: CsvOptions,
}

/// Everything the worker needs.
pub struct Plan {
    pub files: Vec<Planned>,
    pub records_path: Vec<String>,
    pub skip_errors: bool,
    pub include_file_name: bool,
    pub batch_size: usize,
}

/// The `Source` the engine pulls from.
pub struct FileSource {
    rx: mpsc::Receiver<Result<Batch, ConnectorError>>,
    worker: Option<JoinHandle<()>>,
}

impl FileSource {
    /// Starts the worker on the blocking pool.
    pub fn start(plan: Plan, cancel: CancellationToken, logger: Arc<dyn RunLogger>) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let worker = tokio::task::spawn_blocking(move || {
            let mut reader = Reader {
                tx,
                cancel,
                logger,
                batch_size: plan.batch_size.max(1),
                skip_errors: plan.skip_errors,
                include_file_name: plan.include_file_name,
                records_path: plan.records_path,
                table: Batch::default(),
                records: RecordBuilder::new(),
                skipped: 0,
            };
            let result = reader.run(&plan.files);
            if let Err(Halt::Failed(e)) = result {
                // The receiver may be gone already (run stopped); nothing else to tell then.
                let _ = reader.tx.blocking_send(Err(e));
            }
        });
        FileSource {
            rx,
            worker: Some(worker),
        }
    }
}

#[async_trait]
impl Source for FileSource {
    async fn next_batch(&mut self) -> Result<Option<Batch>, ConnectorError> {
        match self.rx.recv().await {
            Some(result) => result.map(Some),
            None => {
                // The channel closes when the worker ends; a panic must not look like the end
                // of the data.
                if let Some(worker) = self.worker.take()
                    && let Err(e) = worker.await
                {
                    return Err(ConnectorError::read(format!(
                        "the file reader stopped unexpectedly ({e}); the rows read so far are \
                         incomplete, run the flow again and report this if it repeats"
                    )));
                }
                Ok(None)
            }
        }
    }
}

/// Why the worker stopped early.
enum Halt {
    /// The consumer went away (run finished early, preview satisfied, or stopped).
    Stopped,
    Failed(ConnectorError),
}

impl From<ConnectorError> for Halt {
    fn from(e: ConnectorError) -> Self {
        Halt::Failed(e)
    }
}

struct Reader {
    tx: mpsc::Sender<Result<Batch, ConnectorError>>,
    cancel: CancellationToken,
    logger: Arc<dyn RunLogger>,
    batch_size: usize,
    skip_errors: bool,
    include_file_name: bool,
    records_path: Vec<String>,
    /// CSV rows: one column list, so filled directly without per-field name lookups.
    table: Batch,
    /// JSON records, whose keys vary.
    records: RecordBuilder,
    skipped: u64,
}

impl Reader {
    fn run(&mut self, files: &[Planned]) -> Result<(), Halt> {
        for planned in files {
            if self.cancel.is_cancelled() {
                return Err(Halt::Failed(ConnectorError::canceled()));
            }
            // Batches keep file order: finish the other kind of pending rows first.
            match planned.format {
                Format::Csv => {
                    self.flush_records()?;
                    self.read_csv(&planned.file, planned.csv)?;
                }
                Format::Json => {
                    self.flush_table()?;
                    self.read_json(&planned.file)?;
                }
                Format::Ndjson => {
                    self.flush_table()?;
                    self.read_ndjson(&planned.file)?;
                }
            }
        }
        self.flush_table()?;
        self.flush_records()?;
        if self.skipped > 0 {
            self.logger.log(
                "warn",
                &format!(
                    "skipped {} malformed row(s) in all (source.on_error=skip)",
                    self.skipped
                ),
            );
        }
        Ok(())
    }

    fn send(&mut self, batch: Batch) -> Result<(), Halt> {
        if self.cancel.is_cancelled() {
            return Err(Halt::Failed(ConnectorError::canceled()));
        }
        self.tx.blocking_send(Ok(batch)).map_err(|_| Halt::Stopped)
    }

    fn flush_table(&mut self) -> Result<(), Halt> {
        if self.table.rows.is_empty() {
            return Ok(());
        }
        let columns = self.table.columns.clone();
        let batch = std::mem::replace(&mut self.table, Batch::new(columns));
        self.send(batch)
    }

    fn flush_records(&mut self) -> Result<(), Halt> {
        if self.records.is_empty() {
            return Ok(());
        }
        let batch = self.records.take();
        self.send(batch)
    }

    /// A malformed row: fails the run, or with `on_error=skip` is logged and counted.
    fn bad_row(&mut self, problem: String, unit: &str) -> Result<(), Halt> {
        if !self.skip_errors {
            return Err(Halt::Failed(ConnectorError::read(format!(
                "{problem}; fix the {unit} or set source.on_error=skip"
            ))));
        }
        self.skipped += 1;
        if self.skipped <= MAX_SKIP_WARNINGS {
            self.logger.log(
                "warn",
                &format!("{problem}; the {unit} was skipped (source.on_error=skip)"),
            );
        }
        if self.skipped == MAX_SKIP_WARNINGS {
            self.logger.log(
                "warn",
                "further skipped rows are counted but not logged one by one",
            );
        }
        Ok(())
    }

    fn open(&self, file: &Matched) -> Result<BufReader<File>, Halt> {
        let f = File::open(&file.path).map_err(|e| io_error("open", &file.path, &e))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, f);
        skip_bom(&mut reader).map_err(|e| io_error("read", &file.path, &e))?;
        Ok(reader)
    }

    fn read_csv(&mut self, file: &Matched, opts: CsvOptions) -> Result<(), Halt> {
        let input = self.open(file)?;
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(opts.delimiter)
            .quote(opts.quote.unwrap_or(b'"'))
            .quoting(opts.quote.is_some())
            .buffer_capacity(READ_BUFFER)
            .from_reader(input);
        let mut record = csv::ByteRecord::new();
        let read_err = |e: csv::Error| {
            Halt::Failed(ConnectorError::read(format!(
                "could not read '{}': {e}",
                file.rel
            )))
        };
        let mut width = 0usize;
        let mut started = false;
        let mut warned_utf8 = false;
        if opts.header {
            if !csv.read_byte_record(&mut record).map_err(read_err)? {
                return Ok(());
            }
            let names = header_names(&record, self.include_file_name);
            width = record.len();
            self.begin_table(names)?;
            started = true;
        }
        while csv.read_byte_record(&mut record).map_err(read_err)? {
            if !started {
                width = record.len();
                let mut names: Vec<String> = (1..=width).map(|i| format!("col{i}")).collect();
                if self.include_file_name {
                    names.push(FILE_COLUMN.to_string());
                }
                self.begin_table(names)?;
                started = true;
            }
            if record.len() != width {
                let line = record.position().map_or(0, |p| p.line());
                self.bad_row(
                    format!(
                        "{} line {line}: expected {width} fields, found {}",
                        file.rel,
                        record.len()
                    ),
                    "row",
                )?;
                continue;
            }
            let mut row = Vec::with_capacity(width + usize::from(self.include_file_name));
            for field in record.iter() {
                row.push(if field.is_empty() {
                    Value::Null
                } else {
                    match std::str::from_utf8(field) {
                        Ok(s) => Value::Text(s.to_owned()),
                        Err(_) => {
                            if !warned_utf8 {
                                warned_utf8 = true;
                                let line = record.position().map_or(0, |p| p.line());
                                self.logger.log(
                                    "warn",
                                    &format!(
                                        "{} line {line}: the text is not UTF-8; invalid bytes \
                                         were replaced with \u{FFFD} in this and later rows of \
                                         the file; save the file as UTF-8 to keep them",
                                        file.rel
                                    ),
                                );
                            }
                            Value::Text(String::from_utf8_lossy(field).into_owned())
                        }
                    }
                });
            }
            if self.include_file_name {
                row.push(Value::Text(file.rel.clone()));
            }
            self.table.rows.push(row);
            if self.table.rows.len() >= self.batch_size {
                self.flush_table()?;
            }
        }
        Ok(())
    }

    /// Starts rows with these columns; a batch continues across files with the same header.
    fn begin_table(&mut self, columns: Vec<String>) -> Result<(), Halt> {
        if self.table.columns != columns {
            self.flush_table()?;
            self.table = Batch::new(columns);
        }
        Ok(())
    }

    fn read_ndjson(&mut self, file: &Matched) -> Result<(), Halt> {
        let mut input = self.open(file)?;
        let mut line = Vec::with_capacity(4096);
        let mut number = 0u64;
        let file_value = self.include_file_name.then(|| file.rel.clone());
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|e| io_error("read", &file.path, &e))?;
            if n == 0 {
                break;
            }
            number += 1;
            // Without the line break serde_json's column refers to this line alone.
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<FlatRecord>(&line) {
                Ok(FlatRecord(fields)) => self.push_record(fields, file_value.as_deref())?,
                Err(e) => {
                    let problem = format!(
                        "{} line {number}, column {}: invalid JSON ({})",
                        file.rel,
                        e.column(),
                        json_problem(&e)
                    );
                    self.bad_row(problem, "line")?;
                }
            }
        }
        Ok(())
    }

    fn read_json(&mut self, file: &Matched) -> Result<(), Halt> {
        if file.size == 0 {
            return Ok(());
        }
        let input = self.open(file)?;
        let file_value = self.include_file_name.then(|| file.rel.clone());
        let path = std::mem::take(&mut self.records_path);
        let result = {
            let mut emit =
                |fields: Vec<(String, Value)>| self.push_record(fields, file_value.as_deref());
            stream_records(input, &path, &mut emit)
        };
        self.records_path = path;
        match result {
            Ok(()) => Ok(()),
            Err(StreamError::Halted(h)) => Err(h),
            Err(StreamError::Json(e)) => {
                Err(Halt::Failed(json_error(file, &self.records_path, &e)))
            }
            Err(StreamError::PathNotFound { depth, found }) => {
                let path = &self.records_path;
                let missing = path.get(depth).map_or("", String::as_str);
                let parent = if depth == 0 {
                    "the top level".to_string()
                } else {
                    format!("'{}'", path[..depth].join("."))
                };
                Err(Halt::Failed(ConnectorError::read(format!(
                    "{}: source.records_path '{}' not found: {parent} has no '{missing}' \
                     ({found}); set source.records_path to the dot path of the records array",
                    file.rel,
                    path.join(".")
                ))))
            }
        }
    }

    fn push_record(
        &mut self,
        mut fields: Vec<(String, Value)>,
        file: Option<&str>,
    ) -> Result<(), Halt> {
        if let Some(f) = file {
            fields.push((FILE_COLUMN.to_string(), Value::Text(f.to_string())));
        }
        self.records.push(fields);
        if self.records.len() >= self.batch_size {
            self.flush_records()?;
        }
        Ok(())
    }
}

/// A syntax or shape problem in a JSON document, with where it is and what to do.
fn json_error(file: &Matched, path: &[String], e: &serde_json::Error) -> ConnectorError {
    use serde_json::error::Category;
    let at = format!("{} line {}, column {}", file.rel, e.line(), e.column());
    match e.classify() {
        Category::Io => ConnectorError::read(format!("could not read '{}': {e}", file.rel)),
        Category::Data => {
            let path_hint = if path.is_empty() {
                "set source.records_path to the dot path of the records array (e.g. data.items)"
                    .to_string()
            } else {
                format!(
                    "check source.records_path '{}': it must lead to an array of records or one object",
                    path.join(".")
                )
            };
            ConnectorError::read(format!("{at}: {}; {path_hint}", json_problem(e)))
        }
        Category::Syntax | Category::Eof => {
            let ndjson_hint = if json_problem(e).starts_with("trailing characters") {
                "; it holds more than one JSON document: if it has one record per line set \
                 source.format=ndjson"
            } else {
                "; fix the file, or if it has one JSON record per line set source.format=ndjson"
            };
            ConnectorError::read(format!(
                "{at}: invalid JSON ({}){ndjson_hint}",
                json_problem(e)
            ))
        }
    }
}

/// serde_json's message without its own "at line L column C" suffix (we say where ourselves).
fn json_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Header names as columns: trimmed, blanks named `colN`, duplicates suffixed `_2`, `_3`, so
/// every destination gets distinct, non-empty column names.
fn header_names(record: &csv::ByteRecord, include_file_name: bool) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(record.len() + 1);
    for (i, field) in record.iter().enumerate() {
        let raw = String::from_utf8_lossy(field);
        let trimmed = raw.trim();
        let base = if trimmed.is_empty() {
            format!("col{}", i + 1)
        } else {
            trimmed.to_string()
        };
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name);
    }
    if include_file_name {
        names.push(FILE_COLUMN.to_string());
    }
    names
}

/// Drops a UTF-8 byte-order mark, which spreadsheet exports often prepend and which would
/// otherwise end up in the first column's name.
fn skip_bom(reader: &mut BufReader<File>) -> std::io::Result<()> {
    let buf = reader.fill_buf()?;
    if buf.starts_with(&[0xEF, 0xBB, 0xBF]) {
        reader.consume(3);
    }
    Ok(())
}
