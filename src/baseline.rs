//! Baselines: a finished run's client figures, kept in `baselines/<experiment>__<target>.json`
//! and committed like snapshots, for assertions to compare a new run with
//! (`warm.ttft.p99 <= 1.1 * baseline.warm.ttft.p99`). A baseline holds each phase's summary,
//! its intervals over repeats, its latency histograms (HdrHistogram V2 + deflate, base64) and
//! where it came from.

use crate::core::b64;
pub use crate::core::baseline::{
    BASELINE_SCHEMA_VERSION, Baseline, BaselinePhase, BaselineState, Source,
};
use crate::core::interval::Interval;
use crate::core::metrics::PhaseSummary;
use crate::report::load::LoadError;
use crate::results::{FinishedRun, ResultsError, RunDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a baseline could not be saved or read. Each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error(transparent)]
    Runs(#[from] LoadError),
    #[error("encoding the baseline: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(
        "{}: no summary.json: the run did not finish, and an unfinished run is no baseline",
        dir.display()
    )]
    Unfinished { dir: PathBuf },
    #[error("{}: the run was interrupted; a baseline needs a whole run", summary.display())]
    Interrupted { summary: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: baseline schema version {found} (this inferlab reads {BASELINE_SCHEMA_VERSION}): save it again",
        path.display()
    )]
    Schema { path: PathBuf, found: u32 },
    #[error("{}: it is the baseline of {experiment}::{target}", path.display())]
    OtherTrial {
        path: PathBuf,
        experiment: String,
        target: String,
    },
    #[error("{}: {source} (a baseline is saved from a finished run directory)", dir.display())]
    NotARun { dir: PathBuf, source: ResultsError },
    #[error("{} is a run of {experiment}::{target}, not of {trial}", dir.display())]
    WrongRun {
        dir: PathBuf,
        experiment: String,
        target: String,
        trial: String,
    },
    #[error(
        "no finished run of {trial} under {}: run it first (`inferlab run {experiment}`)",
        results.display()
    )]
    NoRun {
        trial: String,
        experiment: String,
        results: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BaselineError + '_ {
    move |source| BaselineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<root>/<experiment>__<target>.json`.
pub fn file(root: &Path, experiment: &str, target: &str) -> PathBuf {
    root.join(format!("{experiment}__{target}.json"))
}

impl Baseline {
    /// A finished run directory (its `manifest.json`, `summary.json` and histograms).
    pub fn from_run(dir: &Path, saved_at: String) -> Result<Self, BaselineError> {
        let run = RunDir::open(dir).map_err(|e| match e {
            ResultsError::Unfinished { dir } => BaselineError::Unfinished { dir },
            e => e.into(),
        })?;
        Self::of(&run, saved_at)
    }

    /// The baseline of a finished run.
    pub fn of(run: &FinishedRun, saved_at: String) -> Result<Self, BaselineError> {
        let (s, m) = (&run.summary, &run.manifest);
        if s.interrupted {
            return Err(BaselineError::Interrupted {
                summary: run.dir.join("summary.json"),
            });
        }
        let phase = |name: &str, summary: &PhaseSummary, intervals: &BTreeMap<String, Interval>| {
            Ok::<_, BaselineError>(BaselinePhase {
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
            .collect::<Result<Vec<_>, _>>()?;
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
    pub fn load(path: &Path) -> Result<Self, BaselineError> {
        let b: Self = crate::results::read_json(path)?;
        if b.schema_version != BASELINE_SCHEMA_VERSION {
            return Err(BaselineError::Schema {
                path: path.to_path_buf(),
                found: b.schema_version,
            });
        }
        Ok(b)
    }

    /// Writes it (pretty JSON, a newline at the end) to `<root>/<experiment>__<target>.json`.
    pub fn save(&self, root: &Path) -> Result<PathBuf, BaselineError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        let path = file(root, &self.experiment, &self.target);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(path)
    }

    /// What `baseline save` says of a baseline written to `path` from the run in `from`.
    pub fn describe_saved(&self, path: &Path, from: &Path) -> String {
        let phases: Vec<&str> = self.phases.iter().map(|p| p.name.as_str()).collect();
        let mut out = format!(
            "baseline {}::{}: {} ({} mode, {} repeat{}, phases {}) from {}",
            self.experiment,
            self.target,
            path.display(),
            self.source.mode,
            self.repeats,
            if self.repeats == 1 { "" } else { "s" },
            phases.join(", "),
            from.display()
        );
        if self.repeats < 2 {
            out.push_str(
                "\n  note: one run, so no intervals: assertions against it compare single figures; `repeats = N` in the experiment gives noise-aware verdicts",
            );
        }
        out
    }
}

/// The runs `baseline save TRIAL [RUN_DIR]` saves: RUN_DIR (which must be a run of TRIAL), or
/// the latest finished run of TRIAL's target (each target's, for an experiment) under
/// `results`. Notes say which unfinished runs were passed over.
pub fn runs_to_save(
    results: &Path,
    trial: &str,
    run_dir: Option<&Path>,
) -> Result<(Vec<FinishedRun>, Vec<String>), BaselineError> {
    let (experiment, target) = match trial.split_once("::") {
        Some((e, t)) => (e, Some(t)),
        None => (trial, None),
    };
    if let Some(dir) = run_dir {
        let run = RunDir::open(dir).map_err(|source| BaselineError::NotARun {
            dir: dir.to_path_buf(),
            source,
        })?;
        let s = &run.summary;
        if s.experiment != experiment || target.is_some_and(|t| s.target != t) {
            return Err(BaselineError::WrongRun {
                dir: dir.to_path_buf(),
                experiment: s.experiment.clone(),
                target: s.target.clone(),
                trial: trial.to_string(),
            });
        }
        return Ok((vec![run], Vec::new()));
    }
    let found = crate::report::load::resolve(results, &[experiment.to_string()])?;
    let mut runs = Vec::new();
    for dir in &found.runs {
        let run = RunDir::open(dir)?;
        if target.is_none_or(|t| run.summary.target == t) {
            runs.push(run);
        }
    }
    if runs.is_empty() {
        return Err(BaselineError::NoRun {
            trial: trial.to_string(),
            experiment: experiment.to_string(),
            results: results.to_path_buf(),
        });
    }
    Ok((runs, found.notes))
}

/// A phase's stored histogram files as they are on disk, base64 (a baseline keeps the bytes the
/// run wrote, not a re-encoding).
fn histograms(dir: &Path) -> Result<BTreeMap<String, String>, BaselineError> {
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
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        out.insert(stem.to_string(), b64::encode(&bytes));
    }
    Ok(out)
}

impl BaselineState {
    /// The baseline under `root` that `exp`'s assertions for `target` read in `mode`
    /// ([`BaselineState::NotNeeded`] when none reads one).
    pub fn for_run(
        root: &Path,
        exp: &crate::spec::Experiment,
        target: &str,
        mode: crate::report::Mode,
        required: bool,
    ) -> Self {
        let needed = exp
            .assertions
            .iter()
            .any(|a| a.applies_to(target) && a.applies_in(mode) && a.reads_baseline());
        Self::read(root, &exp.name, target, needed, required)
    }

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
            Ok(b) if b.experiment != experiment || b.target != target => Self::Broken(
                BaselineError::OtherTrial {
                    path,
                    experiment: b.experiment,
                    target: b.target,
                }
                .to_string(),
            ),
            Ok(b) => Self::Loaded(Box::new(b)),
            Err(e) => Self::Broken(e.to_string()),
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
