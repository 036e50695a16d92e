//! The deterministic view of a run that snapshots hold: the resolved configuration, counts,
//! token totals, error kinds and coarse figures, stable on a loaded machine.

use super::RunSummary;
use super::dto::WorkloadDto;
use crate::core::server::ServerSummary;
use crate::spec::{Experiment, RequestShape};
use serde::Serialize;
use std::collections::BTreeMap;

/// What a snapshot holds: only what is deterministic for a given experiment and server
/// behaviour — configuration, counts, token totals, error kinds, assertion outcomes. No timing.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotView {
    pub experiment: String,
    pub target: String,
    pub target_kind: String,
    pub seed: u64,
    pub model: String,
    /// How many times the phases ran (absent: once).
    #[serde(skip_serializing_if = "is_one")]
    pub repeats: u32,
    pub phases: Vec<SnapshotPhase>,
    pub assertions: Vec<SnapshotAssertion>,
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPhase {
    pub name: String,
    /// The workload as results files describe it (units in the field names).
    pub workload: WorkloadDto,
    pub request: RequestShape,
    pub warmup: u32,
    pub requests: u64,
    pub succeeded: u64,
    pub errors: BTreeMap<String, u64>,
    /// Absent for conversations: their prompts carry the server's answers, whose token counts
    /// vary between live runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    pub usage_missing: u64,
    /// Canonical server series the engine reported over the phase (names only: values vary).
    pub server_series: Vec<String>,
    /// The deterministic part of the fidelity block (achieved rates and KS vary with load).
    pub fidelity: SnapshotFidelity,
}

/// Fidelity figures that depend only on the schedule and the server's token accounting,
/// rounded to 3 decimals.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFidelity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_length_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_length_ratio: Option<f64>,
}

fn round3(x: Option<f64>) -> Option<f64> {
    x.map(|v| (v * 1000.0).round() / 1000.0)
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotAssertion {
    pub expr: String,
    pub passed: bool,
}

pub fn snapshot_view(
    exp: &Experiment,
    target: &str,
    model: &str,
    summary: &RunSummary,
) -> SnapshotView {
    let kind = exp
        .target(target)
        .map_or_else(String::new, |t| t.kind.to_string());
    SnapshotView {
        experiment: exp.name.clone(),
        target: target.to_string(),
        target_kind: kind,
        seed: exp.seed,
        model: model.to_string(),
        repeats: exp.repeats,
        phases: exp
            .phases
            .iter()
            .filter_map(|p| {
                let s = summary.phase(&p.name)?;
                Some(SnapshotPhase {
                    name: p.name.clone(),
                    workload: WorkloadDto::of(&p.workload),
                    request: p.request,
                    warmup: p.warmup,
                    requests: s.requests,
                    succeeded: s.succeeded,
                    errors: s.errors.clone(),
                    prompt_tokens: (!p.workload.is_session()).then_some(s.prompt_tokens),
                    output_tokens: s.output_tokens,
                    cached_tokens: exp.snapshot.cached_tokens.then_some(s.cached_tokens),
                    usage_missing: s.usage_missing,
                    server_series: summary
                        .server(&p.name)
                        .map(server_series)
                        .unwrap_or_default(),
                    fidelity: {
                        let f = summary
                            .phases
                            .iter()
                            .find(|n| n.name == p.name)
                            .map(|n| n.fidelity);
                        SnapshotFidelity {
                            declared_rate: f.and_then(|f| f.declared_rate),
                            scheduled_rate: round3(f.and_then(|f| f.scheduled_rate)),
                            output_length_ratio: round3(f.and_then(|f| f.output_length_ratio)),
                            input_length_ratio: round3(f.and_then(|f| f.input_length_ratio)),
                        }
                    },
                })
            })
            .collect(),
        assertions: summary
            .assertions
            .iter()
            .map(|a| SnapshotAssertion {
                expr: a.expr.clone(),
                passed: a.passed,
            })
            .collect(),
    }
}

fn server_series(s: &ServerSummary) -> Vec<String> {
    let mut names: Vec<String> = s.gauges.keys().chain(s.deltas.keys()).cloned().collect();
    names.sort();
    names
}
