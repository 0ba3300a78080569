//! AI usage: what every agent run used (tokens, model calls, tool calls, cost), the
//! [`UsageStore`] port a metadata store implements to keep it, the price table that turns
//! tokens into cost, and the caps (per tenant, per key; tokens and/or cost per day or month)
//! checked before and during a run.
//!
//! One record per run: the built-in planner's runs count too (at cost 0 unless priced). Cost
//! is kept in micro-dollars (millionths of a US dollar, rounded per run), so sums are exact.
//! Reports ([`report`]) are built here once and served the same by the `usage` command and
//! `GET /usage`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, NaiveDate, SubsecRound, TimeZone, Utc};
use etl_engine::{StoreResult, Timestamp};
use serde::{Deserialize, Serialize};

/// What one run used, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    pub tenant: String,
    /// The API key that asked (its id, `key_...`).
    pub key_id: String,
    /// The session the run belonged to, if any.
    pub session_id: Option<String>,
    /// The run's id (`run_...`); one record per run.
    pub run_id: String,
    /// The model asked (the request's `model`, or the configured one).
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub tool_calls: u64,
    pub llm_calls: u64,
    /// Millionths of a US dollar.
    pub cost_micros: u64,
    pub at: Timestamp,
}

/// Sums over records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    /// Records summed (agent runs).
    pub runs: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub tool_calls: u64,
    pub llm_calls: u64,
    pub cost_micros: u64,
}

impl UsageTotals {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// Which records a query sums. Every field narrows; `since` is inclusive, `until` exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// `None` spans every tenant: only the operator's `usage` command does that.
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub session_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// What a breakdown groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Tenant,
    Key,
    Model,
    /// Records without a session are grouped under the empty string.
    Session,
    /// The UTC day, `YYYY-MM-DD`.
    Day,
}

impl GroupBy {
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "tenant" => Ok(GroupBy::Tenant),
            "key" | "key_id" => Ok(GroupBy::Key),
            "model" => Ok(GroupBy::Model),
            "session" | "session_id" => Ok(GroupBy::Session),
            "day" | "date" => Ok(GroupBy::Day),
            other => Err(format!(
                "cannot group usage by '{other}'; use tenant, key, model, session or day"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Tenant => "tenant",
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Session => "session",
            GroupBy::Day => "day",
        }
    }
}

/// Where usage records live. Implemented by the metadata store (`etl_store::SqliteStore`).
///
/// Queries take a [`UsageFilter`] whose `tenant` is `None` only for the local operator (the
/// `usage` command); the API always scopes them to the caller's tenant.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Saves one run's usage; `Conflict` when the tenant already has a record for that run.
    async fn record_usage(&self, record: &UsageRecord) -> StoreResult<()>;
    /// Sums the records the filter selects (all zero when none).
    async fn usage_totals(&self, filter: &UsageFilter) -> StoreResult<UsageTotals>;
    /// Sums per group, ordered by the group's value (days oldest first).
    async fn usage_groups(
        &self,
        filter: &UsageFilter,
        by: GroupBy,
    ) -> StoreResult<Vec<(String, UsageTotals)>>;
}

/// Prices of one model, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// The price table: model name → price; `"*"` prices every model not listed. Models not
/// priced cost 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    by_model: BTreeMap<String, Price>,
}

