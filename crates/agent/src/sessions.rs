//! Chat sessions: the entity, the `SessionStore` port a metadata store implements, and the
//! helpers around them (creating a session with a fresh id, turning stored messages back into
//! the model's history).
//!
//! A session keeps the full conversation: every user message, every assistant message with the
//! tool calls it made, and every tool result (text and structured data). That is what lets a
//! model see its own earlier tool calls after a restart. Every method is scoped by tenant: a
//! session of another tenant is simply not found, so the API answers 404 rather than 403 and
//! does not even reveal that the id exists.

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use etl_engine::{StoreResult, Timestamp};
use etl_llm::Message;
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::Value as Json;

/// One conversation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Session {
    /// `ses_` + 20 lowercase letters and digits.
    pub id: String,
    pub tenant: String,
    pub title: Option<String>,
    /// Sent to the model before the history on every turn of this session.
    pub system_prompt: Option<String>,
    /// Whether the model is offered the tools in this session.
    pub include_tools: bool,
    /// Whatever the client attached when creating the session (a JSON object, or null).
    pub metadata: Json,
    pub created_at: Timestamp,
    /// When the session was created or last had messages appended.
    pub updated_at: Timestamp,
    /// Messages stored so far (user, assistant and tool).
    pub message_count: u64,
}

/// What a client may set when creating a session.
#[derive(Clone, Debug, Default)]
pub struct NewSession {
    pub title: Option<String>,
    pub system_prompt: Option<String>,
    /// `None` means the default, true.
    pub include_tools: Option<bool>,
    pub metadata: Option<Json>,
}

/// A message to append, with the time it was said.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    pub message: Message,
    pub created_at: Timestamp,
}

impl NewMessage {
    /// The message, said now (to the microsecond, as stores keep it).
    pub fn now(message: Message) -> NewMessage {
        NewMessage {
            message,
            created_at: Utc::now().trunc_subsecs(6),
        }
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionMessage {
    /// Position in the session, from 1, in the order the messages were appended. Also the
    /// message's id in `GET /sessions/{id}/messages`.
    pub seq: u64,
    pub message: Message,
    pub created_at: Timestamp,
}

/// Where sessions live. Implemented by the metadata store (`etl_store::SqliteStore`).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Saves a new session (its `message_count` is ignored and starts at 0); `Conflict` when
    /// the id is taken.
    ///
    /// The tenant may hold at most `max_per_tenant` sessions: the count and the insert are one
    /// atomic step, so concurrent creations never go over it. Answers false (nothing saved) when
    /// the tenant already has that many.
    async fn insert_session(&self, session: &Session, max_per_tenant: u64) -> StoreResult<bool>;
    /// The tenant's sessions, most recently updated first (then newest created, then id), at
    /// most `limit` (0: all) after skipping `offset`.
    async fn list_sessions(
        &self,
        tenant: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<Session>>;
    /// How many sessions the tenant has (to enforce a per-tenant cap).
    async fn count_sessions(&self, tenant: &str) -> StoreResult<u64>;
    /// The session, when it exists in this tenant.
    async fn get_session(&self, tenant: &str, id: &str) -> StoreResult<Option<Session>>;
    /// Deletes the session and all its messages; false when it does not exist in this tenant.
    async fn delete_session(&self, tenant: &str, id: &str) -> StoreResult<bool>;
    /// Appends messages in order, atomically (all or none), and bumps the session's
    /// `updated_at` to the last message's time. Answers the stored messages with their
    /// positions, or `None` when the session does not exist in this tenant. Concurrent appends
    /// to one session never interleave within a call and never reuse a position.
    async fn append_messages(
        &self,
        tenant: &str,
        session_id: &str,
        messages: &[NewMessage],
    ) -> StoreResult<Option<Vec<SessionMessage>>>;
    /// The session's messages in order, at most `limit` (0: all) after skipping `offset`;
    /// empty when the session does not exist in this tenant.
    async fn list_messages(
        &self,
        tenant: &str,
        session_id: &str,
        limit: usize,
        offset: usize,
    ) -> StoreResult<Vec<SessionMessage>>;
}

/// A new session id: `ses_` and 20 random lowercase letters and digits (about 100 bits).
pub fn new_session_id() -> String {
    let tail = Alphanumeric
        .sample_string(&mut rand::rng(), 20)
        .to_ascii_lowercase();
    format!("ses_{tail}")
}

/// Longest title kept; longer ones are cut (a title is a label, not content).
pub const MAX_TITLE_CHARS: usize = 200;

/// Creates and stores a session for `tenant`. The metadata must be a JSON object when given.
pub async fn create(
    store: &dyn SessionStore,
    tenant: &str,
    new: NewSession,
    max_per_tenant: u64,
) -> Result<Session, SessionError> {
    let metadata = match new.metadata {
        None | Some(Json::Null) => Json::Null,
        Some(Json::Object(m)) => Json::Object(m),
        Some(_) => {
            return Err(SessionError::Invalid(
                "'metadata' must be a JSON object, e.g. {\"project\": \"billing\"}".into(),
            ));
        }
    };
    let title = new
        .title
        .map(|t| t.trim().chars().take(MAX_TITLE_CHARS).collect::<String>())
        .filter(|t| !t.is_empty());
    let system_prompt = new.system_prompt.filter(|p| !p.trim().is_empty());
    let now = Utc::now().trunc_subsecs(6);
    let session = Session {
        id: new_session_id(),
        tenant: tenant.to_string(),
        title,
        system_prompt,
        include_tools: new.include_tools.unwrap_or(true),
        metadata,
        created_at: now,
        updated_at: now,
        message_count: 0,
    };
    if !store.insert_session(&session, max_per_tenant).await? {
        return Err(SessionError::Full {
            max: max_per_tenant,
        });
    }
    Ok(session)
}

/// The whole stored conversation of a session as the model's history, in order.
pub async fn history(
    store: &dyn SessionStore,
    tenant: &str,
    session_id: &str,
) -> StoreResult<Vec<Message>> {
    Ok(store
        .list_messages(tenant, session_id, 0, 0)
        .await?
        .into_iter()
        .map(|m| m.message)
        .collect())
}

/// Appends `messages`, all said now, in order: the user message before a run (so it is kept
/// even if the run fails), then [`crate::run::RunOutcome::messages`] after it, whatever the
/// outcome. `None` when the session does not exist in this tenant (deleted meanwhile).
pub async fn append_now(
    store: &dyn SessionStore,
    tenant: &str,
    session_id: &str,
    messages: Vec<Message>,
) -> StoreResult<Option<Vec<SessionMessage>>> {
    let now = Utc::now().trunc_subsecs(6);
    let batch: Vec<NewMessage> = messages
        .into_iter()
        .map(|message| NewMessage {
            message,
            created_at: now,
        })
        .collect();
    store.append_messages(tenant, session_id, &batch).await
}

/// Why a session could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The tenant already has the most sessions allowed.
    #[error("this tenant already has {max} sessions, the most allowed")]
    Full { max: u64 },
    #[error(transparent)]
    Store(#[from] etl_engine::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_have_the_documented_shape() {
        let a = new_session_id();
        let b = new_session_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(a.starts_with("ses_"));
        assert!(
            a[4..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
