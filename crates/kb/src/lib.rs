//! The knowledge base: the product's bundled documentation plus each tenant's own documents,
//! split into passages at headings and searched with tantivy (BM25, English stemming, boosted
//! headings, phrases and prefixes), each hit citing `source#anchor`.
//!
//! ```no_run
//! # fn demo() -> Result<(), etl_kb::KbError> {
//! let kb = etl_kb::KnowledgeBase::open("data/kb")?;
//! let docs = etl_kb::bundled_docs();
//! kb.sync_bundled(&docs)?; // re-indexes only what changed since the last start
//! kb.add_document("default", "runbook.md", b"# Runbook\n\n## Restarts\n\nRestart nightly.")?;
//! for hit in kb.search("default", "merge mode keys", 5)? {
//!     println!("{} ({}): {}", hit.path.join(" > "), hit.citation(), hit.snippet);
//! }
//! # Ok(()) }
//! ```
//!
//! Every call blocks the calling thread briefly (searches take about a millisecond, adding a
//! document tens of milliseconds, a first sync of the bundled docs a fraction of a second), so
//! async callers wrap writes in `spawn_blocking`; searches are fast enough to call directly.
//!
//! Writes from several processes sharing a data directory (the server and `etlworks-agent kb
//! add`) are serialised by tantivy's lock file, which a write holds only while it runs. The list
//! of indexed documents and their content hashes (the manifest) is stored in tantivy's commit
//! payload, so it is always exactly in step with the index.

mod bundled;
mod chunk;
mod error;
mod html;
mod ingest;
mod query;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError, Term};

pub use bundled::bundled_docs;
pub use chunk::{
    MAX_PASSAGE_CHARS, OVERLAP_CHARS, Passage, SplitDocument, slugify, split_markdown,
};
pub use error::{KbError, KbErrorKind};
pub use ingest::{DocumentFormat, MAX_DOCUMENT_BYTES};
pub use query::MAX_QUERY_BYTES;

use schema::Fields;

/// The most hits one search returns, whatever limit is asked for.
pub const MAX_SEARCH_LIMIT: usize = 100;
/// How long a write waits for another process's write to finish before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Bumped when passages are cut or indexed differently, so bundled documents are re-indexed.
const INDEX_FORMAT: u32 = 1;
/// The writer's indexing memory; segments are flushed to disk when it fills up.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Snippet length in characters.
const SNIPPET_CHARS: usize = 240;
/// Passages fetched per hit asked for, so sections split into several passages can be merged.
const CANDIDATES_PER_HIT: usize = 4;
const BUNDLED_SCOPE: &str = "bundled";

/// One indexed document, bundled or uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentInfo {
    /// The name it was added under (a bundled document's source path, `docs/flows.md`).
    pub name: String,
    /// The owning tenant; `None` for bundled documents, which every tenant sees.
    pub tenant: Option<String>,
    /// The first `# Heading`, the HTML `<title>`, or the file name without extension.
    pub title: String,
    pub format: DocumentFormat,
    /// Size of the document as added, in bytes.
    pub bytes: u64,
    /// How many passages it was split into.
    pub passages: u64,
    /// SHA-256 of the content (hex), which decides whether a sync re-indexes it.
    pub content_hash: String,
    pub indexed_at: DateTime<Utc>,
}

impl DocumentInfo {
    pub fn bundled(&self) -> bool {
        self.tenant.is_none()
    }
}

/// What [`KnowledgeBase::sync_bundled`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Passages written for the added and updated documents.
    pub passages_indexed: usize,
}

/// One search result: a passage and where to cite it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The document title.
    pub title: String,
    /// The heading path, document title first: `["PostgreSQL connector (postgres)", "Modes"]`.
    pub path: Vec<String>,
    /// The document to cite: `docs/connectors/postgres.md`, or the name a user added it under.
    pub source: String,
    /// The heading's GitHub-style anchor (empty for text before the first heading).
    pub anchor: String,
    /// About 240 characters of the passage around the matches, matched words in `**bold**`.
    pub snippet: String,
    /// The whole passage.
    pub text: String,
    /// BM25 relevance (higher is better; comparable within one search only).
    pub score: f32,
    /// Whether the passage comes from the bundled documentation.
    pub bundled: bool,
}