impl Prices {
    /// Checks the table: prices must be finite and not negative.
    pub fn new(by_model: BTreeMap<String, Price>) -> Result<Prices, String> {
        for (model, p) in &by_model {
            for (what, v) in [("input", p.input), ("output", p.output)] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "the {what} price of model '{model}' must be a number of US dollars per \
                         million tokens, 0 or more; got {v}"
                    ));
                }
            }
        }
        Ok(Prices { by_model })
    }

    pub fn get(&self, model: &str) -> Option<Price> {
        self.by_model
            .get(model)
            .or_else(|| self.by_model.get("*"))
            .copied()
    }

    /// The cost of `input` and `output` tokens of `model`, in micro-dollars (rounded).
    /// Per million tokens at P dollars, one token costs P micro-dollars.
    pub fn cost_micros(&self, model: &str, input: u64, output: u64) -> u64 {
        match self.get(model) {
            None => 0,
            Some(p) => (input as f64 * p.input + output as f64 * p.output)
                .round()
                .max(0.0) as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    pub fn models(&self) -> impl Iterator<Item = (&String, &Price)> {
        self.by_model.iter()
    }
}

/// Micro-dollars as dollars.
pub fn dollars(micros: u64) -> f64 {
    micros as f64 / 1_000_000.0
}

/// Dollars as micro-dollars (rounded; negative is 0).
pub fn micros(dollars: f64) -> u64 {
    (dollars * 1_000_000.0).round().max(0.0) as u64
}

/// How long a cap's allowance lasts before it starts again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// From 00:00 UTC.
    Day,
    /// From 00:00 UTC on the first of the month.
    #[default]
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Result<Period, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" => Ok(Period::Day),
            "month" | "monthly" => Ok(Period::Month),
            other => Err(format!(
                "unknown cap period '{other}'; use day or month (both start at 00:00 UTC)"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// When the period containing `now` started.
    pub fn start(self, now: Timestamp) -> Timestamp {
        let day = now.date_naive();
        let first = match self {
            Period::Day => day,
            Period::Month => day.with_day(1).unwrap_or(day),
        };
        Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight exists"))
    }

    /// When the period containing `now` ends (the next one starts).
    pub fn end(self, now: Timestamp) -> Timestamp {
        let start = self.start(now);
        match self {
            Period::Day => start + Duration::days(1),
            Period::Month => {
                let d = start.date_naive();
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                let next = NaiveDate::from_ymd_opt(y, m, 1).expect("a first of the month");
                Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).expect("midnight exists"))
            }
        }
    }
}

/// An allowance per period: tokens (input + output), cost, or both (whichever is spent first).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Cap {
    pub tokens: Option<u64>,
    pub cost_micros: Option<u64>,
    pub period: Period,
}

impl Cap {
    pub fn is_set(&self) -> bool {
        self.tokens.is_some() || self.cost_micros.is_some()
    }
}

/// Every cap: a default for all tenants and all keys, and overrides by tenant and by key id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Caps {
    pub tenant: Option<Cap>,
    pub tenants: BTreeMap<String, Cap>,
    pub key: Option<Cap>,
    pub keys: BTreeMap<String, Cap>,
}

impl Caps {
    pub fn for_tenant(&self, tenant: &str) -> Option<Cap> {
        self.tenants
            .get(tenant)
            .copied()
            .or(self.tenant)
            .filter(Cap::is_set)
    }

    pub fn for_key(&self, key_id: &str) -> Option<Cap> {
        self.keys
            .get(key_id)
            .copied()
            .or(self.key)
            .filter(Cap::is_set)
    }

    pub fn is_empty(&self) -> bool {
        self.tenant.is_none_or(|c| !c.is_set())
            && self.key.is_none_or(|c| !c.is_set())
            && self.tenants.values().all(|c| !c.is_set())
            && self.keys.values().all(|c| !c.is_set())
    }
}

/// What a run may still use before a cap is spent; `None` fields are unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowance {
    pub tokens: Option<u64>,
    pub cost_micros: Option<u64>,
}

impl Allowance {
    fn narrow(&mut self, tokens: Option<u64>, cost: Option<u64>) {
        if let Some(t) = tokens {
            self.tokens = Some(self.tokens.map_or(t, |o| o.min(t)));
        }
        if let Some(c) = cost {
            self.cost_micros = Some(self.cost_micros.map_or(c, |o| o.min(c)));
        }
    }

    pub fn is_limited(&self) -> bool {
        self.tokens.is_some() || self.cost_micros.is_some()
    }
}

