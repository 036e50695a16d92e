//! Experiment files: TOML → raw serde structs (unknown fields rejected) → validated `Experiment`.
//!
//! Every error names the file, the line and column, the field path (`phase[1].workload.groups`)
//! and what was expected. Nothing here touches the network or the clock; `load` reads one file.
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
//! request = { api = "completions", output_tokens = 8, ignore_eos = true }
//! [[assert]]
//! expr = "warm.ttft.p50 <= 0.5 * cold.ttft.p50"
//! ```

use crate::core::assert::Assertion;
use crate::core::engine::TargetKind;
use crate::core::metrics::Slo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

pub const SCHEMA_VERSION: u32 = 1;

pub use crate::core::diag::SpecError;
use crate::core::diag::{Locator, parse_duration, parse_toml};

/// A validated experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Experiment {
    /// The file stem; trials are `<name>::<target>`.
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub targets: Vec<TargetSpec>,
    pub model: String,
    /// The model's tokenizer, when the experiment names one: prompts are drawn from its
    /// vocabulary and counted with it.
    #[serde(serialize_with = "ser_tokenizer")]
    pub tokenizer: Option<crate::tokenize::ModelTokenizer>,
    pub timeouts: Timeouts,
    pub phases: Vec<Phase>,
    pub slo: Slo,
    #[serde(serialize_with = "ser_assertions")]
    pub assertions: Vec<Assertion>,
    pub snapshot: SnapshotOptions,
    pub observe: Observe,
    /// Measure the client against the truth server before the run (short; recorded in the
    /// manifest) and flag assertion differences inside that noise floor.
    pub calibrate: bool,
}

/// Server-side observation settings.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Observe {
    /// Scrape the target's `/metrics` around and during each phase.
    pub metrics: bool,
    /// Time between periodic scrapes.
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
}

fn ser_tokenizer<S: serde::Serializer>(
    t: &Option<crate::tokenize::ModelTokenizer>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&t.file),
        None => s.serialize_none(),
    }
}

fn ser_assertions<S: serde::Serializer>(a: &[Assertion], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(a.iter().map(|a| a.source.as_str()))
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetSpec {
    pub name: String,
    pub kind: TargetKind,
    /// Ask for cumulative usage on every chunk (exact tokens per chunk).
    pub continuous_usage_stats: bool,
}

/// Client timeouts; each failure kind is recorded separately.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timeouts {
    #[serde(serialize_with = "ser_secs")]
    pub connect: Duration,
    /// Send → response headers and the first body bytes.
    #[serde(serialize_with = "ser_secs")]
    pub first_byte: Duration,
    /// Longest silence between two reads of the body.
    #[serde(serialize_with = "ser_secs")]
    pub idle: Duration,
    /// Whole request.
    #[serde(serialize_with = "ser_secs")]
    pub total: Duration,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub workload: Workload,
    pub request: RequestShape,
    /// Requests sent one at a time before the measured ones, excluded from statistics.
    pub warmup: u32,
    /// Warm up for this long instead (at most `warmup` requests when both are given).
    #[serde(
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub warmup_duration: Option<Duration>,
    /// Per-request prompt lengths drawn from a distribution (instead of one `input_tokens`).
    pub input_lengths: Option<LengthDist>,
    /// Per-request `max_tokens` drawn from a distribution (instead of `output_tokens`).
    pub output_lengths: Option<LengthDist>,
    /// Prompts from a file, in file order (cycling when the phase needs more).
    pub dataset: Option<Dataset>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// One request at a time.
    Single { requests: u32, input_tokens: u32 },
    /// Closed loop: `concurrency` in flight until `requests` have been sent or `duration` has
    /// passed; requests still in flight then are cancelled (and counted as such).
    Concurrent {
        concurrency: u32,
        requests: u32,
        input_tokens: u32,
        #[serde(
            serialize_with = "ser_opt_secs",
            skip_serializing_if = "Option::is_none"
        )]
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
        #[serde(serialize_with = "ser_opt_secs")]
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
        #[serde(serialize_with = "ser_secs")]
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
        #[serde(serialize_with = "ser_secs")]
        think_time: Duration,
    },
    /// Open loop replaying a trace: each entry at its timestamp × `time_scale`, with its own
    /// input and output lengths (and shared prefixes where the trace names them).
    Trace {
        /// The trace file as written in the experiment (resolved against its directory).
        file: String,
        time_scale: f64,
        max_concurrency: Option<u32>,
        #[serde(skip)]
        entries: Vec<TraceEntry>,
    },
    /// Open loop with a rate rising linearly from `from` to `to` per second over `duration`.
    Ramp {
        from: f64,
        to: f64,
        #[serde(serialize_with = "ser_secs")]
        duration: Duration,
        max_concurrency: Option<u32>,
        input_tokens: u32,
    },
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

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum DistKind {
    Fixed,
    Uniform,
    Normal,
    Lognormal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDist {
    dist: DistKind,
    value: Option<u32>,
    mean: Option<f64>,
    median: Option<f64>,
    stddev: Option<f64>,
    sigma: Option<f64>,
    min: Option<u32>,
    max: Option<u32>,
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

fn lower_dist(raw: RawDist) -> Result<LengthDist, String> {
    let min = raw.min.unwrap_or(1).max(1);
    let max = raw.max.unwrap_or(32_768);
    if min > max {
        return Err(format!("min {min} is above max {max}"));
    }
    let need = |v: Option<f64>, f: &str| -> Result<f64, String> {
        match v {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(format!("`{f}` must be a positive number, not {x}")),
            None => Err(format!("this distribution needs `{f}`")),
        }
    };
    let unused = |present: bool, f: &str| -> Result<(), String> {
        if present {
            Err(format!("`{f}` does not apply to this distribution"))
        } else {
            Ok(())
        }
    };
    Ok(match raw.dist {
        DistKind::Fixed => {
            for (p, f) in [
                (raw.mean.is_some(), "mean"),
                (raw.median.is_some(), "median"),
                (raw.stddev.is_some(), "stddev"),
                (raw.sigma.is_some(), "sigma"),
                (raw.min.is_some(), "min"),
                (raw.max.is_some(), "max"),
            ] {
                unused(p, f)?;
            }
            match raw.value {
                Some(v) if v >= 1 => LengthDist::Fixed { value: v },
                _ => return Err("`fixed` needs `value` of at least 1".to_string()),
            }
        }
        DistKind::Uniform => {
            for (p, f) in [
                (raw.value.is_some(), "value"),
                (raw.mean.is_some(), "mean"),
                (raw.median.is_some(), "median"),
                (raw.stddev.is_some(), "stddev"),
                (raw.sigma.is_some(), "sigma"),
            ] {
                unused(p, f)?;
            }
            if raw.min.is_none() || raw.max.is_none() {
                return Err("`uniform` needs `min` and `max`".to_string());
            }
            LengthDist::Uniform { min, max }
        }
        DistKind::Normal => {
            for (p, f) in [
                (raw.value.is_some(), "value"),
                (raw.median.is_some(), "median"),
                (raw.sigma.is_some(), "sigma"),
            ] {
                unused(p, f)?;
            }
            LengthDist::Normal {
                mean: need(raw.mean, "mean")?,
                stddev: need(raw.stddev, "stddev")?,
                min,
                max,
            }
        }
        DistKind::Lognormal => {
            for (p, f) in [
                (raw.value.is_some(), "value"),
                (raw.mean.is_some(), "mean"),
                (raw.stddev.is_some(), "stddev"),
            ] {
                unused(p, f)?;
            }
            LengthDist::Lognormal {
                median: need(raw.median, "median")?,
                sigma: need(raw.sigma, "sigma")?,
                min,
                max,
            }
        }
    })
}

/// Prompts read from a file instead of generated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    /// As written in the experiment (resolved against its directory).
    pub file: String,
    pub format: DatasetFormat,
    #[serde(skip)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    file: String,
    format: DatasetFormat,
}

#[derive(Deserialize)]
struct ShareGptEntry {
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlPrompt {
    prompt: String,
}

/// Reads a prompt dataset; errors name the file and the line (JSONL) or entry (ShareGPT).
fn load_dataset(path: &Path, format: DatasetFormat) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read dataset {}: {e}", path.display()))?;
    let prompts: Vec<String> = match format {
        DatasetFormat::Jsonl => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let p: JsonlPrompt = serde_json::from_str(line)
                    .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
                out.push(p.prompt);
            }
            out
        }
        DatasetFormat::Sharegpt => {
            let de = &mut serde_json::Deserializer::from_str(&text);
            let entries: Vec<ShareGptEntry> = serde_path_to_error::deserialize(de)
                .map_err(|e| format!("{}: {}: {} (expected a ShareGPT array of {{\"conversations\": [{{\"from\", \"value\"}}]}})", path.display(), e.path(), e.inner()))?;
            entries
                .into_iter()
                .filter_map(|e| {
                    e.conversations
                        .into_iter()
                        .find(|t| t.from == "human")
                        .map(|t| t.value)
                })
                .filter(|p| !p.trim().is_empty())
                .collect()
        }
    };
    if prompts.is_empty() {
        return Err(format!("dataset {} has no prompts", path.display()));
    }
    Ok(prompts)
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

