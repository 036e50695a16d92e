//! OpenAI-compatible streaming client: one request → one `RequestRecord` (and, when recording,
//! a `Capture` of what the server sent with its offsets).
//!
//! Each network read is timestamped the moment it returns, before any decoding; every event the
//! read completes carries that instant. Failures never escape as errors: they become the
//! record's `failure`, by kind, so a run always completes.

mod send;
mod stream;

use crate::core::engine::TargetKind;
use crate::core::record::{RequestRecord, TokenCounting};
use crate::spec::{Api, Timeouts};
use crate::workload::PlannedRequest;
use serde_json::{Value, json};
use std::fmt;
use std::time::Duration;
use stream::StreamState;
use tokio::time::Instant;

/// A credential that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where requests go and how to shape them.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL without a trailing `/` or `/v1` (e.g. `http://127.0.0.1:8080`).
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    pub kind: TargetKind,
    pub continuous_usage: bool,
}

impl Endpoint {
    /// Normalises a user-given base URL: trims `/` and a trailing `/v1`; http(s) only.
    pub fn normalize_url(url: &str) -> Result<String, String> {
        let trimmed = url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(format!("`{}` is not an http(s) URL", display_url(url)));
        }
        Ok(trimmed.to_string())
    }

    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(k) => k.redact(text),
            None => text.to_string(),
        }
    }
}

/// The header that carries a request's identity (`<phase>/<index>`, see [`request_id`]) to the
/// server, so that a server that records what it did can be matched to the client's records.
pub const REQUEST_ID_HEADER: &str = "x-inferlab-request-id";

/// The `x-inferlab-request-id` of a request: `<phase>/<index>`.
pub fn request_id(phase: &str, index: u32) -> String {
    format!("{phase}/{index}")
}

/// The URL with any `user:password@` removed, for logs and manifests.
pub fn display_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{}{}", &url[..scheme_end + 3], &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// A measurement client: no proxy from the environment (a proxy would be measured), Nagle off,
/// connections kept alive and reused.
pub fn http_client(timeouts: &Timeouts, pool: usize) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(timeouts.connect)
        .pool_max_idle_per_host(pool.max(1))
        // Servers commonly drop idle keep-alive connections after 5 s (uvicorn, cpp-httplib):
        // never reuse one that old, so a send does not race the server's close.
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
}

/// The JSON body for `req`, with the target's quirks. Keys are sorted (serde_json's map), so
/// the same request always serialises to the same bytes: replay matches on them.
pub fn request_body(ep: &Endpoint, req: &PlannedRequest) -> Value {
    if req.api == Api::Generate {
        return generate_body(req);
    }
    let mut body = json!({
        "model": ep.model,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if ep.continuous_usage {
        body["stream_options"]["continuous_usage_stats"] = json!(true);
    }
    if req.ignore_eos && ep.kind.supports_ignore_eos() {
        body["ignore_eos"] = json!(true);
    }
    match (req.api, &req.messages) {
        (Api::Chat, Some(messages)) => body["messages"] = json!(messages.as_slice()),
        (Api::Chat, None) => {
            body["messages"] = json!([{ "role": "user", "content": req.prompt }]);
        }
        // Completions (`/generate` returned its own body above).
        _ => body["prompt"] = json!(req.prompt),
    }
    body
}

/// SGLang's native `/generate` body: the prompt as text and its own sampling parameters (the
/// spec allows this API on SGLang targets only, which all take `ignore_eos`).
fn generate_body(req: &PlannedRequest) -> Value {
    json!({
        "text": req.prompt,
        "stream": true,
        "sampling_params": {
            "max_new_tokens": req.max_tokens,
            "temperature": req.temperature,
            "ignore_eos": req.ignore_eos,
        },
    })
}

/// One event as the server sent it, with its offset from the request's send.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedEvent {
    pub offset: Duration,
    /// The SSE `event` name, or `error` for an `error:` field line.
    pub event: Option<String>,
    pub data: String,
}

/// Everything needed to replay this exchange.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capture {
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub headers: Option<Duration>,
    pub events: Vec<CapturedEvent>,
    /// A body that was not an event stream (error statuses, plain JSON).
    pub body_text: Option<String>,
    pub end: Duration,
    /// The transport failed (reset, timeout) rather than ending cleanly.
    pub broken: bool,
}

