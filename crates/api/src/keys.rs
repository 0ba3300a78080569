//! Key management for admins: `POST /keys`, `GET /keys`, `DELETE /keys/{id}`. An admin key
//! manages the keys of its own tenant only; keys for other tenants are created on the server's
//! command line (`etlworks-agent keys create --tenant T`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use etl_agent::keys::{self, ApiKey, KeyError, NewKey};
use etl_engine::host::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::{Auth, JsonBody};
use crate::error::{ApiError, ErrorBody};

/// What to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for (1-100 characters), e.g. `ci`.
    pub name: String,
    /// `admin`, `user` (default) or `readonly`.
    #[serde(default)]
    pub role: Option<String>,
    /// A lifetime from now: `90m`, `12h`, `30d`, `2w`, `1y`. No expiry when neither this nor
    /// `expires_at` is given.
    #[serde(default)]
    pub expires_in: Option<String>,
    /// An RFC 3339 expiry time; instead of `expires_in`.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Must be the caller's own tenant when given.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A key as listed: everything but the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// `admin`, `user` or `readonly`.
    pub role: String,
    /// The key's first 8 characters.
    pub prefix: String,
    /// `active`, `revoked` or `expired`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyInfo {
    pub fn from_key(key: &ApiKey, now: DateTime<Utc>) -> KeyInfo {
        KeyInfo {
            id: key.id.clone(),
            tenant: key.tenant.clone(),
            name: key.name.clone(),
            role: key.role.as_str().to_string(),
            prefix: key.prefix.clone(),
            status: key.status(now).to_string(),
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: key.last_used_at,
        }
    }
}

/// A new key. `key` is shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub success: bool,
    /// The key itself (256 letters and digits): store it now, it cannot be shown again.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub success: bool,
    pub keys: Vec<KeyInfo>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedKey {
    pub success: bool,
    pub id: String,
    pub revoked: bool,
}

/// Create a key in the caller's tenant (admin).
#[utoipa::path(
    post,
    path = "/rest/v1/ai-agent/api/keys",
    tag = "keys",
    security(("bearer" = [])),
    request_body = CreateKey,
    responses(
        (status = 201, description = "The key; `key` is shown only now", body = CreatedKey),
        (status = 400, description = "Bad name, role, lifetime or body", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 403, description = "Not an admin key, or another tenant", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<ApiState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    auth.require_admin("creating API keys")?;
    let tenant = match body.tenant {
        Some(t) if t != auth.key.tenant => {
            return Err(ApiError::forbidden(format!(
                "this admin key belongs to tenant '{}' and cannot create keys for tenant '{t}'; \
                 create those on the server with 'etlworks-agent keys create --tenant {t}'",
                auth.key.tenant
            )));
        }
        _ => auth.key.tenant.clone(),
    };
    let role = match body.role.as_deref() {
        None => Role::User,
        Some(r) => keys::parse_role(r).map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    let expires_at = match (body.expires_in.as_deref(), body.expires_at) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either expires_in (e.g. \"30d\") or expires_at (RFC 3339), not both",
            ));
        }
        (Some(lifetime), None) => Some(
            Utc::now()
                + keys::parse_lifetime(lifetime)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        (None, at) => at,
    };
    let issued = keys::issue(
        state.keys().as_ref(),
        NewKey {
            name: body.name,
            role,
            tenant,
            expires_at,
        },
    )
    .await
    .map_err(|e| match e {
        KeyError::Invalid(m) | KeyError::Unauthorized(m) => ApiError::bad_request(m),
        KeyError::Store(e) => ApiError::internal("saving the new API key", e),
    })?;
    tracing::info!(key = %issued.key.id, role = issued.key.role.as_str(), by = %auth.key.id, "API key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            success: true,
            info: KeyInfo::from_key(&issued.key, Utc::now()),
            key: issued.secret,
        }),
    ))
}

/// List the keys of the caller's tenant (admin).
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/keys",
    tag = "keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's keys, oldest first", body = KeyList),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<ApiState>,
    auth: Auth,
) -> Result<axum::Json<KeyList>, ApiError> {
    auth.require_admin("listing API keys")?;
    let now = Utc::now();
    let keys = state
        .keys()
        .list_keys(Some(&auth.key.tenant))
        .await
        .map_err(|e| ApiError::internal("listing the API keys", e))?;
    let keys: Vec<KeyInfo> = keys.iter().map(|k| KeyInfo::from_key(k, now)).collect();
    Ok(axum::Json(KeyList {
        success: true,
        count: keys.len(),
        keys,
    }))
}

/// Revoke a key of the caller's tenant (admin). It stops working at once.
#[utoipa::path(
    delete,
    path = "/rest/v1/ai-agent/api/keys/{id}",
    tag = "keys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id, e.g. key_3f9a1c2b7d4e5f60")),
    responses(
        (status = 200, description = "Revoked", body = RevokedKey),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No active key with this id in the tenant", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<ApiState>,
    auth: Auth,
    id: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<RevokedKey>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    auth.require_admin("revoking API keys")?;
    let revoked = state
        .keys()
        .revoke_key(Some(&auth.key.tenant), &id, Utc::now())
        .await
        .map_err(|e| ApiError::internal("revoking the API key", e))?;
    if !revoked {
        return Err(ApiError::not_found(
            "not_found",
            format!(
                "tenant '{}' has no active API key with id '{id}'; list the keys with GET /keys",
                auth.key.tenant
            ),
        ));
    }
    tracing::info!(key = %id, by = %auth.key.id, "API key revoked");
    Ok(axum::Json(RevokedKey {
        success: true,
        id,
        revoked: true,
    }))
}
