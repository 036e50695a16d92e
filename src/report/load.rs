//! Reading finished runs back: a run directory's `manifest.json`, `summary.json`, stored
//! histograms and `/metrics` scrapes as a [`RunInput`] for comparison and the report, and the latest run of each target of an
//! experiment under a results root. Every failure names the directory or file and what is
//! missing; nothing is written.

use crate::core::compare::{PhaseInput, RunInput, Scrape, SliceRow};
use crate::core::record::Point;
use crate::results::{ManifestIn, RunDir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a comparison argument named: run directories, in order (an experiment's latest run per
/// target, targets in name order), and notes about runs passed over.
#[derive(Debug, Default)]
pub struct Resolved {
    pub runs: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Each argument is a run directory (it has a `manifest.json`) or an experiment's name, which
/// stands for the latest finished run of each of its targets under `results`.
pub fn resolve(results: &Path, args: &[String]) -> Result<Resolved, String> {
    let mut out = Resolved::default();
    for arg in args {
        let path = Path::new(arg);
        if path.join("manifest.json").is_file() {
            out.runs.push(path.to_path_buf());
            continue;
        }
        let dir = results.join(arg);
        if !dir.is_dir() || path.components().count() != 1 {
            return Err(format!(
                "`{arg}` is neither a run directory (no manifest.json in it) nor an experiment with runs under {}",
                results.display()
            ));
        }
        latest_per_target(&dir, &mut out)?;
    }
    Ok(out)
}

/// The latest finished run of each target in an experiment's directory (run directories are
/// named `<UTC time>-<target>`, so the greatest name is the latest); an unfinished later run is
/// passed over with a note.
fn latest_per_target(dir: &Path, out: &mut Resolved) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("manifest.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut latest: BTreeMap<String, PathBuf> = BTreeMap::new();
    for name in names.iter().rev() {
        let run = dir.join(name);
        let target = match RunDir::open_partial(&run) {
            Ok(r) => r.manifest.target.name,
            Err(e) => {
                out.notes
                    .push(format!("passed over {}: {e}", run.display()));
                continue;
            }
        };
        if latest.contains_key(&target) {
            continue;
        }
        if !run.join("summary.json").is_file() {
            out.notes.push(format!(
                "passed over {}: no summary.json (the run did not finish)",
                run.display()
            ));
            continue;
        }
        latest.insert(target, run);
    }
    if latest.is_empty() {
        return Err(format!("{}: no finished run in it", dir.display()));
    }
    out.runs.extend(latest.into_values());
    Ok(())
}

/// A run directory read for comparison.
pub fn load_run(dir: &Path) -> Result<RunInput, String> {
    let run = RunDir::open(dir).map_err(|e| e.to_string())?;
    let phases = run
        .summary
        .phases
        .iter()
        .map(|p| {
            Ok(PhaseInput {
                name: p.name.clone(),
                summary: p.clone(),
                histograms: run.histograms.get(&p.name).cloned().unwrap_or_default(),
                load: run.load_of(&p.name),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let m = &run.manifest;
    Ok(RunInput {
        target: m.target.name.clone(),
        experiment: m.experiment.name.clone(),
        seed: m.seed,
        engine: m.target.kind.to_string(),
        version: m.server_version.clone(),
        mode: m.mode.as_str().to_string(),
        dir: dir.display().to_string(),
        provenance: provenance(m),
        phases,
        timeline: timeline(&run.scrapes_path())?,
        slices: slices(&run.slices_path())?,
    })
}

/// The run's time slices (`slices.jsonl`), numeric columns only; an absent file has none.
fn slices(path: &Path) -> Result<Vec<SliceRow>, String> {
    let mut out = Vec::new();
    for (i, v) in json_lines(path)? {
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("{}:{i}: field `{k}` is missing", path.display()))
        };
        let (start_s, end_s) = (num("start_s")?, num("end_s")?);
        let values = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(SliceRow {
            start_s,
            end_s,
            values,
        });
    }
    Ok(out)
}

/// Where a run came from, for people: model, hardware (a recording's model details), when,
/// the client's calibration, the code's revision.
fn provenance(m: &ManifestIn) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut put = |label: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((label.to_string(), v));
        }
    };
    let fixture = m.fixture.as_ref();
    put("model", m.model.clone());
    put(
        "hardware",
        fixture
            .and_then(|f| f.model_details.as_ref())
            .and_then(|d| d.hardware.clone()),
    );
    put(
        "recorded",
        fixture
            .filter(|f| f.engine_version.is_some())
            .and_then(|f| f.recorded_at.clone()),
    );
    put("started", m.started_at.clone());
    put(
        "client TTFT error p99",
        m.calibration
            .as_ref()
            .and_then(|c| c.ttft_error_p99_ms)
            .map(|ms| format!("{ms:.3} ms")),
    );
    put(
        "git revision",
        m.git_revision
            .as_ref()
            .map(|r| r.chars().take(12).collect()),
    );
    out
}

/// The run's successful `/metrics` scrapes, in order; an absent file is an empty timeline.
fn timeline(path: &Path) -> Result<Vec<Scrape>, String> {
    let mut out: Vec<Scrape> = Vec::new();
    for s in super::rows::read_scrape_lines(path)?.items {
        if s.error.is_some() {
            continue;
        }
        let phase_start =
            s.point == Point::Start.as_str() && out.last().is_none_or(|last| last.phase != s.phase);
        out.push(Scrape {
            at_s: s.at_ms / 1e3,
            phase: s.phase,
            phase_start,
            values: s.values,
        });
    }
    Ok(out)
}

/// A JSON-lines file's objects with their line numbers (from 1); an absent file has none, a
/// line that is not JSON is an error naming the file, line and column.
fn json_lines(path: &Path) -> Result<Vec<(usize, Value)>, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|v| (i + 1, v))
                .map_err(|e| format!("{}:{}:{}: {e}", path.display(), i + 1, e.column()))
        })
        .collect()
}
