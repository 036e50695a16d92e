//! A baseline as data: a finished run's client figures (each phase's summary, its intervals
//! over repeats, its latency histograms) and where it came from, and what a trial knows of its
//! baseline. Reading, writing and saving them is `baseline`'s.

use crate::core::assert::Path as MetricPath;
use crate::core::catalog::{Scope, Value};
use crate::core::interval::{Interval, Repeated};
use crate::core::metrics::PhaseSummary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub const BASELINE_SCHEMA_VERSION: u32 = 1;

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
        if let Some((v, r)) =
            crate::core::report::summary::repeated_value(&phase.intervals, p, pairing)
        {
            return Some((v, Some(r)));
        }
        let v = phase.summary.value(&p.metric, p.stat).ok().flatten()?;
        Some((v, None))
    }
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
