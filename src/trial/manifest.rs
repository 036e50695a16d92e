//! `manifest.json`: what ran, against what, from which code — written before the first request
//! (so a killed run still says what it was) and again at the end with the counts.

use crate::calibrate::Level;
use crate::preflight::Preflight;
use crate::replay::FixtureMeta;
use crate::report::Mode;
use crate::report::dto::ExperimentDto;
use crate::spec::{Experiment, TargetSpec};
use serde::Serialize;
use std::time::SystemTime;

#[derive(Serialize)]
pub struct Manifest<'a> {
    schema_version: u32,
    inferlab_version: &'static str,
    experiment: ExperimentDto<'a>,
    target: &'a TargetSpec,
    mode: Mode,
    url: String,
    model: &'a str,
    seed: u64,
    salt: u64,
    server_version: Option<&'a str>,
    server_config: Option<&'a serde_json::Value>,
    /// The client measured against the truth server just before the run (`calibrate = true`).
    calibration: Option<&'a Level>,
    fixture: Option<&'a FixtureMeta>,
    gpu_telemetry: Option<String>,
    git_revision: Option<String>,
    started_at: String,
    finished_at: Option<String>,
    requests_planned: usize,
    /// `INFERLAB_REPLAY_SLOWDOWN`: the replayed streams were stretched by this factor.
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_slowdown: Option<f64>,
    requests_completed: usize,
    interrupted: bool,
}

/// What the manifest describes besides the experiment and its preflight.
pub struct Run<'a> {
    pub mode: Mode,
    pub url: String,
    pub model: &'a str,
    pub salt: u64,
    pub fixture: Option<&'a FixtureMeta>,
    pub gpu_telemetry: Option<String>,
    pub started: SystemTime,
    pub requests_planned: usize,
    pub replay_slowdown: Option<f64>,
}

impl<'a> Manifest<'a> {
    pub fn new(
        exp: &'a Experiment,
        target: &'a TargetSpec,
        pre: &'a Preflight,
        run: Run<'a>,
    ) -> Self {
        Self {
            schema_version: crate::report::RESULTS_SCHEMA_VERSION,
            inferlab_version: env!("CARGO_PKG_VERSION"),
            experiment: ExperimentDto::of(exp),
            target,
            mode: run.mode,
            url: run.url,
            model: run.model,
            seed: exp.seed,
            salt: run.salt,
            server_version: pre.server.version.as_deref(),
            server_config: pre.server.config.as_ref(),
            calibration: pre.calibration.as_ref(),
            fixture: run.fixture,
            gpu_telemetry: run.gpu_telemetry,
            git_revision: git_revision(),
            started_at: crate::clock::utc_rfc3339(run.started),
            finished_at: None,
            requests_planned: run.requests_planned,
            replay_slowdown: run.replay_slowdown,
            requests_completed: 0,
            interrupted: false,
        }
    }

    /// The run is over: when, how many requests completed, whether it was stopped.
    pub fn finished(&mut self, requests_completed: usize, interrupted: bool) {
        self.finished_at = Some(crate::clock::utc_rfc3339(SystemTime::now()));
        self.requests_completed = requests_completed;
        self.interrupted = interrupted;
    }
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
