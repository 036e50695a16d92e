//! Assertions across targets (`sglang.warm.ttft.p50 <= 1.2 * vllm.warm.ttft.p50`) in a trial of
//! their own, `<experiment>::(targets)`, after the experiment's per-target trials: it reads the
//! summaries those trials left in a [`Ledger`], and runs a target's trial itself when this
//! process has not (the trial was filtered out, or ran on another thread). Every target it reads
//! must run the same way — all live or all replayed: a live run beside a recording compares two
//! machines, not two engines.

use super::Selection;
use crate::core::assert::{Lookup, Path as MetricPath, Verdict};
use crate::core::catalog::Value;
use crate::core::interval::Repeated;
use crate::report::{Mode, RunSummary};
use crate::spec::{Experiment, TargetSpec};
use crate::trial::{self, Plan, TrialError, TrialOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The name such a trial gets after `<experiment>::`.
pub const ACROSS: &str = "(targets)";

/// A trial's summary and its results directory.
type Entry = (Arc<RunSummary>, PathBuf);

/// Summaries of the trials this process ran, by experiment and target.
#[derive(Debug, Default)]
pub struct Ledger(Mutex<BTreeMap<(String, String), Entry>>);

impl Ledger {
    /// Keeps a trial's summary and results directory for the trials across targets.
    pub fn put(&self, summary: &RunSummary, dir: &Path) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(
                (summary.experiment.clone(), summary.target.clone()),
                (Arc::new(summary.clone()), dir.to_path_buf()),
            );
        }
    }

    fn get(&self, experiment: &str, target: &str) -> Option<Entry> {
        let m = self.0.lock().ok()?;
        m.get(&(experiment.to_string(), target.to_string()))
            .cloned()
    }
}

/// One experiment's trial across targets and what the environment and fixtures decided.
#[derive(Debug)]
pub struct AcrossEntry<'a> {
    pub name: String,
    pub experiment: &'a Experiment,
    /// The targets its assertions read, with each one's plan.
    pub targets: Vec<(&'a TargetSpec, Plan)>,
    /// How it runs, or why it cannot (a target with neither endpoint nor fixture, bad target
    /// variables, or targets that would run in different modes).
    pub plan: Result<Mode, NoMode>,
}

/// Why a trial across targets cannot run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoMode {
    #[error("target {target}: {source}")]
    Env {
        target: String,
        #[source]
        source: crate::env::EnvError,
    },
    #[error("needs target {target}: {reason}")]
    Needs { target: String, reason: String },
    #[error(
        "{} live but {} replayed: a comparison needs every target live (start them all) or every one replayed",
        .live.join(", "),
        .replayed.join(", ")
    )]
    Mixed {
        live: Vec<String>,
        replayed: Vec<String>,
    },
}

/// The selected trials across targets: one per experiment with such assertions, unless the
/// selection is of one target (`--target`, a pod's), or its filters miss the trial's name.
pub fn entries<'a>(
    exps: &'a [Experiment],
    selection: &Selection,
    env: &dyn Fn(&str) -> Option<String>,
    fixtures: &Path,
) -> Vec<AcrossEntry<'a>> {
    if selection.target.is_some() || selection.source.is_some() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for exp in exps {
        let mut read: Vec<&str> = exp
            .assertions
            .iter()
            .flat_map(|a| a.targets_read())
            .collect();
        if read.is_empty() {
            continue;
        }
        read.sort_unstable();
        read.dedup();
        let name = format!("{}::{ACROSS}", exp.name);
        if !selection.filters.is_empty() && !selection.filters.iter().any(|f| name.contains(f)) {
            continue;
        }
        let mut targets = Vec::new();
        let mut problem = None;
        for t in exp
            .targets
            .iter()
            .filter(|t| read.contains(&t.name.as_str()))
        {
            match trial::plan(exp, t, env, fixtures) {
                Ok(plan) => targets.push((t, plan)),
                Err(source) => {
                    problem = problem.or(Some(NoMode::Env {
                        target: t.name.clone(),
                        source,
                    }));
                }
            }
        }
        let plan = match problem {
            Some(p) => Err(p),
            None => mode_of(&targets),
        };
        out.push(AcrossEntry {
            name,
            experiment: exp,
            targets,
            plan,
        });
    }
    out
}

