//! Every experiment file becomes tests: one trial per experiment × target, named
//! `<experiment>::<target>`, its kind the mode (`live`, `record`, `replay`). A trial that cannot
//! run is ignored with the reason; an experiment file that does not parse is a failing trial.
//! Discovery, naming and judging are `inferlab::harness`'s, shared with the CLI.
//!
//! `cargo test --test experiments -- prefix_cache` runs the prefix_cache trials. Trials run one
//! at a time unless `--test-threads` says otherwise: measurements must not compete. An
//! experiment with assertions across targets has `<experiment>::(targets)` too, run after its
//! per-target trials and reading their summaries.

use inferlab::harness::across::{self, ACROSS, AcrossEntry, Ledger};
use inferlab::harness::{self, Selection, TrialEntry};
use inferlab::trial::{self, Baselines, Plan, TrialOptions};
use libtest_mimic::{Arguments, Completion, Trial};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads.get_or_insert(1);
    let env = inferlab::env::process;
    let dir =
        env("INFERLAB_EXPERIMENTS_DIR").map_or_else(|| root().join("experiments"), PathBuf::from);
    let found = match harness::discover(&dir) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let fixtures = root().join("wiremock-fixtures");
    let mut trials: Vec<Trial> = found
        .invalid
        .into_iter()
        .map(|(stem, e)| {
            let msg = e.to_string();
            Trial::test(format!("{stem}::(spec)"), move || Err(msg.into())).with_kind("invalid")
        })
        .collect();
    let ledger = Arc::new(Ledger::default());
    for entry in harness::trials(&found.experiments, &Selection::default(), &env, &fixtures) {
        trials.push(trial_of(entry, fixtures.clone(), ledger.clone()));
    }
    for entry in across::entries(&found.experiments, &Selection::default(), &env, &fixtures) {
        trials.push(across_trial(entry, fixtures.clone(), ledger.clone()));
    }
    // By name, except that an experiment's trial across targets follows its per-target ones.
    trials.sort_by_cached_key(|t| {
        let (exp, target) = t.name().split_once("::").unwrap_or((t.name(), ""));
        (exp.to_string(), target == ACROSS, target.to_string())
    });
    libtest_mimic::run(&args, trials).exit_code()
}

fn options(fixtures: PathBuf) -> TrialOptions {
    TrialOptions {
        watch: None,
        results_root: inferlab::env::process("INFERLAB_RESULTS_DIR")
            .map_or_else(|| root().join("results"), PathBuf::from),
        fixtures_root: fixtures,
        salt: inferlab::env::process("INFERLAB_SALT").and_then(|s| s.parse().ok()),
        interrupt: None,
        cost_per_hour: None,
        baselines: Baselines {
            root: inferlab::env::process("INFERLAB_BASELINES_DIR")
                .map_or_else(|| root().join("baselines"), PathBuf::from),
            required: inferlab::env::ci(&inferlab::env::process),
        },
    }
}

fn across_trial(entry: AcrossEntry<'_>, fixtures: PathBuf, ledger: Arc<Ledger>) -> Trial {
    let name = entry.name.clone();
    let mode = match &entry.plan {
        Ok(mode) => *mode,
        Err(reason) => {
            let reason = reason.clone();
            return Trial::ignorable_test(name, move || {
                Ok(Completion::ignored_with(reason.clone()))
            })
            .with_kind("ignored");
        }
    };
    let exp = entry.experiment.clone();
    let targets: Vec<_> = entry
        .targets
        .iter()
        .map(|(t, plan)| ((*t).clone(), plan.clone()))
        .collect();
    Trial::test(name.clone(), move || {
        let entry = AcrossEntry {
            name,
            experiment: &exp,
            targets: targets.iter().map(|(t, p)| (t, p.clone())).collect(),
            plan: Ok(mode),
        };
        let rt = inferlab::run::client_runtime(None).map_err(|e| format!("runtime: {e}"))?;
        let out = rt
            .block_on(across::run(&entry, &ledger, &options(fixtures)))
            .map_err(|e| e.to_string())?;
        across::judge(&out).map_err(Into::into)
    })
    .with_kind(mode.as_str())
}

fn trial_of(entry: TrialEntry<'_>, fixtures: PathBuf, ledger: Arc<Ledger>) -> Trial {
    let (exp, target) = (entry.experiment.clone(), entry.target.clone());
    match entry.plan {
        Err(e) => Trial::test(entry.name, move || Err(e.into())).with_kind("invalid"),
        Ok(Plan::Ignored { reason }) => Trial::ignorable_test(entry.name, move || {
            Ok(Completion::ignored_with(reason.clone()))
        })
        .with_kind("ignored"),
        Ok(plan) => {
            let kind = plan.mode().map_or("", |m| m.as_str());
            Trial::test(entry.name, move || {
                let rt =
                    inferlab::run::client_runtime(None).map_err(|e| format!("runtime: {e}"))?;
                let out = rt
                    .block_on(trial::run_trial(&exp, &target, plan, &options(fixtures)))
                    .map_err(|e| e.to_string())?;
                ledger.put(&out.summary, &out.dir);
                harness::judge(&out)?;
                if exp.snapshot.enabled {
                    let mut settings = insta::Settings::clone_current();
                    settings.set_snapshot_path(root().join("snapshots"));
                    settings.set_prepend_module_to_snapshot(false);
                    settings.set_omit_expression(true);
                    let name = harness::snapshot_name(&exp, &target);
                    settings.bind(|| insta::assert_json_snapshot!(name, out.snapshot));
                }
                Ok(())
            })
            .with_kind(kind)
        }
    }
}
