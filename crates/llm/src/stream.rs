//! Turns a provider's HTTP answer into the [`EventStream`] of the model contract: reads the
//! body chunk by chunk under the idle timeout, parses server-sent events, hands them to the
//! provider's [`Decoder`], restarts the call while it has produced nothing, and stops the
//! moment the caller cancels or drops the stream (dropping the response closes the request).

use std::collections::VecDeque;
use std::sync::Arc;

use reqwest::Response;
use tokio_util::sync::CancellationToken;

use crate::sse::{SseEvent, SseParser};
use crate::transport::{Call, Failure, Transport, seconds};
use crate::{Event, EventStream, LlmError};

/// A non-streamed answer larger than this is refused rather than held.
const MAX_WHOLE_BYTES: usize = 32 * 1024 * 1024;

/// What a provider knows of its own wire format.
pub(crate) trait Decoder: Send + 'static {
    /// Forgets a partial answer (the call is being sent again).
    fn reset(&mut self);
    /// One server-sent event; events it completes go to `out`. Answers true when the answer is
    /// complete (nothing after it matters).
    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Event>) -> Result<bool, Failure>;
    /// The body ended before the decoder said the answer was complete.
    fn end(&mut self, out: &mut VecDeque<Event>) -> Result<(), Failure>;
    /// A whole JSON answer (a server that does not stream).
    fn whole(&mut self, body: &[u8], out: &mut VecDeque<Event>) -> Result<(), Failure>;
}

enum State {
    Open,
    /// Deliver the pending events, then this error.
    Failed(LlmError),
    Closed,
}

struct Driver<D> {
    transport: Arc<Transport>,
    call: Call,
    decoder: D,
    cancel: CancellationToken,
    response: Option<Response>,
    /// The answer is one JSON document, not an event stream.
    whole: bool,
    body: Vec<u8>,
    sse: SseParser,
    pending: VecDeque<Event>,
    /// An event has been handed to the caller: from now on nothing is retried.
    yielded: bool,
    attempts: u32,
    state: State,
}

/// Sends `call` (with retries) and answers its events as a stream.
pub(crate) async fn start<D: Decoder>(
    transport: Arc<Transport>,
    call: Call,
    decoder: D,
    cancel: CancellationToken,
) -> Result<EventStream, LlmError> {
    let mut attempts = 0;
    let response = transport.open(&call, &cancel, &mut attempts).await?;
    let mut driver = Driver {
        transport,
        call,
        decoder,
        cancel,
        response: None,
        whole: false,
        body: Vec::new(),
        sse: SseParser::default(),
        pending: VecDeque::new(),
        yielded: false,
        attempts,
        state: State::Open,
    };
    driver.begin(response);
    Ok(Box::pin(futures::stream::unfold(
        driver,
        |mut d| async move { d.next().await.map(|item| (item, d)) },
    )))
}

impl<D: Decoder> Driver<D> {
    fn begin(&mut self, response: Response) {
        self.whole = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        self.response = Some(response);
        self.body.clear();
        self.sse = SseParser::default();
        self.decoder.reset();
        self.state = State::Open;
    }

    async fn next(&mut self) -> Option<Result<Event, LlmError>> {
        loop {
            if self.cancel.is_cancelled() && !matches!(self.state, State::Closed) {
                return Some(Err(self.close(LlmError::Canceled)));
            }
            if let Some(event) = self.pending.pop_front() {
                self.yielded = true;
                return Some(Ok(event));
            }
            match std::mem::replace(&mut self.state, State::Closed) {
                State::Closed => return None,
                State::Failed(error) => return Some(Err(error)),
                State::Open => self.state = State::Open,
            }
            let Err(failure) = self.advance().await else {
                continue;
            };
            if matches!(failure.error, LlmError::Canceled) {
                return Some(Err(self.close(LlmError::Canceled)));
            }
            // The connection is of no further use, whatever happens next.
            self.response = None;
            if self.yielded || !self.pending.is_empty() || !failure.retryable {
                let error = self.transport_redact(failure.error);
                if self.pending.is_empty() {
                    self.state = State::Closed;
                    return Some(Err(error));
                }
                self.state = State::Failed(error);
                continue;
            }
            // Nothing has come out of this call yet: it may be sent again.
            let reopened = match self
                .transport
                .pause(failure, self.attempts, &self.cancel)
                .await
            {
                Ok(()) => {
                    self.transport
                        .open(&self.call, &self.cancel, &mut self.attempts)
                        .await
                }
                Err(e) => Err(e),
            };
            match reopened {
                Ok(response) => self.begin(response),
                Err(e) => return Some(Err(self.close(e))),
            }
        }
    }

