//! One HTTP exchange with retries: transient failures (408/425/429/5xx, timeouts, refused
//! connections) are retried with the shared jittered backoff, `Retry-After` honoured, and
//! cancellation observed while waiting; everything else becomes an error a person can act on.

use std::time::{Duration, Instant};

use etl_model::{ConnectorError, RetryPolicy, RunContext};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};

use crate::settings::{Auth, Settings, error_chain};

/// How many bytes of an error body are read for the message.
const ERROR_BODY_LIMIT: usize = 4096;
/// How many characters of a body an error message quotes.
const SNIPPET_CHARS: usize = 300;

/// A successful answer.
pub(crate) struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Duration of the final attempt.
    pub elapsed: Duration,
}

/// What one request is.
pub(crate) struct Call<'a> {
    pub method: &'a Method,
    pub url: &'a Url,
    pub body: Option<&'a [u8]>,
    /// Accept any final status except 401/403 and the retryable ones (used by `test`, where a
    /// 404 at the API root still proves the server is reachable).
    pub lenient: bool,
}

/// Why one attempt failed, when another attempt may help.
enum Transient {
    Status {
        status: StatusCode,
        snippet: String,
        retry_after: Option<Duration>,
    },
    Timeout,
    Connect(String),
    Transport(String),
}

pub(crate) async fn fetch(
    s: &Settings,
    ctx: &RunContext,
    call: Call<'_>,
) -> Result<Fetched, ConnectorError> {
    let shown = s.redact_url(call.url);
    let method = call.method.as_str();
    let attempts = s.retry.max_attempts.max(1);
    let mut last: Option<Transient> = None;
    for attempt in 1..=attempts {
        ctx.check_canceled()?;
        let started = Instant::now();
        let transient = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(ConnectorError::canceled()),
            outcome = attempt_once(s, &call, &shown) => match outcome? {
                Ok(mut fetched) => {
                    fetched.elapsed = started.elapsed();
                    return Ok(fetched);
                }
                Err(t) => t,
            },
        };
        if attempt < attempts {
            let retry_after = match &transient {
                Transient::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = s.retry.delay(attempt, retry_after);
            ctx.warn(&format!(
                "{method} {shown} {} (attempt {attempt} of {attempts}); retrying in {}",
                describe_transient(&transient, s.timeout),
                human(wait)
            ));
            tracing::debug!(connection = %s.connection, url = %shown, attempt, "retrying HTTP request");
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return Err(ConnectorError::canceled()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        last = Some(transient);
    }
    Err(final_error(s, method, &shown, attempts, last))
}

/// One attempt. The outer `Err` is final (no retry helps); the inner `Err` is worth retrying.
async fn attempt_once(
    s: &Settings,
    call: &Call<'_>,
    shown: &str,
) -> Result<Result<Fetched, Transient>, ConnectorError> {
    let mut req = s.client.request(call.method.clone(), call.url.clone());
    req = s.authorize(req, call.url);
    if let Some(body) = call.body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return transport_failure(s, call, shown, &e),
    };
    let status = resp.status();
    if status.is_success() || (call.lenient && !must_fail(status)) {
        let headers = resp.headers().clone();
        return match resp.bytes().await {
            Ok(bytes) => Ok(Ok(Fetched {
                status,
                headers,
                body: bytes.into(),
                elapsed: Duration::ZERO,
            })),
            Err(e) => transport_failure(s, call, shown, &e),
        };
    }
    let resp_location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(RetryPolicy::parse_retry_after);
    let snippet = s.redact_text(&snippet(&read_prefix(resp).await));
    if RetryPolicy::is_retryable_status(status.as_u16()) {
        return Ok(Err(Transient::Status {
            status,
            snippet,
            retry_after,
        }));
    }
    let location = resp_location.map(|l| s.redact_text(&l));
    Err(status_error(
        s,
        call.method.as_str(),
        shown,
        status,
        &snippet,
        location,
    ))
}

fn transport_failure(
    s: &Settings,
    call: &Call<'_>,
    shown: &str,
    e: &reqwest::Error,
) -> Result<Result<Fetched, Transient>, ConnectorError> {
    let chain = s.redact_text(&error_chain(e));
    if e.is_builder() {
        return Err(ConnectorError::config(format!(
            "{} {shown} could not be sent: {chain}; check the connection's url, header.* and auth properties",
            call.method
        )));
    }
    Ok(Err(if e.is_timeout() {
        Transient::Timeout
    } else if e.is_connect() {
        Transient::Connect(chain)
    } else {
        Transient::Transport(chain)
    }))
}

/// Statuses that end a request at once even in lenient mode.
fn must_fail(status: StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403) || RetryPolicy::is_retryable_status(status.as_u16())
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

fn status_error(
    s: &Settings,
    method: &str,
    shown: &str,
    status: StatusCode,
    snippet: &str,
    location: Option<String>,
) -> ConnectorError {
    if status.is_redirection() {
        let to = location.as_deref().unwrap_or("(no Location header)");
        return ConnectorError::read(format!(
            "{method} {shown} answered {} redirecting to {to}; redirects to another host are not followed while the connection has credentials, so they never leave the API's host: point the flow's object= (or the connection's url) at the new address",
            status_text(status)
        ));
    }
    let head = format!(
        "{method} {shown} answered {}: {snippet}",
        status_text(status)
    );
    match status.as_u16() {
        401 | 403 => ConnectorError::connect(format!(
            "{head}; the API refused the credentials: check the auth properties of connection '{}' ({})",
            s.connection,
            auth_hint(&s.auth)
        )),
        404 | 410 => ConnectorError::not_found(format!(
            "{head}; check the flow's object= path and the connection's url"
        )),
        400..=499 => ConnectorError::read(format!(
            "{head}; the API rejected the request: check the flow's source options (query.*, body, method and the pagination parameters)"
        )),
        _ => ConnectorError::read(format!(
            "{head}; expected a 2xx answer with JSON: check the flow's object= path"
        )),
    }
}

fn auth_hint(auth: &Auth) -> String {
    match auth {
        Auth::None => "it sends no credentials (auth=none); set auth=bearer with token=..., auth=basic with user= and password=, or auth=api_key with api_key= and api_key_name=".to_string(),
        Auth::Bearer(_) => "auth=bearer: is 'token' current and allowed to read this path?".to_string(),
        Auth::Basic { .. } => "auth=basic: are 'user' and 'password' right?".to_string(),
        Auth::ApiKeyHeader { name, .. } => format!(
            "auth=api_key sends the key in header '{name}': are 'api_key' and 'api_key_name' what the API expects?"
        ),
        Auth::ApiKeyQuery { name, .. } => format!(
            "auth=api_key sends the key as query parameter '{name}': are 'api_key' and 'api_key_name' what the API expects?"
        ),
    }
}

fn describe_transient(t: &Transient, timeout: Duration) -> String {
    match t {
        Transient::Status {
            status, snippet, ..
        } => format!("answered {}: {snippet}", status_text(*status)),
        Transient::Timeout => format!("timed out after {}", human(timeout)),
        Transient::Connect(why) => format!("could not connect: {why}"),
        Transient::Transport(why) => format!("failed: {why}"),
    }
}

fn final_error(
    s: &Settings,
    method: &str,
    shown: &str,
    attempts: u32,
    last: Option<Transient>,
) -> ConnectorError {
    let tries = if attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{attempts} attempts")
    };
    match last {
        Some(Transient::Status {
            status, snippet, ..
        }) => {
            let fix = match status.as_u16() {
                429 => {
                    "the API is rate-limiting these requests: run the flow later, or raise the connection's max_retries and retry_delay"
                }
                408 | 504 => {
                    "the API or a gateway timed out: retry later, or request smaller pages (source.page_size)"
                }
                _ => "the API is failing: retry later or check its status page",
            };
            ConnectorError::read(format!(
                "{method} {shown} answered {} after {tries}: {snippet}; {fix}",
                status_text(status)
            ))
        }
        Some(Transient::Timeout) => ConnectorError::read(format!(
            "{method} {shown} timed out after {} ({tries}); the API is slow or stalled: raise the connection's timeout (e.g. timeout=2m) or request smaller pages (source.page_size)",
            human(s.timeout)
        )),
        Some(Transient::Connect(why)) => ConnectorError::connect(format!(
            "{method} {shown} could not connect ({tries}): {why}; check the connection's url and that the API is reachable from this server"
        )),
        Some(Transient::Transport(why)) => ConnectorError::read(format!(
            "{method} {shown} failed ({tries}): {why}; the connection broke off: retry later"
        )),
        None => ConnectorError::read(format!("{method} {shown} was not attempted")),
    }
}

