//! Running the selected trials one after another, as `inferlab run` does (on this machine or,
//! through `runpod::matrix`, against a rented pod): each trial's progress goes to the caller
//! as an [`Event`] to print, and the outcome is one [`Exit`] and a line of headline figures
//! per trial.

use super::across::{self, AcrossOutcome, Ledger};
use super::{Exit, Selection, TrialEntry, discover, trials};
use crate::report::Mode;
use crate::spec::SpecError;
use crate::trial::{self, Plan, TrialError, TrialOptions, TrialOutcome};
use std::path::PathBuf;
use tokio::sync::watch;

/// What a run needs, owned (a deployed run hands it to a task of its own).
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub experiments: PathBuf,
    pub fixtures: PathBuf,
    pub results: PathBuf,
    /// Where assertions' baselines are.
    pub baselines: PathBuf,
    pub selection: Selection,
    /// Becomes `true` to stop (Ctrl-C): the trial in progress is summarised, later ones skipped.
    pub interrupt: Option<watch::Receiver<bool>>,
    /// The rented pod's price, when there is one.
    pub cost_per_hour: Option<f64>,
    /// Counts the run's requests for a progress line or a Prometheus endpoint.
    pub watch: Option<std::sync::Arc<crate::watch::Watch>>,
}

/// What happened, for the caller to show.
#[derive(Debug)]
pub enum Event<'a> {
    /// An experiment file that does not parse (nothing runs then).
    Invalid(&'a SpecError),
    /// A trial with neither a live target nor a fixture.
    Skipped {
        name: &'a str,
        reason: &'a str,
    },
    /// A trial whose target's variables are bad input.
    BadTarget {
        name: &'a str,
        error: &'a str,
    },
    Started {
        name: &'a str,
        mode: Mode,
    },
    Finished {
        name: &'a str,
        outcome: &'a TrialOutcome,
    },
    /// A trial across targets that ran.
    AcrossFinished {
        name: &'a str,
        outcome: &'a AcrossOutcome,
    },
    /// A trial that could not run to its end.
    Broken {
        name: &'a str,
        error: &'a TrialError,
    },
    /// The selection matched no trial.
    NoneSelected {
        filters: &'a [String],
    },
}

/// One trial's headline figures, for side-by-side tables.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialLine {
    pub trial: String,
    pub passed: bool,
    pub requests: u64,
    pub failed: u64,
    pub ttft_p50_ms: Option<f64>,
    pub tpot_p50_ms: Option<f64>,
    pub output_throughput: f64,
}

impl TrialLine {
    fn of(name: &str, out: &TrialOutcome) -> Self {
        let all = &out.summary.all;
        Self {
            trial: name.to_string(),
            passed: out.passed(),
            requests: all.requests,
            failed: all.failed,
            ttft_p50_ms: all.ttft.as_ref().map(|l| l.p50_ms),
            tpot_p50_ms: all.tpot.as_ref().map(|l| l.p50_ms),
            output_throughput: all.output_throughput,
        }
    }
}

/// What the selected trials did.
#[derive(Debug)]
pub struct RunResult {
    /// What this run means to the shell (success, failed, bad input or interrupted).
    pub code: Exit,
    /// Output tokens summed over every trial.
    pub output_tokens: u64,
    pub trials: Vec<TrialLine>,
}

impl RunResult {
    fn with(code: Exit) -> Self {
        Self {
            code,
            output_tokens: 0,
            trials: Vec::new(),
        }
    }
}

/// The options every trial of a run shares (the salt from `INFERLAB_SALT`; a missing baseline
/// fails on CI).
pub(super) fn options(args: &RunArgs, env: &dyn Fn(&str) -> Option<String>) -> TrialOptions {
    TrialOptions {
        watch: args.watch.clone(),
        results_root: args.results.clone(),
        fixtures_root: args.fixtures.clone(),
        salt: env("INFERLAB_SALT").and_then(|s| s.parse().ok()),
        interrupt: args.interrupt.clone(),
        cost_per_hour: args.cost_per_hour,
        baselines: trial::Baselines {
            root: args.baselines.clone(),
            required: crate::env::ci(env),
        },
    }
}

