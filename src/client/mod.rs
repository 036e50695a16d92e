//! OpenAI-compatible streaming client: one request → one `RequestRecord` (and, when recording,
//! a `Capture` of what the server sent with its offsets).
//!
//! Each network read is timestamped the moment it returns, before any decoding; every event the
//! read completes carries that instant. Failures never escape as errors: they become the
//! record's `failure`, by kind, so a run always completes.

use crate::core::engine::TargetKind;
use crate::core::record::{
    ChunkTime, ErrorKind, Failure, RequestRecord, ServerTimings, TokenCounting, Usage,
};
use crate::core::sse::{SseDecoder, SseEvent};
use crate::spec::{Api, Timeouts};
use crate::workload::PlannedRequest;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

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
        (Api::Completions, _) => body["prompt"] = json!(req.prompt),
        (Api::Chat, None) => {
            body["messages"] = json!([{ "role": "user", "content": req.prompt }]);
        }
    }
    body
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
#[derive(Debug, Clone, PartialEq)]
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

#[derive(Deserialize)]
// Per-chunk hot path: text borrows from the record when it has no escapes, and fields whose
// value does not matter (only whether they are there) are skipped without building them.
struct StreamChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    usage: Option<WireUsage>,
    error: Option<Value>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
    timings: Option<ServerTimings>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    tool_calls: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

impl From<&WireUsage> for Usage {
    fn from(u: &WireUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
        }
    }
}

/// Tries per request when a pooled connection turns out to be closed before the send.
const SEND_ATTEMPTS: u32 = 5;

/// Longest error text kept from a server.
const MAX_DETAIL: usize = 300;

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_DETAIL {
        return s.to_string();
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The message of an OpenAI-style error body, or the body itself.
fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        for ptr in ["/error/message", "/message", "/detail", "/error"] {
            if let Some(Value::String(s)) = v.pointer(ptr) {
                return truncate(s);
            }
        }
    }
    truncate(body)
}

/// State while a stream is read.
struct StreamState {
    chunks: Vec<ChunkTime>,
    /// Whether each output chunk carried cumulative usage.
    all_chunks_had_usage: bool,
    last_cumulative: u64,
    usage: Option<Usage>,
    timings: Option<ServerTimings>,
    output_chars: u64,
    /// The answer's text (completion text or chat content), when the caller needs it.
    text: Option<String>,
    events: u32,
    done: bool,
    finished: bool,
    failure: Option<Failure>,
}

impl StreamState {
    fn new() -> Self {
        Self {
            chunks: Vec::new(),
            all_chunks_had_usage: true,
            last_cumulative: 0,
            usage: None,
            timings: None,
            output_chars: 0,
            text: None,
            events: 0,
            done: false,
            finished: false,
            failure: None,
        }
    }

