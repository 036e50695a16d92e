//! `RequestRecord`: what one request did, as instants; `ScrapeRecord`: one `/metrics` scrape
//! or GPU sample of the server, as the observer took it.
//!
//! Every time is an offset from the run's origin instant (one monotonic clock per run), taken
//! when the bytes arrived, before any decoding. Durations (TTFT, E2E, gaps) are derived by the
//! `metrics` module; nothing here is rounded.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One output-carrying chunk: when its bytes were read, and how many tokens it carried when
/// that is known exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkTime {
    pub at: Duration,
    pub tokens: Option<u32>,
}

/// Server-reported token usage (`usage` in the OpenAI stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens`; `None` when the server did not say.
    pub cached_tokens: Option<u64>,
}

/// How the tokens of each chunk are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCounting {
    /// Cumulative usage on every chunk (`continuous_usage_stats`): exact per chunk.
    Exact,
    /// The final usage equals the number of output chunks, and a chunk carries at least one
    /// token, so every chunk carried exactly one.
    OnePerChunk,
    /// Chunks may carry several tokens and the server did not say how many.
    Unknown,
}

/// Why a request failed. The `Display` form is the key used in summaries (`http_503`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP/TLS connection could not be made.
    Connect,
    /// A non-2xx status before any stream.
    Http(u16),
    /// An error object inside a 200 stream.
    StreamError,
    /// No response headers or first body byte within the first-byte timeout.
    TimeoutFirstByte,
    /// No bytes for longer than the idle timeout between chunks.
    TimeoutIdle,
    /// The request exceeded its total deadline.
    TimeoutTotal,
    /// The connection was reset or closed before the stream ended.
    Disconnect,
    /// Not an event stream, or a record whose JSON could not be read.
    Decode,
    /// In flight when the phase's duration limit passed (not a server failure).
    Cancelled,
    /// Never sent: still waiting for a concurrency slot when the phase's duration limit passed.
    Dropped,
}

impl ErrorKind {
    /// Whether the harness, not the server, ended the request (excluded from error rates).
    pub fn is_harness_limit(self) -> bool {
        matches!(self, ErrorKind::Cancelled | ErrorKind::Dropped)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Connect => f.write_str("connect"),
            ErrorKind::Http(status) => write!(f, "http_{status}"),
            ErrorKind::StreamError => f.write_str("stream_error"),
            ErrorKind::TimeoutFirstByte => f.write_str("timeout_first_byte"),
            ErrorKind::TimeoutIdle => f.write_str("timeout_idle"),
            ErrorKind::TimeoutTotal => f.write_str("timeout_total"),
            ErrorKind::Disconnect => f.write_str("disconnect"),
            ErrorKind::Decode => f.write_str("decode"),
            ErrorKind::Cancelled => f.write_str("cancelled"),
            ErrorKind::Dropped => f.write_str("dropped"),
        }
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = String;

    /// The `Display` form back (`http_503`, `timeout_idle`, …).
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "connect" => ErrorKind::Connect,
            "stream_error" => ErrorKind::StreamError,
            "timeout_first_byte" => ErrorKind::TimeoutFirstByte,
            "timeout_idle" => ErrorKind::TimeoutIdle,
            "timeout_total" => ErrorKind::TimeoutTotal,
            "disconnect" => ErrorKind::Disconnect,
            "decode" => ErrorKind::Decode,
            "cancelled" => ErrorKind::Cancelled,
            "dropped" => ErrorKind::Dropped,
            other => match other.strip_prefix("http_").map(str::parse) {
                Some(Ok(status)) => ErrorKind::Http(status),
                _ => return Err(format!("`{other}` is not an error kind")),
            },
        })
    }
}

/// A failure with the server's or the transport's words (never containing credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: ErrorKind,
    pub detail: String,
}

/// llama.cpp's per-request `timings` object (prompt cache reuse and server-side speeds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerTimings {
    pub cache_n: Option<u64>,
    pub prompt_n: Option<u64>,
    pub prompt_ms: Option<f64>,
    pub predicted_n: Option<u64>,
    pub predicted_ms: Option<f64>,
}

