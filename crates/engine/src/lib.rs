//! The data-integration engine: connections, flows, runs, schedules, secrets and the host CLI
//! language that drives them.
//!
//! The engine does not know HTTP, SQL for its own metadata (that is `etl-store` behind
//! [`ports::Store`]), or any particular connector: the binary hands it a [`Registry`] of them.

pub mod entity;
pub mod ports;

pub use entity::*;
pub use ports::{RunQuery, Store, StoreError, StoreResult};
pub mod error;
pub mod expr;
pub mod host;
pub mod mapping;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod service;

pub use error::{EngineError, EngineResult};
pub use registry::Registry;
pub use service::{ConnectionChanges, Engine, EngineConfig, WAREHOUSE};