    fn on_event(&mut self, ev: SseEvent<'_>, at: Duration) {
        if self.failure.is_some() {
            return;
        }
        self.events += 1;
        if ev.event == b"error" {
            self.failure = Some(Failure {
                kind: ErrorKind::StreamError,
                detail: error_message(&String::from_utf8_lossy(ev.data)),
            });
            return;
        }
        if ev.is_done() {
            self.done = true;
            return;
        }
        let chunk: StreamChunk = match serde_json::from_slice(ev.data) {
            Ok(c) => c,
            Err(e) => {
                self.failure = Some(Failure {
                    kind: ErrorKind::Decode,
                    detail: format!(
                        "malformed JSON in stream record ({e}): {}",
                        truncate(&String::from_utf8_lossy(ev.data))
                    ),
                });
                return;
            }
        };
        if chunk.error.is_some() || chunk.object.as_deref() == Some("error") {
            let detail = match &chunk.error {
                Some(Value::Object(o)) => o
                    .get("message")
                    .and_then(Value::as_str)
                    .map(truncate)
                    .unwrap_or_else(|| truncate(&Value::Object(o.clone()).to_string())),
                Some(Value::String(s)) => truncate(s),
                _ => chunk.message.as_deref().map(truncate).unwrap_or_default(),
            };
            self.failure = Some(Failure {
                kind: ErrorKind::StreamError,
                detail,
            });
            return;
        }
        let mut chars = 0u64;
        let mut has_output = false;
        for c in &chunk.choices {
            if c.finish_reason.is_some() {
                self.finished = true;
            }
            let delta = c.delta.as_ref();
            // The answer's text: completion text or chat content (kept for sessions).
            let answer = [c.text.as_deref(), delta.and_then(|d| d.content.as_deref())];
            let thinking = [
                delta.and_then(|d| d.reasoning.as_deref()),
                delta.and_then(|d| d.reasoning_content.as_deref()),
            ];
            for s in answer
                .iter()
                .chain(&thinking)
                .flatten()
                .filter(|s| !s.is_empty())
            {
                has_output = true;
                chars += s.chars().count() as u64;
            }
            if let Some(t) = self.text.as_mut() {
                for s in answer.iter().flatten() {
                    t.push_str(s);
                }
            }
            // `null` deserialises to `None`: only a present value counts.
            if delta.is_some_and(|d| d.tool_calls.is_some()) {
                has_output = true;
            }
        }
        if let Some(t) = chunk.timings {
            self.timings = Some(t);
        }
        let usage = chunk.usage.as_ref().map(Usage::from);
        if has_output {
            self.output_chars += chars;
            let tokens = match usage {
                Some(u) => {
                    let n = u.completion_tokens.saturating_sub(self.last_cumulative);
                    self.last_cumulative = u.completion_tokens;
                    Some(u32::try_from(n).unwrap_or(u32::MAX))
                }
                None => {
                    self.all_chunks_had_usage = false;
                    None
                }
            };
            self.chunks.push(ChunkTime { at, tokens });
        }
        if usage.is_some() {
            self.usage = usage;
        }
    }

    /// Decides how tokens per chunk are known, and fixes the per-chunk counts accordingly.
    fn token_counting(&mut self) -> TokenCounting {
        let n = self.chunks.len() as u64;
        if n > 0 && self.all_chunks_had_usage {
            return TokenCounting::Exact;
        }
        for c in &mut self.chunks {
            c.tokens = None;
        }
        match self.usage {
            Some(u) if u.completion_tokens == n && n > 0 => {
                for c in &mut self.chunks {
                    c.tokens = Some(1);
                }
                TokenCounting::OnePerChunk
            }
            _ => TokenCounting::Unknown,
        }
    }
}

/// Deadlines of one request.
struct Deadlines {
    first_byte: Instant,
    total: Instant,
    idle: Duration,
    /// The phase's duration limit: the request is cancelled then.
    cancel: Option<Instant>,
}