/// An arrival process for open-loop phases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrival {
    /// Evenly spaced: gap = 1/rate.
    Constant,
    /// Exponential gaps.
    Poisson,
    /// Gamma gaps with shape `burstiness` and scale 1/(rate·burstiness); 1 is Poisson, below 1
    /// burstier, above 1 more regular.
    Gamma { burstiness: f64 },
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Workload {
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
        }
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
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::Chat => "/v1/chat/completions",
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

// ---------------------------------------------------------------------------------------------
// Raw file structures.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExperiment {
    schema_version: Spanned<u32>,
    description: String,
    seed: u64,
    targets: Spanned<BTreeMap<String, Spanned<RawTarget>>>,
    model: RawModel,
    #[serde(default)]
    timeouts: RawTimeouts,
    phase: Spanned<Vec<Spanned<RawPhase>>>,
    #[serde(default)]
    slo: RawSlo,
    #[serde(default, rename = "assert")]
    assertions: Vec<RawAssert>,
    #[serde(default)]
    snapshot: RawSnapshot,
    #[serde(default)]
    observe: RawObserve,
    #[serde(default)]
    calibrate: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawObserve {
    metrics: Option<bool>,
    interval: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: Option<TargetKind>,
    continuous_usage_stats: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    /// A local tokenizer.json (relative to the experiment file): exact prompt lengths.
    tokenizer: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<String>>,
    first_byte: Option<Spanned<String>>,
    idle: Option<Spanned<String>>,
    total: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    ttft: Option<Spanned<String>>,
    tpot: Option<Spanned<String>>,
    e2e: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssert {
    expr: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    cached_tokens: bool,
}

impl Default for RawSnapshot {
    fn default() -> Self {
        Self {
            enabled: true,
            cached_tokens: false,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    name: Spanned<String>,
    workload: Spanned<RawWorkload>,
    request: Spanned<RawRequest>,
    #[serde(default)]
    warmup: u32,
    warmup_duration: Option<Spanned<String>>,
    input_lengths: Option<Spanned<RawDist>>,
    output_lengths: Option<Spanned<RawDist>>,
    prompts: Option<Spanned<RawDataset>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum WorkloadKind {
    Single,
    Concurrent,
    SharedPrefix,
    Batch,
    Rate,
    Sweep,
    Ramp,
    MultiTurn,
    Agentic,
    Trace,
}

impl WorkloadKind {
    fn name(self) -> &'static str {
        match self {
            WorkloadKind::Single => "single",
            WorkloadKind::Concurrent => "concurrent",
            WorkloadKind::SharedPrefix => "shared_prefix",
            WorkloadKind::Batch => "batch",
            WorkloadKind::Rate => "rate",
            WorkloadKind::Sweep => "sweep",
            WorkloadKind::Ramp => "ramp",
            WorkloadKind::MultiTurn => "multi_turn",
            WorkloadKind::Agentic => "agentic",
            WorkloadKind::Trace => "trace",
        }
    }

    /// The fields this kind accepts besides `kind`.
    fn allowed(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::Single => &["requests", "input_tokens"],
            WorkloadKind::Concurrent => &["concurrency", "requests", "input_tokens", "duration"],
            WorkloadKind::SharedPrefix => &[
                "groups",
                "prefix_tokens",
                "suffixes",
                "suffix_tokens",
                "concurrency",
                "reuse",
            ],
            WorkloadKind::Batch => &["batch_size", "batches", "input_tokens"],
            WorkloadKind::Rate => &[
                "process",
                "rate",
                "burstiness",
                "requests",
                "duration",
                "max_concurrency",
                "input_tokens",
            ],
            WorkloadKind::Sweep => &[
                "concurrencies",
                "rates",
                "process",
                "burstiness",
                "requests",
                "duration",
                "max_concurrency",
                "input_tokens",
            ],
            WorkloadKind::Ramp => &["from", "to", "duration", "max_concurrency", "input_tokens"],
            WorkloadKind::Trace => &["file", "time_scale", "max_concurrency"],
            WorkloadKind::MultiTurn => &[
                "sessions",
                "turns",
                "system_tokens",
                "first_tokens",
                "turn_tokens",
                "session_concurrency",
                "think_time",
            ],
            WorkloadKind::Agentic => &[
                "sessions",
                "steps",
                "system_tokens",
                "task_tokens",
                "tool_result_tokens",
                "parallel_calls",
                "session_concurrency",
                "think_time",
            ],
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum ProcessKind {
    Constant,
    Poisson,
    Gamma,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    kind: WorkloadKind,
    requests: Option<u32>,
    input_tokens: Option<u32>,
    concurrency: Option<u32>,
    groups: Option<u32>,
    prefix_tokens: Option<u32>,
    suffixes: Option<u32>,
    suffix_tokens: Option<u32>,
    reuse: Option<String>,
    batch_size: Option<u32>,
    batches: Option<u32>,
    process: Option<ProcessKind>,
    rate: Option<f64>,
    burstiness: Option<f64>,
    duration: Option<String>,
    max_concurrency: Option<u32>,
    concurrencies: Option<Vec<u32>>,
    rates: Option<Vec<f64>>,
    from: Option<f64>,
    to: Option<f64>,
    sessions: Option<u32>,
    turns: Option<u32>,
    steps: Option<u32>,
    system_tokens: Option<u32>,
    first_tokens: Option<u32>,
    turn_tokens: Option<u32>,
    task_tokens: Option<u32>,
    tool_result_tokens: Option<u32>,
    parallel_calls: Option<u32>,
    session_concurrency: Option<u32>,
    think_time: Option<String>,
    file: Option<String>,
    time_scale: Option<f64>,
}

impl RawWorkload {
    fn present(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut add = |present: bool, name: &'static str| {
            if present {
                out.push(name);
            }
        };
        add(self.requests.is_some(), "requests");
        add(self.input_tokens.is_some(), "input_tokens");
        add(self.concurrency.is_some(), "concurrency");
        add(self.groups.is_some(), "groups");
        add(self.prefix_tokens.is_some(), "prefix_tokens");
        add(self.suffixes.is_some(), "suffixes");
        add(self.suffix_tokens.is_some(), "suffix_tokens");
        add(self.reuse.is_some(), "reuse");
        add(self.batch_size.is_some(), "batch_size");
        add(self.batches.is_some(), "batches");
        add(self.process.is_some(), "process");
        add(self.rate.is_some(), "rate");
        add(self.burstiness.is_some(), "burstiness");
        add(self.duration.is_some(), "duration");
        add(self.max_concurrency.is_some(), "max_concurrency");
        add(self.concurrencies.is_some(), "concurrencies");
        add(self.rates.is_some(), "rates");
        add(self.from.is_some(), "from");
        add(self.to.is_some(), "to");
        add(self.sessions.is_some(), "sessions");
        add(self.turns.is_some(), "turns");
        add(self.steps.is_some(), "steps");
        add(self.system_tokens.is_some(), "system_tokens");
        add(self.first_tokens.is_some(), "first_tokens");
        add(self.turn_tokens.is_some(), "turn_tokens");
        add(self.task_tokens.is_some(), "task_tokens");
        add(self.tool_result_tokens.is_some(), "tool_result_tokens");
        add(self.parallel_calls.is_some(), "parallel_calls");
        add(self.session_concurrency.is_some(), "session_concurrency");
        add(self.think_time.is_some(), "think_time");
        add(self.file.is_some(), "file");
        add(self.time_scale.is_some(), "time_scale");
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    api: Api,
    output_tokens: u32,
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default)]
    temperature: f64,
}

// ---------------------------------------------------------------------------------------------

/// The experiment files (`*.toml`) in `dir`, sorted by name.
pub fn discover(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and validates one experiment file. Its name is the file stem.
pub fn load(path: &Path) -> Result<Experiment, SpecError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        file: file.clone(),
        source,
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&file, &stem, &src)
}

/// Parses and validates `src`; `file` is for messages, `name` is the experiment's name.
pub fn parse(file: &str, name: &str, src: &str) -> Result<Experiment, SpecError> {
    let loc = Locator { file, src };
    let raw: RawExperiment = parse_toml(&loc)?;
    lower(&loc, name, raw)
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
}

fn lower(loc: &Locator<'_>, name: &str, raw: RawExperiment) -> Result<Experiment, SpecError> {
    if *raw.schema_version.get_ref() != SCHEMA_VERSION {
        return Err(loc.error(
            Some(raw.schema_version.span()),
            "schema_version",
            format!(
                "unsupported schema version {} (this inferlab reads {SCHEMA_VERSION})",
                raw.schema_version.get_ref()
            ),
        ));
    }
    if !is_identifier(name) {
        return Err(loc.error(
            None,
            "(file name)",
            format!("experiment name `{name}` (the file stem) must be letters, digits, `_` or `-`, starting with a letter"),
        ));
    }

    let targets_span = raw.targets.span();
    let mut targets = Vec::new();
    for (tname, t) in raw.targets.into_inner() {
        let span = t.span();
        let t = t.into_inner();
        let field = format!("targets.{tname}");
        if !is_identifier(&tname) {
            return Err(loc.error(
                Some(span),
                field,
                "target names must be letters, digits, `_` or `-`",
            ));
        }
        let kind = match (t.kind, TargetKind::from_name(&tname)) {
            (Some(k), _) => k,
            (None, Some(k)) => k,
            (None, None) => {
                return Err(loc.error(
                    Some(span),
                    format!("{field}.kind"),
                    format!("target `{tname}` needs a kind (one of vllm, sglang, llamacpp, openai, runpod_serverless); only targets named vllm, sglang or llamacpp get theirs from the name"),
                ));
            }
        };
        let continuous = t
            .continuous_usage_stats
            .unwrap_or(kind.supports_continuous_usage());
        targets.push(TargetSpec {
            name: tname,
            kind,
            continuous_usage_stats: continuous,
        });
    }
    if targets.is_empty() {
        return Err(loc.error(
            Some(targets_span),
            "targets",
            "at least one target is needed, e.g. `[targets.llamacpp]`",
        ));
    }

    let timeouts = {
        let d = Timeouts::default();
        let get = |v: Option<Spanned<String>>,
                   field: &str,
                   default: Duration|
         -> Result<Duration, SpecError> {
            match v {
                None => Ok(default),
                Some(s) => {
                    let d = parse_duration(s.get_ref())
                        .map_err(|m| loc.error(Some(s.span()), field, m))?;
                    if d.is_zero() {
                        return Err(loc.error(Some(s.span()), field, "must be longer than zero"));
                    }
                    Ok(d)
                }
            }
        };
        Timeouts {
            connect: get(raw.timeouts.connect, "timeouts.connect", d.connect)?,
            first_byte: get(raw.timeouts.first_byte, "timeouts.first_byte", d.first_byte)?,
            idle: get(raw.timeouts.idle, "timeouts.idle", d.idle)?,
            total: get(raw.timeouts.total, "timeouts.total", d.total)?,
        }
    };

    let slo = {
        let get = |v: Option<Spanned<String>>,
                   field: &str|
         -> Result<Option<Duration>, SpecError> {
            v.map(|s| parse_duration(s.get_ref()).map_err(|m| loc.error(Some(s.span()), field, m)))
                .transpose()
        };
        Slo {
            ttft: get(raw.slo.ttft, "slo.ttft")?,
            tpot: get(raw.slo.tpot, "slo.tpot")?,
            e2e: get(raw.slo.e2e, "slo.e2e")?,
        }
    };

    let phases_span = raw.phase.span();
    let mut phases: Vec<Phase> = Vec::new();
    let mut phase_spans = Vec::new();
    for (i, p) in raw.phase.into_inner().into_iter().enumerate() {
        phase_spans.push(p.span());
        let p = p.into_inner();
        let field = |f: &str| format!("phase[{i}].{f}");
        let pname = p.name.get_ref().clone();
        if !is_identifier(&pname) || pname == "all" {
            return Err(loc.error(
                Some(p.name.span()),
                field("name"),
                format!("phase name `{pname}` must be letters, digits or `_`, start with a letter, and not be `all` (it names the whole run in assertions)"),
            ));
        }
        if pname.contains('-') {
            return Err(loc.error(
                Some(p.name.span()),
                field("name"),
                "phase names are used in assertions: use `_` instead of `-`",
            ));
        }
        if phases.iter().any(|q| q.name == pname) {
            return Err(loc.error(
                Some(p.name.span()),
                field("name"),
                format!("duplicate phase name `{pname}`"),
            ));
        }
        let wspan = p.workload.span();
        let mut raw_workload = p.workload.into_inner();
        let lengths =
            |d: Option<Spanned<RawDist>>, name: &str| -> Result<Option<LengthDist>, SpecError> {
                d.map(|d| {
                    let span = d.span();
                    lower_dist(d.into_inner()).map_err(|m| loc.error(Some(span), field(name), m))
                })
                .transpose()
            };
        let input_lengths = lengths(p.input_lengths, "input_lengths")?;
        let output_lengths = lengths(p.output_lengths, "output_lengths")?;
        let takes_input_tokens = raw_workload.kind.allowed().contains(&"input_tokens");
        if let Some(d) = &input_lengths {
            if !takes_input_tokens {
                return Err(loc.error(Some(wspan.clone()), field("input_lengths"), format!("workload kind `{}` sets its own prompt lengths; `input_lengths` applies to kinds with `input_tokens`", raw_workload.kind.name())));
            }
            if raw_workload.input_tokens.is_some() {
                return Err(loc.error(
                    Some(wspan.clone()),
                    field("input_lengths"),
                    "give `input_tokens` or `input_lengths`, not both",
                ));
            }
            raw_workload.input_tokens = Some(d.typical());
        }
        let dataset = match p.prompts {
            None => None,
            Some(d) => {
                let span = d.span();
                let d = d.into_inner();
                let at = |m: String| loc.error(Some(span.clone()), field("prompts"), m);
                if !takes_input_tokens {
                    return Err(at(format!(
                        "workload kind `{}` makes its own prompts",
                        raw_workload.kind.name()
                    )));
                }
                if raw_workload.input_tokens.is_some() || input_lengths.is_some() {
                    return Err(at("prompts from a dataset have their own lengths: drop `input_tokens` / `input_lengths`".to_string()));
                }
                let path = Path::new(loc.file)
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(&d.file);
                let prompts = load_dataset(&path, d.format).map_err(at)?;
                let words: usize = prompts.iter().map(|p| p.split_whitespace().count()).sum();
                raw_workload.input_tokens = Some(((words / prompts.len()).max(1)) as u32);
                Some(Dataset {
                    file: d.file,
                    format: d.format,
                    prompts,
                })
            }
        };
        if output_lengths.is_some()
            && matches!(
                raw_workload.kind,
                WorkloadKind::Trace | WorkloadKind::MultiTurn | WorkloadKind::Agentic
            )
        {
            return Err(loc.error(
                Some(wspan.clone()),
                field("output_lengths"),
                format!(
                    "`output_lengths` does not apply to workload kind `{}`",
                    raw_workload.kind.name()
                ),
            ));
        }
        let warmup_duration = match &p.warmup_duration {
            None => None,
            Some(d) => match parse_duration(d.get_ref()) {
                Ok(v) if !v.is_zero() => Some(v),
                Ok(_) => {
                    return Err(loc.error(
                        Some(d.span()),
                        field("warmup_duration"),
                        "must be longer than zero",
                    ));
                }
                Err(m) => return Err(loc.error(Some(d.span()), field("warmup_duration"), m)),
            },
        };
        let lowered = lower_workload(
            loc,
            &field("workload"),
            wspan.clone(),
            raw_workload,
            &phases,
        )?;
        let rspan = p.request.span();
        let r = p.request.into_inner();
        if r.output_tokens == 0 {
            return Err(loc.error(
                Some(rspan),
                field("request.output_tokens"),
                "must be at least 1",
            ));
        }
        if !(0.0..=2.0).contains(&r.temperature) {
            return Err(loc.error(
                Some(rspan),
                field("request.temperature"),
                "must be between 0 and 2",
            ));
        }
        if r.api != Api::Chat
            && let Lowered::One(w) = &lowered
            && w.is_session()
        {
            return Err(loc.error(
                Some(rspan),
                field("request.api"),
                "multi_turn and agentic sessions are conversations: use api = \"chat\"",
            ));
        }
        let request = RequestShape {
            api: r.api,
            output_tokens: r.output_tokens,
            ignore_eos: r.ignore_eos,
            temperature: r.temperature,
        };
        let named: Vec<(String, Workload)> = match lowered {
            Lowered::One(mut workload) => {
                if let Workload::SharedPrefix { prefix_from, .. } = &mut workload
                    && prefix_from.is_empty()
                {
                    prefix_from.clone_from(&pname);
                }
                vec![(pname, workload)]
            }
            // A sweep's points are phases of their own, named `c8`, `r2.5`, …
            Lowered::Sweep(points) => points,
        };
        for (name, workload) in named {
            if phases.iter().any(|q| q.name == name) {
                return Err(loc.error(
                    Some(wspan.clone()),
                    field("workload"),
                    format!("phase `{name}` (from this sweep) already exists"),
                ));
            }
            phases.push(Phase {
                name,
                workload,
                request,
                warmup: p.warmup,
                warmup_duration,
                input_lengths,
                output_lengths,
                dataset: dataset.clone(),
            });
        }
    }
    if phases.is_empty() {
        return Err(loc.error(
            Some(phases_span),
            "phase",
            "at least one `[[phase]]` is needed",
        ));
    }

    let phase_names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
    let mut assertions = Vec::new();
    for (i, a) in raw.assertions.into_iter().enumerate() {
        let field = format!("assert[{i}].expr");
        let span = a.expr.span();
        let parsed = Assertion::parse(a.expr.get_ref())
            .and_then(|x| x.check(&phase_names).map(|()| x))
            .map_err(|e| loc.error_in_string(span.clone(), e.column, &field, e.message))?;
        if parsed.paths().iter().any(|p| p.metric == "goodput") && slo.is_empty() {
            return Err(loc.error(
                Some(span),
                field,
                "`goodput` needs an `[slo]` section (e.g. `ttft = \"200ms\"`)",
            ));
        }
        assertions.push(parsed);
    }

    let observe = Observe {
        metrics: raw.observe.metrics.unwrap_or(true),
        interval: match raw.observe.interval {
            None => Duration::from_millis(500),
            Some(s) => {
                let d = parse_duration(s.get_ref())
                    .map_err(|m| loc.error(Some(s.span()), "observe.interval", m))?;
                if d < Duration::from_millis(50) {
                    return Err(loc.error(
                        Some(s.span()),
                        "observe.interval",
                        "must be at least 50ms",
                    ));
                }
                d
            }
        },
    };

    let tokenizer = match &raw.model.tokenizer {
        None => None,
        Some(t) => {
            let path = Path::new(loc.file)
                .parent()
                .unwrap_or(Path::new("."))
                .join(t.get_ref());
            Some(
                crate::tokenize::ModelTokenizer::load(t.get_ref(), &path)
                    .map_err(|m| loc.error(Some(t.span()), "model.tokenizer", m))?,
            )
        }
    };

    // A serverless endpoint's first request after idle measures a cold start: each phase must
    // begin with a warmup request, which the summary reports apart.
    if let Some(t) = targets.iter().find(|t| t.kind.is_serverless())
        && let Some((i, p)) = phases
            .iter()
            .enumerate()
            .find(|(_, p)| p.warmup == 0 && p.warmup_duration.is_none())
    {
        return Err(loc.error(
            phase_spans.get(i).cloned(),
            format!("phase[{i}].warmup"),
            format!(
                "target `{}` is serverless: its first request after idle is a cold start, not a TTFT; give phase `{}` warmup = 1 or more (the summary reports it as the cold start)",
                t.name, p.name
            ),
        ));
    }

    Ok(Experiment {
        name: name.to_string(),
        description: raw.description,
        seed: raw.seed,
        targets,
        model: raw.model.name,
        tokenizer,
        timeouts,
        phases,
        slo,
        assertions,
        snapshot: SnapshotOptions {
            enabled: raw.snapshot.enabled,
            cached_tokens: raw.snapshot.cached_tokens,
        },
        observe,
        calibrate: raw.calibrate,
    })
}

/// Reads a JSONL trace; errors name the file, the line and the field.
fn load_trace(path: &Path) -> Result<Vec<TraceEntry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read trace {}: {e}", path.display()))?;
    let mut out: Vec<TraceEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| format!("{}:{}: {m}", path.display(), i + 1);
        let e: TraceEntry = serde_json::from_str(line).map_err(|e| at(format!("{e}")))?;
        if !e.timestamp.is_finite() || e.timestamp < 0.0 {
            return Err(at(format!(
                "timestamp: {} is not a non-negative number of seconds",
                e.timestamp
            )));
        }
        if let Some(prev) = out.last()
            && e.timestamp < prev.timestamp
        {
            return Err(at(format!(
                "timestamp: {} comes before the previous line's {} (traces must be sorted)",
                e.timestamp, prev.timestamp
            )));
        }
        if e.input_length == 0 || e.output_length == 0 {
            return Err(at(
                "input_length and output_length must be at least 1".to_string()
            ));
        }
        if e.prefix_length.is_some_and(|p| p > e.input_length) {
            return Err(at("prefix_length: longer than input_length".to_string()));
        }
        out.push(e);
    }
    if out.is_empty() {
        return Err(format!("trace {} has no entries", path.display()));
    }
    Ok(out)
}

