//! Baselines: a finished run's client figures, kept in `baselines/<experiment>__<target>.json`
//! and committed like snapshots, for assertions to compare a new run with
//! (`warm.ttft.p99 <= 1.1 * baseline.warm.ttft.p99`). A baseline holds each phase's summary,
//! its intervals over repeats, its latency histograms (HdrHistogram V2 + deflate, base64) and
//! where it came from.

use crate::core::assert::Path as MetricPath;
use crate::core::b64;
use crate::core::catalog::{Scope, Value};
use crate::core::interval::{Interval, Repeated};
use crate::core::metrics::PhaseSummary;
use crate::results::{FinishedRun, ResultsError, RunDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const BASELINE_SCHEMA_VERSION: u32 = 1;

/// `<root>/<experiment>__<target>.json`.
pub fn file(root: &Path, experiment: &str, target: &str) -> PathBuf {
    root.join(format!("{experiment}__{target}.json"))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub schema_version: u32,
    pub experiment: String,
    pub target: String,
    /// When it was saved (UTC, RFC 3339).
    pub saved_at: String,
    pub source: Source,
    /// Repeats of the run (1: none, and no intervals).
    pub repeats: u32,
    pub phases: Vec<BaselinePhase>,
    pub all: BaselinePhase,
}

/// The run a baseline was saved from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The run directory, as given.
    pub run: String,
    /// `live`, `record` or `replay`.
    pub mode: String,
    pub started_at: Option<String>,
    pub model: Option<String>,
    pub engine_version: Option<String>,
    pub git_revision: Option<String>,
    /// A replay: when its fixture was recorded, and a slow-down it ran under.
    pub fixture_recorded_at: Option<String>,
    pub replay_slowdown: Option<f64>,
    /// Which repeats it holds (the run's `repeats.pairing`): a replay of the same recording
    /// is compared with it repeat by repeat.
    pub pairing: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselinePhase {
    pub name: String,
    pub summary: PhaseSummary,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intervals: BTreeMap<String, Interval>,
    /// Latency histograms (µs), HdrHistogram V2 + deflate, base64, by metric.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub histograms: BTreeMap<String, String>,
}

impl Baseline {
    /// A finished run directory (its `manifest.json`, `summary.json` and histograms).
    pub fn from_run(dir: &Path, saved_at: String) -> Result<Self, String> {
        let run = RunDir::open(dir).map_err(|e| match e {
            ResultsError::Unfinished { dir } => format!(
                "{}: no summary.json: the run did not finish, and an unfinished run is no baseline",
                dir.display()
            ),
            e => e.to_string(),
        })?;
        Self::of(&run, saved_at)
    }

    /// The baseline of a finished run.
    pub fn of(run: &FinishedRun, saved_at: String) -> Result<Self, String> {
        let (s, m) = (&run.summary, &run.manifest);
        if s.interrupted {
            return Err(format!(
                "{}: the run was interrupted; a baseline needs a whole run",
                run.dir.join("summary.json").display()
            ));
        }
        let phase = |name: &str, summary: &PhaseSummary, intervals: &BTreeMap<String, Interval>| {
            Ok::<_, String>(BaselinePhase {
                name: name.to_string(),
                summary: summary.clone(),
                intervals: intervals.clone(),
                histograms: histograms(&run.dir.join("histograms").join(name))?,
            })
        };
        let phases = s
            .phases
            .iter()
            .map(|p| phase(&p.name, &p.summary, &p.intervals))
            .collect::<Result<Vec<_>, String>>()?;
        let all = phase("all", &s.all, &s.all_intervals)?;
        let fixture = m.fixture.as_ref();
        Ok(Self {
            schema_version: BASELINE_SCHEMA_VERSION,
            experiment: s.experiment.clone(),
            target: s.target.clone(),
            saved_at,
            source: Source {
                run: run.dir.display().to_string(),
                mode: m.mode.as_str().to_string(),
                started_at: m.started_at.clone(),
                model: m.model.clone(),
                engine_version: m
                    .server_version
                    .clone()
                    .or_else(|| fixture.and_then(|f| f.engine_version.clone())),
                git_revision: m.git_revision.clone(),
                fixture_recorded_at: fixture.and_then(|f| f.recorded_at.clone()),
                replay_slowdown: m.replay_slowdown,
                pairing: s.repeats.as_ref().map(|r| r.pairing.clone()),
            },
            repeats: s.repeats.as_ref().map_or(1, |r| r.repeats),
            phases,
            all,
        })
    }

    /// Reads a baseline file; a malformed one is an error naming file, line:column and field.
    pub fn load(path: &Path) -> Result<Self, String> {
        let b: Self = crate::results::read_json(path).map_err(|e| e.to_string())?;
        if b.schema_version != BASELINE_SCHEMA_VERSION {
            return Err(format!(
                "{}: baseline schema version {} (this inferlab reads {BASELINE_SCHEMA_VERSION}): save it again",
                path.display(),
                b.schema_version
            ));
        }
        Ok(b)
    }

    /// Writes it (pretty JSON, a newline at the end) to `<root>/<experiment>__<target>.json`.
    pub fn save(&self, root: &Path) -> Result<PathBuf, String> {
        std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let path = file(root, &self.experiment, &self.target);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    fn phase(&self, name: &str) -> Option<&BaselinePhase> {
        if name == "all" {
            return Some(&self.all);
        }
        self.phases.iter().find(|p| p.name == name)
    }

    /// A client path of the baseline: with repeats, the mean over them and the per-repeat
    /// values; else the figure. The server's and turns' figures are not kept (`None`).
    pub fn estimate(&self, p: &MetricPath) -> Option<(Value, Option<Repeated>)> {
        if p.scope != Scope::Client {
            return None;
        }
        let phase = self.phase(&p.phase)?;
        let pairing = self.source.pairing.as_deref().unwrap_or("baseline");
        if let Some((v, r)) = crate::report::repeated_value(&phase.intervals, p, pairing) {
            return Some((v, Some(r)));
        }
        let v = phase.summary.value(&p.metric, p.stat).ok().flatten()?;
        Some((v, None))
    }
}

/// The runs `baseline save TRIAL [RUN_DIR]` saves: RUN_DIR (which must be a run of TRIAL), or
/// the latest finished run of TRIAL's target (each target's, for an experiment) under
/// `results`. Notes say which unfinished runs were passed over.
pub fn runs_to_save(
    results: &Path,
    trial: &str,
    run_dir: Option<&Path>,
) -> Result<(Vec<FinishedRun>, Vec<String>), String> {
    let (experiment, target) = match trial.split_once("::") {
        Some((e, t)) => (e, Some(t)),
        None => (trial, None),
    };
    if let Some(dir) = run_dir {
        let run = RunDir::open(dir)
            .map_err(|e| format!("{e} (a baseline is saved from a finished run directory)"))?;
        let s = &run.summary;
        if s.experiment != experiment || target.is_some_and(|t| s.target != t) {
            return Err(format!(
                "{} is a run of {}::{}, not of {trial}",
                dir.display(),
                s.experiment,
                s.target
            ));
        }
        return Ok((vec![run], Vec::new()));
    }
    let found = crate::report::load::resolve(results, &[experiment.to_string()])?;
    let mut runs = Vec::new();
    for dir in &found.runs {
        let run = RunDir::open(dir).map_err(|e| e.to_string())?;
        if target.is_none_or(|t| run.summary.target == t) {
            runs.push(run);
        }
    }
    if runs.is_empty() {
        return Err(format!(
            "no finished run of {trial} under {}: run it first (`inferlab run {experiment}`)",
            results.display()
        ));
    }
    Ok((runs, found.notes))
}

/// A phase's stored histogram files as they are on disk, base64 (a baseline keeps the bytes the
/// run wrote, not a re-encoding).
fn histograms(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        let (Some(stem), Some("hdr")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        out.insert(stem.to_string(), b64::encode(&bytes));
    }
    Ok(out)
}

/// What a trial knows of its baseline.
#[derive(Debug, Clone, Default)]
pub enum BaselineState {
    /// No assertion reads one.
    #[default]
    NotNeeded,
    Loaded(Box<Baseline>),
    /// The file does not exist; `required` (on CI) makes that a failure.
    Missing {
        file: PathBuf,
        required: bool,
    },
    /// The file exists but cannot be used.
    Broken(String),
}

impl BaselineState {
    /// The baseline of `experiment::target` under `root`, when `needed`.
    pub fn read(root: &Path, experiment: &str, target: &str, needed: bool, required: bool) -> Self {
        if !needed {
            return Self::NotNeeded;
        }
        let path = file(root, experiment, target);
        if !path.is_file() {
            return Self::Missing {
                file: path,
                required,
            };
        }
        match Baseline::load(&path) {
            Ok(b) if b.experiment != experiment || b.target != target => Self::Broken(format!(
                "{}: it is the baseline of {}::{}",
                path.display(),
                b.experiment,
                b.target
            )),
            Ok(b) => Self::Loaded(Box::new(b)),
            Err(e) => Self::Broken(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_named_like_a_snapshot() {
        assert_eq!(
            file(Path::new("baselines"), "gate", "llamacpp"),
            PathBuf::from("baselines/gate__llamacpp.json")
        );
    }
}