impl Deadlines {
    /// The deadline for the next read and the failure kind if it passes.
    fn next(&self, got_first: bool, last_read: Instant) -> (Instant, ErrorKind) {
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

/// Sends `req` and reads its stream to the end. Times are offsets from `origin`; `intended` is
/// when the schedule meant to send it.
#[allow(clippy::too_many_arguments)]
pub async fn execute(
    client: &reqwest::Client,
    ep: &Endpoint,
    phase: &str,
    req: &PlannedRequest,
    body: &Value,
    timeouts: &Timeouts,
    origin: Instant,
    intended: Instant,
    cancel_at: Option<Instant>,
    capture: bool,
) -> (RequestRecord, Option<Capture>) {
    let url = format!("{}{}", ep.base_url, req.api.path());
    let mut cap = capture.then(|| Capture {
        status: None,
        content_type: None,
        headers: None,
        events: Vec::new(),
        body_text: None,
        end: Duration::ZERO,
        broken: false,
    });
    let mut state = StreamState::new();
    // Session requests need the answer: it becomes the next turn's history.
    if req.messages.is_some() {
        state.text = Some(String::new());
    }
    let mut headers_at = None;
    let mut status = None;
    // Sent with every request so a server's own logs (and the truth server) can be matched to
    // the records. Phase names are identifiers, so the value is always a valid header.
    let id_header = reqwest::header::HeaderValue::from_str(&request_id(phase, req.index)).ok();

    // A pooled connection that the server closed while idle (many servers close after a fixed
    // number of requests per connection) fails before the request was read. Sending again is
    // safe then; several pooled connections can be stale at once under concurrency, so up to
    // `SEND_ATTEMPTS` tries, each with its own send instant. The record counts the attempts
    // (llama-server b11434 closes a connection after a few streamed responses without saying
    // so: about one request in ten needs a second try there).
    let mut sent;
    let mut deadlines;
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        let mut builder = client.post(&url).json(body);
        if let Some(id) = &id_header {
            builder = builder.header(REQUEST_ID_HEADER, id.clone());
        }
        if let Some(key) = &ep.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        sent = Instant::now();
        deadlines = Deadlines {
            first_byte: sent + timeouts.first_byte,
            total: sent + timeouts.total,
            idle: timeouts.idle,
            cancel: cancel_at,
        };
        let (limit, kind) = deadlines.next(false, sent);
        match timeout_at(limit, builder.send()).await {
            Err(_) => {
                state.failure = Some(Failure {
                    kind,
                    detail: if kind == ErrorKind::Cancelled {
                        "the phase's duration ended before the response headers".to_string()
                    } else {
                        format!(
                            "no response headers within {:?}",
                            limit.saturating_duration_since(sent)
                        )
                    },
                });
                break None;
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
                state.failure = Some(Failure {
                    kind,
                    detail: ep.redact(&chain),
                });
                break None;
            }
            Ok(Ok(r)) => break Some(r),
        }
    };

    if let Some(mut response) = response {
        let at = Instant::now();
        headers_at = Some(at);
        let code = response.status().as_u16();
        status = Some(code);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_sse = content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if let Some(c) = cap.as_mut() {
            c.status = Some(code);
            c.content_type.clone_from(&content_type);
            c.headers = Some(at - sent);
        }
        let mut decoder = SseDecoder::new();
        let mut raw_body: Vec<u8> = Vec::new();
        let mut last_read = at;
        let mut got_first = false;
        let keep_raw = !response.status().is_success() || !is_sse;
        loop {
            let (limit, kind) = deadlines.next(got_first, last_read);
            match timeout_at(limit, response.chunk()).await {
                Err(_) => {
                    if state.failure.is_none() {
                        state.failure = Some(Failure {
                            kind,
                            detail: if kind == ErrorKind::Cancelled {
                                format!(
                                    "the phase's duration ended after {} output chunks",
                                    state.chunks.len()
                                )
                            } else {
                                format!(
                                    "no bytes for {:?} ({} output chunks so far)",
                                    limit.saturating_duration_since(last_read),
                                    state.chunks.len()
                                )
                            },
                        });
                    }
                    if let Some(c) = cap.as_mut() {
                        c.broken = true;
                    }
                    break;
                }
                Ok(Err(e)) => {
                    if state.failure.is_none() {
                        state.failure = Some(Failure {
                            kind: ErrorKind::Disconnect,
                            detail: format!(
                                "{} after {} output chunks",
                                ep.redact(&error_chain(&e)),
                                state.chunks.len()
                            ),
                        });
                    }
                    if let Some(c) = cap.as_mut() {
                        c.broken = true;
                    }
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(bytes))) => {
                    let now = Instant::now();
                    last_read = now;
                    got_first = true;
                    if keep_raw {
                        raw_body.extend_from_slice(&bytes);
                        if raw_body.len() > 64 * 1024 {
                            break;
                        }
                        continue;
                    }
                    let offset = now - origin;
                    let rel = now - sent;
                    decoder.feed(&bytes, &mut |ev| {
                        if let Some(c) = cap.as_mut() {
                            c.events.push(captured(ev, rel));
                        }
                        state.on_event(ev, offset);
                    });
                    if state.failure.is_some() {
                        break;
                    }
                }
            }
        }
        let end_rel = Instant::now() - sent;
        if keep_raw {
            let text = String::from_utf8_lossy(&raw_body).into_owned();
            if state.failure.is_none() {
                state.failure = Some(if !response.status().is_success() {
                    Failure {
                        kind: ErrorKind::Http(code),
                        detail: ep.redact(&error_message(&text)),
                    }
                } else {
                    Failure {
                        kind: ErrorKind::Decode,
                        detail: format!(
                            "not an event stream (content-type {}): {}",
                            content_type.as_deref().unwrap_or("none"),
                            truncate(&text)
                        ),
                    }
                });
            }
            if let Some(c) = cap.as_mut() {
                c.body_text = Some(ep.redact(&text));
            }
        } else if state.failure.is_none() {
            let offset = Instant::now() - origin;
            let leftover = decoder.finish(&mut |ev| {
                if let Some(c) = cap.as_mut() {
                    c.events.push(captured(ev, end_rel));
                }
                state.on_event(ev, offset);
            });
            if state.failure.is_none() {
                if leftover > 0 || (state.events == 0 && decoder.unknown_lines() > 0) {
                    state.failure = Some(Failure {
                        kind: ErrorKind::Decode,
                        detail: "the body is not a well-formed event stream".to_string(),
                    });
                } else if !state.done && !state.finished {
                    state.failure = Some(Failure {
                        kind: ErrorKind::Disconnect,
                        detail: format!(
                            "stream ended without [DONE] or a finish_reason after {} output chunks",
                            state.chunks.len()
                        ),
                    });
                }
            }
        }
        if let Some(c) = cap.as_mut() {
            c.end = end_rel;
        }
    }

