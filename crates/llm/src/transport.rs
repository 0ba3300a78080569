//! What every provider shares on the wire: the API key that never prints, the HTTP options
//! (timeouts, retries, extra headers), and sending one request with bounded, jittered retries
//! that honour `Retry-After`, ending in an error that says what happened and what to check.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use tokio_util::sync::CancellationToken;

use crate::LlmError;

/// Installs rustls' ring crypto provider as the process default (once; harmless when one is
/// already installed). Providers call it before building their HTTP client.
pub fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An API key. It is sent in a header and nowhere else: `Debug` prints `ApiKey(***)`, it has
/// no `Display`, and error texts have it replaced by `***` should a server echo it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> ApiKey {
        ApiKey::new(key)
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> ApiKey {
        ApiKey(key)
    }
}

/// How a provider talks HTTP: timeouts, retries and extra headers. The same for every provider.
///
/// Retries: a request answered 408, 409, 429 or 5xx (501 aside), or that failed to connect or
/// lost its connection, is sent again up to `max_attempts` in all, after a jittered exponential
/// wait (`base_delay`, doubling, capped at `max_delay`) or the server's `Retry-After` (seconds
/// or an HTTP date). A streamed answer is retried only while it has produced no event: once the
/// first text or tool call has reached the caller, a failure is the caller's error.
#[derive(Clone)]
pub struct HttpOptions {
    /// Longest wait to open a connection (TCP and TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// Longest silence tolerated: waiting for the response headers, and between two chunks of
    /// a streamed answer. A stalled stream ends in an error after this, never a hang.
    /// Providers that send keep-alives (Anthropic pings, SSE comments) reset it. Default 120 s
    /// (reasoning models and local servers loading a model can be slow to start).
    pub idle_timeout: Duration,
    /// Attempts in all, the first included; 1 turns retries off. Default 4.
    pub max_attempts: u32,
    /// Wait before the second attempt (then doubled each time, with jitter). Default 500 ms.
    pub base_delay: Duration,
    /// Longest wait between two attempts. A server asking (`Retry-After`) for longer ends the
    /// retries at once with an error saying how long it asked for. Default 30 s.
    pub max_delay: Duration,
    /// Headers added to every request, e.g. `HTTP-Referer` and `X-Title` for OpenRouter,
    /// `OpenAI-Organization`, `anthropic-beta`. Their values never appear in `Debug` output.
    pub headers: Vec<(String, String)>,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            headers: Vec::new(),
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: ***"))
            .collect();
        f.debug_struct("HttpOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("base_delay", &self.base_delay)
            .field("max_delay", &self.max_delay)
            .field("headers", &names)
            .finish()
    }
}

impl HttpOptions {
    /// Delay before attempt `attempt + 1` (attempts count from 1): half fixed, half random
    /// over an exponential ceiling, so never zero and never a synchronized herd.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        ceiling.mul_f64(0.5 + 0.5 * rand::random::<f64>())
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (a date past is no wait).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Statuses worth another attempt: timeouts, conflicts, rate limits and server trouble
/// (Anthropic's 529 "overloaded" included), but not "not implemented".
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    let s = status.as_u16();
    matches!(s, 408 | 409 | 429) || (status.is_server_error() && s != 501)
}

/// A failed attempt: the error to report, and whether another attempt may succeed.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: LlmError,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn fatal(error: LlmError) -> Failure {
        Failure {
            error,
            retryable: false,
            retry_after: None,
        }
    }
    pub fn transient(error: LlmError) -> Failure {
        Failure {
            error,
            retryable: true,
            retry_after: None,
        }
    }
}

/// One HTTP exchange to make (and perhaps repeat).
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub method: Method,
    pub url: Url,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
    /// Ask for `text/event-stream`.
    pub stream: bool,
}

/// A provider's HTTP client with its fixed headers and options.
pub(crate) struct Transport {
    client: reqwest::Client,
    headers: HeaderMap,
    pub options: HttpOptions,
    /// Names the provider in every error, e.g. "the OpenAI-compatible provider at http://…".
    pub label: String,
    /// Scrubbed from every error text.
    secret: Option<String>,
}

