//! Schedules: cron expressions (5 fields, or 6 with seconds first, in a time zone) and fixed
//! intervals. Persisted in the store, so a restarted process resumes them; a schedule whose time
//! passed while the process was down fires once on start, not once per missed slot. A flow never
//! overlaps itself: a tick that finds it still running is skipped and logged.

use std::time::Duration;

use chrono::Utc;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use tokio_util::sync::CancellationToken;

use crate::entity::*;
use crate::error::{EngineError, EngineResult};
use crate::service::{Engine, new_id};

/// How long the scheduler sleeps at most between looks at the store, so schedules changed by
/// another process are noticed.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// Parses a cron expression; the error says what a valid one looks like.
pub fn parse_cron(expr: &str) -> EngineResult<Cron> {
    CronParser::builder().seconds(Seconds::Optional).build().parse(expr.trim()).map_err(|e| {
        EngineError::invalid(format!(
            "invalid cron expression '{expr}': {e}; use 5 fields (minute hour day month weekday, e.g. '0 2 * * *' for 02:00 daily) or 6 with seconds first"
        ))
    })
}

pub fn parse_timezone(tz: &str) -> EngineResult<chrono_tz::Tz> {
    tz.parse::<chrono_tz::Tz>().map_err(|_| {
        EngineError::invalid(format!("unknown time zone '{tz}'; use an IANA name such as UTC, Europe/Berlin or America/New_York"))
    })
}

/// The first firing strictly after `after`.
pub fn next_fire(trigger: &Trigger, after: Timestamp) -> EngineResult<Timestamp> {
    match trigger {
        Trigger::Every { seconds } => {
            Ok(after + chrono::Duration::seconds((*seconds).max(1) as i64))
        }
        Trigger::Cron { expr, timezone } => {
            let cron = parse_cron(expr)?;
            let tz = parse_timezone(timezone)?;
            let local = after.with_timezone(&tz);
            let next = cron.find_next_occurrence(&local, false).map_err(|e| {
                EngineError::invalid(format!(
                    "cron expression '{expr}' never fires after {after}: {e}"
                ))
            })?;
            Ok(next.with_timezone(&Utc))
        }
    }
}

/// A readable description: "every 15m", "cron '0 2 * * *' (Europe/Berlin)".
pub fn describe_trigger(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Every { seconds } => format!("every {}", format_interval(*seconds)),
        Trigger::Cron { expr, timezone } => format!("cron '{expr}' ({timezone})"),
    }
}