    let end = Instant::now();
    let token_counting = state.token_counting();
    let record = RequestRecord {
        phase: phase.to_string(),
        index: req.index,
        warmup: req.warmup,
        group: req.group,
        intended: intended.saturating_duration_since(origin),
        sent: sent - origin,
        headers: headers_at.map(|h| h - origin),
        status,
        chunks: state.chunks,
        end: end - origin,
        usage: state.usage,
        token_counting,
        output_chars: state.output_chars,
        events: state.events,
        server_timings: state.timings,
        failure: state.failure,
        session: req.session,
        turn: req.turn,
        output_text: state.text,
        send_attempts: attempts,
        declared_input_tokens: (req.messages.is_none() && req.input_tokens > 0)
            .then_some(req.input_tokens),
        max_tokens: Some(req.max_tokens),
    };
    if let Some(c) = cap.as_mut()
        && c.end.is_zero()
    {
        c.end = end - sent;
        c.broken = true;
    }
    (record, cap)
}

fn captured(ev: SseEvent<'_>, offset: Duration) -> CapturedEvent {
    CapturedEvent {
        offset,
        event: (!ev.event.is_empty()).then(|| String::from_utf8_lossy(ev.event).into_owned()),
        data: String::from_utf8_lossy(ev.data).into_owned(),
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

    fn state() -> StreamState {
        StreamState::new()
    }

    fn feed(s: &mut StreamState, data: &str, at_ms: u64) {
        s.on_event(
            SseEvent {
                event: b"",
                data: data.as_bytes(),
            },
            Duration::from_millis(at_ms),
        );
    }

    #[test]
    fn role_only_and_empty_chunks_do_not_count() {
        let mut s = state();
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            5,
        );
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#,
            6,
        );
        feed(&mut s, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#, 10);
        feed(&mut s, r#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#, 12);
        feed(
            &mut s,
            r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
            13,
        );
        feed(
            &mut s,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}}"#,
            14,
        );
        feed(&mut s, "[DONE]", 15);
        assert_eq!(s.chunks.len(), 2);
        assert_eq!(s.chunks[0].at, Duration::from_millis(10));
        assert_eq!(s.output_chars, 5);
        assert!(s.done && s.finished);
        assert_eq!(s.usage.unwrap().cached_tokens, Some(3));
        assert_eq!(s.token_counting(), TokenCounting::OnePerChunk);
        assert_eq!(s.chunks[1].tokens, Some(1));
    }

    #[test]
    fn tool_calls_and_escaped_text_count_as_output() {
        let mut s = state();
        s.text = Some(String::new());
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"content":null,"tool_calls":null}}]}"#,
            1,
        );
        assert!(s.chunks.is_empty(), "a null tool_calls is not output");
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}"#,
            2,
        );
        assert_eq!(s.chunks.len(), 1);
        // Escapes force an owned string; the count is of the decoded characters.
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"content":"a\"b\n\u00e9"}}]}"#,
            3,
        );
        assert!(s.failure.is_none(), "{:?}", s.failure);
        assert_eq!(s.chunks.len(), 2);
        assert_eq!(s.output_chars, 5);
        assert_eq!(s.text.as_deref(), Some("a\"b\né"));
    }

    #[test]
    fn continuous_usage_gives_exact_tokens_per_chunk() {
        let mut s = state();
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":5,"completion_tokens":0}}"#,
            1,
        );
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
            2,
        );
        feed(
            &mut s,
            r#"{"choices":[{"delta":{"content":"bcd"}}],"usage":{"prompt_tokens":5,"completion_tokens":4}}"#,
            3,
        );
        feed(
            &mut s,
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4}}"#,
            4,
        );
        assert_eq!(s.token_counting(), TokenCounting::Exact);
        let t: Vec<_> = s.chunks.iter().map(|c| c.tokens).collect();
        assert_eq!(t, [Some(1), Some(3)]);
    }

    #[test]
    fn usage_on_the_last_content_chunk_only_is_not_per_chunk() {
        // llama.cpp completions: usage rides on the finish chunk, which also has text.
        let mut s = state();
        feed(&mut s, r#"{"choices":[{"text":"a"}]}"#, 1);
        feed(
            &mut s,
            r#"{"choices":[{"text":"b","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2},"timings":{"cache_n":3,"prompt_n":2}}"#,
            2,
        );
        assert_eq!(s.token_counting(), TokenCounting::OnePerChunk);
        assert_eq!(s.timings.unwrap().cache_n, Some(3));
        let mut s = state();
        feed(&mut s, r#"{"choices":[{"text":"ab"}]}"#, 1);
        feed(
            &mut s,
            r#"{"choices":[{"text":"c","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
            2,
        );
        assert_eq!(s.token_counting(), TokenCounting::Unknown);
        assert!(s.chunks.iter().all(|c| c.tokens.is_none()));
    }

    #[test]
    fn in_stream_errors_in_every_shape() {
        for data in [
            r#"{"error":{"message":"out of memory","code":500}}"#,
            r#"{"object":"error","message":"out of memory"}"#,
            r#"{"error":"out of memory"}"#,
        ] {
            let mut s = state();
            feed(&mut s, data, 1);
            let f = s.failure.unwrap();
            assert_eq!(f.kind, ErrorKind::StreamError);
            assert_eq!(f.detail, "out of memory");
        }
        let mut s = state();
        s.on_event(
            SseEvent {
                event: b"error",
                data: b"boom",
            },
            Duration::ZERO,
        );
        assert_eq!(s.failure.unwrap().kind, ErrorKind::StreamError);
        let mut s = state();
        feed(&mut s, "{not json", 1);
        assert_eq!(s.failure.unwrap().kind, ErrorKind::Decode);
    }

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
