//! The run's summary: the tallied phases with the server's and the platform's view, the cost
//! of a rented pod's share, serverless cold starts, and the verdicts of the experiment's
//! assertions, which read the summary they are stored in.

use super::tally::Tallied;
use crate::core::assert::{Assertion, Lookup, Outcome, Path as MetricPath, Verdict};
use crate::core::baseline::{Baseline, BaselineState};
use crate::core::catalog::Value;
use crate::core::interval::Repeated;
use crate::core::record::Health;
use crate::core::record::RequestRecord;
use crate::core::record::ScrapeRecord;
use crate::report::{self, Cost, RunSummary, Serverless, ServerlessPhase, VerdictRow};
use crate::report::{Mode, PromptLengths, ServerMetrics};
use crate::spec::{Experiment, TargetSpec};
use std::collections::{BTreeMap, HashMap};

/// What the summary is made of besides the tally.
pub struct Parts<'a> {
    pub mode: Mode,
    pub prompt_lengths: PromptLengths,
    pub scrapes: &'a [ScrapeRecord],
    pub health: BTreeMap<String, Health>,
    pub interrupted: bool,
    pub cost_per_hour: Option<f64>,
    /// Verdicts closer than this (seconds) to their threshold say so.
    pub noise_floor: Option<f64>,
    /// The baseline assertions read, when one does.
    pub baseline: BaselineState,
    /// Which repeats these are (see [`report::Repeats::pairing`]).
    pub pairing: String,
    /// What each capacity search found, by its phase.
    pub capacity: BTreeMap<String, report::Capacity>,
}

/// The summary, with its verdicts both inside it and returned.
pub fn summarize(
    exp: &Experiment,
    target: &TargetSpec,
    tallied: Tallied,
    parts: Parts,
) -> (RunSummary, Vec<Verdict>) {
    let Tallied {
        mut phases,
        all,
        all_intervals,
        all_server,
        first_warmup,
        slices,
        ..
    } = tallied;
    let mut capacity = parts.capacity.clone();
    for p in &mut phases {
        p.capacity = capacity.remove(&p.name);
    }
    let mut summary = RunSummary {
        schema_version: report::RESULTS_SCHEMA_VERSION,
        experiment: exp.name.clone(),
        target: target.name.clone(),
        mode: parts.mode,
        prompt_lengths: parts.prompt_lengths,
        cost: parts
            .cost_per_hour
            .map(|h| cost(h, all.duration_s, all.output_tokens)),
        phases,
        all,
        all_intervals,
        repeats: (exp.repeats > 1).then_some(report::Repeats {
            repeats: exp.repeats,
            method: crate::core::interval::METHOD.into(),
            confidence: crate::core::interval::CONFIDENCE,
            pairing: parts.pairing.clone(),
            note: report::REPEATS_NOTE.into(),
        }),
        all_server,
        server_metrics: server_metrics_status(exp, target, parts.scrapes),
        interrupted: parts.interrupted,
        // Filled in below: the assertions read the summary they are stored in.
        assertions: Vec::new(),
        serverless: target
            .kind
            .is_serverless()
            .then(|| serverless(exp, parts.health, &first_warmup)),
        recovered: None,
        slices: slices.map(|slices| report::Slices {
            width_s: exp.observe.slice.map_or(0.0, |d| d.as_secs_f64()),
            note: report::SLICES_NOTE.into(),
            slices,
        }),
    };
    let judge = Judge {
        exp,
        target,
        mode: parts.mode,
        baseline: &parts.baseline,
        noise_floor: parts.noise_floor,
    };
    let verdicts: Vec<Verdict> = exp
        .assertions
        .iter()
        .filter(|a| a.applies_to(&target.name))
        .map(|a| judge.verdict(a, &summary))
        .collect();
    summary.assertions = verdicts.iter().map(VerdictRow::from).collect();
    (summary, verdicts)
}

/// What an assertion of the run is judged with.
struct Judge<'a> {
    exp: &'a Experiment,
    target: &'a TargetSpec,
    mode: Mode,
    baseline: &'a BaselineState,
    noise_floor: Option<f64>,
}

impl Judge<'_> {
    fn verdict(&self, a: &Assertion, summary: &RunSummary) -> Verdict {
        // Listed either way, so a snapshot holds the same assertions in every mode.
        if !a.applies_in(self.mode) {
            let modes: Vec<&str> = a.modes.iter().map(|m| m.as_str()).collect();
            return a.not_evaluated(
                Outcome::Skipped,
                format!(
                    "not checked in {} mode (modes = [{}])",
                    self.mode.as_str(),
                    modes.join(", ")
                ),
            );
        }
        let baseline = match self.baseline {
            BaselineState::Loaded(b) => Some(&**b),
            _ if a.reads_baseline() => {
                return without_baseline(a, self.baseline, self.exp, self.target);
            }
            _ => None,
        };
        let lookup = Against {
            run: summary,
            baseline,
        };
        Verdict {
            noise_floor: self.noise_floor,
            ..a.evaluate(&lookup)
        }
        .strict(self.exp.strict)
    }
}

