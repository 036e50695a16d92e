//! Sending one request, with the deadlines that bound it and the retry of a pooled connection
//! the server had closed.

use super::{REQUEST_ID_HEADER, error_chain};
use crate::core::record::{ErrorKind, Failure};
use reqwest::header::HeaderValue;
use serde_json::Value;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

/// Tries per request when a pooled connection turns out to be closed before the send.
const SEND_ATTEMPTS: u32 = 5;

/// Deadlines of one request.
pub(super) struct Deadlines {
    first_byte: Instant,
    total: Instant,
    idle: Duration,
    /// The phase's duration limit: the request is cancelled then.
    cancel: Option<Instant>,
}

impl Deadlines {
    /// The deadline for the next read and the failure kind if it passes.
    pub(super) fn next(&self, got_first: bool, last_read: Instant) -> (Instant, ErrorKind) {
        let (mut limit, mut kind) = if got_first {
            (last_read + self.idle, ErrorKind::TimeoutIdle)
        } else {
            (self.first_byte, ErrorKind::TimeoutFirstByte)
        };
        if self.total <= limit {
            (limit, kind) = (self.total, ErrorKind::TimeoutTotal);
        }
        match self.cancel {
            Some(c) if c <= limit => (c, ErrorKind::Cancelled),
            _ => (limit, kind),
        }
    }
}

/// A request on its way: the response (`None`: the failure is in the stream state), when the
/// last attempt was sent, its deadlines, and how many attempts it took.
pub(super) struct Sent {
    pub response: Option<reqwest::Response>,
    pub at: Instant,
    pub deadlines: Deadlines,
    pub attempts: u32,
}

/// Sends `body` to `url` until the response headers arrive, a deadline passes, or the send
/// fails for good; a failure goes to `failure`.
///
/// A pooled connection that the server closed while idle (many servers close after a fixed
/// number of requests per connection) fails before the request was read. Sending again is
/// safe then; several pooled connections can be stale at once under concurrency, so up to
/// `SEND_ATTEMPTS` tries, each with its own send instant. The record counts the attempts
/// (llama-server b11434 closes a connection after a few streamed responses without saying so:
/// about one request in ten needs a second try there).
pub(super) async fn send_with_retry(
    ctx: &super::RequestCtx<'_>,
    url: &str,
    body: &Value,
    id: Option<&HeaderValue>,
    cancel_at: Option<Instant>,
    failure: &mut Option<Failure>,
) -> Sent {
    let (client, ep, timeouts) = (ctx.http, ctx.ep, ctx.timeouts);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut builder = client.post(url).json(body);
        if let Some(id) = id {
            builder = builder.header(REQUEST_ID_HEADER, id.clone());
        }
        if let Some(key) = &ep.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let at = Instant::now();
        let deadlines = Deadlines {
            first_byte: at + timeouts.first_byte,
            total: at + timeouts.total,
            idle: timeouts.idle,
            cancel: cancel_at,
        };
        let (limit, kind) = deadlines.next(false, at);
        let sent = |response| Sent {
            response,
            at,
            deadlines,
            attempts,
        };
        match timeout_at(limit, builder.send()).await {
            Err(_) => {
                *failure = Some(Failure {
                    kind,
                    detail: if kind == ErrorKind::Cancelled {
                        "the phase's duration ended before the response headers".to_string()
                    } else {
                        format!(
                            "no response headers within {:?}",
                            limit.saturating_duration_since(at)
                        )
                    },
                });
                return sent(None);
            }
            Ok(Err(e)) => {
                let chain = error_chain(&e);
                if attempts < SEND_ATTEMPTS
                    && !e.is_connect()
                    && chain.contains("connection closed before message completed")
                {
                    continue;
                }
                let kind = if e.is_connect() {
                    ErrorKind::Connect
                } else {
                    ErrorKind::Disconnect
                };
                *failure = Some(Failure {
                    kind,
                    detail: ep.redact(&chain),
                });
                return sent(None);
            }
            Ok(Ok(r)) => return sent(Some(r)),
        }
    }
}
