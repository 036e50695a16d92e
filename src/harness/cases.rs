//! The generated tests' trials (`tests/experiments.rs`): every experiment file × target as a
//! case that runs the trial, judges it and hands back its snapshot; each experiment's trial
//! across targets after its per-target ones; a file that does not parse as a failing case.
//! The test binary only wraps each case for libtest-mimic and compares the snapshot.

use super::across::{self, ACROSS, AcrossEntry, Ledger};
use super::{DiscoveryError, Selection, TrialEntry, discover, failure, snapshot_name, trials};
use crate::report::SnapshotView;
use crate::trial::{self, Plan, TrialOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs a case: `Ok` with the snapshot to compare (named like its file), if the experiment
/// keeps one; `Err` says why the trial failed.
pub type Runner = Box<dyn FnOnce() -> Result<Option<(String, SnapshotView)>, String> + Send>;

pub struct Case {
    pub name: String,
    /// `live`, `record`, `replay`, `ignored` or `invalid`.
    pub kind: &'static str,
    pub run: CaseRun,
}

pub enum CaseRun {
    Ignored(String),
    /// Fails with this message without running (a bad file or target).
    Fails(String),
    Run(Runner),
}

/// The cases of the experiments in `INFERLAB_EXPERIMENTS_DIR` (default `<root>/experiments`),
/// against fixtures in `<root>/wiremock-fixtures`, sorted by name with each trial across
/// targets after its experiment's per-target trials.
pub fn all(root: &Path, env: fn(&str) -> Option<String>) -> Result<Vec<Case>, DiscoveryError> {
    let dir =
        env("INFERLAB_EXPERIMENTS_DIR").map_or_else(|| root.join("experiments"), PathBuf::from);
    let found = discover(&dir)?;
    let fixtures = root.join("wiremock-fixtures");
    let options = Arc::new(options(root, &fixtures, env));
    let mut cases: Vec<Case> = found
        .invalid
        .into_iter()
        .map(|(stem, e)| Case {
            name: format!("{stem}::(spec)"),
            kind: "invalid",
            run: CaseRun::Fails(e.to_string()),
        })
        .collect();
    let ledger = Arc::new(Ledger::default());
    let all = Selection::default();
    for entry in trials(&found.experiments, &all, &env, &fixtures) {
        cases.push(per_target(entry, &options, &ledger));
    }
    for entry in across::entries(&found.experiments, &all, &env, &fixtures) {
        cases.push(across_targets(entry, &options, &ledger));
    }
    cases.sort_by_cached_key(|c| {
        let (exp, target) = c.name.split_once("::").unwrap_or((&c.name, ""));
        (exp.to_string(), target == ACROSS, target.to_string())
    });
    Ok(cases)
}

/// Results and baselines where the environment says (defaults under `root`), then the options
/// a run of `inferlab run` would have.
fn options(root: &Path, fixtures: &Path, env: fn(&str) -> Option<String>) -> TrialOptions {
    let dir = |var: &str, default: &str| env(var).map_or_else(|| root.join(default), PathBuf::from);
    let args = super::RunArgs {
        experiments: dir("INFERLAB_EXPERIMENTS_DIR", "experiments"),
        fixtures: fixtures.to_path_buf(),
        results: dir("INFERLAB_RESULTS_DIR", "results"),
        baselines: dir("INFERLAB_BASELINES_DIR", "baselines"),
        selection: Selection::default(),
        interrupt: None,
        cost_per_hour: None,
        watch: None,
    };
    super::run::options(&args, &env)
}

fn per_target(entry: TrialEntry<'_>, options: &Arc<TrialOptions>, ledger: &Arc<Ledger>) -> Case {
    let plan = match entry.plan {
        Err(e) => return fails(entry.name, e.to_string()),
        Ok(Plan::Ignored { reason }) => return ignored(entry.name, reason),
        Ok(plan) => plan,
    };
    let kind = plan.mode().map_or("", |m| m.as_str());
    let (exp, target) = (entry.experiment.clone(), entry.target.clone());
    let (options, ledger) = (options.clone(), ledger.clone());
    let run: Runner = Box::new(move || {
        let out = crate::run::client_runtime(None)
            .map_err(|e| format!("runtime: {e}"))?
            .block_on(trial::run_trial(&exp, &target, plan, &options))
            .map_err(|e| e.to_string())?;
        ledger.put(&out.summary, &out.dir);
        if let Some(why) = failure(&out) {
            return Err(why);
        }
        Ok(exp
            .snapshot
            .enabled
            .then(|| (snapshot_name(&exp, &target), out.snapshot)))
    });
    Case {
        name: entry.name,
        kind,
        run: CaseRun::Run(run),
    }
}

fn across_targets(
    entry: AcrossEntry<'_>,
    options: &Arc<TrialOptions>,
    ledger: &Arc<Ledger>,
) -> Case {
    let mode = match entry.plan {
        Ok(mode) => mode,
        Err(reason) => return ignored(entry.name, reason.to_string()),
    };
    let exp = entry.experiment.clone();
    let targets: Vec<_> = entry
        .targets
        .iter()
        .map(|(t, plan)| ((*t).clone(), plan.clone()))
        .collect();
    let name = entry.name.clone();
    let (options, ledger) = (options.clone(), ledger.clone());
    let run: Runner = Box::new(move || {
        let entry = AcrossEntry {
            name,
            experiment: &exp,
            targets: targets.iter().map(|(t, p)| (t, p.clone())).collect(),
            plan: Ok(mode),
        };
        let out = crate::run::client_runtime(None)
            .map_err(|e| format!("runtime: {e}"))?
            .block_on(across::run(&entry, &ledger, &options))
            .map_err(|e| e.to_string())?;
        if let Some(why) = across::failure(&out) {
            return Err(why);
        }
        Ok(None)
    });
    Case {
        name: entry.name,
        kind: mode.as_str(),
        run: CaseRun::Run(run),
    }
}

fn fails(name: String, why: String) -> Case {
    Case {
        name,
        kind: "invalid",
        run: CaseRun::Fails(why),
    }
}

fn ignored(name: String, reason: String) -> Case {
    Case {
        name,
        kind: "ignored",
        run: CaseRun::Ignored(reason),
    }
}
