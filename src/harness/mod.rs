//! Trials from experiment files: discovery, selection and the trial list, shared by the CLI
//! (`list`, `run`, `run --deploy`) and the generated tests (`tests/experiments.rs`), so all of
//! them name, select and judge a trial the same way.
//!
//! An experiment file × one of its targets is a trial named `<experiment>::<target>`; the list
//! is sorted by name. An experiment with assertions across targets also has
//! `<experiment>::(targets)` (`across`), which follows its per-target trials. Discovery that
//! finds no file is an error, never an empty success.

pub mod across;
pub mod cases;
pub mod console;
mod exit;
mod run;

pub use exit::Exit;
pub use run::{Event, RunArgs, RunResult, TrialLine, run};

use crate::env::TargetSource;
use crate::report;
use crate::spec::{Experiment, SpecError, TargetSpec};
use crate::spec_io;
use crate::trial::{Plan, TrialOutcome};
use std::path::{Path, PathBuf};

/// A flag that turns true on the first Ctrl-C (a second one exits at once, as usual); call it
/// on the runtime that runs the trials.
pub fn interrupt_on_ctrl_c() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ninterrupted: finishing the results of what completed (Ctrl-C again to quit)"
            );
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(Exit::Interrupted.code().into());
            }
        }
    });
    rx
}

/// Why no experiment could be discovered.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read {dir}: {source}")]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no experiment files (*.toml) in {dir}")]
    Empty { dir: PathBuf },
}

/// Every experiment file in a directory: those that parse, and the errors of those that do not.
#[derive(Debug)]
pub struct Discovered {
    pub experiments: Vec<Experiment>,
    /// `(file stem, error)` for each file that does not parse.
    pub invalid: Vec<(String, SpecError)>,
}

/// Loads every `*.toml` in `dir` (sorted by file name).
pub fn discover(dir: &Path) -> Result<Discovered, DiscoveryError> {
    let files = spec_io::discover(dir).map_err(|source| DiscoveryError::Read {
        dir: dir.to_path_buf(),
        source,
    })?;
    if files.is_empty() {
        return Err(DiscoveryError::Empty {
            dir: dir.to_path_buf(),
        });
    }
    let mut out = Discovered {
        experiments: Vec::new(),
        invalid: Vec::new(),
    };
    for f in files {
        match spec_io::load(&f) {
            Ok(e) => out.experiments.push(e),
            Err(e) => {
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.invalid.push((stem, e));
            }
        }
    }
    Ok(out)
}

/// `<experiment>::<target>`.
pub fn trial_name(exp: &Experiment, target: &TargetSpec) -> String {
    format!("{}::{}", exp.name, target.name)
}

/// `<experiment>__<target>`: the snapshot's name in `snapshots/`.
pub fn snapshot_name(exp: &Experiment, target: &TargetSpec) -> String {
    format!("{}__{}", exp.name, target.name)
}

/// Which trials a command runs: those whose name contains any filter (all, without filters),
/// and only one target's when `target` is set.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filters: Vec<String>,
    pub target: Option<String>,
    /// Where the selected targets are, whatever their variables say (the pod `run --deploy`
    /// rented for `target`).
    pub source: Option<TargetSource>,
}

impl Selection {
    pub fn matches(&self, exp: &Experiment, target: &TargetSpec) -> bool {
        let name = trial_name(exp, target);
        self.target.as_ref().is_none_or(|t| *t == target.name)
            && (self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str())))
    }
}

/// One selected trial and what the environment and fixtures decided for it.
#[derive(Debug)]
pub struct TrialEntry<'a> {
    pub name: String,
    pub experiment: &'a Experiment,
    pub target: &'a TargetSpec,
    /// `Err`: the target's environment is bad input (e.g. a malformed URL).
    pub plan: Result<Plan, crate::env::EnvError>,
}