/// One cap and how much of it is used, as reports and refusals show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CapStatus {
    /// `tenant` or `key`.
    pub scope: &'static str,
    /// The tenant or the key id.
    pub id: String,
    pub period: Period,
    pub since: Timestamp,
    pub resets_at: Timestamp,
    pub tokens_cap: Option<u64>,
    /// US dollars.
    pub cost_cap: Option<f64>,
    pub tokens_used: u64,
    pub cost_used: f64,
    pub exceeded: bool,
}

impl CapStatus {
    /// The sentence saying which cap is spent and what to do.
    pub fn explain(&self) -> String {
        let who = match self.scope {
            "key" => format!("API key '{}'", self.id),
            _ => format!("tenant '{}'", self.id),
        };
        let mut spent = Vec::new();
        if let Some(cap) = self.tokens_cap
            && self.tokens_used >= cap
        {
            spent.push(format!("{} of its {cap} tokens", self.tokens_used));
        }
        if let Some(cap) = self.cost_cap
            && self.cost_used >= cap
        {
            spent.push(format!("${:.6} of its ${cap:.6}", self.cost_used));
        }
        let option = match self.scope {
            "key" => {
                "the key's cap (--key-cap-tokens, --key-cap-cost or caps.keys in the config file)"
            }
            _ => {
                "the tenant's cap (--tenant-cap-tokens, --tenant-cap-cost or caps.tenants in the config file)"
            }
        };
        format!(
            "{who} has used {} this {} (since {}); the cap resets at {}. Wait until then, or ask \
             the operator to raise {option}",
            spent.join(" and "),
            self.period.as_str(),
            self.since
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.resets_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    }
}

/// The caps that apply to a caller, with their use so far; `exceeded` tells whether a run
/// may start.
#[derive(Clone, Debug, PartialEq)]
pub struct CapCheck {
    pub statuses: Vec<CapStatus>,
    /// What a run may still use (the smallest remainder of every cap).
    pub allowance: Allowance,
}

impl CapCheck {
    /// The first spent cap, if any.
    pub fn exceeded(&self) -> Option<&CapStatus> {
        self.statuses.iter().find(|s| s.exceeded)
    }
}

/// Reads how much of each cap applying to `tenant` and `key_id` is used at `now`.
pub async fn check_caps(
    store: &dyn UsageStore,
    caps: &Caps,
    tenant: &str,
    key_id: &str,
    now: Timestamp,
) -> StoreResult<CapCheck> {
    let mut check = CapCheck {
        statuses: Vec::new(),
        allowance: Allowance::default(),
    };
    let scopes = [
        (caps.for_tenant(tenant), None),
        (caps.for_key(key_id), Some(key_id)),
    ];
    for (cap, key) in scopes {
        let Some(cap) = cap else { continue };
        let status = cap_status(store, &cap, tenant, key, now).await?;
        check.allowance.narrow(
            cap.tokens.map(|t| t.saturating_sub(status.tokens_used)),
            cap.cost_micros
                .map(|c| c.saturating_sub(micros(status.cost_used))),
        );
        check.statuses.push(status);
    }
    Ok(check)
}

/// How much of `cap` is used in its current period: the tenant's when `key` is `None`, the
/// key's otherwise.
async fn cap_status(
    store: &dyn UsageStore,
    cap: &Cap,
    tenant: &str,
    key: Option<&str>,
    now: Timestamp,
) -> StoreResult<CapStatus> {
    let used = store
        .usage_totals(&UsageFilter {
            tenant: Some(tenant.to_string()),
            key_id: key.map(str::to_string),
            since: Some(cap.period.start(now)),
            ..UsageFilter::default()
        })
        .await?;
    Ok(match key {
        None => status_of("tenant", tenant, cap, used, now),
        Some(key) => status_of("key", key, cap, used, now),
    })
}

fn status_of(
    scope: &'static str,
    id: &str,
    cap: &Cap,
    used: UsageTotals,
    now: Timestamp,
) -> CapStatus {
    let exceeded = cap.tokens.is_some_and(|t| used.total_tokens() >= t)
        || cap.cost_micros.is_some_and(|c| used.cost_micros >= c);
    CapStatus {
        scope,
        id: id.to_string(),
        period: cap.period,
        since: cap.period.start(now),
        resets_at: cap.period.end(now),
        tokens_cap: cap.tokens,
        cost_cap: cap.cost_micros.map(dollars),
        tokens_used: used.total_tokens(),
        cost_used: dollars(used.cost_micros),
        exceeded,
    }
}

/// The `error` of every `cap_exceeded` answer, exactly as the public API words it.
pub const CAP_EXCEEDED: &str = "AI usage cap exceeded";

/// Totals as reports show them: tokens summed, cost in dollars.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportTotals {
    pub runs: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub tool_calls: u64,
    pub llm_calls: u64,
    /// US dollars, from the price table in force when each run was recorded.
    pub cost: f64,
}