/// The run's figures, and the baseline's for `baseline.` paths.
struct Against<'a> {
    run: &'a RunSummary,
    baseline: Option<&'a Baseline>,
}

impl Lookup for Against<'_> {
    fn value(&self, p: &MetricPath) -> Option<Value> {
        self.estimate(p).map(|(v, _)| v)
    }

    fn estimate(&self, p: &MetricPath) -> Option<(Value, Option<Repeated>)> {
        if p.baseline {
            self.baseline?.estimate(p)
        } else {
            self.run.estimate(p)
        }
    }
}

/// The verdict of an assertion whose baseline is missing (skipped with a hint, or failed where
/// baselines are required) or unusable (failed).
fn without_baseline(
    a: &Assertion,
    state: &BaselineState,
    exp: &Experiment,
    target: &TargetSpec,
) -> Verdict {
    let save = format!(
        "save one from a run with `inferlab baseline save {}::{}` and commit it",
        exp.name, target.name
    );
    let (outcome, reason) = match state {
        BaselineState::Missing { file, required } => (
            if *required {
                Outcome::Failed
            } else {
                Outcome::Skipped
            },
            format!(
                "no baseline: {} does not exist{}; {save}",
                file.display(),
                if *required {
                    " (required on CI)"
                } else {
                    ", so this was not checked"
                }
            ),
        ),
        BaselineState::Broken(why) => (Outcome::Failed, format!("unusable baseline: {why}")),
        BaselineState::NotNeeded | BaselineState::Loaded(_) => {
            (Outcome::Failed, "no baseline was read".to_string())
        }
    };
    a.not_evaluated(outcome, reason)
}

/// A trial's share of a rented pod's price: its measured duration at the hourly rate.
fn cost(per_hour: f64, duration_s: f64, output_tokens: u64) -> Cost {
    let usd = per_hour * duration_s / 3600.0;
    Cost {
        per_hour_usd: per_hour,
        trial_usd: usd,
        per_million_output_tokens_usd: (output_tokens > 0)
            .then(|| usd * 1e6 / output_tokens as f64),
    }
}

/// Per phase: the endpoint's health around it and its first warmup request, the cold start.
fn serverless(
    exp: &Experiment,
    mut health: BTreeMap<String, Health>,
    first_warmup: &HashMap<String, RequestRecord>,
) -> Serverless {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let phases = exp
        .phases
        .iter()
        .map(|p| {
            let h = health.remove(&p.name).unwrap_or_default();
            let warm_before = h.before.as_ref().and_then(|h| {
                let n = |k: &str| h.pointer(&format!("/workers/{k}")).and_then(|v| v.as_u64());
                Some(n("idle")? + n("running")? > 0)
            });
            let w = first_warmup.get(&p.name);
            let phase = ServerlessPhase {
                health_before: h.before,
                health_after: h.after,
                warm_before,
                cold_start_ttft_ms: w.and_then(|r| r.ttft()).map(ms),
                cold_start_e2e_ms: w.filter(|r| r.ok()).and_then(|r| r.e2e()).map(ms),
                cold_start_error: w
                    .and_then(|r| r.failure.as_ref())
                    .map(|f| f.kind.to_string()),
            };
            (p.name.clone(), phase)
        })
        .collect();
    Serverless {
        note: report::SERVERLESS_NOTE.into(),
        phases,
    }
}

/// Whether server metrics were collected.
fn server_metrics_status(
    exp: &Experiment,
    target: &TargetSpec,
    scrapes: &[ScrapeRecord],
) -> ServerMetrics {
    if !target.kind.serves_metrics() {
        return ServerMetrics::NotServed(target.kind);
    }
    if !exp.observe.metrics {
        return ServerMetrics::Off;
    }
    let metrics: Vec<&ScrapeRecord> = scrapes.iter().filter(|r| !r.is_gpu()).collect();
    let ok = metrics.iter().filter(|r| r.error.is_none()).count();
    if ok > 0 {
        return ServerMetrics::Scraped {
            ok,
            of: metrics.len(),
        };
    }
    ServerMetrics::Unavailable(metrics.iter().find_map(|r| r.error.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_cost_is_its_share_of_the_hour_and_per_million_output_tokens() {
        let c = cost(3.6, 100.0, 50_000);
        assert!((c.trial_usd - 0.1).abs() < 1e-12);
        assert!((c.per_million_output_tokens_usd.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(cost(3.6, 100.0, 0).per_million_output_tokens_usd, None);
    }
}
