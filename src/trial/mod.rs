//! One experiment × one target, end to end: decide the mode from the environment and the
//! fixtures ([`plan`]), then [`run_trial`]: run the schedule (against the live URL or the replay
//! server), write the results, evaluate the assertions, build the snapshot view. The CLI and
//! the generated tests both call this, so `inferlab run` and `cargo test --test experiments`
//! do the same thing.

mod capacity;
mod manifest;
pub mod recover;
mod run;
mod summary;
mod tally;

pub use run::run_trial;

use crate::client::{Endpoint, Secret};
use crate::core::assert::Verdict;
use crate::env::{EnvError, TargetSource, target_var};
use crate::observe::gpu::GpuSource;
use crate::replay::{Fixture, fixture_dir};
use crate::report::{Mode, RunSummary, SnapshotView};
use crate::spec::{Experiment, TargetSpec};
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// What the environment and the fixtures say about a trial.
#[derive(Debug, Clone)]
pub enum Plan {
    Live {
        endpoint: Endpoint,
        record: bool,
        /// GPU telemetry configured for the target, if any.
        gpu: Option<GpuSource>,
        /// `INFERLAB_<T>_MODEL_DETAILS`: JSON describing the model, kept in a recording.
        model_details: Option<serde_json::Value>,
    },
    Replay {
        dir: PathBuf,
        /// `INFERLAB_REPLAY_SLOWDOWN`: recorded offsets are stretched by this factor.
        slowdown: f64,
    },
    /// Cannot run; the reason says what to set.
    Ignored { reason: String },
}

impl Plan {
    pub fn mode(&self) -> Option<Mode> {
        match self {
            Plan::Live { record: true, .. } => Some(Mode::Record),
            Plan::Live { .. } => Some(Mode::Live),
            Plan::Replay { .. } => Some(Mode::Replay),
            Plan::Ignored { .. } => None,
        }
    }
}

/// Decides the mode. `env` reads an environment variable (a parameter so tests need not touch
/// the process environment). `Err` is bad input (e.g. a malformed URL).
pub fn plan(
    exp: &Experiment,
    target: &TargetSpec,
    env: &dyn Fn(&str) -> Option<String>,
    fixtures_root: &Path,
) -> Result<Plan, EnvError> {
    let source = TargetSource::read(&target.name, env)?;
    plan_at(exp, target, source, env, fixtures_root)
}

/// Decides the mode for a target at `source`, whatever its variables say (a pod that
/// `run --deploy` rented); its key, model and GPU telemetry still come from `env`.
pub fn plan_at(
    exp: &Experiment,
    target: &TargetSpec,
    source: TargetSource,
    env: &dyn Fn(&str) -> Option<String>,
    fixtures_root: &Path,
) -> Result<Plan, EnvError> {
    let get = |s: &str| env(&target_var(&target.name, s)).filter(|v| !v.trim().is_empty());
    let (base_url, api_key, gpu) = match source {
        TargetSource::Serverless { id } => (
            format!("{}/openai", crate::env::runpod_serverless_url(env, &id)),
            // The endpoint takes the RunPod key unless the target has its own.
            get("API_KEY").or_else(|| env("RUNPOD_API_KEY")),
            None,
        ),
        TargetSource::Url(url) => (
            Endpoint::normalize_url(&url).map_err(|problem| EnvError::Invalid {
                var: target_var(&target.name, "URL"),
                problem,
            })?,
            get("API_KEY"),
            GpuSource::from_env(env, &target.name, None),
        ),
        TargetSource::Pod { id, port } => (
            crate::env::runpod_proxy_url(env, &id, &port),
            get("API_KEY"),
            GpuSource::from_env(env, &target.name, Some(&id)),
        ),
        TargetSource::None => {
            let dir = fixture_dir(fixtures_root, &exp.name, &target.name);
            if Fixture::exists(&dir) {
                return Ok(Plan::Replay {
                    dir,
                    slowdown: crate::env::replay_slowdown(env)?,
                });
            }
            return Ok(Plan::Ignored {
                reason: format!(
                    "no live endpoint ({} unset) and no fixture in {}",
                    target_var(&target.name, "URL"),
                    dir.display()
                ),
            });
        }
    };
    Ok(Plan::Live {
        endpoint: Endpoint {
            base_url,
            api_key: api_key.map(Secret::new),
            model: get("MODEL").unwrap_or_else(|| exp.model.clone()),
            kind: target.kind,
            continuous_usage: target.continuous_usage_stats,
        },
        record: crate::env::record(env),
        gpu,
        model_details: model_details(&get, &target.name)?,
    })
}