pub fn format_interval(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Engine {
    /// Creates or replaces the flow's schedule (enabled) and answers it with its next firing.
    pub async fn schedule_flow(
        &self,
        tenant: &str,
        flow: &str,
        trigger: Trigger,
        retries: u32,
        retry_delay: Duration,
    ) -> EngineResult<Schedule> {
        let flow = self.flow(tenant, flow).await?;
        if let Trigger::Every { seconds } = trigger
            && seconds < 1
        {
            return Err(EngineError::invalid("the interval must be at least 1s"));
        }
        let now = Utc::now();
        let next = next_fire(&trigger, now)?;
        let existing = self.inner.store.get_schedule(tenant, &flow.id).await?;
        let schedule = Schedule {
            id: existing
                .as_ref()
                .map(|s| s.id.clone())
                .unwrap_or_else(new_id),
            tenant: tenant.to_string(),
            flow_id: flow.id.clone(),
            flow_name: flow.name.clone(),
            trigger,
            enabled: true,
            retries,
            retry_delay_secs: retry_delay.as_secs(),
            next_run_at: Some(next),
            last_run_at: existing.as_ref().and_then(|s| s.last_run_at),
            last_run_id: existing.as_ref().and_then(|s| s.last_run_id.clone()),
            created_at: existing.as_ref().map(|s| s.created_at).unwrap_or(now),
            updated_at: now,
        };
        self.inner.store.upsert_schedule(&schedule).await?;
        self.inner.runtime.schedules_changed.notify_one();
        Ok(schedule)
    }

    pub async fn list_schedules(&self, tenant: &str) -> EngineResult<Vec<Schedule>> {
        Ok(self.inner.store.list_schedules(tenant).await?)
    }

    pub async fn schedule_of(&self, tenant: &str, flow: &Flow) -> EngineResult<Option<Schedule>> {
        Ok(self.inner.store.get_schedule(tenant, &flow.id).await?)
    }

    async fn schedule_for(&self, tenant: &str, flow: &str) -> EngineResult<Schedule> {
        let flow = self.flow(tenant, flow).await?;
        self.inner.store.get_schedule(tenant, &flow.id).await?.ok_or_else(|| {
            EngineError::not_found(format!(
                "flow '{}' has no schedule; create one with \"schedule flow {} every=1h\" or \"schedule flow {} cron='0 2 * * *'\"",
                flow.name, flow.name, flow.name
            ))
        })
    }

    pub async fn set_schedule_enabled(
        &self,
        tenant: &str,
        flow: &str,
        enabled: bool,
    ) -> EngineResult<Schedule> {
        let mut s = self.schedule_for(tenant, flow).await?;
        s.enabled = enabled;
        s.next_run_at = if enabled {
            Some(next_fire(&s.trigger, Utc::now())?)
        } else {
            None
        };
        s.updated_at = Utc::now();
        self.inner.store.upsert_schedule(&s).await?;
        self.inner.runtime.schedules_changed.notify_one();
        Ok(s)
    }

    pub async fn delete_schedule(&self, tenant: &str, flow: &str) -> EngineResult<Schedule> {
        let s = self.schedule_for(tenant, flow).await?;
        self.inner.store.delete_schedule(tenant, &s.flow_id).await?;
        self.inner.runtime.schedules_changed.notify_one();
        Ok(s)
    }

    /// The scheduler loop; returns when `shutdown` is cancelled. Run it in the long-lived
    /// process (the server, or `etlworks-agent scheduler`).
    pub async fn run_scheduler(&self, shutdown: CancellationToken) {
        tracing::info!("scheduler started");
        loop {
            if let Err(e) = self.fire_due(&shutdown).await {
                tracing::error!(error = %e, "scheduler tick failed");
            }
            let sleep = match self.inner.store.next_due_at().await {
                Ok(Some(at)) => (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_IDLE),
                Ok(None) => MAX_IDLE,
                Err(e) => {
                    tracing::error!(error = %e, "scheduler could not read schedules");
                    MAX_IDLE
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.inner.runtime.schedules_changed.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!("scheduler stopped");
    }

    /// Fires every due schedule once and moves its next firing forward.
    async fn fire_due(&self, shutdown: &CancellationToken) -> EngineResult<()> {
        // Housekeeping: runs of processes that died would otherwise look alive forever.
        let stale = self
            .inner
            .store
            .fail_unfinished_runs(crate::service::STALE_RUN, crate::runtime::live_after())
            .await?;
        if stale > 0 {
            tracing::warn!(runs = stale, "marked runs of stopped processes as failed");
        }
        let now = Utc::now();
        for mut s in self.inner.store.due_schedules(now).await? {
            s.next_run_at = Some(next_fire(&s.trigger, now)?);
            s.last_run_at = Some(now);
            s.updated_at = now;
            if let Some(run_id) = self.running_run_of(&s.flow_id) {
                tracing::warn!(flow = %s.flow_name, run = %run_id, "scheduled run skipped: the previous run is still going");
                self.inner.store.upsert_schedule(&s).await?;
                continue;
            }
            match self
                .start_run(&s.tenant, &s.flow_id, RunTrigger::Schedule, 1)
                .await
            {
                Ok(run) => {
                    s.last_run_id = Some(run.id.clone());
                    self.inner.store.upsert_schedule(&s).await?;
                    let engine = self.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move { engine.retry_until_done(s, run, shutdown).await });
                }
                Err(e) => {
                    tracing::warn!(flow = %s.flow_name, error = %e, "scheduled run could not start");
                    self.inner.store.upsert_schedule(&s).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits for a scheduled run and starts it again after the schedule's delay while it fails
    /// and retries remain.
    async fn retry_until_done(
        &self,
        schedule: Schedule,
        mut run: Run,
        shutdown: CancellationToken,
    ) {
        let tenant = schedule.tenant.clone();
        loop {
            let done = tokio::select! {
                r = self.wait_run(&tenant, &run.id, None) => r,
                _ = shutdown.cancelled() => return,
            };
            let Ok(done) = done else { return };
            if done.status != RunStatus::Error || done.attempt > schedule.retries {
                return;
            }
            let delay = Duration::from_secs(schedule.retry_delay_secs);
            tracing::info!(flow = %schedule.flow_name, attempt = done.attempt + 1, "retrying failed scheduled run in {delay:?}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
            match self
                .start_run(
                    &tenant,
                    &schedule.flow_id,
                    RunTrigger::Schedule,
                    done.attempt + 1,
                )
                .await
            {
                Ok(next) => run = next,
                Err(e) => {
                    tracing::warn!(flow = %schedule.flow_name, error = %e, "retry could not start");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cron_in_time_zone_with_optional_seconds() {
        let after = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
        let t = Trigger::Cron {
            expr: "0 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
        };
        // 02:00 in Berlin (UTC+1 in January) is 01:00 UTC the next day.
        assert_eq!(
            next_fire(&t, after).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 16, 1, 0, 0).unwrap()
        );
        let t = Trigger::Cron {
            expr: "*/10 * * * * *".into(),
            timezone: "UTC".into(),
        };
        assert_eq!(
            next_fire(&t, after).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 10).unwrap()
        );
        let t = Trigger::Every { seconds: 900 };
        assert_eq!(
            next_fire(&t, after).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 15, 12, 15, 0).unwrap()
        );
    }

    #[test]
    fn bad_cron_and_zone_are_explained() {
        assert!(
            parse_cron("61 * * * *")
                .unwrap_err()
                .message
                .contains("use 5 fields")
        );
        assert!(
            parse_timezone("Mars/Olympus")
                .unwrap_err()
                .message
                .contains("IANA")
        );
    }
}
