//! Experiment files: TOML → raw serde structs (unknown fields rejected) → validated `Experiment`.
//!
//! Every error names the file, the line and column, the field path (`phase[1].workload.groups`)
//! and what was expected. Nothing here touches the network, the clock or the disk: the files an
//! experiment names (datasets, traces, a tokenizer) come through [`Files`], which `spec_io`
//! implements over the experiment's directory.
//!
//! Schema v1 in brief (see `experiments/` for complete files):
//!
//! ```toml
//! schema_version = 1
//! description = "…"
//! seed = 7
//! [targets.llamacpp]                 # kind from the name, or `kind = "openai"` for any other name
//! [model]
//! name = "tiny-llama"
//! [[phase]]
//! name = "cold"
//! workload = { kind = "shared_prefix", groups = 4, prefix_tokens = 1500, suffixes = 1, suffix_tokens = 24 }
//! request = { api = "completions", output_tokens = 8, ignore_eos = true }  # or chat; generate (SGLang)
//! [[assert]]
//! expr = "warm.ttft.p50 <= 0.5 * cold.ttft.p50"
//! ```

mod data;
mod lower;
mod phase;
mod raw;
mod workload;

use crate::core::assert::Assertion;
use crate::core::engine::TargetKind;
use crate::core::metrics::Slo;
use crate::core::tokens::{Tokenizer, TokenizerError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const SCHEMA_VERSION: u32 = 1;

pub use crate::core::diag::SpecError;
use crate::core::diag::{Locator, parse_toml};
pub use crate::core::fidelity::{Arrival, Offered};

/// The files an experiment names, as written in it (relative to the experiment's directory).
pub trait Files {
    /// Where `file` is, for messages.
    fn path(&self, file: &str) -> String;
    /// Its text.
    fn read(&self, file: &str) -> std::io::Result<String>;
    /// A tokenizer.json, loaded.
    fn tokenizer(&self, file: &str) -> Result<Tokenizer, TokenizerError>;
}

/// Parses and validates `src`; `file` is for messages, `name` is the experiment's name, and
/// `files` reads what the experiment names.
pub fn parse_with(
    file: &str,
    name: &str,
    src: &str,
    files: &dyn Files,
) -> Result<Experiment, SpecError> {
    let loc = Locator { file, src };
    let raw: raw::RawExperiment = parse_toml(&loc)?;
    lower::lower(&loc, name, raw, files)
}

/// A validated experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// The file stem; trials are `<name>::<target>`.
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub targets: Vec<TargetSpec>,
    pub model: String,
    /// The model's tokenizer, when the experiment names one: prompts are drawn from its
    /// vocabulary and counted with it.
    pub tokenizer: Option<Tokenizer>,
    pub timeouts: Timeouts,
    pub phases: Vec<Phase>,
    pub slo: Slo,
    pub assertions: Vec<Assertion>,
    pub snapshot: SnapshotOptions,
    pub observe: Observe,
    /// Measure the client against the truth server before the run (short; recorded in the
    /// manifest) and flag assertion differences inside that noise floor.
    pub calibrate: bool,
    /// How many times the phases run, in order, each time with fresh prompts (1: once). With
    /// more, every client statistic gets a 95 % interval over the repeats and assertions are
    /// decided on intervals.
    pub repeats: u32,
    /// An assertion whose interval straddles its threshold (inconclusive) fails.
    pub strict: bool,
}