/// Reads at most [`ERROR_BODY_LIMIT`] bytes of an error answer: enough to quote, never a huge page.
async fn read_prefix(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < ERROR_BODY_LIMIT {
        match resp.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(ERROR_BODY_LIMIT);
    out
}

/// The start of a body for messages: whitespace collapsed, cut at [`SNIPPET_CHARS`].
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_string();
    }
    let mut out: String = collapsed.chars().take(SNIPPET_CHARS).collect();
    if collapsed.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    format!("'{out}'")
}

/// "250 ms", "1.5 s", "2 min" — for log lines and messages.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 120_000 {
        let secs = d.as_secs_f64();
        if secs.fract() < 0.05 {
            format!("{} s", secs.round() as u64)
        } else {
            format!("{secs:.1} s")
        }
    } else {
        format!("{} min", d.as_secs() / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_short_and_single_line() {
        assert_eq!(
            snippet(b"  {\"error\":\n  \"boom\"}  "),
            "'{\"error\": \"boom\"}'"
        );
        assert_eq!(snippet(b""), "(empty body)");
        let long = "x".repeat(1000);
        assert_eq!(snippet(long.as_bytes()).chars().count(), SNIPPET_CHARS + 3);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
        assert_eq!(human(Duration::from_secs(30)), "30 s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
    }
}
