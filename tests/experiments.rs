//! Every experiment file becomes tests: one trial per experiment × target, named
//! `<experiment>::<target>`, its kind the mode (`live`, `record`, `replay`). A trial that cannot
//! run is ignored with the reason; an experiment file that does not parse is a failing trial.
//! Discovery, naming and judging are `inferlab::harness`'s, shared with the CLI.
//!
//! `cargo test --test experiments -- prefix_cache` runs the prefix_cache trials. Trials run one
//! at a time unless `--test-threads` says otherwise: measurements must not compete.

use inferlab::harness::{self, Selection, TrialEntry};
use inferlab::trial::{self, Plan, TrialOptions};
use libtest_mimic::{Arguments, Completion, Trial};
use std::path::PathBuf;
use std::process::ExitCode;

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
    for entry in harness::trials(&found.experiments, &Selection::default(), &env, &fixtures) {
        trials.push(trial_of(entry, fixtures.clone()));
    }
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    libtest_mimic::run(&args, trials).exit_code()
}

fn trial_of(entry: TrialEntry<'_>, fixtures: PathBuf) -> Trial {
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
                let opts = TrialOptions {
                    results_root: inferlab::env::process("INFERLAB_RESULTS_DIR")
                        .map_or_else(|| root().join("results"), PathBuf::from),
                    fixtures_root: fixtures,
                    salt: inferlab::env::process("INFERLAB_SALT").and_then(|s| s.parse().ok()),
                    interrupt: None,
                    cost_per_hour: None,
                };
                let rt =
                    inferlab::run::client_runtime(None).map_err(|e| format!("runtime: {e}"))?;
                let out = rt
                    .block_on(trial::run_trial(&exp, &target, plan, &opts))
                    .map_err(|e| e.to_string())?;
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