/// Whether the run goes on after a trial (an interrupted one stops it).
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// One trial of one target: run, reported through `on`, and counted in `result`.
async fn run_one(
    entry: TrialEntry<'_>,
    ledger: &Ledger,
    opts: &TrialOptions,
    on: &mut (dyn FnMut(Event<'_>) + Send),
    result: &mut RunResult,
) -> Flow {
    let name = entry.name.as_str();
    let plan = match entry.plan {
        Ok(Plan::Ignored { reason }) => {
            on(Event::Skipped {
                name,
                reason: &reason,
            });
            return Flow::Go;
        }
        Ok(plan) => plan,
        Err(error) => {
            on(Event::BadTarget {
                name,
                error: &error.to_string(),
            });
            result.code = result.code.max(Exit::BadInput);
            return Flow::Go;
        }
    };
    if let Some(mode) = plan.mode() {
        on(Event::Started { name, mode });
    }
    match trial::run_trial(entry.experiment, entry.target, plan, opts).await {
        Ok(outcome) => {
            ledger.put(&outcome.summary, &outcome.dir);
            on(Event::Finished {
                name,
                outcome: &outcome,
            });
            result.output_tokens += outcome.summary.all.output_tokens;
            result.trials.push(TrialLine::of(name, &outcome));
            if !outcome.passed() {
                result.code = result.code.max(Exit::Failed);
            }
            if outcome.summary.interrupted {
                result.code = Exit::Interrupted;
                return Flow::Stop;
            }
        }
        Err(error) => {
            on(Event::Broken {
                name,
                error: &error,
            });
            result.code = result.code.max(Exit::BadInput);
        }
    }
    Flow::Go
}

/// Runs the selected trials in name order; `env` reads the environment.
pub async fn run(
    args: RunArgs,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    on: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<RunResult, super::DiscoveryError> {
    let found = discover(&args.experiments)?;
    for (_, e) in &found.invalid {
        on(Event::Invalid(e));
    }
    if !found.invalid.is_empty() {
        return Ok(RunResult::with(Exit::BadInput));
    }
    let opts = options(&args, env);
    let selected = trials(&found.experiments, &args.selection, env, &args.fixtures);
    let across = across::entries(&found.experiments, &args.selection, env, &args.fixtures);
    if selected.is_empty() && across.is_empty() {
        on(Event::NoneSelected {
            filters: &args.selection.filters,
        });
        return Ok(RunResult::with(Exit::BadInput));
    }
    let mut result = RunResult::with(Exit::Success);
    let ledger = Ledger::default();
    for entry in selected {
        if run_one(entry, &ledger, &opts, on, &mut result).await == Flow::Stop {
            return Ok(result);
        }
    }
    for entry in &across {
        run_across(entry, &ledger, &opts, on, &mut result).await;
    }
    Ok(result)
}

/// One trial across targets, after the per-target trials that filled `ledger`.
async fn run_across(
    entry: &across::AcrossEntry<'_>,
    ledger: &Ledger,
    opts: &TrialOptions,
    on: &mut (dyn FnMut(Event<'_>) + Send),
    result: &mut RunResult,
) {
    let name = entry.name.as_str();
    let mode = match &entry.plan {
        Ok(mode) => *mode,
        Err(reason) => {
            on(Event::Skipped {
                name,
                reason: &reason.to_string(),
            });
            return;
        }
    };
    on(Event::Started { name, mode });
    match across::run(entry, ledger, opts).await {
        Ok(outcome) => {
            on(Event::AcrossFinished {
                name,
                outcome: &outcome,
            });
            if !outcome.passed() {
                result.code = result.code.max(Exit::Failed);
            }
        }
        Err(error) => {
            on(Event::Broken {
                name,
                error: &error,
            });
            result.code = result.code.max(Exit::BadInput);
        }
    }
}
