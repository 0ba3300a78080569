//! The HTTP server loop: HTTP/1.1 connections with the limits a public endpoint needs, which
//! `axum::serve` does not set (it has no timer, so a client that never finishes its request
//! headers holds a connection and its task forever):
//!
//! - **header read timeout**: a connection must deliver a complete request head within
//!   [`ServeOptions::read_timeout`] of opening (or of the previous answer, on a kept-alive
//!   connection), or it is closed. This is what stops slow-loris clients. (A slow *body* is the
//!   handlers' business: they answer 408 `request_timeout`, see [`crate::auth::read_body`].)
//! - **connection cap**: at most [`ServeOptions::max_connections`] open at once; further clients
//!   wait in the listen backlog instead of exhausting file descriptors and memory.
//! - `TCP_NODELAY`, so streamed events leave as soon as they are written.
//! - **graceful stop**: when `stop` fires, no new connections are accepted, idle kept-alive
//!   connections close, and requests in flight (open streams included) get `drain` to finish.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connection limits of [`serve`].
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Time a client has to send a complete request head (and the handlers, a complete body).
    pub read_timeout: Duration,
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// After `stop`, how long requests in flight may take before they are cut off.
    pub drain: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain: Duration::from_secs(30),
        }
    }
}

/// Default of [`ServeOptions::read_timeout`].
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ServeOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Serves `router` on `listener` until `stop` fires, then drains (see the module docs).
/// Answers whether every connection finished within the drain time.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    stop: CancellationToken,
) -> bool {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut warned_full = false;
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.read_timeout);
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: say so, back off, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if slots.available_permits() == 0 && !warned_full {
            warned_full = true;
            tracing::warn!(
                max = options.max_connections,
                "the connection limit is reached; new clients wait until others close \
                 (raise --max-connections if this is expected load)"
            );
        } else if slots.available_permits() > options.max_connections / 10 {
            warned_full = false;
        }
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header timeouts, resets and malformed requests end up here; none of them
                // concern the server beyond a debug line.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep(options.drain) => false,
    }
}
