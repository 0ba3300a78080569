//! The agent side of the product. Today: the seven tools of the Agent API (`tools`), each a
//! typed, schema-described operation over the engine, the knowledge base and the template
//! gallery; API keys (`keys`), the entity and the store port behind the API's authentication.
//! The model loop, sessions and the built-in planner build on these.
//!
//! This crate knows no HTTP: the API crate exposes what is here.

pub mod keys;
pub mod library;
pub mod planner;
pub mod run;
pub mod sessions;
pub mod tools;

pub use library::Library;
