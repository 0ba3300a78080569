//! A provider model behind a health gate, so a server whose LLM is unreachable starts anyway
//! ("degraded") and answers at once instead of hanging.
//!
//! [`Watched`] wraps a model: [`Watched::check`] runs the model's own start-up check (bounded
//! by a timeout) and remembers the outcome. While the last check failed, every call fails
//! immediately with that cause (the loop turns it into `llm_unavailable`), and
//! [`Watched::recheck`] keeps checking in the background until the provider answers
//! again. Failures of real calls are remembered too (`last_error`), for `GET /health`, but do
//! not close the gate: one failed answer says little about the next.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use etl_engine::Timestamp;
use etl_llm::{EventStream, LlmError, Model, Request};
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// What is known of the model's health.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelHealth {
    /// Whether the last check succeeded (true before any check).
    pub reachable: bool,
    /// When it was last checked.
    pub checked_at: Option<Timestamp>,
    /// What the last check found: what was checked, or exactly what is wrong.
    pub detail: String,
    /// The last failure of a real call, and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

/// A model behind a health gate. See the module docs.
pub struct Watched {
    inner: Arc<dyn Model>,
    state: Arc<Mutex<ModelHealth>>,
    /// How often [`Watched::recheck`] checks an unreachable model again.
    every: Duration,
}

impl Watched {
    /// `every`: how often an unreachable model is checked again by [`Watched::recheck`].
    pub fn new(inner: Arc<dyn Model>, every: Duration) -> Arc<Watched> {
        Arc::new(Watched {
            inner,
            every,
            state: Arc::new(Mutex::new(ModelHealth {
                reachable: true,
                checked_at: None,
                detail: "not checked yet".into(),
                last_error: None,
                last_error_at: None,
            })),
        })
    }

    pub fn health(&self) -> ModelHealth {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// While the last check failed: its cause, when it was found and that the server checks
    /// again. `None` while the model is reachable.
    pub fn unavailable(&self) -> Option<String> {
        let health = self.health();
        if health.reachable {
            return None;
        }
        let when = health
            .checked_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        Some(format!(
            "{} (found by the check at {when}; the server checks again every {} s and answers \
             as soon as the provider is back)",
            health.detail,
            self.every.as_secs_f64()
        ))
    }

    /// Runs the model's check, at most `timeout` long, and records the outcome: the one-line
    /// description of what was checked, or the cause of the failure.
    pub async fn check(&self, timeout: Duration) -> Result<String, String> {
        let outcome = match tokio::time::timeout(timeout, self.inner.check()).await {
            Ok(Ok(detail)) => Ok(detail),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the provider did not answer the start-up check within {} s; check that the \
                 base URL points at it and that it is running",
                timeout.as_secs_f64()
            )),
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.checked_at = Some(Utc::now().trunc_subsecs(6));
        match &outcome {
            Ok(detail) => {
                state.reachable = true;
                state.detail = detail.clone();
            }
            Err(cause) => {
                state.reachable = false;
                state.detail = cause.clone();
            }
        }
        outcome
    }

    /// Checks again (each check at most `timeout`) while the model is unreachable, until
    /// `stop`; logs when it comes back.
    pub async fn recheck(&self, timeout: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            if self.health().reachable {
                continue;
            }
            match self.check(timeout).await {
                Ok(detail) => {
                    tracing::info!(model = self.inner.name(), %detail, "the LLM is reachable again")
                }
                Err(cause) => {
                    tracing::warn!(model = self.inner.name(), %cause, "the LLM is still unreachable")
                }
            }
        }
    }
}

#[async_trait]
impl Model for Watched {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn stream(
        &self,
        request: Request,
        cancel: CancellationToken,
    ) -> Result<EventStream, LlmError> {
        if let Some(why) = self.unavailable() {
            return Err(LlmError::Unavailable(why));
        }
        let state = self.state.clone();
        let remember = move |e: &LlmError| {
            if let LlmError::Unavailable(why) | LlmError::BadRequest(why) = e {
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                s.last_error = Some(why.clone());
                s.last_error_at = Some(Utc::now().trunc_subsecs(6));
            }
        };
        match self.inner.stream(request, cancel).await {
            Ok(events) => Ok(Box::pin(events.inspect(move |item| {
                if let Err(e) = item {
                    remember(e);
                }
            }))),
            Err(e) => {
                remember(&e);
                Err(e)
            }
        }
    }

    async fn check(&self) -> Result<String, LlmError> {
        Watched::check(self, Duration::from_secs(15))
            .await
            .map_err(LlmError::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etl_llm::{Event, FinishReason};

    struct Down;

    #[async_trait]
    impl Model for Down {
        fn name(&self) -> &str {
            "down"
        }
        async fn stream(&self, _: Request, _: CancellationToken) -> Result<EventStream, LlmError> {
            Ok(Box::pin(futures::stream::iter(vec![Ok(Event::Finish(
                FinishReason::Stop,
            ))])))
        }
        async fn check(&self) -> Result<String, LlmError> {
            Err(LlmError::Unavailable("connection refused".into()))
        }
    }

    #[tokio::test]
    async fn a_failed_check_closes_the_gate_with_its_cause() {
        let watched = Watched::new(Arc::new(Down), Duration::from_secs(30));
        assert!(watched.health().reachable, "open until checked");
        let cause = watched.check(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(cause, "connection refused");
        let health = watched.health();
        assert!(!health.reachable);
        assert!(health.checked_at.is_some());
        let refused = watched
            .stream(Request::default(), CancellationToken::new())
            .await
            .err()
            .expect("refused at once");
        assert!(
            refused
                .to_string()
                .starts_with("connection refused (found by the check at"),
            "{refused}"
        );
    }
}
