//! Reading one response: the deadline read loop (every read stamped as it returns), the SSE
//! decoder feeding a [`StreamState`], and how the stream ended — a body that is not an event
//! stream, an HTTP error, a stream cut short — as the record's failure.

use super::send::Sent;
use super::{Capture, CapturedEvent, Endpoint, error_chain};
use crate::core::record::{ChunkTime, ErrorKind, Failure, ServerTimings, TokenCounting, Usage};
use crate::core::sse::{SseDecoder, SseEvent};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

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
    /// SGLang's `/generate`: the whole text so far (each chunk repeats what came before).
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    /// SGLang's `/generate`: cumulative counts on every chunk.
    meta_info: Option<MetaInfo>,
}

#[derive(Deserialize)]
struct MetaInfo {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    cached_tokens: Option<u64>,
    /// `null` until the last chunk, then `{"type": "length", …}`.
    finish_reason: Option<IgnoredAny>,
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

/// Longest error text kept from a server.
const MAX_DETAIL: usize = 300;

pub(super) fn truncate(s: &str) -> String {
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
pub(super) struct StreamState {
    pub(super) chunks: Vec<ChunkTime>,
    /// Whether each output chunk carried cumulative usage.
    pub(super) all_chunks_had_usage: bool,
    pub(super) last_cumulative: u64,
    pub(super) usage: Option<Usage>,
    pub(super) timings: Option<ServerTimings>,
    pub(super) output_chars: u64,
    /// The answer's text (completion text or chat content), when the caller needs it.
    pub(super) text: Option<String>,
    pub(super) events: u32,
    /// Bytes of `/generate`'s cumulative text already counted.
    generated_len: usize,
    pub(super) done: bool,
    pub(super) finished: bool,
    pub(super) failure: Option<Failure>,
}

impl StreamState {
    pub(super) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            all_chunks_had_usage: true,
            last_cumulative: 0,
            usage: None,
            timings: None,
            output_chars: 0,
            text: None,
            events: 0,
            generated_len: 0,
            done: false,
            finished: false,
            failure: None,
        }
    }

