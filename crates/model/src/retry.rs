//! The one retry policy: jittered exponential backoff that honours `Retry-After`.
//! Shared by every outbound client (HTTP sources now, LLM providers later).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// HTTP statuses worth another attempt.
    pub fn is_retryable_status(status: u16) -> bool {
        matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
    }

    /// Delay before attempt `attempt + 1` (attempt counts from 1). A server's `Retry-After`
    /// wins when given, capped at `max_delay`; otherwise full jitter over an exponential ceiling.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let ceiling = exp.min(self.max_delay);
        let jitter: f64 = rand::random::<f64>();
        // Half fixed, half random: never a zero wait, never a synchronized herd.
        ceiling.mul_f64(0.5 + 0.5 * jitter)
    }

    /// Parses a `Retry-After` header: delta-seconds or an HTTP date.
    pub fn parse_retry_after(value: &str) -> Option<Duration> {
        let v = value.trim();
        if let Ok(secs) = v.parse::<f64>() {
            return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
        }
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let now = chrono::Utc::now();
        Some(
            (when.with_timezone(&chrono::Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for attempt in 1..10 {
            let d = p.delay(attempt, None);
            assert!(d <= Duration::from_secs(1), "{d:?}");
            assert!(d >= Duration::from_millis(50), "{d:?}");
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
        assert_eq!(
            RetryPolicy::parse_retry_after("2"),
            Some(Duration::from_secs(2))
        );
        assert!(RetryPolicy::parse_retry_after("soon").is_none());
    }
}
