//! A run directory read back, typed: [`RunDir::open`] gives a [`FinishedRun`] (its manifest,
//! its summary as the `RunSummary` that wrote it, and each phase's latency histograms);
//! [`RunDir::open_partial`] gives a [`PartialRun`] of a run that died before its summary (what
//! `summarize` starts from). Every reader of results — `compare`, the report, `baseline save`,
//! `summarize` — goes through here, so a field renamed in a writer fails here, at the file,
//! line:column and field, and not as a silently missing figure. Nothing is written.

pub use crate::core::compare::Load;

use crate::core::catalog::{LatencyMetric, Mode};
use crate::core::engine::TargetKind;
use crate::core::report::summary::RunSummary;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer as HdrDeserializer;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The latency histograms a run stores per phase (`histograms/<phase>/<metric>.hdr`, µs).
pub const HISTOGRAMS: [LatencyMetric; 5] = [
    LatencyMetric::Ttft,
    LatencyMetric::Tpot,
    LatencyMetric::ChunkItl,
    LatencyMetric::TokenItl,
    LatencyMetric::E2e,
];

/// Why a run directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: field `{field}`: {message}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },
    #[error(
        "{}: no summary.json: the run did not finish (its requests.jsonl keeps every request that completed)",
        dir.display()
    )]
    Unfinished { dir: PathBuf },
    #[error("{}: not an HdrHistogram: {message}", path.display())]
    Histogram { path: PathBuf, message: String },
}

/// What `manifest.json` says of a run, as read back (the writer is `trial::manifest`).
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestIn {
    pub schema_version: u32,
    pub experiment: ExperimentIn,
    pub target: TargetIn,
    pub mode: Mode,
    pub model: Option<String>,
    pub seed: u64,
    pub salt: u64,
    pub server_version: Option<String>,
    pub calibration: Option<CalibrationIn>,
    pub fixture: Option<FixtureIn>,
    pub git_revision: Option<String>,
    pub started_at: Option<String>,
    #[serde(default)]
    pub replay_slowdown: Option<f64>,
}

/// The experiment as the manifest resolved it: what reading results needs of it.
#[derive(Debug, Clone, Deserialize)]
pub struct ExperimentIn {
    pub name: String,
    pub phases: Vec<PhaseIn>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PhaseIn {
    pub name: String,
    pub workload: WorkloadIn,
}

/// A phase's workload: its kind, and the load it offered where it has one.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkloadIn {
    pub kind: String,
    pub concurrency: Option<f64>,
    pub rate_per_s: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TargetIn {
    pub name: String,
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CalibrationIn {
    pub ttft_error_p99_ms: Option<f64>,
}

/// The recording a replayed run came from.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureIn {
    pub engine_version: Option<String>,
    pub recorded_at: Option<String>,
    #[serde(default)]
    pub model_details: Option<ModelDetailsIn>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelDetailsIn {
    #[serde(default)]
    pub hardware: Option<String>,
}

/// A finished run: its manifest, its summary and each phase's histograms.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub dir: PathBuf,
    pub manifest: ManifestIn,
    pub summary: RunSummary,
    /// By phase name, then metric (`ttft`, …); a phase without successes has none.
    pub histograms: BTreeMap<String, BTreeMap<LatencyMetric, Histogram<u64>>>,
}

/// A run that may not have finished: its manifest, and where its records are.
#[derive(Debug, Clone)]
pub struct PartialRun {
    pub dir: PathBuf,
    pub manifest: ManifestIn,
}

impl PartialRun {
    /// `requests.jsonl`: one line per request that completed.
    pub fn requests_path(&self) -> PathBuf {
        self.dir.join("requests.jsonl")
    }

    /// `server_metrics.jsonl`: the run's scrapes (absent when it scraped nothing).
    pub fn scrapes_path(&self) -> PathBuf {
        self.dir.join("server_metrics.jsonl")
    }

    /// Whether the run wrote its summary (it finished, or was summarised since).
    pub fn has_summary(&self) -> bool {
        self.dir.join("summary.json").is_file()
    }
}

impl FinishedRun {
    /// The load a phase offered: a closed loop's concurrency or an open loop's rate.
    pub fn load_of(&self, phase: &str) -> Option<Load> {
        let w = &self
            .manifest
            .experiment
            .phases
            .iter()
            .find(|p| p.name == phase)?
            .workload;
        if w.kind == "concurrent" {
            return w.concurrency.map(Load::Concurrency);
        }
        w.rate_per_s.map(Load::RatePerS)
    }

    /// `server_metrics.jsonl`: the run's scrapes (absent when it scraped nothing).
    pub fn scrapes_path(&self) -> PathBuf {
        self.dir.join("server_metrics.jsonl")
    }

    /// `slices.jsonl`: the run's time slices (absent without `[observe] slice`).
    pub fn slices_path(&self) -> PathBuf {
        self.dir.join("slices.jsonl")
    }
}

/// A run directory.
pub struct RunDir;

impl RunDir {
    /// A finished run; one without `summary.json` is [`ResultsError::Unfinished`].
    pub fn open(dir: &Path) -> Result<FinishedRun, ResultsError> {
        let partial = Self::open_partial(dir)?;
        if !partial.has_summary() {
            return Err(ResultsError::Unfinished {
                dir: dir.to_path_buf(),
            });
        }
        let summary: RunSummary = read_json(&dir.join("summary.json"))?;
        let mut histograms = BTreeMap::new();
        for p in &summary.phases {
            histograms.insert(
                p.name.clone(),
                read_histograms(&dir.join("histograms").join(&p.name))?,
            );
        }
        Ok(FinishedRun {
            dir: dir.to_path_buf(),
            manifest: partial.manifest,
            summary,
            histograms,
        })
    }

    /// Any run that wrote its manifest (every run does before its first request).
    pub fn open_partial(dir: &Path) -> Result<PartialRun, ResultsError> {
        Ok(PartialRun {
            dir: dir.to_path_buf(),
            manifest: read_json(&dir.join("manifest.json"))?,
        })
    }
}

/// A JSON file as `T`; an error names the file, line:column and the field.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        ResultsError::Malformed {
            path: path.to_path_buf(),
            line: inner.line(),
            column: inner.column(),
            field,
            message: inner.to_string(),
        }
    })
}

/// The latency histograms stored for one phase; a missing one is simply absent.
fn read_histograms(dir: &Path) -> Result<BTreeMap<LatencyMetric, Histogram<u64>>, ResultsError> {
    let mut out = BTreeMap::new();
    for metric in HISTOGRAMS {
        let path = dir.join(format!("{}.hdr", metric.name()));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let h = HdrDeserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| ResultsError::Histogram {
                path: path.clone(),
                message: format!("{e:?}"),
            })?;
        out.insert(metric, h);
    }
    Ok(out)
}