/// Everything observed about one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub phase: String,
    /// Which repeat of the experiment's phases it belongs to, from 0.
    #[serde(default)]
    pub repeat: u32,
    /// Position in the phase's schedule (warmup requests included).
    pub index: u32,
    /// Warmup requests are recorded but excluded from every statistic.
    pub warmup: bool,
    /// Shared-prefix group, when the workload has groups.
    pub group: Option<u32>,
    /// When the schedule meant to send it. Equal to `sent` in closed-loop phases.
    pub intended: Duration,
    /// When the request was handed to the connection.
    pub sent: Duration,
    /// When the response headers arrived.
    pub headers: Option<Duration>,
    pub status: Option<u16>,
    /// Output-carrying chunks only (role-only, empty, usage-only chunks and `[DONE]` excluded).
    pub chunks: Vec<ChunkTime>,
    /// When the stream ended (or failed).
    pub end: Duration,
    pub usage: Option<Usage>,
    pub token_counting: TokenCounting,
    /// Characters of output text received (content, reasoning and completion text).
    pub output_chars: u64,
    /// SSE events received, of every sort.
    pub events: u32,
    pub server_timings: Option<ServerTimings>,
    pub failure: Option<Failure>,
    /// Multi-turn and agentic sessions: which session and turn (or step).
    pub session: Option<u32>,
    pub turn: Option<u32>,
    /// The answer's text, kept only for session requests (it feeds the next turn).
    pub output_text: Option<String>,
    /// Sends needed (more than one when a pooled connection had been closed by the server).
    pub send_attempts: u32,
    /// The prompt length the workload declared (`None` for conversations).
    pub declared_input_tokens: Option<u32>,
    /// The `max_tokens` the request asked for.
    pub max_tokens: Option<u32>,
}

impl RequestRecord {
    /// An arrival that was never sent (see [`ErrorKind::Dropped`]).
    pub fn dropped(
        phase: &str,
        index: u32,
        group: Option<u32>,
        intended: Duration,
        at: Duration,
    ) -> Self {
        Self {
            phase: phase.to_string(),
            repeat: 0,
            index,
            warmup: false,
            group,
            intended,
            sent: at,
            headers: None,
            status: None,
            chunks: Vec::new(),
            end: at,
            usage: None,
            token_counting: TokenCounting::Unknown,
            output_chars: 0,
            events: 0,
            server_timings: None,
            failure: Some(Failure {
                kind: ErrorKind::Dropped,
                detail: "still waiting for a concurrency slot when the phase's duration ended"
                    .to_string(),
            }),
            session: None,
            turn: None,
            output_text: None,
            send_attempts: 0,
            declared_input_tokens: None,
            max_tokens: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// Send → first output chunk.
    pub fn ttft(&self) -> Option<Duration> {
        Some(self.chunks.first()?.at.saturating_sub(self.sent))
    }

    /// Intended send → first output chunk (includes client-side queueing).
    pub fn ttft_scheduled(&self) -> Option<Duration> {
        Some(self.chunks.first()?.at.saturating_sub(self.intended))
    }

    /// Send → last output chunk.
    pub fn e2e(&self) -> Option<Duration> {
        Some(self.chunks.last()?.at.saturating_sub(self.sent))
    }

    pub fn client_queue(&self) -> Duration {
        self.sent.saturating_sub(self.intended)
    }

    /// Output tokens: the server's count when it sent usage, else the client's.
    pub fn output_tokens(&self) -> u64 {
        match self.usage {
            Some(u) => u.completion_tokens,
            None => self.client_tokens(),
        }
    }

    /// The client's own count: exact per-chunk counts where known, else one per chunk (a lower
    /// bound).
    pub fn client_tokens(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| u64::from(c.tokens.unwrap_or(1)))
            .sum()
    }

    /// `(e2e − ttft) / (n − 1)`; undefined for n ≤ 1.
    pub fn tpot(&self) -> Option<Duration> {
        let n = self.output_tokens();
        if n <= 1 {
            return None;
        }
        let decode = self.e2e()?.checked_sub(self.ttft()?)?;
        Some(decode / u32::try_from(n - 1).ok()?)
    }

    /// `e2e / n`.
    pub fn ntpot(&self) -> Option<Duration> {
        let n = u32::try_from(self.output_tokens())
            .ok()
            .filter(|&n| n > 0)?;
        Some(self.e2e()? / n)
    }
}

/// Where in its phase a scrape was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Point {
    Start,
    Periodic,
    End,
}

impl Point {
    pub fn as_str(self) -> &'static str {
        match self {
            Point::Start => "start",
            Point::Periodic => "periodic",
            Point::End => "end",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(Point::Start),
            "periodic" => Some(Point::Periodic),
            "end" => Some(Point::End),
            _ => None,
        }
    }
}

/// One scrape: when, for which phase, and what it found (or why it failed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrapeRecord {
    pub phase: String,
    pub point: Point,
    /// Offset from the run's origin.
    pub at: Duration,
    /// Offset from the phase's start.
    pub in_phase: Duration,
    pub error: Option<String>,
    /// Malformed lines in the exposition.
    pub issues: usize,
    pub values: crate::core::server::Canonical,
    /// The exposition's used families as text, kept when recording a fixture.
    pub raw: Option<String>,
    pub status: Option<u16>,
    /// What was read: the server's `/metrics`, or a GPU sample.
    #[serde(default)]
    pub source: ScrapeSource,
}

/// What a scrape read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrapeSource {
    /// The server's `/metrics` exposition.
    #[default]
    Metrics,
    /// A GPU telemetry sample (`nvidia-smi`), beside the scrapes.
    Gpu,
}

impl ScrapeRecord {
    pub fn is_gpu(&self) -> bool {
        self.source == ScrapeSource::Gpu
    }
}

/// A serverless endpoint's `/health` documents around one phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}
