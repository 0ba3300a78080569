//! The agent side of the product. Today: the seven tools of the Agent API (`tools`), each a
//! typed, schema-described operation over the engine, the knowledge base and the template
//! gallery. The model loop, sessions and the built-in planner build on these.
//!
//! This crate knows no HTTP: the API crate exposes what is here.

pub mod library;
pub mod tools;

pub use library::Library;