/// Server-side observation settings.
#[derive(Debug, Clone, Copy)]
pub struct Observe {
    /// Scrape the target's `/metrics` around and during each phase.
    pub metrics: bool,
    /// Time between periodic scrapes.
    pub interval: Duration,
    /// Width of the time slices the run's figures are also cut into (`None`: per phase only).
    pub slice: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetSpec {
    pub name: String,
    pub kind: TargetKind,
    /// Ask for cumulative usage on every chunk (exact tokens per chunk).
    pub continuous_usage_stats: bool,
}

/// Client timeouts; each failure kind is recorded separately.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Send → response headers and the first body bytes.
    pub first_byte: Duration,
    /// Longest silence between two reads of the body.
    pub idle: Duration,
    /// Whole request.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            // RunPod's proxy gives up at 100 s; stay above it so its 524 is what gets recorded.
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub workload: Workload,
    pub request: RequestShape,
    /// Requests sent one at a time before the measured ones, excluded from statistics.
    pub warmup: u32,
    /// Warm up for this long instead (at most `warmup` requests when both are given).
    pub warmup_duration: Option<Duration>,
    /// Per-request prompt lengths drawn from a distribution (instead of one `input_tokens`).
    pub input_lengths: Option<LengthDist>,
    /// Per-request `max_tokens` drawn from a distribution (instead of `output_tokens`).
    pub output_lengths: Option<LengthDist>,
    /// Prompts from a file, in file order (cycling when the phase needs more).
    pub dataset: Option<Dataset>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// One request at a time.
    Single { requests: u32, input_tokens: u32 },
    /// Closed loop: `concurrency` in flight until `requests` have been sent or `duration` has
    /// passed; requests still in flight then are cancelled (and counted as such).
    Concurrent {
        concurrency: u32,
        requests: u32,
        input_tokens: u32,
        duration: Option<Duration>,
    },
    /// `groups` common prefixes of `prefix_tokens`, each followed by `suffixes` distinct
    /// suffixes of `suffix_tokens`. `prefix_from` names the phase whose prefixes are used (the
    /// phase itself unless it reuses an earlier one's).
    SharedPrefix {
        groups: u32,
        prefix_tokens: u32,
        suffixes: u32,
        suffix_tokens: u32,
        concurrency: u32,
        prefix_from: String,
    },
    /// `batches` groups of `batch_size` requests released together; the next group when the
    /// whole previous one has finished.
    Batch {
        batch_size: u32,
        batches: u32,
        input_tokens: u32,
    },
    /// Open loop: arrivals from `process` at `rate` per second, until `requests` have arrived
    /// or `duration` has passed (whichever comes first). At most `max_concurrency` in flight:
    /// later arrivals wait, and the wait is reported as client queueing.
    Rate {
        process: Arrival,
        rate: f64,
        requests: Option<u32>,
        duration: Option<Duration>,
        max_concurrency: Option<u32>,
        input_tokens: u32,
    },
    /// `sessions` conversations of `turns` turns: each turn sends the whole conversation so
    /// far (the server's previous answers included) plus a new user message of `turn_tokens`
    /// (`first_tokens` for the first); `think_time` between turns; `session_concurrency`
    /// sessions at once. An optional system prompt of `system_tokens` is shared by all sessions.
    MultiTurn {
        sessions: u32,
        turns: u32,
        system_tokens: Option<u32>,
        first_tokens: u32,
        turn_tokens: u32,
        session_concurrency: u32,
        think_time: Duration,
    },
    /// Agent-like sessions: a task of `task_tokens`, then `steps` model calls, each followed by
    /// a synthetic tool result of `tool_result_tokens` appended to the context;
    /// `parallel_calls` calls per step share the same context.
    Agentic {
        sessions: u32,
        steps: u32,
        system_tokens: Option<u32>,
        task_tokens: u32,
        tool_result_tokens: u32,
        parallel_calls: u32,
        session_concurrency: u32,
        think_time: Duration,
    },
    /// Open loop replaying a trace: each entry at its timestamp × `time_scale`, with its own
    /// input and output lengths (and shared prefixes where the trace names them).
    Trace {
        /// The trace file as written in the experiment (resolved against its directory).
        file: String,
        time_scale: f64,
        max_concurrency: Option<u32>,
        entries: Vec<TraceEntry>,
    },
    /// Open loop with a rate rising linearly from `from` to `to` per second over `duration`.
    Ramp {
        from: f64,
        to: f64,
        duration: Duration,
        max_concurrency: Option<u32>,
        input_tokens: u32,
    },
    /// The highest load meeting `slo`, searched by probing (see `workload::capacity`): each
    /// probe is a phase of its own, `<phase>_c<N>` or `<phase>_r<rate>`, of `requests` requests.
    Capacity {
        over: CapacityOver,
        min: f64,
        max: f64,
        step: f64,
        max_probes: u32,
        requests: u32,
        input_tokens: u32,
        max_concurrency: Option<u32>,
        /// Each probe passes when all of these hold over its figures (paths `probe.…`).
        slo: Vec<crate::core::assert::Assertion>,
    },
}

/// What a capacity search varies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapacityOver {
    /// Closed loop at each concurrency.
    Concurrency,
    /// Open loop at each rate (requests per second), arrivals from `process`.
    Rate(Arrival),
}

/// A distribution of token lengths, clamped to `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "dist", rename_all = "snake_case")]
pub enum LengthDist {
    Fixed {
        value: u32,
    },
    Uniform {
        min: u32,
        max: u32,
    },
    Normal {
        mean: f64,
        stddev: f64,
        min: u32,
        max: u32,
    },
    /// Log-normal with the given median and σ of the underlying normal.
    Lognormal {
        median: f64,
        sigma: f64,
        min: u32,
        max: u32,
    },
}