impl Transport {
    /// `auth` are the headers carrying the key (marked sensitive), sent before the extra ones.
    pub fn new(
        label: String,
        options: HttpOptions,
        auth: Vec<(&'static str, String)>,
        fixed: Vec<(&'static str, String)>,
        secret: Option<&ApiKey>,
    ) -> Result<Transport, LlmError> {
        ensure_crypto_provider();
        if options.max_attempts == 0 {
            return Err(LlmError::BadRequest(
                "max_attempts must be at least 1 (1 means no retries)".into(),
            ));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in auth {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                LlmError::BadRequest(format!(
                    "the API key cannot be sent in the {name} header: it contains characters \
                     a header cannot carry (a line break or control character?); check the key"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), value);
        }
        for (name, value) in fixed {
            let value = HeaderValue::from_str(&value).map_err(|_| {
                LlmError::BadRequest(format!("the {name} header value '{value}' is not valid"))
            })?;
            headers.insert(HeaderName::from_static(name), value);
        }
        for (name, value) in &options.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                LlmError::BadRequest(format!(
                    "'{name}' is not a valid HTTP header name; use letters, digits and '-'"
                ))
            })?;
            let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
                LlmError::BadRequest(format!(
                    "the value of header '{name}' contains characters a header cannot carry \
                     (a line break or control character?)"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("etlworks-agent/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                LlmError::Unavailable(format!("cannot build an HTTP client: {}", root_cause(&e)))
            })?;
        Ok(Transport {
            client,
            headers,
            options,
            label,
            secret: secret
                .map(|k| k.expose().to_string())
                .filter(|k| k.len() >= 4),
        })
    }

    /// Replaces the key, should it appear, by `***`.
    pub fn redact(&self, text: String) -> String {
        match &self.secret {
            Some(key) if text.contains(key.as_str()) => text.replace(key.as_str(), "***"),
            _ => text,
        }
    }

    fn redact_error(&self, e: LlmError) -> LlmError {
        match e {
            LlmError::Unavailable(t) => LlmError::Unavailable(self.redact(t)),
            LlmError::BadRequest(t) => LlmError::BadRequest(self.redact(t)),
            LlmError::Canceled => LlmError::Canceled,
        }
    }

    /// Sends `call` until it is answered 2xx, retrying what is worth retrying. `attempts`
    /// counts every attempt made for this call (a stream that restarts keeps counting).
    pub async fn open(
        &self,
        call: &Call,
        cancel: &CancellationToken,
        attempts: &mut u32,
    ) -> Result<Response, LlmError> {
        loop {
            *attempts += 1;
            match self.send_once(call, cancel).await {
                Ok(response) => return Ok(response),
                Err(failure) => self.pause(failure, *attempts, cancel).await?,
            }
        }
    }

    /// After a failed attempt: waits before the next one, or answers the error to report.
    pub async fn pause(
        &self,
        failure: Failure,
        attempts: u32,
        cancel: &CancellationToken,
    ) -> Result<(), LlmError> {
        let Failure {
            error,
            retryable,
            retry_after,
        } = failure;
        if matches!(error, LlmError::Canceled) {
            return Err(error);
        }
        let gave_up = |e: LlmError, why: String| {
            self.redact_error(match e {
                LlmError::Unavailable(t) => LlmError::Unavailable(format!("{t}{why}")),
                LlmError::BadRequest(t) => LlmError::BadRequest(format!("{t}{why}")),
                LlmError::Canceled => LlmError::Canceled,
            })
        };
        if !retryable {
            return Err(gave_up(error, String::new()));
        }
        if attempts >= self.options.max_attempts {
            let why = if attempts > 1 {
                format!(" (gave up after {attempts} attempts)")
            } else {
                String::new()
            };
            return Err(gave_up(error, why));
        }
        let wait = match retry_after {
            Some(asked) if asked > self.options.max_delay => {
                return Err(gave_up(
                    error,
                    format!(
                        " (it asked to retry after {}, longer than the {} max_delay, so the \
                         request was not retried)",
                        seconds(asked),
                        seconds(self.options.max_delay)
                    ),
                ));
            }
            Some(asked) => asked,
            None => self.options.backoff(attempts),
        };
        tracing::warn!(
            provider = %self.label,
            attempt = attempts,
            wait_ms = wait.as_millis() as u64,
            error = %self.redact(error.to_string()),
            "model request failed; retrying"
        );
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(LlmError::Canceled),
            _ = tokio::time::sleep(wait) => Ok(()),
        }
    }

    /// GETs `url` (with retries) and answers its JSON body.
    pub async fn get_json(
        &self,
        url: Url,
        cancel: &CancellationToken,
    ) -> Result<serde_json::Value, LlmError> {
        let call = Call {
            method: Method::GET,
            url,
            body: None,
            stream: false,
        };
        let mut attempts = 0;
        let mut response = self.open(&call, cancel, &mut attempts).await?;
        let mut body = Vec::new();
        let idle = self.options.idle_timeout;
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(LlmError::Canceled),
                chunk = tokio::time::timeout(idle, response.chunk()) => chunk,
            };
            match chunk {
                Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Err(LlmError::Unavailable(self.redact(format!(
                        "{} broke off its answer to {}: {}",
                        self.label,
                        display_url(&call.url),
                        root_cause(&e)
                    ))));
                }
                Err(_) => {
                    return Err(LlmError::Unavailable(format!(
                        "{} sent nothing for {} (idle_timeout) while answering {}",
                        self.label,
                        seconds(idle),
                        display_url(&call.url)
                    )));
                }
            }
            if body.len() > 32 * 1024 * 1024 {
                return Err(LlmError::Unavailable(format!(
                    "{} answered {} with more than 32 MiB",
                    self.label,
                    display_url(&call.url)
                )));
            }
        }
        serde_json::from_slice(&body).map_err(|e| {
            LlmError::Unavailable(self.redact(format!(
                "{} answered {} with something that is not JSON ({e}): {}",
                self.label,
                display_url(&call.url),
                snippet(&String::from_utf8_lossy(&body))
            )))
        })
    }

    async fn send_once(
        &self,
        call: &Call,
        cancel: &CancellationToken,
    ) -> Result<Response, Failure> {
        let mut request = self
            .client
            .request(call.method.clone(), call.url.clone())
            .headers(self.headers.clone());
        if let Some(body) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if call.stream {
            request = request.header(reqwest::header::ACCEPT, "text/event-stream");
        } else {
            request = request.header(reqwest::header::ACCEPT, "application/json");
        }
        let idle = self.options.idle_timeout;
        let sent = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Failure::fatal(LlmError::Canceled)),
            sent = tokio::time::timeout(idle, request.send()) => sent,
        };
        let response = match sent {
            Err(_) => {
                return Err(Failure::fatal(LlmError::Unavailable(format!(
                    "{} did not answer {} within {} (idle_timeout)",
                    self.label,
                    display_url(&call.url),
                    seconds(idle)
                ))));
            }
            Ok(Err(e)) => return Err(Failure::transient(self.send_error(&call.url, &e))),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.status_failure(response, cancel).await)
    }

    fn send_error(&self, url: &Url, e: &reqwest::Error) -> LlmError {
        let url = display_url(url);
        let cause = root_cause(e);
        LlmError::Unavailable(self.redact(if e.is_timeout() {
            format!(
                "cannot connect to {url}: no connection within {} (connect_timeout)",
                seconds(self.options.connect_timeout)
            )
        } else if e.is_connect() {
            format!("cannot connect to {url}: {cause}")
        } else {
            format!("the request to {url} failed: {cause}")
        }))
    }

    /// Turns an error answer into a failure: its status, the provider's own message (from
    /// either provider's error body, or a snippet of whatever it sent), its request id.
    async fn status_failure(&self, mut response: Response, cancel: &CancellationToken) -> Failure {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let request_id = ["x-request-id", "request-id"]
            .iter()
            .find_map(|h| response.headers().get(*h)?.to_str().ok())
            .map(|id| format!(" [request id {id}]"))
            .unwrap_or_default();
        let path = response.url().path().to_string();
        // The body explains the status; read a bounded amount, never waiting past idle_timeout.
        let mut body = Vec::new();
        let idle = self.options.idle_timeout;
        while body.len() < 64 * 1024 {
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Failure::fatal(LlmError::Canceled),
                chunk = tokio::time::timeout(idle, response.chunk()) => chunk,
            };
            match chunk {
                Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        drop(response);
        let what = match error_message(&body) {
            Some(message) => format!("{status}: {message}"),
            None => status.to_string(),
        };
        let label = &self.label;
        let error = match status.as_u16() {
            401 => LlmError::Unavailable(format!(
                "{label} refused the API key ({what}){request_id}; check the key"
            )),
            403 => LlmError::Unavailable(format!(
                "{label} refused access ({what}){request_id}; check that the key may use this \
                 model"
            )),
            404 => LlmError::Unavailable(format!(
                "{label} has nothing at {path} ({what}){request_id}; check the base URL and \
                 the model name"
            )),
            429 => LlmError::Unavailable(format!(
                "{label} is rate limiting requests ({what}){request_id}"
            )),
            _ if is_retryable_status(status) => {
                LlmError::Unavailable(format!("{label} answered {what}{request_id}"))
            }
            _ => LlmError::BadRequest(format!("{label} rejected the request ({what}){request_id}")),
        };
        Failure {
            error: self.redact_error(error),
            retryable: is_retryable_status(status),
            retry_after,
        }
    }
}

