//! The one error type connectors return; its kind is what callers branch on.

use std::fmt;

/// What went wrong, as a stable machine string (see [`ErrorKind::code`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A property is missing or malformed: fix the connection or flow.
    Config,
    /// The system could not be reached or refused the login.
    Connect,
    /// Reading failed: an HTTP error status, a malformed row, a bad query.
    Read,
    /// Writing failed.
    Write,
    /// The object (table, file, path) does not exist.
    NotFound,
    /// The connector cannot do this (e.g. writing to an HTTP API).
    Unsupported,
    /// The run was stopped.
    Canceled,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Config => "invalid_config",
            ErrorKind::Connect => "connect_failed",
            ErrorKind::Read => "read_failed",
            ErrorKind::Write => "write_failed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Canceled => "canceled",
        }
    }
}

/// An error with a message a person can act on: it names the thing and, where there is one, the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            message: message.into(),
        }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn connect(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connect, message)
    }
    pub fn read(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Read, message)
    }
    pub fn write(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Write, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }
    pub fn canceled() -> Self {
        Self::new(ErrorKind::Canceled, "the run was stopped")
    }

    /// Prefixes the message with context ("batch 3: ...").
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectorError {}