impl Hit {
    /// `source#anchor`, or just the source for text before the first heading.
    pub fn citation(&self) -> String {
        if self.anchor.is_empty() {
            self.source.clone()
        } else {
            format!("{}#{}", self.source, self.anchor)
        }
    }
}

/// The manifest stored in each commit's payload: every indexed document by key.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    documents: BTreeMap<String, DocumentInfo>,
}

/// A searchable knowledge base stored in one folder. `Send + Sync`: share it behind an `Arc`.
pub struct KnowledgeBase {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Serialises this process's writers before they contend for tantivy's cross-process lock.
    write_lock: Mutex<()>,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("dir", &self.dir)
            .finish()
    }
}

impl KnowledgeBase {
    /// Opens the index in `dir`, creating the folder and an empty index when missing. Opening an
    /// up-to-date index reads only its metadata.
    pub fn open(dir: impl AsRef<Path>) -> Result<KnowledgeBase, KbError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| KbError::Io {
            action: "creating the knowledge-base folder",
            path: dir.clone(),
            source,
        })?;
        let (schema, fields) = schema::build_schema();
        let directory = MmapDirectory::open(&dir).map_err(|err| KbError::Io {
            action: "opening the knowledge-base folder",
            path: dir.clone(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let index = Index::open_or_create(directory, schema).map_err(|err| match err {
            TantivyError::SchemaError(reason) => KbError::Incompatible {
                dir: dir.clone(),
                reason,
            },
            source => KbError::Index {
                action: "opening",
                dir: dir.clone(),
                source,
            },
        })?;
        schema::register_analyzers(&index);
        let reader = index
            .reader_builder()
            // Picks up commits made by other processes (`kb add` while the server runs).
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()
            .map_err(|source| KbError::Index {
                action: "reading",
                dir: dir.clone(),
                source,
            })?;
        let kb = KnowledgeBase {
            dir,
            index,
            reader,
            fields,
            write_lock: Mutex::new(()),
        };
        // Fail at open, not at the first search, if the manifest is unreadable.
        kb.manifest()?;
        Ok(kb)
    }

    /// The folder the index lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the bundled documents exactly `docs` (source path, content): indexes new and
    /// changed ones, removes those no longer given, leaves the rest alone. Without changes it
    /// writes nothing. A document that cannot be read fails the whole sync and changes nothing.
    pub fn sync_bundled(&self, docs: &[(&str, &[u8])]) -> Result<SyncReport, KbError> {
        let hashes: Vec<String> = docs.iter().map(|(_, bytes)| content_hash(bytes)).collect();
        let plan = |manifest: &Manifest| -> SyncPlan {
            let mut plan = SyncPlan::default();
            let format_changed = manifest.format != INDEX_FORMAT;
            let mut wanted = std::collections::BTreeSet::new();
            for (i, (source, _)) in docs.iter().enumerate() {
                let key = bundled_key(source);
                match manifest.documents.get(&key) {
                    Some(info) if info.content_hash == hashes[i] && !format_changed => {
                        plan.unchanged += 1
                    }
                    Some(_) => plan.update.push(i),
                    None => plan.add.push(i),
                }
                wanted.insert(key);
            }
            plan.remove = manifest
                .documents
                .iter()
                .filter(|(key, info)| info.bundled() && !wanted.contains(*key))
                .map(|(key, _)| key.clone())
                .collect();
            plan
        };
        if plan(&self.manifest()?).is_empty() {
            return Ok(SyncReport {
                unchanged: docs.len(),
                ..SyncReport::default()
            });
        }
        self.write(|writer, manifest| {
            // Planned again under the lock: another process may have synced meanwhile.
            let plan = plan(manifest);
            let mut report = SyncReport {
                added: plan.add.len(),
                updated: plan.update.len(),
                removed: plan.remove.len(),
                unchanged: plan.unchanged,
                passages_indexed: 0,
            };
            for key in &plan.remove {
                writer.delete_term(Term::from_field_text(self.fields.doc_key, key));
                manifest.documents.remove(key);
            }
            for &i in plan.add.iter().chain(&plan.update) {
                let (source, bytes) = docs[i];
                let (format, split) = ingest::parse_document(source, bytes)?;
                let key = bundled_key(source);
                writer.delete_term(Term::from_field_text(self.fields.doc_key, &key));
                self.add_passages(writer, &key, BUNDLED_SCOPE, source, &split)?;
                report.passages_indexed += split.passages.len();
                manifest.documents.insert(
                    key,
                    DocumentInfo {
                        name: source.to_string(),
                        tenant: None,
                        title: split.title,
                        format,
                        bytes: bytes.len() as u64,
                        passages: split.passages.len() as u64,
                        content_hash: hashes[i].clone(),
                        indexed_at: Utc::now(),
                    },
                );
            }
            manifest.format = INDEX_FORMAT;
            let changed = !plan.is_empty();
            Ok((report, changed))
        })
    }

    /// Adds a tenant's document (Markdown, plain text or HTML, by the extension of `name`),
    /// replacing the tenant's document of the same name. Only that tenant's searches see it.
    pub fn add_document(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<DocumentInfo, KbError> {
        validate("tenant", tenant)?;
        validate("document name", name)?;
        // Parsing is the slow part and needs no lock.
        let (format, split) = ingest::parse_document(name, bytes)?;
        let key = tenant_key(tenant, name);
        let info = DocumentInfo {
            name: name.to_string(),
            tenant: Some(tenant.to_string()),
            title: split.title.clone(),
            format,
            bytes: bytes.len() as u64,
            passages: split.passages.len() as u64,
            content_hash: content_hash(bytes),
            indexed_at: Utc::now(),
        };
        self.write(|writer, manifest| {
            writer.delete_term(Term::from_field_text(self.fields.doc_key, &key));
            self.add_passages(writer, &key, &tenant_scope(tenant), name, &split)?;
            manifest.documents.insert(key.clone(), info.clone());
            Ok((info.clone(), true))
        })
    }

    /// Removes a tenant's document. `Ok(false)` when the tenant has none of that name (HTTP 404).
    pub fn remove_document(&self, tenant: &str, name: &str) -> Result<bool, KbError> {
        validate("tenant", tenant)?;
        validate("document name", name)?;
        let key = tenant_key(tenant, name);
        if !self.manifest()?.documents.contains_key(&key) {
            return Ok(false);
        }
        self.write(|writer, manifest| {
            if manifest.documents.remove(&key).is_none() {
                return Ok((false, false));
            }
            writer.delete_term(Term::from_field_text(self.fields.doc_key, &key));
            Ok((true, true))
        })
    }

    /// The tenant's own documents, by name. Bundled documents are listed by [`Self::list_bundled`].
    pub fn list_documents(&self, tenant: &str) -> Result<Vec<DocumentInfo>, KbError> {
        validate("tenant", tenant)?;
        let manifest = self.manifest()?;
        Ok(manifest
            .documents
            .into_values()
            .filter(|info| info.tenant.as_deref() == Some(tenant))
            .collect())
    }

    /// The bundled documents, by source path.
    pub fn list_bundled(&self) -> Result<Vec<DocumentInfo>, KbError> {
        let manifest = self.manifest()?;
        Ok(manifest
            .documents
            .into_values()
            .filter(DocumentInfo::bundled)
            .collect())
    }

    /// Searches the bundled documents and the tenant's own. Any input is accepted: an empty or
    /// all-punctuation query returns no hits; only the first [`MAX_QUERY_BYTES`] are read;
    /// `limit` is capped at [`MAX_SEARCH_LIMIT`].
    pub fn search(&self, tenant: &str, query: &str, limit: usize) -> Result<Vec<Hit>, KbError> {
        validate("tenant", tenant)?;
        let limit = limit.min(MAX_SEARCH_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let index_error = |source| KbError::Index {
            action: "searching",
            dir: self.dir.clone(),
            source,
        };
        let Some(built) = query::build(query, &searcher, &self.fields).map_err(index_error)? else {
            return Ok(Vec::new());
        };
        let visible = BooleanQuery::new(vec![
            (Occur::Should, self.scope_query(BUNDLED_SCOPE)),
            (Occur::Should, self.scope_query(&tenant_scope(tenant))),
        ]);
        let full = BooleanQuery::new(vec![
            (Occur::Must, built.query),
            // A filter: who may see a passage must not change how well it matches.
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(visible), 0.0)),
            ),
        ]);
        // A long section is several passages; the answer lists each section once (its best
        // passage), so more are fetched than asked for.
        let top = searcher
            .search(
                &full,
                &TopDocs::with_limit(limit * CANDIDATES_PER_HIT).order_by_score(),
            )
            .map_err(index_error)?;
        let snippets = SnippetGenerator::new(
            built.highlight,
            schema::english_analyzer(),
            self.fields.body,
            SNIPPET_CHARS,
        );
        let mut hits: Vec<Hit> = Vec::with_capacity(limit);
        let mut cited = std::collections::HashSet::new();
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address).map_err(index_error)?;
            let hit = self.hit(&doc, score, &snippets);
            if cited.insert((hit.source.clone(), hit.anchor.clone())) {
                hits.push(hit);
                if hits.len() == limit {
                    break;
                }
            }
        }
        Ok(hits)
    }

    fn scope_query(&self, scope: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(self.fields.scope, scope),
            IndexRecordOption::Basic,
        ))
    }

    fn hit(&self, doc: &TantivyDocument, score: f32, snippets: &SnippetGenerator) -> Hit {
        let text_of = |field| {
            doc.get_first(field)
                .and_then(|value| value.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let text = text_of(self.fields.body);
        let title = text_of(self.fields.title);
        let path: Vec<String> = std::iter::once(title.clone())
            .chain(
                doc.get_all(self.fields.path)
                    .filter_map(|value| value.as_str().map(str::to_string)),
            )
            .collect();
        Hit {
            title,
            path,
            source: text_of(self.fields.source),
            anchor: text_of(self.fields.anchor),
            snippet: render_snippet(snippets, &text),
            bundled: text_of(self.fields.doc_key).starts_with(BUNDLED_KEY_PREFIX),
            text,
            score,
        }
    }

    fn add_passages(
        &self,
        writer: &IndexWriter,
        key: &str,
        scope: &str,
        source: &str,
        split: &SplitDocument,
    ) -> Result<(), KbError> {
        let f = &self.fields;
        for passage in &split.passages {
            let mut doc = TantivyDocument::new();
            doc.add_text(f.doc_key, key);
            doc.add_text(f.scope, scope);
            doc.add_text(f.title, &split.title);
            doc.add_text(f.words, &split.title);
            // Every path starts with the title, already indexed above; counting it again would
            // favour a document's introduction for any word of its title.
            let below_title = passage.path.get(1..).unwrap_or_default();
            if let Some(heading) = below_title.last() {
                doc.add_text(f.heading, heading);
            }
            for heading in below_title {
                doc.add_text(f.path, heading);
                doc.add_text(f.words, heading);
            }
            doc.add_text(f.body, &passage.text);
            doc.add_text(f.words, &passage.text);
            doc.add_text(f.source, source);
            doc.add_text(f.anchor, &passage.anchor);
            writer.add_document(doc).map_err(|source| KbError::Index {
                action: "writing",
                dir: self.dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The manifest of the latest commit on disk (another process may have committed).
    fn manifest(&self) -> Result<Manifest, KbError> {
        let metas = self.index.load_metas().map_err(|source| KbError::Index {
            action: "reading the metadata of",
            dir: self.dir.clone(),
            source,
        })?;
        match metas.payload {
            None => Ok(Manifest {
                format: INDEX_FORMAT,
                documents: BTreeMap::new(),
            }),
            Some(payload) => serde_json::from_str(&payload).map_err(|err| KbError::Incompatible {
                dir: self.dir.clone(),
                reason: format!("its document list cannot be read: {err}"),
            }),
        }
    }

    /// Runs `change` with an exclusive writer and the current manifest; commits the index and
    /// the manifest together when it reports a change. On error nothing is committed.
    fn write<T>(
        &self,
        change: impl FnOnce(&mut IndexWriter, &mut Manifest) -> Result<(T, bool), KbError>,
    ) -> Result<T, KbError> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let index_error = |action| {
            move |source| KbError::Index {
                action,
                dir: self.dir.clone(),
                source,
            }
        };
        let mut writer = self.acquire_writer()?;
        let mut manifest = self.manifest()?;
        let (value, changed) = change(&mut writer, &mut manifest)?;
        if changed {
            let payload = serde_json::to_string(&manifest).map_err(|err| KbError::Index {
                action: "saving the document list of",
                dir: self.dir.clone(),
                source: TantivyError::InternalError(err.to_string()),
            })?;
            let mut prepared = writer.prepare_commit().map_err(index_error("committing"))?;
            prepared.set_payload(&payload);
            prepared.commit().map_err(index_error("committing"))?;
            // Finish merges now, so the lock is released with the index in its final shape.
            writer
                .wait_merging_threads()
                .map_err(index_error("merging"))?;
            self.reader.reload().map_err(index_error("reloading"))?;
        }
        Ok(value)
    }

    fn acquire_writer(&self) -> Result<IndexWriter, KbError> {
        let started = Instant::now();
        loop {
            match self.index.writer(WRITER_MEMORY_BYTES) {
                Ok(writer) => return Ok(writer),
                Err(TantivyError::LockFailure(..)) if started.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TantivyError::LockFailure(..)) => {
                    return Err(KbError::Busy {
                        dir: self.dir.clone(),
                        seconds: LOCK_WAIT.as_secs(),
                    });
                }
                Err(source) => {
                    return Err(KbError::Index {
                        action: "opening a writer on",
                        dir: self.dir.clone(),
                        source,
                    });
                }
            }
        }
    }
}

#[derive(Default)]
struct SyncPlan {
    add: Vec<usize>,
    update: Vec<usize>,
    remove: Vec<String>,
    unchanged: usize,
}

impl SyncPlan {
    fn is_empty(&self) -> bool {
        self.add.is_empty() && self.update.is_empty() && self.remove.is_empty()
    }
}

const BUNDLED_KEY_PREFIX: &str = "b\u{1f}";

fn bundled_key(source: &str) -> String {
    format!("{BUNDLED_KEY_PREFIX}{source}")
}

fn tenant_key(tenant: &str, name: &str) -> String {
    format!("t\u{1f}{tenant}\u{1f}{name}")
}

fn tenant_scope(tenant: &str) -> String {
    format!("tenant:{tenant}")
}

fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Names and tenant ids end up in index terms and messages: keep them printable and short.
fn validate(what: &'static str, value: &str) -> Result<(), KbError> {
    let reason = if value.trim().is_empty() {
        Some("it is empty")
    } else if value.len() > 255 {
        Some("it is longer than 255 bytes")
    } else if value.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KbError::InvalidName {
            what,
            value: value.chars().filter(|c| !c.is_control()).take(80).collect(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The snippet as one line with matched words in `**bold**`; the passage's start when no body
/// word matched (a match on the title or headings only).
fn render_snippet(generator: &SnippetGenerator, text: &str) -> String {
    let snippet = generator.snippet(text);
    let fragment = snippet.fragment();
    let mut out = String::with_capacity(fragment.len() + 16);
    if fragment.is_empty() {
        let end = text
            .char_indices()
            .nth(SNIPPET_CHARS)
            .map_or(text.len(), |(i, _)| i);
        out.push_str(&text[..end]);
        if end < text.len() {
            out.push('…');
        }
    } else {
        let mut last = 0;
        for range in snippet.highlighted() {
            if range.start < last {
                continue;
            }
            out.push_str(&fragment[last..range.start]);
            out.push_str("**");
            out.push_str(&fragment[range.clone()]);
            out.push_str("**");
            last = range.end;
        }
        out.push_str(&fragment[last..]);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knowledge_base_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KnowledgeBase>();
    }

    #[test]
    fn names_are_validated() {
        assert!(validate("tenant", "acme").is_ok());
        let err = validate("document name", " ").unwrap_err();
        assert_eq!(err.to_string(), "invalid document name ' ': it is empty");
        assert_eq!(err.kind(), KbErrorKind::InvalidInput);
        assert!(validate("tenant", "a\u{0}b").is_err());
        assert!(validate("tenant", &"x".repeat(256)).is_err());
    }
}