    fn transport_redact(&self, e: LlmError) -> LlmError {
        match e {
            LlmError::Unavailable(t) => LlmError::Unavailable(self.transport.redact(t)),
            LlmError::BadRequest(t) => LlmError::BadRequest(self.transport.redact(t)),
            LlmError::Canceled => LlmError::Canceled,
        }
    }

    /// Ends the stream with `error`: nothing pending is delivered, the request is dropped.
    fn close(&mut self, error: LlmError) -> LlmError {
        self.pending.clear();
        self.response = None;
        self.state = State::Closed;
        error
    }

    /// Reads one chunk and decodes what it completes.
    async fn advance(&mut self) -> Result<(), Failure> {
        let idle = self.transport.options.idle_timeout;
        let Some(response) = self.response.as_mut() else {
            self.state = State::Closed;
            return Ok(());
        };
        let chunk = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(Failure::fatal(LlmError::Canceled)),
            chunk = tokio::time::timeout(idle, response.chunk()) => chunk,
        };
        let label = &self.transport.label;
        match chunk {
            Err(_) => Err(Failure::fatal(LlmError::Unavailable(format!(
                "{label} sent nothing for {} (idle_timeout); the stalled answer was abandoned",
                seconds(idle)
            )))),
            Ok(Err(e)) => Err(Failure::transient(LlmError::Unavailable(format!(
                "{label} broke off its answer: {}",
                crate::transport::root_cause(&e)
            )))),
            Ok(Ok(None)) => {
                self.response = None;
                self.state = State::Closed;
                if self.whole {
                    let body = std::mem::take(&mut self.body);
                    return self.decoder.whole(&body, &mut self.pending);
                }
                let mut events = Vec::new();
                self.sse.finish(&mut events);
                if self.feed(events)? {
                    return Ok(());
                }
                self.decoder.end(&mut self.pending)
            }
            Ok(Ok(Some(bytes))) => {
                if self.whole {
                    self.body.extend_from_slice(&bytes);
                    if self.body.len() > MAX_WHOLE_BYTES {
                        return Err(Failure::fatal(LlmError::Unavailable(format!(
                            "{label} sent an answer larger than {} MiB",
                            MAX_WHOLE_BYTES / (1024 * 1024)
                        ))));
                    }
                    return Ok(());
                }
                let mut events = Vec::new();
                self.sse.push(&bytes, &mut events).map_err(|why| {
                    Failure::fatal(LlmError::Unavailable(format!("{label} sent {why}")))
                })?;
                if self.feed(events)? {
                    if let Some(response) = self.response.take() {
                        release(response);
                    }
                    self.state = State::Closed;
                }
                Ok(())
            }
        }
    }

    /// Decodes events; true once the answer is complete.
    fn feed(&mut self, events: Vec<SseEvent>) -> Result<bool, Failure> {
        for event in events {
            if self.decoder.event(event, &mut self.pending)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A complete answer's connection: the little left after the last event (the end of the
/// chunked body) is read in the background so the connection goes back to the pool instead
/// of being closed; a server that sends more than that within a second loses it.
fn release(mut response: Response) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                while let Ok(Some(_)) = response.chunk().await {}
            })
            .await;
        });
    }
}

/// A tool call's arguments as streamed: empty means no arguments (`{}`); text that is not JSON
/// (a model's slip, or an answer cut by `max_tokens`) is kept as a JSON string, so the tool's
/// schema check tells the model what was wrong instead of the whole answer failing.
pub(crate) fn parse_arguments(raw: &str) -> serde_json::Value {
    let raw = raw.trim();
    if raw.is_empty() {
        return serde_json::Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()))
}

/// A temperature as JSON: `0.2`, not the `0.20000000298023224` a plain f32 widening gives.
pub(crate) fn temperature(t: f32) -> serde_json::Value {
    t.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// An id for a tool call the server sent without one (some local servers do).
pub(crate) fn fresh_call_id() -> String {
    format!("call_{:016x}", rand::random::<u64>())
}

/// "a chunk that is not valid JSON (…): <snippet>", naming the provider.
pub(crate) fn malformed(label: &str, what: &str, data: &str, e: &serde_json::Error) -> Failure {
    Failure::fatal(LlmError::Unavailable(format!(
        "{label} sent {what} that is not valid JSON ({e}): {}",
        crate::transport::snippet(data)
    )))
}