impl From<UsageTotals> for ReportTotals {
    fn from(t: UsageTotals) -> ReportTotals {
        ReportTotals {
            runs: t.runs,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            total_tokens: t.total_tokens(),
            tool_calls: t.tool_calls,
            llm_calls: t.llm_calls,
            cost: dollars(t.cost_micros),
        }
    }
}

/// One group of a report: its value (a tenant, key id, model, session id or day) and totals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportGroup {
    pub value: String,
    #[serde(flatten)]
    pub totals: ReportTotals,
}

/// A usage report, as `etlworks-agent usage --json` prints it and `GET /usage` answers it
/// (the API adds `success`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UsageReport {
    /// The tenant reported, or null for every tenant.
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub session_id: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub totals: ReportTotals,
    pub group_by: GroupBy,
    pub groups: Vec<ReportGroup>,
    /// The caps that apply (the tenant's, and the key's when a key is reported), with their
    /// use in the current period.
    pub caps: Vec<CapStatus>,
}

/// Builds the report for `filter`, broken down by `by`, with the caps in force.
pub async fn report(
    store: &dyn UsageStore,
    filter: &UsageFilter,
    by: GroupBy,
    caps: &Caps,
    now: Timestamp,
) -> StoreResult<UsageReport> {
    let totals = store.usage_totals(filter).await?;
    let groups = store
        .usage_groups(filter, by)
        .await?
        .into_iter()
        .map(|(value, t)| ReportGroup {
            value,
            totals: t.into(),
        })
        .collect();
    let mut statuses = Vec::new();
    if let Some(tenant) = &filter.tenant {
        if let Some(cap) = caps.for_tenant(tenant) {
            statuses.push(cap_status(store, &cap, tenant, None, now).await?);
        }
        if let Some(key) = &filter.key_id
            && let Some(cap) = caps.for_key(key)
        {
            statuses.push(cap_status(store, &cap, tenant, Some(key), now).await?);
        }
    }
    Ok(UsageReport {
        tenant: filter.tenant.clone(),
        key_id: filter.key_id.clone(),
        session_id: filter.session_id.clone(),
        since: filter.since,
        until: filter.until,
        totals: totals.into(),
        group_by: by,
        groups,
        caps: statuses,
    })
}