/// One mode for every target, or why there is none.
fn mode_of(targets: &[(&TargetSpec, Plan)]) -> Result<Mode, NoMode> {
    if let Some((t, Plan::Ignored { reason })) = targets
        .iter()
        .find(|(_, p)| matches!(p, Plan::Ignored { .. }))
    {
        return Err(NoMode::Needs {
            target: t.name.clone(),
            reason: reason.clone(),
        });
    }
    let names = |live: bool| -> Vec<String> {
        targets
            .iter()
            .filter(|(_, p)| matches!(p, Plan::Live { .. }) == live)
            .map(|(t, _)| t.name.clone())
            .collect()
    };
    let (live, replayed) = (names(true), names(false));
    match (live.is_empty(), replayed.is_empty()) {
        (true, _) => Ok(Mode::Replay),
        (false, true) => Ok(Mode::Live),
        (false, false) => Err(NoMode::Mixed { live, replayed }),
    }
}

/// What a trial across targets found.
#[derive(Debug)]
pub struct AcrossOutcome {
    pub mode: Mode,
    pub verdicts: Vec<Verdict>,
    /// Each target's results directory.
    pub runs: Vec<(String, PathBuf)>,
}

impl AcrossOutcome {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }
}

/// Reads each target's summary from `ledger` (running its trial first when it has none there)
/// and evaluates the experiment's assertions across targets.
pub async fn run(
    entry: &AcrossEntry<'_>,
    ledger: &Ledger,
    opts: &TrialOptions,
) -> Result<AcrossOutcome, TrialError> {
    let exp = entry.experiment;
    let mode = entry.plan.clone().unwrap_or(Mode::Replay);
    let mut summaries: BTreeMap<String, Arc<RunSummary>> = BTreeMap::new();
    let mut runs = Vec::new();
    for (target, plan) in &entry.targets {
        let (summary, dir) = match ledger.get(&exp.name, &target.name) {
            Some(found) => found,
            None => {
                let out = trial::run_trial(exp, target, plan.clone(), opts).await?;
                ledger.put(&out.summary, &out.dir);
                (Arc::new(out.summary), out.dir)
            }
        };
        summaries.insert(target.name.clone(), summary);
        runs.push((target.name.clone(), dir));
    }
    let lookup = Across(&summaries);
    let verdicts = exp
        .assertions
        .iter()
        .filter(|a| a.is_across_targets())
        .map(|a| a.evaluate(&lookup).strict(exp.strict))
        .collect();
    Ok(AcrossOutcome {
        mode,
        verdicts,
        runs,
    })
}

/// Why a trial across targets did not pass, with every number; `None` when it passed.
pub fn failure(out: &AcrossOutcome) -> Option<String> {
    let failed: Vec<String> = out
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.to_string())
        .collect();
    if failed.is_empty() {
        return None;
    }
    let runs: Vec<String> = out
        .runs
        .iter()
        .map(|(t, dir)| format!("{t}: {}", dir.display()))
        .collect();
    Some(format!(
        "assertion(s) across targets failed:\n{}\n\nresults: {}",
        failed.join("\n"),
        runs.join(", ")
    ))
}

/// Each path read from the summary of the target it names.
struct Across<'a>(&'a BTreeMap<String, Arc<RunSummary>>);

impl Lookup for Across<'_> {
    fn value(&self, path: &MetricPath) -> Option<Value> {
        self.0.get(path.target.as_deref()?)?.value(path)
    }

    fn estimate(&self, path: &MetricPath) -> Option<(Value, Option<Repeated>)> {
        self.0.get(path.target.as_deref()?)?.estimate(path)
    }
}
