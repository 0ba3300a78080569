//! The metadata store: where the engine keeps connections, flows, schedules, runs, run logs and
//! high-water marks, behind the engine's [`etl_engine::Store`] port, and the Agent API's keys,
//! chat sessions and AI usage records, behind the agent's [`etl_agent::keys::KeyStore`],
//! [`etl_agent::sessions::SessionStore`] and [`etl_agent::usage::UsageStore`] ports.
//!
//! [`SqliteStore`] is the default backend: one SQLite file in the data directory, opened with
//! [`SqliteStore::open`], which creates the file and its directories, turns on WAL mode and
//! applies the embedded migrations. A PostgreSQL backend (for several server replicas sharing
//! one database) is meant to follow the same pattern:
//!
//! - `sql` holds every statement once, in SQL both databases accept (`$n` parameters,
//!   `ON CONFLICT ... DO UPDATE`, booleans bound rather than written);
//! - `codec` defines the column encoding (RFC 3339 UTC text timestamps with six fractional
//!   digits, JSON text for props/specs/triggers) and maps rows to entities through the small
//!   `Columns` trait a backend implements for its row type;
//! - the backend module owns only connecting, pool shape, migrations and error classification;
//! - [`testing::conformance`] (feature `testing`) is the behaviour every backend must show,
//!   written against `&dyn Store` (and [`testing::key_conformance`] against `&dyn KeyStore`,
//!   [`testing::session_conformance`] against `&dyn SessionStore`,
//!   [`testing::usage_conformance`] against `&dyn UsageStore`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), etl_engine::StoreError> {
//! use etl_engine::Store;
//! let store = etl_store::SqliteStore::open(std::path::Path::new("data/metadata.db")).await?;
//! let flows = store.list_flows(etl_engine::DEFAULT_TENANT).await?;
//! # let _ = flows; Ok(()) }
//! ```
//!
//! Every tenant-scoped query filters by tenant and every key starts with the tenant, so rows of
//! one tenant are invisible to, and cannot be changed or referenced by, another. Only
//! `due_schedules`, `next_due_at` and `fail_unfinished_runs` span tenants, by design, and of the
//! key port `find_key_by_hash`, `count_keys` and the operator's `list_keys(None)` /
//! `revoke_key(None, ..)`: a presented key is found before its tenant is known; and usage
//! queries whose filter names no tenant, which only the operator's `usage` command makes.

mod codec;
mod sql;
mod sqlite;

#[cfg(feature = "testing")]
pub mod testing;

pub use sqlite::SqliteStore;
