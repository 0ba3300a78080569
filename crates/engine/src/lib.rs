//! The data-integration engine: connections, flows, runs, schedules, secrets and the host CLI
//! language that drives them.
//!
//! The engine does not know HTTP, SQL for its own metadata (that is `etl-store` behind
//! [`ports::Store`]), or any particular connector: the binary hands it a [`Registry`] of them.

pub mod entity;
pub mod ports;

pub use entity::*;
pub use ports::{RunQuery, Store, StoreError, StoreResult};