/// The provider's message from an error body: OpenAI's and Anthropic's
/// `{"error": {"message", "type", "code"}}`, `{"error": "text"}` (Ollama), `{"message": ...}`
/// and `{"detail": ...}` (vLLM, FastAPI servers), else a snippet of the body.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return Some(snippet(text));
    };
    let inner = json.get("error").unwrap_or(&json);
    Some(match inner {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(_) => {
            describe_error_object(inner).unwrap_or_else(|| snippet(text))
        }
        _ => snippet(text),
    })
}

/// "message (type t, code c)" from an error object; None when it has no message.
pub(crate) fn describe_error_object(error: &serde_json::Value) -> Option<String> {
    let message = ["message", "detail"]
        .iter()
        .find_map(|k| error.get(*k))
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })?;
    let mut extra = Vec::new();
    for key in ["type", "code"] {
        match error.get(key) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => extra.push(format!("{key} {s}")),
            Some(serde_json::Value::Number(n)) => extra.push(format!("{key} {n}")),
            _ => {}
        }
    }
    Some(if extra.is_empty() {
        message
    } else {
        format!("{message} ({})", extra.join(", "))
    })
}

/// At most 200 characters of `text`, on one line, for an error message.
pub(crate) fn snippet(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    match flat.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat.to_string(),
    }
}