/// A workload after lowering: most kinds are one phase, a sweep is one phase per point.
enum Lowered {
    One(Workload),
    Sweep(Vec<(String, Workload)>),
}

fn lower_workload(
    loc: &Locator<'_>,
    field: &str,
    span: Range<usize>,
    w: RawWorkload,
    earlier: &[Phase],
) -> Result<Lowered, SpecError> {
    let err = |f: &str, m: String| loc.error(Some(span.clone()), format!("{field}.{f}"), m);
    let kind_name = w.kind.name();
    for f in w.present() {
        if !w.kind.allowed().contains(&f) {
            return Err(err(
                f,
                format!(
                    "`{f}` does not apply to workload kind `{kind_name}` (it takes {})",
                    w.kind.allowed().join(", ")
                ),
            ));
        }
    }
    let require = |v: Option<u32>, f: &str| -> Result<u32, SpecError> {
        match v {
            None => Err(err(f, format!("workload kind `{kind_name}` needs `{f}`"))),
            Some(0) => Err(err(f, "must be at least 1".to_string())),
            Some(n) => Ok(n),
        }
    };
    let optional = |v: Option<u32>, f: &str| -> Result<Option<u32>, SpecError> {
        match v {
            Some(0) => Err(err(f, "must be at least 1".to_string())),
            v => Ok(v),
        }
    };
    let positive = |v: f64, f: &str| -> Result<f64, SpecError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(err(f, format!("must be a positive number, not {v}")))
        }
    };
    let duration = |v: &Option<String>| -> Result<Option<Duration>, SpecError> {
        v.as_deref()
            .map(|d| match parse_duration(d) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(err("duration", "must be longer than zero".to_string())),
                Err(m) => Err(err("duration", m)),
            })
            .transpose()
    };
    let arrival = |w: &RawWorkload| -> Result<Arrival, SpecError> {
        match (w.process, w.burstiness) {
            (None, _) => Err(err(
                "process",
                format!("workload kind `{kind_name}` needs `process` (constant, poisson or gamma)"),
            )),
            (Some(ProcessKind::Gamma), Some(b)) => Ok(Arrival::Gamma {
                burstiness: positive(b, "burstiness")?,
            }),
            (Some(ProcessKind::Gamma), None) => Err(err(
                "burstiness",
                "process `gamma` needs `burstiness` (1 is Poisson, below 1 is burstier)"
                    .to_string(),
            )),
            (Some(_), Some(_)) => Err(err(
                "burstiness",
                "`burstiness` applies to process `gamma` only".to_string(),
            )),
            (Some(ProcessKind::Constant), None) => Ok(Arrival::Constant),
            (Some(ProcessKind::Poisson), None) => Ok(Arrival::Poisson),
        }
    };
    Ok(Lowered::One(match w.kind {
        WorkloadKind::Single => Workload::Single {
            requests: require(w.requests, "requests")?,
            input_tokens: require(w.input_tokens, "input_tokens")?,
        },
        WorkloadKind::Concurrent => Workload::Concurrent {
            concurrency: require(w.concurrency, "concurrency")?,
            requests: require(w.requests, "requests")?,
            input_tokens: require(w.input_tokens, "input_tokens")?,
            duration: duration(&w.duration)?,
        },
        WorkloadKind::Batch => Workload::Batch {
            batch_size: require(w.batch_size, "batch_size")?,
            batches: require(w.batches, "batches")?,
            input_tokens: require(w.input_tokens, "input_tokens")?,
        },
        WorkloadKind::Rate => {
            let requests = optional(w.requests, "requests")?;
            let duration = duration(&w.duration)?;
            if requests.is_none() && duration.is_none() {
                return Err(err(
                    "requests",
                    "an open-loop phase needs `requests`, `duration` or both to end".to_string(),
                ));
            }
            Workload::Rate {
                process: arrival(&w)?,
                rate: positive(
                    w.rate.ok_or_else(|| {
                        err(
                            "rate",
                            "workload kind `rate` needs `rate` (requests per second)".to_string(),
                        )
                    })?,
                    "rate",
                )?,
                requests,
                duration,
                max_concurrency: optional(w.max_concurrency, "max_concurrency")?,
                input_tokens: require(w.input_tokens, "input_tokens")?,
            }
        }
        WorkloadKind::Ramp => {
            let Some(d) = duration(&w.duration)? else {
                return Err(err(
                    "duration",
                    "workload kind `ramp` needs `duration`".to_string(),
                ));
            };
            let from = positive(
                w.from.ok_or_else(|| {
                    err(
                        "from",
                        "workload kind `ramp` needs `from` (requests per second)".to_string(),
                    )
                })?,
                "from",
            )?;
            let to = positive(
                w.to.ok_or_else(|| {
                    err(
                        "to",
                        "workload kind `ramp` needs `to` (requests per second)".to_string(),
                    )
                })?,
                "to",
            )?;
            Workload::Ramp {
                from,
                to,
                duration: d,
                max_concurrency: optional(w.max_concurrency, "max_concurrency")?,
                input_tokens: require(w.input_tokens, "input_tokens")?,
            }
        }
        WorkloadKind::Trace => {
            let Some(file) = w.file.clone() else {
                return Err(err(
                    "file",
                    "workload kind `trace` needs `file` (a JSONL trace)".to_string(),
                ));
            };
            let time_scale = positive(w.time_scale.unwrap_or(1.0), "time_scale")?;
            let path = Path::new(loc.file)
                .parent()
                .unwrap_or(Path::new("."))
                .join(&file);
            let entries = load_trace(&path).map_err(|m| err("file", m))?;
            Workload::Trace {
                file,
                time_scale,
                max_concurrency: optional(w.max_concurrency, "max_concurrency")?,
                entries,
            }
        }
        WorkloadKind::MultiTurn | WorkloadKind::Agentic => {
            let think_time = match w.think_time.as_deref() {
                None => Duration::ZERO,
                Some(t) => parse_duration(t).map_err(|m| err("think_time", m))?,
            };
            let sessions = require(w.sessions, "sessions")?;
            let session_concurrency =
                optional(w.session_concurrency, "session_concurrency")?.unwrap_or(1);
            let system_tokens = optional(w.system_tokens, "system_tokens")?;
            if w.kind == WorkloadKind::MultiTurn {
                Workload::MultiTurn {
                    sessions,
                    turns: require(w.turns, "turns")?,
                    system_tokens,
                    first_tokens: require(w.first_tokens, "first_tokens")?,
                    turn_tokens: require(w.turn_tokens, "turn_tokens")?,
                    session_concurrency,
                    think_time,
                }
            } else {
                Workload::Agentic {
                    sessions,
                    steps: require(w.steps, "steps")?,
                    system_tokens,
                    task_tokens: require(w.task_tokens, "task_tokens")?,
                    tool_result_tokens: require(w.tool_result_tokens, "tool_result_tokens")?,
                    parallel_calls: optional(w.parallel_calls, "parallel_calls")?.unwrap_or(1),
                    session_concurrency,
                    think_time,
                }
            }
        }
        WorkloadKind::Sweep => {
            let input_tokens = require(w.input_tokens, "input_tokens")?;
            let points = match (&w.concurrencies, &w.rates) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "rates",
                        "a sweep takes `concurrencies` or `rates`, not both".to_string(),
                    ));
                }
                (None, None) => {
                    return Err(err(
                        "concurrencies",
                        "a sweep needs `concurrencies = [...]` or `rates = [...]`".to_string(),
                    ));
                }
                (Some(c), None) => {
                    if c.is_empty() {
                        return Err(err(
                            "concurrencies",
                            "an empty sweep: give at least one concurrency".to_string(),
                        ));
                    }
                    for (f, present) in [
                        ("process", w.process.is_some()),
                        ("max_concurrency", w.max_concurrency.is_some()),
                    ] {
                        if present {
                            return Err(err(f, format!("`{f}` applies to rate sweeps only")));
                        }
                    }
                    let requests = require(w.requests, "requests")?;
                    let closed_duration = duration(&w.duration)?;
                    c.iter()
                        .map(|&c| {
                            let c = require(Some(c), "concurrencies")?;
                            Ok((
                                format!("c{c}"),
                                Workload::Concurrent {
                                    concurrency: c,
                                    requests,
                                    input_tokens,
                                    duration: closed_duration,
                                },
                            ))
                        })
                        .collect::<Result<Vec<_>, SpecError>>()?
                }
                (None, Some(r)) => {
                    if r.is_empty() {
                        return Err(err(
                            "rates",
                            "an empty sweep: give at least one rate".to_string(),
                        ));
                    }
                    let requests = optional(w.requests, "requests")?;
                    let duration = duration(&w.duration)?;
                    if requests.is_none() && duration.is_none() {
                        return Err(err("requests", "each point of a rate sweep needs `requests`, `duration` or both to end".to_string()));
                    }
                    let process = arrival(&w)?;
                    let max_concurrency = optional(w.max_concurrency, "max_concurrency")?;
                    r.iter()
                        .map(|&rate| {
                            let rate = positive(rate, "rates")?;
                            Ok((
                                format!("r{rate}"),
                                Workload::Rate {
                                    process,
                                    rate,
                                    requests,
                                    duration,
                                    max_concurrency,
                                    input_tokens,
                                },
                            ))
                        })
                        .collect::<Result<Vec<_>, SpecError>>()?
                }
            };
            return Ok(Lowered::Sweep(points));
        }
        WorkloadKind::SharedPrefix => {
            let concurrency = match w.concurrency {
                None => 1,
                Some(_) => require(w.concurrency, "concurrency")?,
            };
            let suffixes = require(w.suffixes, "suffixes")?;
            let suffix_tokens = require(w.suffix_tokens, "suffix_tokens")?;
            match w.reuse {
                Some(from) => {
                    let Some(src) = earlier.iter().find(|p| p.name == from) else {
                        return Err(err(
                            "reuse",
                            format!("`reuse = \"{from}\"` must name an earlier phase"),
                        ));
                    };
                    let Workload::SharedPrefix {
                        groups,
                        prefix_tokens,
                        prefix_from,
                        ..
                    } = &src.workload
                    else {
                        return Err(err(
                            "reuse",
                            format!(
                                "phase `{from}` is not a shared_prefix phase: it has no prefix groups"
                            ),
                        ));
                    };
                    for (v, f, known) in [
                        (w.groups, "groups", *groups),
                        (w.prefix_tokens, "prefix_tokens", *prefix_tokens),
                    ] {
                        if v.is_some_and(|v| v != known) {
                            return Err(err(
                                f,
                                format!(
                                    "reused groups come from phase `{from}` ({f} = {known}); omit `{f}` or make it equal"
                                ),
                            ));
                        }
                    }
                    Workload::SharedPrefix {
                        groups: *groups,
                        prefix_tokens: *prefix_tokens,
                        suffixes,
                        suffix_tokens,
                        concurrency,
                        prefix_from: prefix_from.clone(),
                    }
                }
                None => Workload::SharedPrefix {
                    groups: require(w.groups, "groups")?,
                    prefix_tokens: require(w.prefix_tokens, "prefix_tokens")?,
                    suffixes,
                    suffix_tokens,
                    concurrency,
                    prefix_from: String::new(),
                },
            }
        }
    }))
}

