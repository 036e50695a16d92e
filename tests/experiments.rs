//! Every experiment file becomes tests: one trial per experiment × target, named
//! `<experiment>::<target>`, its kind the mode (`live`, `record`, `replay`). A trial that cannot
//! run is ignored with the reason; an experiment file that does not parse is a failing trial.
//!
//! `cargo test --test experiments -- prefix_cache` runs the prefix_cache trials. Trials run one
//! at a time unless `--test-threads` says otherwise: measurements must not compete.

use inferlab::report;
use inferlab::spec;
use inferlab::trial::{self, Plan, TrialOptions};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let dir = std::env::var("INFERLAB_EXPERIMENTS_DIR")
        .map_or_else(|_| root().join("experiments"), PathBuf::from);
    let files = match spec::discover(&dir) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("no experiment files in {}", dir.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let fixtures = root().join("wiremock-fixtures");
    let mut trials = Vec::new();
    for file in files {
        match spec::load(&file) {
            Err(e) => {
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let msg = e.to_string();
                trials.push(
                    Trial::test(format!("{stem}::(spec)"), move || Err(msg.into()))
                        .with_kind("invalid"),
                );
            }
            Ok(exp) => {
                for target in exp.targets.clone() {
                    let name = format!("{}::{}", exp.name, target.name);
                    let trial = match trial::plan(&exp, &target, &env, &fixtures) {
                        Err(e) => Trial::test(name, move || Err(e.into())).with_kind("invalid"),
                        Ok(Plan::Ignored { reason }) => Trial::ignorable_test(name, move || {
                            Ok(Completion::ignored_with(reason.clone()))
                        })
                        .with_kind("ignored"),
                        Ok(plan) => {
                            let kind = plan.mode().map_or("", |m| m.as_str());
                            let exp = exp.clone();
                            let fixtures = fixtures.clone();
                            Trial::test(name, move || run(&exp, &target, plan, &fixtures))
                                .with_kind(kind)
                        }
                    };
                    trials.push(trial);
                }
            }
        }
    }
    trials.sort_by(|a, b| a.name().cmp(b.name()));
    libtest_mimic::run(&args, trials).exit_code()
}

fn run(
    exp: &spec::Experiment,
    target: &spec::TargetSpec,
    plan: Plan,
    fixtures: &Path,
) -> Result<(), Failed> {
    let opts = TrialOptions {
        results_root: std::env::var("INFERLAB_RESULTS_DIR")
            .map_or_else(|_| root().join("results"), PathBuf::from),
        fixtures_root: fixtures.to_path_buf(),
        salt: env("INFERLAB_SALT").and_then(|s| s.parse().ok()),
        interrupt: None,
        cost_per_hour: None,
    };
    let rt = inferlab::run::client_runtime(None).map_err(|e| format!("runtime: {e}"))?;
    let out = rt
        .block_on(trial::run_trial(exp, target, plan, &opts))
        .map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    if !out.replay_unmatched.is_empty() {
        problems.push(format!(
            "{} request(s) had no recorded exchange; the experiment no longer matches its fixture (re-record with INFERLAB_RECORD=1 and a live target). First: {}",
            out.replay_unmatched.len(),
            out.replay_unmatched[0]
        ));
    }
    let failed: Vec<String> = out
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.to_string())
        .collect();
    if !failed.is_empty() {
        problems.push(format!("assertion(s) failed:\n{}", failed.join("\n")));
    }
    if !problems.is_empty() {
        return Err(format!(
            "{}\n\n{}results: {}",
            problems.join("\n"),
            report::phase_table(&out.summary),
            out.dir.display()
        )
        .into());
    }
    if exp.snapshot.enabled {
        let name = format!("{}__{}", exp.name, target.name);
        let view = out.snapshot.clone();
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(root().join("snapshots"));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.bind(|| insta::assert_json_snapshot!(name, view));
    }
    Ok(())
}
