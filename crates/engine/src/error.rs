//! The engine's error: a stable code callers branch on and a sentence a person can act on.

use std::fmt;

use etl_model::ConnectorError;

use crate::ports::StoreError;
use crate::secrets::SecretError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    /// `not_found`, `invalid`, `conflict`, `busy`, `forbidden`, `internal`, or a connector code
    /// (`connect_failed`, `read_failed`, `write_failed`, `invalid_config`, `unsupported`, `canceled`).
    pub code: &'static str,
    pub message: String,
}

pub type EngineResult<T> = Result<T, EngineError>;

impl EngineError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        EngineError {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not_found", message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new("conflict", message)
    }
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new("busy", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("internal", message)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EngineError {}

impl From<ConnectorError> for EngineError {
    fn from(e: ConnectorError) -> Self {
        EngineError::new(e.kind.code(), e.message)
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => EngineError::conflict(m),
            other => {
                tracing::error!(error = %other, "metadata store failure");
                EngineError::internal(other.to_string())
            }
        }
    }
}

impl From<SecretError> for EngineError {
    fn from(e: SecretError) -> Self {
        EngineError::new("secret", e.to_string())
    }
}
