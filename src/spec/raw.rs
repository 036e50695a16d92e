//! The file as written: serde structs that reject unknown fields and keep the spans errors
//! point at. Lowering (`lower`, `phase`, `workload`) turns them into the model.

use super::{Api, DatasetFormat};
use crate::core::engine::TargetKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum DistKind {
    Fixed,
    Uniform,
    Normal,
    Lognormal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDist {
    pub(super) dist: DistKind,
    pub(super) value: Option<u32>,
    pub(super) mean: Option<f64>,
    pub(super) median: Option<f64>,
    pub(super) stddev: Option<f64>,
    pub(super) sigma: Option<f64>,
    pub(super) min: Option<u32>,
    pub(super) max: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataset {
    pub(super) file: String,
    pub(super) format: DatasetFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExperiment {
    pub(super) schema_version: Spanned<u32>,
    pub(super) description: String,
    pub(super) seed: u64,
    pub(super) targets: Spanned<BTreeMap<String, Spanned<RawTarget>>>,
    pub(super) model: RawModel,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    pub(super) phase: Spanned<Vec<Spanned<RawPhase>>>,
    #[serde(default)]
    pub(super) slo: RawSlo,
    #[serde(default, rename = "assert")]
    pub(super) assertions: Vec<RawAssert>,
    #[serde(default)]
    pub(super) snapshot: RawSnapshot,
    #[serde(default)]
    pub(super) observe: RawObserve,
    #[serde(default)]
    pub(super) calibrate: bool,
    /// Run the phases this many times, each time with fresh prompts.
    pub(super) repeats: Option<Spanned<u32>>,
    /// An inconclusive verdict fails.
    #[serde(default)]
    pub(super) strict: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawObserve {
    pub(super) metrics: Option<bool>,
    pub(super) interval: Option<Spanned<String>>,
    /// Figures per time slice of this width, besides per phase.
    pub(super) slice: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) kind: Option<TargetKind>,
    pub(super) continuous_usage_stats: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) name: String,
    /// A local tokenizer.json (relative to the experiment file): exact prompt lengths.
    pub(super) tokenizer: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<Spanned<String>>,
    pub(super) first_byte: Option<Spanned<String>>,
    pub(super) idle: Option<Spanned<String>>,
    pub(super) total: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlo {
    pub(super) ttft: Option<Spanned<String>>,
    pub(super) tpot: Option<Spanned<String>>,
    pub(super) e2e: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssert {
    pub(super) expr: Spanned<String>,
    /// Only on these targets (every target when absent).
    pub(super) targets: Option<Spanned<Vec<String>>>,
    /// Only when the trial runs in these modes (`live`, `replay`; both when absent).
    pub(super) modes: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSnapshot {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default)]
    pub(super) cached_tokens: bool,
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
pub(super) struct RawPhase {
    pub(super) name: Spanned<String>,
    pub(super) workload: Spanned<RawWorkload>,
    pub(super) request: Spanned<RawRequest>,
    #[serde(default)]
    pub(super) warmup: u32,
    pub(super) warmup_duration: Option<Spanned<String>>,
    pub(super) input_lengths: Option<Spanned<RawDist>>,
    pub(super) output_lengths: Option<Spanned<RawDist>>,
    pub(super) prompts: Option<Spanned<RawDataset>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum WorkloadKind {
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
    Capacity,
}

impl WorkloadKind {
    pub(super) fn name(self) -> &'static str {
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
            WorkloadKind::Capacity => "capacity",
        }
    }

    /// The fields this kind accepts besides `kind`.
    pub(super) fn allowed(self) -> &'static [&'static str] {
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
            WorkloadKind::Capacity => &[
                "over",
                "min",
                "max",
                "step",
                "max_probes",
                "slo",
                "requests",
                "input_tokens",
                "process",
                "burstiness",
                "max_concurrency",
            ],
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
pub(super) enum ProcessKind {
    Constant,
    Poisson,
    Gamma,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) kind: WorkloadKind,
    pub(super) requests: Option<u32>,
    pub(super) input_tokens: Option<u32>,
    pub(super) concurrency: Option<u32>,
    pub(super) groups: Option<u32>,
    pub(super) prefix_tokens: Option<u32>,
    pub(super) suffixes: Option<u32>,
    pub(super) suffix_tokens: Option<u32>,
    pub(super) reuse: Option<String>,
    pub(super) batch_size: Option<u32>,
    pub(super) batches: Option<u32>,
    pub(super) process: Option<ProcessKind>,
    pub(super) rate: Option<f64>,
    pub(super) burstiness: Option<f64>,
    pub(super) duration: Option<String>,
    pub(super) max_concurrency: Option<u32>,
    pub(super) concurrencies: Option<Vec<u32>>,
    pub(super) rates: Option<Vec<f64>>,
    pub(super) from: Option<f64>,
    pub(super) to: Option<f64>,
    pub(super) sessions: Option<u32>,
    pub(super) turns: Option<u32>,
    pub(super) steps: Option<u32>,
    pub(super) system_tokens: Option<u32>,
    pub(super) first_tokens: Option<u32>,
    pub(super) turn_tokens: Option<u32>,
    pub(super) task_tokens: Option<u32>,
    pub(super) tool_result_tokens: Option<u32>,
    pub(super) parallel_calls: Option<u32>,
    pub(super) session_concurrency: Option<u32>,
    pub(super) think_time: Option<String>,
    pub(super) file: Option<String>,
    pub(super) time_scale: Option<f64>,
    pub(super) over: Option<CapacityOverKind>,
    pub(super) min: Option<f64>,
    pub(super) max: Option<f64>,
    pub(super) step: Option<f64>,
    pub(super) max_probes: Option<u32>,
    pub(super) slo: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum CapacityOverKind {
    Concurrency,
    Rate,
}

impl RawWorkload {
    pub(super) fn present(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut add = |present: bool, name: &'static str| {
            if present {
                out.push(name);
            }
        };
        add(self.requests.is_some(), "requests");
        add(self.over.is_some(), "over");
        add(self.min.is_some(), "min");
        add(self.max.is_some(), "max");
        add(self.step.is_some(), "step");
        add(self.max_probes.is_some(), "max_probes");
        add(self.slo.is_some(), "slo");
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
pub(super) struct RawRequest {
    pub(super) api: Api,
    pub(super) output_tokens: u32,
    #[serde(default)]
    pub(super) ignore_eos: bool,
    #[serde(default)]
    pub(super) temperature: f64,
}