impl LengthDist {
    /// A representative length (for a declared figure when one number is needed).
    pub fn typical(&self) -> u32 {
        match *self {
            LengthDist::Fixed { value } => value,
            LengthDist::Uniform { min, max } => (min + max) / 2,
            LengthDist::Normal { mean, min, max, .. } => (mean.round() as u32).clamp(min, max),
            LengthDist::Lognormal {
                median, min, max, ..
            } => (median.round() as u32).clamp(min, max),
        }
    }
}

/// Prompts read from a file instead of generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// As written in the experiment (resolved against its directory).
    pub file: String,
    pub format: DatasetFormat,
    pub prompts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// A JSON array of `{"conversations": [{"from": "human", "value": …}, …]}`: the first human
    /// turn of each conversation is a prompt.
    Sharegpt,
    /// One `{"prompt": "…"}` object per line.
    Jsonl,
}

/// One line of a trace file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceEntry {
    /// Seconds from any origin; non-decreasing.
    pub timestamp: f64,
    pub input_length: u32,
    pub output_length: u32,
    #[serde(default)]
    pub session_id: Option<serde_json::Value>,
    /// Entries with the same prefix id share their first `prefix_length` tokens.
    #[serde(default)]
    pub prefix_id: Option<u64>,
    #[serde(default)]
    pub prefix_length: Option<u32>,
}

impl Workload {
    /// The open-loop load this workload declares (mean rate for a ramp); none for closed loops.
    pub fn offered(&self) -> Offered {
        match self {
            Workload::Rate { rate, process, .. } => Offered {
                rate: Some(*rate),
                process: Some(*process),
            },
            Workload::Ramp { from, to, .. } => Offered {
                rate: Some((from + to) / 2.0),
                process: None,
            },
            _ => Offered::default(),
        }
    }

    /// The most requests this workload puts in flight at once (`None`: unbounded open loop).
    pub fn concurrency(&self) -> Option<u32> {
        match self {
            Workload::Single { .. } => Some(1),
            Workload::Concurrent { concurrency, .. }
            | Workload::SharedPrefix { concurrency, .. } => Some(*concurrency),
            Workload::Batch { batch_size, .. } => Some(*batch_size),
            Workload::Rate {
                max_concurrency, ..
            }
            | Workload::Ramp {
                max_concurrency, ..
            }
            | Workload::Trace {
                max_concurrency, ..
            } => *max_concurrency,
            Workload::MultiTurn {
                session_concurrency,
                ..
            } => Some(*session_concurrency),
            Workload::Agentic {
                session_concurrency,
                parallel_calls,
                ..
            } => Some(session_concurrency * parallel_calls),
            Workload::Capacity {
                over: CapacityOver::Concurrency,
                max,
                ..
            } => Some(max.ceil() as u32),
            Workload::Capacity {
                max_concurrency, ..
            } => *max_concurrency,
        }
    }

    /// A capacity search's probe at `load`: its phase name and workload.
    pub fn probe(&self, phase: &str, load: f64) -> Option<(String, Workload)> {
        let Workload::Capacity {
            over,
            requests,
            input_tokens,
            max_concurrency,
            ..
        } = self
        else {
            return None;
        };
        Some(match over {
            CapacityOver::Concurrency => (
                format!("{phase}_c{}", load.round() as u32),
                Workload::Concurrent {
                    concurrency: load.round().max(1.0) as u32,
                    requests: *requests,
                    input_tokens: *input_tokens,
                    duration: None,
                },
            ),
            CapacityOver::Rate(process) => (
                format!("{phase}_r{load}"),
                Workload::Rate {
                    process: *process,
                    rate: load,
                    requests: Some(*requests),
                    duration: None,
                    max_concurrency: *max_concurrency,
                    input_tokens: *input_tokens,
                },
            ),
        })
    }

    /// Whether requests are conversations (chat only).
    pub fn is_session(&self) -> bool {
        matches!(self, Workload::MultiTurn { .. } | Workload::Agentic { .. })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    #[default]
    Completions,
    Chat,
    /// SGLang's native `/generate`: the prompt as text, sampling parameters of its own, and
    /// cumulative text and token counts on every chunk (SGLang targets only).
    Generate,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::Chat => "/v1/chat/completions",
            Api::Generate => "/generate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RequestShape {
    pub api: Api,
    /// `max_tokens`.
    pub output_tokens: u32,
    /// Ask the server to ignore EOS so every request produces `output_tokens` (where supported).
    pub ignore_eos: bool,
    pub temperature: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SnapshotOptions {
    pub enabled: bool,
    /// Include cached-token totals (deterministic only when the server's cache is).
    pub cached_tokens: bool,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

impl Experiment {
    pub fn target(&self, name: &str) -> Option<&TargetSpec> {
        self.targets.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests;