impl Experiment {
    pub fn target(&self, name: &str) -> Option<&TargetSpec> {
        self.targets.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const GOOD: &str = r#"schema_version = 1
description = "prefix cache"
seed = 7

[targets.llamacpp]
[targets.mine]
kind = "openai"

[model]
name = "tiny"

[[phase]]
name = "cold"
workload = { kind = "shared_prefix", groups = 4, prefix_tokens = 100, suffixes = 1, suffix_tokens = 8 }
request = { api = "completions", output_tokens = 4, ignore_eos = true }

[[phase]]
name = "warm"
workload = { kind = "shared_prefix", reuse = "cold", suffixes = 2, suffix_tokens = 8 }
request = { api = "chat", output_tokens = 4 }

[slo]
ttft = "200ms"

[[assert]]
expr = "warm.ttft.p50 <= 0.5 * cold.ttft.p50"
"#;

    #[test]
    fn parses_a_complete_file() {
        let e = parse("x.toml", "x", GOOD).unwrap();
        assert_eq!(e.targets.len(), 2);
        assert_eq!(e.target("llamacpp").unwrap().kind, TargetKind::Llamacpp);
        assert_eq!(e.target("mine").unwrap().kind, TargetKind::Openai);
        assert_eq!(e.phases.len(), 2);
        assert_eq!(
            e.phases[1].workload,
            Workload::SharedPrefix {
                groups: 4,
                prefix_tokens: 100,
                suffixes: 2,
                suffix_tokens: 8,
                concurrency: 1,
                prefix_from: "cold".into()
            }
        );
        match &e.phases[0].workload {
            Workload::SharedPrefix { prefix_from, .. } => assert_eq!(prefix_from, "cold"),
            w => panic!("{w:?}"),
        }
        assert_eq!(e.slo.ttft, Some(Duration::from_millis(200)));
        assert_eq!(e.assertions.len(), 1);
        assert!(e.snapshot.enabled);
    }

    /// (replacement applied to GOOD, expected `line:column: field: message` fragment)
    #[rstest]
    #[case::syntax("seed = 7\n", "seed = = 7\n", "x.toml:3:8: (syntax):")]
    #[case::unknown_top(
        "seed = 7\n",
        "seed = 7\nsed = 1\n",
        "x.toml:4:1: sed: unknown field `sed`"
    )]
    #[case::wrong_type(
        "seed = 7\n",
        "seed = \"seven\"\n",
        "x.toml:3:8: seed: invalid type: string \"seven\", expected u64"
    )]
    #[case::unknown_kind(
        "kind = \"openai\"",
        "kind = \"tgi\"",
        "x.toml:7:8: targets.mine.kind: unknown variant `tgi`"
    )]
    #[case::kind_needed(
        "kind = \"openai\"",
        "",
        "targets.mine.kind: target `mine` needs a kind"
    )]
    #[case::unknown_workload_field(
        "groups = 4,",
        "grups = 4,",
        "x.toml:14:38: phase[0].workload.grups: unknown field `grups`"
    )]
    #[case::missing_field(
        "groups = 4, ",
        "",
        "x.toml:14:12: phase[0].workload.groups: workload kind `shared_prefix` needs `groups`"
    )]
    #[case::zero(
        "suffixes = 1,",
        "suffixes = 0,",
        "phase[0].workload.suffixes: must be at least 1"
    )]
    #[case::negative(
        "suffixes = 1,",
        "suffixes = -1,",
        "x.toml:14:82: phase[0].workload.suffixes: invalid value: integer `-1`, expected u32"
    )]
    #[case::bad_reuse(
        "reuse = \"cold\"",
        "reuse = \"hot\"",
        "phase[1].workload.reuse: `reuse = \"hot\"` must name an earlier phase"
    )]
    #[case::bad_api(
        "api = \"chat\"",
        "api = \"generate\"",
        "x.toml:20:19: phase[1].request.api: unknown variant `generate`"
    )]
    #[case::dup_phase(
        "name = \"warm\"",
        "name = \"cold\"",
        "x.toml:18:8: phase[1].name: duplicate phase name `cold`"
    )]
    #[case::bad_assert_syntax(
        "0.5 * cold",
        "0.5 ** cold",
        "x.toml:26:31: assert[0].expr: expected a number"
    )]
    #[case::assert_unknown_phase(
        "0.5 * cold",
        "0.5 * hot",
        "x.toml:26:32: assert[0].expr: unknown phase `hot`"
    )]
    #[case::assert_unknown_metric(
        "warm.ttft.p50",
        "warm.tfft.p50",
        "x.toml:26:9: assert[0].expr: unknown metric `tfft`"
    )]
    #[case::bad_duration("\"200ms\"", "\"200\"", "x.toml:23:8: slo.ttft: `200` needs a unit")]
    #[case::schema(
        "schema_version = 1",
        "schema_version = 2",
        "x.toml:1:18: schema_version: unsupported schema version 2"
    )]
    #[case::interval(
        "[slo]",
        "[observe]\ninterval = \"10ms\"\n[slo]",
        "x.toml:23:12: observe.interval: must be at least 50ms"
    )]
    #[case::warmup_duration(
        "name = \"cold\"",
        "name = \"cold\"\nwarmup_duration = \"5\"",
        "x.toml:14:19: phase[0].warmup_duration: `5` needs a unit"
    )]
    #[case::unknown_request_field(
        "ignore_eos = true",
        "ignore_eos = true, top_k = 3",
        "phase[0].request.top_k: unknown field `top_k`"
    )]
    fn errors_name_file_line_column_and_field(
        #[case] from: &str,
        #[case] to: &str,
        #[case] expected: &str,
    ) {
        assert!(GOOD.contains(from), "fixture lacks {from:?}");
        let src = GOOD.replacen(from, to, 1);
        let e = parse("x.toml", "x", &src).unwrap_err().to_string();
        assert!(e.contains(expected), "got: {e}\nexpected: {expected}");
        assert!(e.starts_with("x.toml:"), "{e}");
    }

    fn with_workload(w: &str) -> Result<Experiment, SpecError> {
        let src = format!(
            "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = {{ {w} }}\nrequest = {{ api = \"completions\", output_tokens = 4 }}\n"
        );
        parse("w.toml", "w", &src)
    }

    #[rstest]
    #[case::zero_rate(
        "kind = \"rate\", process = \"poisson\", rate = 0.0, requests = 5, input_tokens = 4",
        "phase[0].workload.rate: must be a positive number, not 0"
    )]
    #[case::negative_rate(
        "kind = \"rate\", process = \"poisson\", rate = -2.0, requests = 5, input_tokens = 4",
        "must be a positive number, not -2"
    )]
    #[case::no_end(
        "kind = \"rate\", process = \"poisson\", rate = 2.0, input_tokens = 4",
        "needs `requests`, `duration` or both"
    )]
    #[case::no_process(
        "kind = \"rate\", rate = 2.0, requests = 3, input_tokens = 4",
        "needs `process`"
    )]
    #[case::gamma_needs_b(
        "kind = \"rate\", process = \"gamma\", rate = 2.0, requests = 3, input_tokens = 4",
        "process `gamma` needs `burstiness`"
    )]
    #[case::b_only_gamma(
        "kind = \"rate\", process = \"poisson\", burstiness = 2.0, rate = 2.0, requests = 3, input_tokens = 4",
        "applies to process `gamma` only"
    )]
    #[case::bad_duration(
        "kind = \"rate\", process = \"constant\", rate = 2.0, duration = \"10\", input_tokens = 4",
        "phase[0].workload.duration: `10` needs a unit"
    )]
    #[case::empty_sweep(
        "kind = \"sweep\", rates = [], process = \"poisson\", requests = 3, input_tokens = 4",
        "an empty sweep"
    )]
    #[case::both_sweeps(
        "kind = \"sweep\", rates = [1.0], concurrencies = [1], requests = 3, input_tokens = 4",
        "not both"
    )]
    #[case::neither_sweep(
        "kind = \"sweep\", requests = 3, input_tokens = 4",
        "needs `concurrencies = [...]` or `rates = [...]`"
    )]
    #[case::zero_concurrency(
        "kind = \"sweep\", concurrencies = [1, 0], requests = 3, input_tokens = 4",
        "phase[0].workload.concurrencies: must be at least 1"
    )]
    #[case::not_applicable(
        "kind = \"single\", requests = 3, input_tokens = 4, rate = 2.0",
        "phase[0].workload.rate: `rate` does not apply to workload kind `single`"
    )]
    #[case::batch_needs(
        "kind = \"batch\", batch_size = 4, input_tokens = 4",
        "workload kind `batch` needs `batches`"
    )]
    #[case::ramp_needs_duration(
        "kind = \"ramp\", from = 1.0, to = 5.0, input_tokens = 4",
        "workload kind `ramp` needs `duration`"
    )]
    #[case::unknown_process(
        "kind = \"rate\", process = \"bursty\", rate = 2.0, requests = 3, input_tokens = 4",
        "unknown variant `bursty`"
    )]
    fn workload_errors(#[case] w: &str, #[case] expected: &str) {
        let e = with_workload(w).unwrap_err().to_string();
        assert!(e.contains(expected), "got: {e}\nexpected: {expected}");
        assert!(e.starts_with("w.toml:9:"), "{e}");
    }

    fn with_lengths(extra: &str) -> Result<Experiment, SpecError> {
        let src = format!(
            "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = {{ kind = \"concurrent\", concurrency = 2, requests = 4 }}\nrequest = {{ api = \"completions\", output_tokens = 4 }}\n{extra}\n"
        );
        parse("l.toml", "l", &src)
    }

    #[rstest]
    #[case(
        "input_lengths = { dist = \"lognormal\", median = 200, sigma = 0.5, min = 16, max = 1024 }",
        None
    )]
    #[case(
        "input_lengths = { dist = \"uniform\", min = 10, max = 20 }\noutput_lengths = { dist = \"normal\", mean = 32, stddev = 8, min = 4, max = 64 }",
        None
    )]
    #[case("input_lengths = { dist = \"fixed\", value = 30 }", None)]
    #[case("", Some("workload kind `concurrent` needs `input_tokens`"))]
    #[case(
        "input_lengths = { dist = \"lognormal\", median = 200 }",
        Some("l.toml:11:17: phase[0].input_lengths: this distribution needs `sigma`")
    )]
    #[case(
        "input_lengths = { dist = \"uniform\", min = 30, max = 20 }",
        Some("min 30 is above max 20")
    )]
    #[case(
        "input_lengths = { dist = \"uniform\", min = 10 }",
        Some("`uniform` needs `min` and `max`")
    )]
    #[case(
        "input_lengths = { dist = \"normal\", mean = -5, stddev = 1 }",
        Some("`mean` must be a positive number, not -5")
    )]
    #[case(
        "input_lengths = { dist = \"fixed\", value = 3, sigma = 1 }",
        Some("`sigma` does not apply")
    )]
    #[case(
        "input_lengths = { dist = \"zipf\", min = 1 }",
        Some("unknown variant `zipf`")
    )]
    fn length_distributions(#[case] extra: &str, #[case] error: Option<&str>) {
        match (with_lengths(extra), error) {
            (Ok(e), None) => assert!(e.phases[0].input_lengths.is_some()),
            (Err(e), Some(needle)) => {
                let e = e.to_string();
                assert!(e.contains(needle), "got: {e}\nexpected: {needle}");
            }
            (r, _) => panic!("{:?}", r.map(|e| e.phases[0].input_lengths)),
        }
    }

    #[test]
    fn open_loop_kinds_lower() {
        let e = with_workload("kind = \"rate\", process = \"gamma\", burstiness = 0.5, rate = 2.5, duration = \"10s\", max_concurrency = 8, input_tokens = 4").unwrap();
        assert_eq!(
            e.phases[0].workload,
            Workload::Rate {
                process: Arrival::Gamma { burstiness: 0.5 },
                rate: 2.5,
                requests: None,
                duration: Some(Duration::from_secs(10)),
                max_concurrency: Some(8),
                input_tokens: 4
            }
        );
        let e = with_workload("kind = \"sweep\", rates = [1, 2.5], process = \"constant\", requests = 3, input_tokens = 4").unwrap();
        let names: Vec<_> = e.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["r1", "r2.5"]);
    }

    #[test]
    fn trace_files_are_checked_line_by_line() {
        let dir = std::env::temp_dir().join(format!("inferlab-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exp_file = dir.join("t.toml");
        let cases = [
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2}\n{\"timestamp\": 1.5, \"input_length\": 8, \"output_length\": 2, \"prefix_id\": 1, \"prefix_length\": 4}\n",
                None,
            ),
            (
                "{\"timestamp\": 2, \"input_length\": 4, \"output_length\": 2}\n{\"timestamp\": 1, \"input_length\": 4, \"output_length\": 2}\n",
                Some("trace.jsonl:2: timestamp: 1 comes before the previous line's 2"),
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4}\n",
                Some("trace.jsonl:1: missing field `output_length`"),
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2, \"tokens\": 3}\n",
                Some("trace.jsonl:1: unknown field `tokens`"),
            ),
            (
                "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2, \"prefix_id\": 1, \"prefix_length\": 9}\n",
                Some("trace.jsonl:1: prefix_length: longer than input_length"),
            ),
            ("not json\n", Some("trace.jsonl:1: expected")),
            ("", Some("has no entries")),
        ];
        let src = "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = { kind = \"trace\", file = \"trace.jsonl\", time_scale = 0.5 }\nrequest = { api = \"completions\", output_tokens = 4 }\n";
        for (trace, expected) in cases {
            std::fs::write(dir.join("trace.jsonl"), trace).unwrap();
            let got = parse(&exp_file.display().to_string(), "t", src);
            match expected {
                None => {
                    let e = got.unwrap();
                    match &e.phases[0].workload {
                        Workload::Trace {
                            entries,
                            time_scale,
                            ..
                        } => {
                            assert_eq!(entries.len(), 2);
                            assert_eq!(*time_scale, 0.5);
                        }
                        w => panic!("{w:?}"),
                    }
                }
                Some(needle) => {
                    let e = got.unwrap_err().to_string();
                    assert!(e.contains(needle), "got: {e}\nexpected: {needle}");
                    assert!(e.contains("t.toml:9:12: phase[0].workload.file:"), "{e}");
                }
            }
        }
        std::fs::remove_file(dir.join("trace.jsonl")).unwrap();
        let e = parse(&exp_file.display().to_string(), "t", src)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read trace"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn prompt_datasets_load_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("inferlab-dataset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exp_file = dir.join("d.toml").display().to_string();
        let src = |format: &str, extra: &str| {
            format!(
                "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = {{ kind = \"concurrent\", concurrency = 2, requests = 5{extra} }}\nprompts = {{ file = \"data\", format = \"{format}\" }}\nrequest = {{ api = \"chat\", output_tokens = 4 }}\n"
            )
        };
        std::fs::write(
            dir.join("data"),
            r#"[{"id": "a", "conversations": [{"from": "human", "value": "How do tides work?"}, {"from": "gpt", "value": "The moon."}]},
                {"id": "b", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "Name a prime."}]},
                {"id": "c", "conversations": [{"from": "gpt", "value": "no human turn"}]}]"#,
        )
        .unwrap();
        let e = parse(&exp_file, "d", &src("sharegpt", "")).unwrap();
        let d = e.phases[0].dataset.as_ref().unwrap();
        assert_eq!(d.prompts, ["How do tides work?", "Name a prime."]);
        let s = crate::workload::schedule(&e, 1);
        let prompts: Vec<&str> = s.phases[0]
            .requests
            .iter()
            .map(|r| r.prompt.as_str())
            .collect();
        assert_eq!(
            prompts[2], "How do tides work?",
            "prompts cycle in file order"
        );
        assert_eq!(s.phases[0].requests[0].input_tokens, 4);
        let e = parse(&exp_file, "d", &src("sharegpt", ", input_tokens = 4"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("phase[0].prompts: prompts from a dataset have their own lengths"),
            "{e}"
        );
        std::fs::write(
            dir.join("data"),
            r#"[{"conversations": [{"from": "human"}]}]"#,
        )
        .unwrap();
        let e = parse(&exp_file, "d", &src("sharegpt", ""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[0].conversations[0]: missing field `value`"),
            "{e}"
        );
        std::fs::write(
            dir.join("data"),
            "{\"prompt\": \"one\"}\n{\"text\": \"two\"}\n",
        )
        .unwrap();
        let e = parse(&exp_file, "d", &src("jsonl", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data:2: unknown field `text`"), "{e}");
        std::fs::write(dir.join("data"), "{\"prompt\": \"one\"}\n").unwrap();
        assert!(parse(&exp_file, "d", &src("jsonl", "")).is_ok());
        std::fs::remove_file(dir.join("data")).unwrap();
        let e = parse(&exp_file, "d", &src("jsonl", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read dataset"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn goodput_needs_an_slo() {
        let src = GOOD
            .replace("[slo]\nttft = \"200ms\"\n", "")
            .replace("warm.ttft.p50 <= 0.5 * cold.ttft.p50", "warm.goodput > 1");
        let e = parse("x.toml", "x", &src).unwrap_err().to_string();
        assert!(e.contains("`goodput` needs an `[slo]`"), "{e}");
    }

    #[test]
    fn bad_file_name() {
        let e = parse("9x.toml", "9x", GOOD).unwrap_err().to_string();
        assert!(e.contains("(file name)"), "{e}");
    }

    #[rstest]
    #[case("250ms", Duration::from_millis(250))]
    #[case("1.5s", Duration::from_millis(1500))]
    #[case("2m", Duration::from_secs(120))]
    #[case("800us", Duration::from_micros(800))]
    fn durations(#[case] s: &str, #[case] d: Duration) {
        assert_eq!(parse_duration(s), Ok(d));
    }
}