/// `MODEL_DETAILS` as JSON; a value that is not JSON is bad input, not silently dropped.
fn model_details(
    get: &dyn Fn(&str) -> Option<String>,
    target: &str,
) -> Result<Option<serde_json::Value>, EnvError> {
    get("MODEL_DETAILS")
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| EnvError::Invalid {
            var: target_var(target, "MODEL_DETAILS"),
            problem: format!("not JSON: {e}"),
        })
}

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("{0}")]
    Fixture(#[from] crate::replay::FixtureError),
    #[error(
        "fixture {dir} does not belong to this experiment: {why}; re-record it with INFERLAB_RECORD=1 and a live target"
    )]
    FixtureMismatch { dir: String, why: String },
    #[error("results directory: {0}")]
    Results(#[source] std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("replay server: {0}")]
    Replay(#[source] std::io::Error),
    #[error("trial cannot run: {0}")]
    NotRunnable(String),
    #[error(transparent)]
    Preflight(#[from] crate::preflight::PreflightError),
}

/// Where results and fixtures go.
#[derive(Debug, Clone)]
pub struct TrialOptions {
    pub results_root: PathBuf,
    pub fixtures_root: PathBuf,
    /// Prompt salt for live runs; `None` picks a fresh one (so the server's prefix cache holds
    /// nothing from earlier runs).
    pub salt: Option<u64>,
    /// Becomes `true` to stop the run (Ctrl-C): the phase in progress is abandoned (its
    /// requests in flight are lost), the rest is summarised and written as usual.
    pub interrupt: Option<watch::Receiver<bool>>,
    /// What the target costs per hour (a rented pod): the summary then prices the trial.
    pub cost_per_hour: Option<f64>,
    /// Where baselines are, and whether a missing one fails.
    pub baselines: Baselines,
    /// Counts the run's requests for a progress line or a Prometheus endpoint.
    pub watch: Option<std::sync::Arc<crate::watch::Watch>>,
}

/// Where assertions' baselines are read from.
#[derive(Debug, Clone)]
pub struct Baselines {
    pub root: PathBuf,
    /// A missing baseline fails the assertions that read it (on CI); else they are skipped
    /// with a hint to save one.
    pub required: bool,
}

impl Default for Baselines {
    fn default() -> Self {
        Self {
            root: PathBuf::from("baselines"),
            required: false,
        }
    }
}

/// Everything a trial produced.
#[derive(Debug)]
pub struct TrialOutcome {
    pub mode: Mode,
    pub dir: PathBuf,
    pub summary: RunSummary,
    pub verdicts: Vec<Verdict>,
    pub snapshot: SnapshotView,
    /// Replay requests with no recorded exchange (the experiment changed since recording).
    pub replay_unmatched: Vec<String>,
    pub fixture_written: Option<PathBuf>,
    /// Problems writing `requests.jsonl` (the run went on).
    pub write_errors: Vec<String>,
}

impl TrialOutcome {
    pub fn passed(&self) -> bool {
        self.replay_unmatched.is_empty() && self.verdicts.iter().all(|v| v.passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"schema_version = 1
description = "t"
seed = 1
model = { name = "declared" }
[targets.vllm]
kind = "vllm"
[[phase]]
name = "p"
workload = { kind = "concurrent", concurrency = 1, requests = 1, input_tokens = 8 }
request = { api = "completions", output_tokens = 4 }
"#;

    fn decide(vars: &[(&str, &str)]) -> Result<Plan, EnvError> {
        let exp = crate::spec_io::parse("t.toml", "t", SRC).unwrap();
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        plan(
            &exp,
            &exp.targets[0],
            &env,
            Path::new("/nonexistent-fixtures"),
        )
    }

    #[test]
    fn a_url_is_live_and_names_its_model_key_and_recording() {
        let Ok(Plan::Live {
            endpoint, record, ..
        }) = decide(&[
            ("INFERLAB_VLLM_URL", "http://127.0.0.1:8000/v1/"),
            ("INFERLAB_VLLM_MODEL", "served"),
            ("INFERLAB_VLLM_API_KEY", "k"),
            ("INFERLAB_RECORD", "1"),
        ])
        else {
            panic!("live expected");
        };
        assert_eq!(endpoint.base_url, "http://127.0.0.1:8000");
        assert_eq!(endpoint.model, "served");
        assert_eq!(
            endpoint.api_key.map(|k| k.expose().to_string()),
            Some("k".into())
        );
        assert!(record);
    }

    #[test]
    fn a_serverless_endpoint_takes_the_runpod_key_and_its_openai_routes() {
        let Ok(Plan::Live { endpoint, gpu, .. }) = decide(&[
            ("INFERLAB_VLLM_RUNPOD_ENDPOINT", "ep1"),
            ("RUNPOD_API_KEY", "rp"),
            (
                "INFERLAB_RUNPOD_SERVERLESS",
                "http://127.0.0.1:9/v2/{endpoint}",
            ),
        ]) else {
            panic!("live expected");
        };
        assert_eq!(endpoint.base_url, "http://127.0.0.1:9/v2/ep1/openai");
        assert_eq!(endpoint.model, "declared");
        assert_eq!(
            endpoint.api_key.map(|k| k.expose().to_string()),
            Some("rp".into())
        );
        assert!(gpu.is_none());
    }

    #[test]
    fn nothing_set_and_no_fixture_is_ignored_with_the_variable_to_set() {
        let Ok(Plan::Ignored { reason }) = decide(&[]) else {
            panic!("ignored expected");
        };
        assert!(reason.contains("INFERLAB_VLLM_URL unset"), "{reason}");
        assert!(decide(&[("INFERLAB_VLLM_URL", "ftp://x")]).is_err());
        let e = decide(&[
            ("INFERLAB_VLLM_URL", "http://127.0.0.1:1"),
            ("INFERLAB_VLLM_MODEL_DETAILS", "{not json"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("INFERLAB_VLLM_MODEL_DETAILS: not JSON"),
            "{e}"
        );
    }
}