/// What each request of a phase is sent with.
#[derive(Clone, Copy)]
pub struct RequestCtx<'a> {
    pub http: &'a reqwest::Client,
    pub ep: &'a Endpoint,
    pub phase: &'a str,
    pub timeouts: &'a Timeouts,
    /// The run's start: every time in a record is an offset from it.
    pub origin: Instant,
    /// Keep each exchange whole (for a fixture).
    pub capture: bool,
}

/// Sends `req` (as `body`) and reads its stream to the end. `intended` is when the schedule
/// meant to send it; a request still going at `cancel_at` is cancelled.
pub async fn execute(
    ctx: &RequestCtx<'_>,
    req: &PlannedRequest,
    body: &Value,
    intended: Instant,
    cancel_at: Option<Instant>,
) -> (RequestRecord, Option<Capture>) {
    let RequestCtx {
        ep,
        phase,
        origin,
        capture,
        ..
    } = *ctx;
    let url = format!("{}{}", ep.base_url, req.api.path());
    let mut cap = capture.then(Capture::default);
    let mut state = StreamState::new();
    // Session requests need the answer: it becomes the next turn's history.
    if req.messages.is_some() {
        state.text = Some(String::new());
    }
    // Sent with every request so a server's own logs (and the truth server) can be matched to
    // the records. Phase names are identifiers, so the value is always a valid header.
    let id = reqwest::header::HeaderValue::from_str(&request_id(phase, req.index)).ok();
    let mut sent =
        send::send_with_retry(ctx, &url, body, id.as_ref(), cancel_at, &mut state.failure).await;
    let headers = match sent.response.take() {
        Some(response) => {
            Some(stream::read(response, &sent, origin, ep, &mut state, &mut cap).await)
        }
        None => None,
    };
    let end = Instant::now();
    if let Some(c) = cap.as_mut()
        && c.end.is_zero()
    {
        c.end = end - sent.at;
        c.broken = true;
    }
    let times = Times {
        intended: intended.saturating_duration_since(origin),
        sent: sent.at - origin,
        headers: headers.map(|(h, _)| h - origin),
        end: end - origin,
    };
    let token_counting = state.token_counting(ep.kind.streams_one_token_per_event());
    let record = record(
        phase,
        req,
        state,
        token_counting,
        times,
        headers.map(|(_, s)| s),
        sent.attempts,
    );
    (record, cap)
}

/// A request's instants, as offsets from the run's origin.
struct Times {
    intended: Duration,
    sent: Duration,
    headers: Option<Duration>,
    end: Duration,
}

fn record(
    phase: &str,
    req: &PlannedRequest,
    state: StreamState,
    token_counting: TokenCounting,
    t: Times,
    status: Option<u16>,
    send_attempts: u32,
) -> RequestRecord {
    RequestRecord {
        phase: phase.to_string(),
        // The trial knows the repeat and sets it.
        repeat: 0,
        index: req.index,
        warmup: req.warmup,
        group: req.group,
        intended: t.intended,
        sent: t.sent,
        headers: t.headers,
        status,
        chunks: state.chunks,
        end: t.end,
        usage: state.usage,
        token_counting,
        output_chars: state.output_chars,
        events: state.events,
        server_timings: state.timings,
        failure: state.failure,
        session: req.session,
        turn: req.turn,
        output_text: state.text,
        send_attempts,
        declared_input_tokens: (req.messages.is_none() && req.input_tokens > 0)
            .then_some(req.input_tokens),
        max_tokens: Some(req.max_tokens),
    }
}

/// The error and its causes, one line (reqwest's top-level message alone is vague).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_normalisation_and_display() {
        assert_eq!(
            Endpoint::normalize_url("http://h:8000/v1/").unwrap(),
            "http://h:8000"
        );
        assert_eq!(
            Endpoint::normalize_url("https://x.net").unwrap(),
            "https://x.net"
        );
        assert!(Endpoint::normalize_url("h:8000").is_err());
        assert_eq!(display_url("https://u:pw@h:1/v1"), "https://h:1/v1");
        let k = Secret::new("sk-abcdef");
        assert_eq!(format!("{k:?}"), "Secret([redacted])");
        assert_eq!(k.redact("bad key sk-abcdef"), "bad key [redacted]");
    }
}
