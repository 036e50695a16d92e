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
use crate::report::load::{read_json, str_at};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
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
    /// Reads a finished run directory (its `manifest.json`, `summary.json` and histograms).
    pub fn from_run(dir: &Path, saved_at: String) -> Result<Self, String> {
        let manifest = read_json(&dir.join("manifest.json"))?;
        let summary_path = dir.join("summary.json");
        if !summary_path.is_file() {
            return Err(format!(
                "{}: no summary.json: the run did not finish, and an unfinished run is no baseline",
                dir.display()
            ));
        }
        let summary = read_json(&summary_path)?;
        if summary.get("interrupted").and_then(Json::as_bool) == Some(true) {
            return Err(format!(
                "{}: the run was interrupted; a baseline needs a whole run",
                summary_path.display()
            ));
        }
        let text = str_at;
        let need = |v: &Json, file: &str, ptr: &str| {
            text(v, ptr).ok_or_else(|| {
                format!(
                    "{}: field `{}` is missing",
                    dir.join(file).display(),
                    ptr.trim_start_matches('/').replace('/', ".")
                )
            })
        };
        let phase = |name: &str, summary_v: &Json, intervals: Option<&Json>| {
            let at = |what: &str| format!("{}: phase `{name}`: {what}", summary_path.display());
            let summary: PhaseSummary =
                serde_json::from_value(summary_v.clone()).map_err(|e| at(&e.to_string()))?;
            let intervals = match intervals {
                Some(i) => {
                    serde_json::from_value(i.clone()).map_err(|e| at(&format!("intervals: {e}")))?
                }
                None => BTreeMap::new(),
            };
            Ok::<_, String>(BaselinePhase {
                name: name.to_string(),
                summary,
                intervals,
                histograms: histograms(&dir.join("histograms").join(name))?,
            })
        };
        let phases = summary
            .get("phases")
            .and_then(Json::as_array)
            .ok_or_else(|| format!("{}: field `phases` is missing", summary_path.display()))?
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let name = p.get("name").and_then(Json::as_str).ok_or_else(|| {
                    format!(
                        "{}: field `phases[{i}].name` is missing",
                        summary_path.display()
                    )
                })?;
                phase(name, p, p.get("intervals"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let all = summary
            .get("all")
            .ok_or_else(|| format!("{}: field `all` is missing", summary_path.display()))?;
        let all = phase("all", all, summary.get("all_intervals"))?;
        Ok(Self {
            schema_version: BASELINE_SCHEMA_VERSION,
            experiment: need(&summary, "summary.json", "/experiment")?,
            target: need(&summary, "summary.json", "/target")?,
            saved_at,
            source: Source {
                run: dir.display().to_string(),
                mode: need(&manifest, "manifest.json", "/mode")?,
                started_at: text(&manifest, "/started_at"),
                model: text(&manifest, "/model"),
                engine_version: text(&manifest, "/server_version")
                    .or_else(|| text(&manifest, "/fixture/engine_version")),
                git_revision: text(&manifest, "/git_revision"),
                fixture_recorded_at: text(&manifest, "/fixture/recorded_at"),
                replay_slowdown: manifest.get("replay_slowdown").and_then(Json::as_f64),
                pairing: text(&summary, "/repeats/pairing"),
            },
            repeats: summary
                .pointer("/repeats/repeats")
                .and_then(Json::as_u64)
                .map_or(1, |n| n as u32),
            phases,
            all,
        })
    }

    /// Reads a baseline file; a malformed one is an error naming file, line:column and field.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let b: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            format!(
                "{}:{}:{}: field `{field}`: {inner}",
                path.display(),
                inner.line(),
                inner.column()
            )
        })?;
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
) -> Result<(Vec<PathBuf>, Vec<String>), String> {
    let (experiment, target) = match trial.split_once("::") {
        Some((e, t)) => (e, Some(t)),
        None => (trial, None),
    };
    if let Some(dir) = run_dir {
        let summary = read_json(&dir.join("summary.json"))
            .map_err(|e| format!("{e} (a baseline is saved from a finished run directory)"))?;
        let of = |k: &str| summary.get(k).and_then(Json::as_str).unwrap_or("");
        if of("experiment") != experiment || target.is_some_and(|t| of("target") != t) {
            return Err(format!(
                "{} is a run of {}::{}, not of {trial}",
                dir.display(),
                of("experiment"),
                of("target")
            ));
        }
        return Ok((vec![dir.to_path_buf()], Vec::new()));
    }
    let found = crate::report::load::resolve(results, &[experiment.to_string()])?;
    let runs: Vec<PathBuf> = found
        .runs
        .into_iter()
        .filter(|run| {
            target.is_none_or(|t| {
                read_json(&run.join("summary.json"))
                    .ok()
                    .and_then(|s| s.get("target").and_then(Json::as_str).map(|x| x == t))
                    .unwrap_or(false)
            })
        })
        .collect();
    if runs.is_empty() {
        return Err(format!(
            "no finished run of {trial} under {}: run it first (`inferlab run {experiment}`)",
            results.display()
        ));
    }
    Ok((runs, found.notes))
}

/// A run's histogram files of one phase, base64 by metric (none when the directory is absent).
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