/// The selected trials of `exps`, planned with `env` and the fixtures under `fixtures`, sorted
/// by name.
pub fn trials<'a>(
    exps: &'a [Experiment],
    selection: &Selection,
    env: &dyn Fn(&str) -> Option<String>,
    fixtures: &Path,
) -> Vec<TrialEntry<'a>> {
    let mut out: Vec<TrialEntry<'a>> = exps
        .iter()
        .flat_map(|e| e.targets.iter().map(move |t| (e, t)))
        .filter(|(e, t)| selection.matches(e, t))
        .map(|(e, t)| TrialEntry {
            name: trial_name(e, t),
            experiment: e,
            target: t,
            plan: match &selection.source {
                Some(source) => crate::trial::plan_at(e, t, source.clone(), env, fixtures),
                None => crate::trial::plan(e, t, env, fixtures),
            },
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Why a trial that ran did not pass, with its numbers: replayed requests that matched no
/// recorded exchange, failed assertions, then the phase table and where the results are.
/// `None` when it passed.
pub fn failure(out: &TrialOutcome) -> Option<String> {
    let mut problems = Vec::new();
    if let Some(first) = out.replay_unmatched.first() {
        problems.push(format!(
            "{} request(s) had no recorded exchange; the experiment no longer matches its fixture (re-record with INFERLAB_RECORD=1 and a live target). First: {first}",
            out.replay_unmatched.len(),
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
    if problems.is_empty() {
        return None;
    }
    Some(format!(
        "{}\n\n{}results: {}",
        problems.join("\n"),
        report::phase_table(&out.summary),
        out.dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(name: &str, targets: &[&str]) -> Experiment {
        let mut src = String::from(
            "schema_version = 1\ndescription = \"d\"\nseed = 1\n[model]\nname = \"m\"\n[[phase]]\nname = \"a\"\nworkload = { kind = \"concurrent\", concurrency = 1, requests = 1, input_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 2 }\n",
        );
        for t in targets {
            src.push_str(&format!("[targets.{t}]\nkind = \"openai\"\n"));
        }
        spec_io::parse(&format!("{name}.toml"), name, &src).unwrap()
    }

    #[test]
    fn trials_are_selected_by_substring_and_target_and_sorted() {
        let exps = [exp("zeta", &["vllm", "sglang"]), exp("alpha", &["vllm"])];
        let none = |_: &str| None;
        let fixtures = Path::new("/nonexistent");
        let names = |sel: &Selection| -> Vec<String> {
            trials(&exps, sel, &none, fixtures)
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        assert_eq!(
            names(&Selection::default()),
            ["alpha::vllm", "zeta::sglang", "zeta::vllm"]
        );
        let by_filter = Selection {
            filters: vec!["zeta".into(), "alpha::".into()],
            ..Selection::default()
        };
        assert_eq!(
            names(&by_filter),
            ["alpha::vllm", "zeta::sglang", "zeta::vllm"]
        );
        let by_target = Selection {
            filters: vec!["zeta".into()],
            target: Some("vllm".into()),
            ..Selection::default()
        };
        assert_eq!(names(&by_target), ["zeta::vllm"]);
        let nothing = Selection {
            filters: vec!["nope".into()],
            ..Selection::default()
        };
        assert!(names(&nothing).is_empty());
    }

    #[test]
    fn without_an_endpoint_or_fixture_a_trial_is_ignored_with_the_variable_to_set() {
        let exps = [exp("e", &["my-box"])];
        let t = trials(&exps, &Selection::default(), &|_| None, Path::new("/x"));
        match &t[0].plan {
            Ok(Plan::Ignored { reason }) => assert!(reason.contains("INFERLAB_MY_BOX_URL")),
            p => panic!("{p:?}"),
        }
        let env = |k: &str| (k == "INFERLAB_MY_BOX_URL").then(|| "not a url".to_string());
        let t = trials(&exps, &Selection::default(), &env, Path::new("/x"));
        assert!(t[0].plan.is_err(), "{:?}", t[0].plan);
        let on_pod = Selection {
            source: Some(TargetSource::Pod {
                id: "pod1".into(),
                port: "8000".into(),
            }),
            ..Selection::default()
        };
        let proxy = |k: &str| {
            (k == "INFERLAB_RUNPOD_PROXY").then(|| "http://127.0.0.1:9/{pod}/{port}".to_string())
        };
        let t = trials(&exps, &on_pod, &proxy, Path::new("/x"));
        match &t[0].plan {
            Ok(Plan::Live { endpoint, .. }) => {
                assert_eq!(endpoint.base_url, "http://127.0.0.1:9/pod1/8000")
            }
            p => panic!("the pod wins over an unset URL: {p:?}"),
        }
    }

    #[test]
    fn names_follow_the_conventions() {
        let e = exp("prefix_cache", &["vllm"]);
        assert_eq!(trial_name(&e, &e.targets[0]), "prefix_cache::vllm");
        assert_eq!(snapshot_name(&e, &e.targets[0]), "prefix_cache__vllm");
    }

    #[test]
    fn discovery_that_finds_nothing_fails() {
        let dir = std::env::temp_dir().join(format!("inferlab-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(discover(&dir), Err(DiscoveryError::Empty { .. })));
        std::fs::write(dir.join("bad.toml"), "schema_version = 1\nnope = 3\n").unwrap();
        let d = discover(&dir).unwrap();
        assert!(d.experiments.is_empty());
        assert_eq!(d.invalid[0].0, "bad");
        assert!(d.invalid[0].1.to_string().contains("bad.toml:"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(discover(&dir), Err(DiscoveryError::Read { .. })));
    }
}
