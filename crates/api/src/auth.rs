//! Who is calling and how much: the bearer-key extractor (401 for anything but a usable key),
//! the per-key token-bucket rate limit (429), the role gate (403), and the JSON body extractor
//! whose rejections speak the API's error body (400, 413).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use chrono::Utc;
use etl_agent::keys::{self, ApiKey, KeyError};
use etl_engine::host::Role;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::ApiState;
use crate::error::ApiError;

/// How often a key's `last_used_at` is written at most: once a minute is precise enough to
/// tell live keys from forgotten ones, and keeps a write off nearly every request.
const TOUCH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The authenticated caller: a valid, unrevoked, unexpired key within its rate limit.
#[derive(Clone, Debug)]
pub struct Auth {
    pub key: ApiKey,
}

impl Auth {
    /// 403 unless the key is an admin key; `what` names the refused action.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.key.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{what} needs an admin key and this key's role is '{}'; ask an admin, or create \
                 an admin key with 'etlworks-agent keys create --role admin'",
                self.key.role.as_str()
            )))
        }
    }
}

impl FromRequestParts<ApiState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Auth, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "this endpoint needs an API key; send 'Authorization: Bearer <key>' with a key \
                 from <data-dir>/admin.key or 'etlworks-agent keys create'",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "the Authorization header is malformed; send 'Authorization: Bearer <key>'",
                )
            })?;
        let now = Utc::now();
        let key = match keys::authenticate(state.keys().as_ref(), presented, now).await {
            Ok(key) => key,
            Err(KeyError::Unauthorized(m)) | Err(KeyError::Invalid(m)) => {
                return Err(ApiError::unauthorized(m));
            }
            Err(KeyError::Store(e)) => return Err(ApiError::internal("checking the API key", e)),
        };
        if let Err(wait) = state.limiter().check(&key.id) {
            return Err(ApiError::rate_limited(
                wait.as_secs_f64().ceil().max(1.0) as u64
            ));
        }
        if key.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
            // Off the request's path: the answer does not wait for the single SQLite writer.
            let store = state.keys().clone();
            let (tenant, id) = (key.tenant.clone(), key.id.clone());
            tokio::spawn(async move {
                if let Err(e) = store.touch_key(&tenant, &id, now).await {
                    tracing::warn!(key = %id, error = %e, "could not record the key's last use");
                }
            });
        }
        Ok(Auth { key })
    }
}

/// Token buckets per key: `burst` requests at once, refilled at `per_second`. Memory is one
/// small entry per key that made a request, so it is bounded by the number of keys.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second` of 0 turns the limit off.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or answers how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// A JSON request body. An empty body reads as `{}`; anything else must say
/// `Content-Type: application/json` and parse. Rejections are the API's 400 and 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<JsonBody<T>, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.to_ascii_lowercase());
        let bytes = read_body(req, state, state.config().body_limit).await?;
        let value: Json = if bytes.iter().all(u8::is_ascii_whitespace) {
            Json::Object(Default::default())
        } else {
            let is_json = content_type.as_deref().is_some_and(|ct| {
                let essence = ct.split(';').next().unwrap_or("").trim();
                essence == "application/json" || essence.ends_with("+json")
            });
            if !is_json {
                return Err(ApiError::bad_request(format!(
                    "the body must be JSON sent with 'Content-Type: application/json' (got {})",
                    content_type
                        .as_deref()
                        .map(|c| format!("'{c}'"))
                        .unwrap_or_else(|| "no Content-Type".into())
                )));
            }
            serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body is not valid JSON: {e}; send one JSON object"
                ))
            })?
        };
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the body does not fit this endpoint: {e}")))
    }
}

/// Reads a whole request body of at most `limit` bytes (the route's body limit layer enforces
/// it; `limit` only words the message) within the configured read timeout: 413 over the limit,
/// 408 when the client sends too slowly, 400 for anything else.
pub async fn read_body(req: Request, state: &ApiState, limit: usize) -> Result<Bytes, ApiError> {
    let timeout = state.config().read_timeout;
    // A body announced as too big is refused without keeping it. A modestly oversized one is
    // read and dropped first, because many clients (requests, reqwest) report "connection
    // reset" instead of the answer when the server closes while they still send; a far bigger
    // one (a gigabyte, an attack) is refused at once and the connection closed.
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = announced.filter(|n| *n > limit as u64) {
        if n - limit as u64 <= DRAIN_OVERSIZED_BYTES {
            let mut body = req.into_body().into_data_stream();
            let drain =
                async { while let Some(Ok(_)) = futures::StreamExt::next(&mut body).await {} };
            let _ = tokio::time::timeout(timeout, drain).await;
        }
        return Err(body_rejection(StatusCode::PAYLOAD_TOO_LARGE, "", limit));
    }
    match tokio::time::timeout(timeout, Bytes::from_request(req, state)).await {
        Ok(read) => read.map_err(|r| body_rejection(r.status(), &r.body_text(), limit)),
        Err(_) => Err(ApiError::request_timeout(format!(
            "the request body did not arrive within {} s; send the whole body at once, or ask \
             the operator to raise --read-timeout",
            timeout.as_secs_f64()
        ))),
    }
}

/// How far over the limit an announced body may be and still be read (and dropped) before the
/// 413, so that the client gets the answer rather than a reset connection.
const DRAIN_OVERSIZED_BYTES: u64 = 32 * 1024 * 1024;

/// Maps a failure to read the body: over the limit is 413, anything else 400.
pub fn body_rejection(status: StatusCode, text: &str, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::payload_too_large(format!(
            "the request body is larger than this endpoint's limit of {limit} bytes; send less"
        ))
    } else {
        ApiError::bad_request(format!("the request body could not be read: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refill() {
        let limiter = RateLimiter::new(10.0, 3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "keys have their own buckets");
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check("a").is_ok(), "a token came back");
        assert!(RateLimiter::new(0.0, 1).check("a").is_ok());
    }
}