/// Reads a point in time for `since`/`until`: an RFC 3339 time (`2026-11-01T00:00:00Z`), a
/// UTC date (`2026-11-01`), `today`, `month` (the first of this month), or an age such as
/// `90m`, `12h`, `7d`, `2w` (that long before `now`).
pub fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc).trunc_subsecs(6));
    }
    if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists")));
    }
    match t.to_ascii_lowercase().as_str() {
        "today" => return Ok(Period::Day.start(now)),
        "month" => return Ok(Period::Month.start(now)),
        _ => {}
    }
    crate::keys::parse_lifetime(t)
        .map(|age| (now - age).trunc_subsecs(6))
        .map_err(|_| {
            format!(
                "cannot read the time '{t}'; give an RFC 3339 time (2026-11-01T00:00:00Z), a \
                 date (2026-11-01), today, month, or an age such as 12h, 7d or 2w"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn periods_start_and_end_at_utc_midnight() {
        let now = at("2026-12-31T18:30:00Z");
        assert_eq!(Period::Day.start(now), at("2026-12-31T00:00:00Z"));
        assert_eq!(Period::Day.end(now), at("2027-01-01T00:00:00Z"));
        assert_eq!(Period::Month.start(now), at("2026-12-01T00:00:00Z"));
        assert_eq!(Period::Month.end(now), at("2027-01-01T00:00:00Z"));
        assert_eq!(
            Period::Month.end(at("2026-02-10T00:00:00Z")),
            at("2026-03-01T00:00:00Z")
        );
        assert!(
            Period::parse("weekly")
                .unwrap_err()
                .contains("day or month")
        );
    }

    #[test]
    fn prices_are_per_million_tokens_with_a_default() {
        let prices = Prices::new(BTreeMap::from([
            (
                "gpt-4o-mini".to_string(),
                Price {
                    input: 0.15,
                    output: 0.6,
                },
            ),
            (
                "*".to_string(),
                Price {
                    input: 1.0,
                    output: 2.0,
                },
            ),
        ]))
        .unwrap();
        // 1M input tokens at $0.15 = 150,000 micro-dollars.
        assert_eq!(prices.cost_micros("gpt-4o-mini", 1_000_000, 0), 150_000);
        assert_eq!(prices.cost_micros("gpt-4o-mini", 100, 10), 21);
        assert_eq!(prices.cost_micros("other", 10, 10), 30);
        assert_eq!(Prices::default().cost_micros("x", 1000, 1000), 0);
        let bad = Prices::new(BTreeMap::from([(
            "m".to_string(),
            Price {
                input: -1.0,
                output: 0.0,
            },
        )]));
        assert!(bad.unwrap_err().contains("input price of model 'm'"));
    }

    #[test]
    fn times_read_in_every_documented_form() {
        let now = at("2026-11-15T12:00:00Z");
        assert_eq!(
            parse_time("2026-11-01T00:00:00Z", now).unwrap(),
            at("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            parse_time("2026-11-02", now).unwrap(),
            at("2026-11-02T00:00:00Z")
        );
        assert_eq!(
            parse_time("today", now).unwrap(),
            at("2026-11-15T00:00:00Z")
        );
        assert_eq!(
            parse_time("month", now).unwrap(),
            at("2026-11-01T00:00:00Z")
        );
        assert_eq!(parse_time("7d", now).unwrap(), at("2026-11-08T12:00:00Z"));
        assert!(
            parse_time("last tuesday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn caps_fall_back_to_the_defaults_and_explain_themselves() {
        let caps = Caps {
            tenant: Some(Cap {
                tokens: Some(100),
                cost_micros: None,
                period: Period::Month,
            }),
            tenants: BTreeMap::from([(
                "big".to_string(),
                Cap {
                    tokens: Some(1000),
                    cost_micros: None,
                    period: Period::Day,
                },
            )]),
            ..Caps::default()
        };
        assert_eq!(caps.for_tenant("small").unwrap().tokens, Some(100));
        assert_eq!(caps.for_tenant("big").unwrap().period, Period::Day);
        assert!(caps.for_key("key_x").is_none());
        let now = at("2026-11-15T12:00:00Z");
        let used = UsageTotals {
            runs: 2,
            input_tokens: 80,
            output_tokens: 30,
            ..UsageTotals::default()
        };
        let status = status_of(
            "tenant",
            "small",
            &caps.for_tenant("small").unwrap(),
            used,
            now,
        );
        assert!(status.exceeded);
        let text = status.explain();
        assert!(
            text.contains("tenant 'small' has used 110 of its 100 tokens this month"),
            "{text}"
        );
        assert!(text.contains("resets at 2026-12-01T00:00:00Z"), "{text}");
    }
}
