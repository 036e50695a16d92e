//! Shared setup for trials run by tests: a scratch directory, a target's environment, and one
//! call to plan and run — instead of a copy of that setup in every test.

use inferlab::spec::Experiment;
use inferlab::trial::{self, TrialError, TrialOptions, TrialOutcome};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh, empty directory for one test (`inferlab-<name>-<pid>` under the temp dir).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("inferlab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One experiment's trial against one target, with its environment spelled out.
pub struct TrialBuilder {
    root: PathBuf,
    target: String,
    vars: Vec<(String, String)>,
}

impl TrialBuilder {
    /// Target `box`, no variables, results and fixtures in a scratch directory of its own
    /// (named after `name`; tests running at once never share one).
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            root: scratch(&format!("{name}-{n}")),
            target: "box".into(),
            vars: Vec::new(),
        }
    }

    pub fn target(mut self, name: &str) -> Self {
        self.target = name.into();
        self
    }

    /// Sets an environment variable the trial sees (the process environment is not read).
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    /// The target is live at `url`.
    pub fn url(self, url: &str) -> Self {
        let name = inferlab::env::target_var(&self.target, "URL");
        self.var(&name, url)
    }

    /// Live runs write the target's fixture.
    pub fn record(self) -> Self {
        self.var("INFERLAB_RECORD", "1")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn fixtures(&self) -> PathBuf {
        self.root.join("fixtures")
    }

    pub fn opts(&self) -> TrialOptions {
        TrialOptions {
            watch: None,
            results_root: self.root.join("results"),
            fixtures_root: self.fixtures(),
            salt: None,
            interrupt: None,
            cost_per_hour: None,
            baselines: Default::default(),
        }
    }

    /// Plans with the variables set so far and runs.
    pub async fn try_run(&self, exp: &Experiment) -> Result<TrialOutcome, TrialError> {
        let env = |k: &str| {
            self.vars
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        self.run_with(exp, &env).await
    }

    pub async fn run(&self, exp: &Experiment) -> TrialOutcome {
        self.try_run(exp).await.unwrap()
    }

    /// Runs with no variables at all: the fixture recorded under this root, replayed.
    pub async fn replay(&self, exp: &Experiment) -> TrialOutcome {
        self.run_with(exp, &|_| None).await.unwrap()
    }

    async fn run_with(
        &self,
        exp: &Experiment,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TrialOutcome, TrialError> {
        let target = exp
            .target(&self.target)
            .unwrap_or_else(|| panic!("the experiment has no target `{}`", self.target))
            .clone();
        let plan = trial::plan(exp, &target, env, &self.fixtures()).unwrap();
        trial::run_trial(exp, &target, plan, &self.opts()).await
    }
}

/// An environment of these variables only (for `trial::plan`).
pub fn env_with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}
