//! The knowledge base's typed errors, with a [`KbErrorKind`] callers map to exit codes or HTTP
//! statuses without parsing messages.

use std::path::PathBuf;

/// What kind of failure a [`KbError`] is, so the CLI and the API can branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KbErrorKind {
    /// The caller's input is wrong (a binary or unsupported file, an invalid name): HTTP 400.
    InvalidInput,
    /// A document is over the size limit: HTTP 413.
    TooLarge,
    /// Another process kept the index locked for too long: HTTP 503, retry later.
    Busy,
    /// The index on disk cannot be read or written: HTTP 500.
    Internal,
}

/// Everything that can go wrong in the knowledge base. Messages are sentences naming the thing
/// and the fix; they never contain document contents.
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    /// The file is not text: binary data, invalid UTF-8, UTF-16.
    #[error(
        "'{name}' is not a text document: {reason}; add Markdown, plain text or HTML saved as UTF-8"
    )]
    NotText { name: String, reason: String },

    /// A recognised format the knowledge base does not read (PDF, Office files).
    #[error("'{name}' is a {format} file, which the knowledge base cannot read; {fix}")]
    Unsupported {
        name: String,
        format: &'static str,
        fix: &'static str,
    },

    /// The document has no text left after conversion.
    #[error(
        "'{name}' has no text to index (it is empty or only markup); add a document with content"
    )]
    Empty { name: String },

    /// The document is bigger than [`crate::MAX_DOCUMENT_BYTES`].
    #[error(
        "'{name}' is {size} bytes, over the knowledge base's limit of {limit} bytes; split it into smaller documents"
    )]
    TooLarge {
        name: String,
        size: usize,
        limit: usize,
    },

    /// A document name or tenant id that cannot be stored.
    #[error("invalid {what} '{value}': {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// Another writer (usually another `etlworks-agent` process) held the index lock throughout.
    #[error(
        "the knowledge base at {dir} is being changed by another process and stayed locked for {seconds} s; retry when it has finished"
    )]
    Busy { dir: PathBuf, seconds: u64 },

    /// The index was written with a different schema (an older or newer version of this program).
    #[error(
        "the knowledge base at {dir} was built by an incompatible version ({reason}); delete that folder and restart so the bundled documents are indexed again, then add your own documents again"
    )]
    Incompatible { dir: PathBuf, reason: String },

    /// A file-system failure around the index folder.
    #[error(
        "{action} {path}: {source}; check that the folder exists, is writable and the disk is not full"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// tantivy failed while reading or writing the index.
    #[error("{action} the knowledge-base index at {dir} failed: {source}")]
    Index {
        action: &'static str,
        dir: PathBuf,
        #[source]
        source: tantivy::TantivyError,
    },
}

impl KbError {
    /// The kind of failure, for mapping to an HTTP status or an exit code.
    pub fn kind(&self) -> KbErrorKind {
        match self {
            KbError::NotText { .. }
            | KbError::Unsupported { .. }
            | KbError::Empty { .. }
            | KbError::InvalidName { .. } => KbErrorKind::InvalidInput,
            KbError::TooLarge { .. } => KbErrorKind::TooLarge,
            KbError::Busy { .. } => KbErrorKind::Busy,
            KbError::Incompatible { .. } | KbError::Io { .. } | KbError::Index { .. } => {
                KbErrorKind::Internal
            }
        }
    }
}
