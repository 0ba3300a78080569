//! The agent side of the product: the seven tools of the Agent API (`tools`), each a typed,
//! schema-described operation over the engine, the knowledge base and the template gallery;
//! API keys (`keys`); the model loop (`run`) with its default system prompt (`prompt`);
//! sessions (`sessions`); AI usage, prices and caps (`usage`); the built-in planner
//! (`planner`) and the health gate in front of an LLM provider (`watch`).
//!
//! This crate knows no HTTP: the API crate exposes what is here.

pub mod keys;
pub mod library;
pub mod planner;
pub mod prompt;
pub mod run;
pub mod sessions;
pub mod tools;
pub mod usage;
pub mod watch;

pub use library::Library;