    pub(super) fn on_event(&mut self, ev: SseEvent<'_>, at: Duration) {
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
        if let Some(detail) = in_stream_error(&chunk) {
            self.failure = Some(Failure {
                kind: ErrorKind::StreamError,
                detail,
            });
            return;
        }
        if let Some(meta) = &chunk.meta_info {
            self.on_generate_chunk(chunk.text.as_deref().unwrap_or(""), meta, at);
            return;
        }
        let (has_output, chars) = self.output(&chunk);
        if let Some(t) = chunk.timings {
            self.timings = Some(t);
        }
        let usage = chunk.usage.as_ref().map(Usage::from);
        // A token that ends inside a UTF-8 character comes with empty text (vLLM: 1-6 % of its
        // events; SGLang too): with cumulative usage on every event, it is a token arrival.
        let token_without_text = !has_output
            && !chunk.choices.is_empty()
            && self.all_chunks_had_usage
            && usage.is_some_and(|u| u.completion_tokens > self.last_cumulative);
        if has_output || token_without_text {
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

    /// A chunk of SGLang's `/generate`: the text and the token count are cumulative, so the new
    /// text is what follows the part already seen and the new tokens are the count's growth
    /// (exact tokens per chunk, though SGLang groups tokens into chunks).
    fn on_generate_chunk(&mut self, text: &str, meta: &MetaInfo, at: Duration) {
        let new_text = match text.get(self.generated_len..) {
            Some(t) => {
                self.generated_len = text.len();
                t
            }
            // Shorter than before, or cut inside a character: not a continuation of what came.
            None => "",
        };
        let tokens = meta.completion_tokens.saturating_sub(self.last_cumulative);
        if tokens > 0 || !new_text.is_empty() {
            self.output_chars += new_text.chars().count() as u64;
            if let Some(t) = self.text.as_mut() {
                t.push_str(new_text);
            }
            self.last_cumulative = meta.completion_tokens;
            self.chunks.push(ChunkTime {
                at,
                tokens: Some(u32::try_from(tokens).unwrap_or(u32::MAX)),
            });
        }
        if meta.finish_reason.is_some() {
            self.finished = true;
        }
        self.usage = Some(Usage {
            prompt_tokens: meta.prompt_tokens,
            completion_tokens: meta.completion_tokens,
            cached_tokens: meta.cached_tokens,
        });
    }

    /// Whether the chunk carries output (text, reasoning or a tool call) and how many
    /// characters of text; the answer's text is kept when the caller needs it.
    fn output(&mut self, chunk: &StreamChunk<'_>) -> (bool, u64) {
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
        (has_output, chars)
    }

    /// Decides how tokens per chunk are known, and fixes the per-chunk counts accordingly. One
    /// token per chunk is inferred (from the final usage matching the chunk count) only where
    /// `events_are_tokens`: a server that groups tokens into chunks may match by chance.
    pub(super) fn token_counting(&mut self, events_are_tokens: bool) -> TokenCounting {
        let n = self.chunks.len() as u64;
        if n > 0 && self.all_chunks_had_usage {
            return TokenCounting::Exact;
        }
        for c in &mut self.chunks {
            c.tokens = None;
        }
        match self.usage {
            Some(u) if events_are_tokens && u.completion_tokens == n && n > 0 => {
                for c in &mut self.chunks {
                    c.tokens = Some(1);
                }
                TokenCounting::OnePerChunk
            }
            _ => TokenCounting::Unknown,
        }
    }
}

/// An error sent inside the stream as a JSON record (`{"error": …}` or `"object": "error"`):
/// its message.
fn in_stream_error(chunk: &StreamChunk<'_>) -> Option<String> {
    if chunk.error.is_none() && chunk.object.as_deref() != Some("error") {
        return None;
    }
    Some(match &chunk.error {
        Some(Value::Object(o)) => o
            .get("message")
            .and_then(Value::as_str)
            .map(truncate)
            .unwrap_or_else(|| truncate(&Value::Object(o.clone()).to_string())),
        Some(Value::String(s)) => truncate(s),
        _ => chunk.message.as_deref().map(truncate).unwrap_or_default(),
    })
}

/// Reads `response` to its end or its deadline into `state` (and `cap`); returns when its
/// headers arrived and its status.
pub(super) async fn read(
    mut response: reqwest::Response,
    sent: &Sent,
    origin: Instant,
    ep: &Endpoint,
    state: &mut StreamState,
    cap: &mut Option<Capture>,
) -> (Instant, u16) {
    let at = Instant::now();
    let code = response.status().as_u16();
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
        c.headers = Some(at - sent.at);
    }
    let success = response.status().is_success();
    let keep_raw = !success || !is_sse;
    let mut decoder = SseDecoder::new();
    let reading = Reading {
        sent,
        headers_at: at,
        origin,
        keep_raw,
        ep,
    };
    let raw_body = read_loop(&mut response, &reading, &mut decoder, state, cap).await;
    let end_rel = Instant::now() - sent.at;
    if keep_raw {
        let text = String::from_utf8_lossy(&raw_body).into_owned();
        if state.failure.is_none() {
            state.failure = Some(if !success {
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
        finish_stream(decoder, end_rel, origin, state, cap);
    }
    if let Some(c) = cap.as_mut() {
        c.end = end_rel;
    }
    (at, code)
}

/// A response being read: its send, when its headers came, and how to read its body.
struct Reading<'a> {
    sent: &'a Sent,
    headers_at: Instant,
    /// The run's start: event offsets are from it.
    origin: Instant,
    /// Not an event stream (or an error status): the body is kept raw.
    keep_raw: bool,
    ep: &'a Endpoint,
}

/// Reads until the body ends, a deadline passes, the transport fails or the stream reports a
/// failure. A body that is not an event stream (or an error status) is kept raw, up to 64 KiB.
async fn read_loop(
    response: &mut reqwest::Response,
    r: &Reading<'_>,
    decoder: &mut SseDecoder,
    state: &mut StreamState,
    cap: &mut Option<Capture>,
) -> Vec<u8> {
    let Reading {
        sent,
        headers_at,
        origin,
        keep_raw,
        ep,
    } = *r;
    let mut raw_body: Vec<u8> = Vec::new();
    let mut last_read = headers_at;
    let mut got_first = false;
    loop {
        let (limit, kind) = sent.deadlines.next(got_first, last_read);
        match timeout_at(limit, response.chunk()).await {
            Err(_) => {
                if state.failure.is_none() {
                    state.failure = Some(timed_out(kind, limit, last_read, state.chunks.len()));
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
                let rel = now - sent.at;
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
    raw_body
}

/// The failure of a read whose deadline passed.
fn timed_out(kind: ErrorKind, limit: Instant, last_read: Instant, chunks: usize) -> Failure {
    Failure {
        kind,
        detail: if kind == ErrorKind::Cancelled {
            format!("the phase's duration ended after {chunks} output chunks")
        } else {
            format!(
                "no bytes for {:?} ({chunks} output chunks so far)",
                limit.saturating_duration_since(last_read)
            )
        },
    }
}

/// An event stream that ended: the decoder's last event, then whether it ended well-formed
/// and complete (`[DONE]` or a finish reason).
fn finish_stream(
    mut decoder: SseDecoder,
    end_rel: Duration,
    origin: Instant,
    state: &mut StreamState,
    cap: &mut Option<Capture>,
) {
    let offset = Instant::now() - origin;
    let leftover = decoder.finish(&mut |ev| {
        if let Some(c) = cap.as_mut() {
            c.events.push(captured(ev, end_rel));
        }
        state.on_event(ev, offset);
    });
    if state.failure.is_some() {
        return;
    }
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

fn captured(ev: SseEvent<'_>, offset: Duration) -> CapturedEvent {
    CapturedEvent {
        offset,
        event: (!ev.event.is_empty()).then(|| String::from_utf8_lossy(ev.event).into_owned()),
        data: String::from_utf8_lossy(ev.data).into_owned(),
    }
}

#[cfg(test)]
mod tests;
