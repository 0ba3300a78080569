//! `GET /usage`: the AI usage of the caller's tenant (admin keys), as totals, a breakdown and
//! the caps in force. The same report as `etlworks-agent usage --tenant T --json`, built by
//! `etl_agent::usage::report`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::Utc;
use etl_agent::usage::{self, GroupBy, UsageFilter, UsageReport};
use serde::{Deserialize, Serialize};

use crate::ApiState;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody};

/// The query of `GET /usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    pub since: Option<String>,
    pub until: Option<String>,
    pub key_id: Option<String>,
    pub session_id: Option<String>,
    pub group_by: Option<String>,
}

/// `GET /usage` answer: `success` and the report.
#[derive(Debug, Serialize)]
pub struct UsageAnswer {
    pub success: bool,
    #[serde(flatten)]
    pub report: UsageReport,
}

/// The AI usage of the caller's tenant.
#[utoipa::path(
    get,
    path = "/rest/v1/ai-agent/api/usage",
    tag = "usage",
    security(("bearer" = [])),
    params(
        ("since" = Option<String>, Query, description = "From this time on (inclusive): RFC 3339, a date (2026-11-01, UTC), `today`, `month`, or an age such as `7d`. Default: all time"),
        ("until" = Option<String>, Query, description = "Before this time (exclusive), same forms. Default: now"),
        ("key_id" = Option<String>, Query, description = "Only this key's runs (`key_...`)"),
        ("session_id" = Option<String>, Query, description = "Only this session's runs"),
        ("group_by" = Option<String>, Query, description = "Breakdown by `key` (default), `model`, `session` or `day`"),
    ),
    responses(
        (status = 200, description = "`{success, tenant, key_id, session_id, since, until, totals: {runs, input_tokens, output_tokens, total_tokens, tool_calls, llm_calls, cost}, group_by, groups: [{value, ...totals}], caps: [{scope, id, period, since, resets_at, tokens_cap, cost_cap, tokens_used, cost_used, exceeded}]}`; cost in US dollars", content_type = "application/json"),
        (status = 400, description = "A time, group or parameter that cannot be read", body = ErrorBody),
        (status = 401, description = "No usable key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
    )
)]
pub async fn report(
    State(state): State<ApiState>,
    auth: Auth,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<axum::Json<UsageAnswer>, ApiError> {
    auth.require_admin("reading AI usage")?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "the query is wrong ({}); the parameters are since, until, key_id, session_id and \
             group_by, e.g. ?since=month&group_by=model",
            e.body_text()
        ))
    })?;
    let now = Utc::now();
    let time = |field: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| usage::parse_time(v, now))
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("'{field}': {e}")))
    };
    let since = time("since", &query.since)?;
    let until = time("until", &query.until)?;
    let by = match query.group_by.as_deref() {
        None => GroupBy::Key,
        Some(text) => GroupBy::parse(text).map_err(ApiError::bad_request)?,
    };
    if by == GroupBy::Tenant {
        return Err(ApiError::bad_request(
            "an admin key reports its own tenant only, so group_by=tenant says nothing; use \
             key, model, session or day ('etlworks-agent usage --by tenant' on the server spans \
             tenants)",
        ));
    }
    let filter = UsageFilter {
        tenant: Some(auth.key.tenant.clone()),
        key_id: query.key_id.filter(|k| !k.trim().is_empty()),
        session_id: query.session_id.filter(|s| !s.trim().is_empty()),
        since,
        until,
    };
    let chat = state.chat();
    let report = usage::report(chat.usage.as_ref(), &filter, by, &chat.caps, now)
        .await
        .map_err(|e| ApiError::internal("reading AI usage", e))?;
    Ok(axum::Json(UsageAnswer {
        success: true,
        report,
    }))
}