/// The innermost cause of an error: "Connection refused (os error 111)" rather than
/// reqwest's "error sending request for url (…)".
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A URL for messages: without user info, query or trailing slash.
pub(crate) fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.as_str().trim_end_matches('/').to_string()
}

/// "0.3 s", "120 s".
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{} s", (s * 1000.0).round() / 1000.0)
    }
}

/// Parses a configured base URL, naming the setting and an example when it is wrong.
pub(crate) fn parse_base_url(base_url: &str, example: &str) -> Result<Url, LlmError> {
    let trimmed = base_url.trim();
    let url = Url::parse(trimmed).map_err(|e| {
        LlmError::BadRequest(format!(
            "the base URL '{trimmed}' is not a valid URL ({e}); use e.g. {example}"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(LlmError::BadRequest(format!(
            "the base URL '{trimmed}' is not an http(s) URL; use e.g. {example}"
        )));
    }
    Ok(url)
}

/// `base` with `segments` appended to its path (its query kept).
pub(crate) fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        let later = chrono::Utc::now() + chrono::Duration::seconds(30);
        let date = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let wait = parse_retry_after(&date).unwrap();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_the_cap() {
        let o = HttpOptions {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            ..HttpOptions::default()
        };
        for _ in 0..100 {
            let first = o.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = o.backoff(3);
            assert!(third >= Duration::from_millis(175) && third <= Duration::from_millis(350));
            assert!(o.backoff(40) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422, 501] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn error_bodies_of_every_flavour_are_read() {
        let openai = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            error_message(openai).unwrap(),
            "Rate limit reached (type requests, code rate_limit_exceeded)"
        );
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            error_message(anthropic).unwrap(),
            "Overloaded (type overloaded_error)"
        );
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found"}"#).unwrap(),
            "model 'x' not found"
        );
        assert_eq!(
            error_message(
                br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#
            )
            .unwrap(),
            "bad (type BadRequestError, code 400)"
        );
        assert_eq!(
            error_message(b"<html>\n502 Bad Gateway</html>").unwrap(),
            "<html> 502 Bad Gateway</html>"
        );
        assert_eq!(error_message(b"  "), None);
        assert_eq!(snippet(&"é".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn debug_output_hides_keys_and_header_values() {
        let key = ApiKey::new("sk-very-secret");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        let o = HttpOptions {
            headers: vec![("X-Token".into(), "hidden-value".into())],
            ..HttpOptions::default()
        };
        let shown = format!("{o:?}");
        assert!(
            shown.contains("X-Token") && !shown.contains("hidden-value"),
            "{shown}"
        );
    }

    #[test]
    fn urls_join_and_show_without_secrets() {
        let base = parse_base_url("http://u:p@host:1/v1/?api-version=1", "x").unwrap();
        assert_eq!(
            join(&base, &["chat", "completions"]).as_str(),
            "http://u:p@host:1/v1/chat/completions?api-version=1"
        );
        assert_eq!(
            display_url(&join(&base, &["models"])),
            "http://host:1/v1/models"
        );
        assert!(parse_base_url("localhost:11434", "http://localhost:11434/v1").is_err());
        assert!(parse_base_url("ftp://x/", "e").is_err());
        assert_eq!(seconds(Duration::from_millis(300)), "0.3 s");
        assert_eq!(seconds(Duration::from_secs(120)), "120 s");
    }
}
