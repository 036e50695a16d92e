//! Reading finished runs back: a run directory's `manifest.json`, `summary.json`, stored
//! histograms and `/metrics` scrapes as a [`RunInput`] for comparison and the report, and the latest run of each target of an
//! experiment under a results root. Every failure names the directory or file and what is
//! missing; nothing is written.

use crate::core::compare::check_comparable;
use crate::core::compare::{PhaseInput, RunInput, Scrape, SliceRow};
use crate::core::record::Point;
use crate::results::{ManifestIn, ResultsError, RunDir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the runs to compare could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "`{arg}` is neither a run directory (no manifest.json in it) nor an experiment with runs under {}",
        results.display()
    )]
    NotARun { arg: String, results: PathBuf },
    #[error("{}: cannot list: {source}", dir.display())]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no finished run in it", dir.display())]
    NoFinishedRun { dir: PathBuf },
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("--reference {name}: no run of that target among {among}")]
    NoReference { name: String, among: String },
    /// Different experiments or seeds, not forced.
    #[error("{0}")]
    NotComparable(String),
}

/// The runs `compare` and `report` show, loaded, and notes about runs passed over or compared
/// though they differ.
#[derive(Debug)]
pub struct Loaded {
    pub runs: Vec<RunInput>,
    pub notes: Vec<String>,
}

/// What `compare` and `report` are asked to load.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Where an experiment's name finds its runs.
    pub results: &'a Path,
    /// Run directories or experiment names ([`resolve`]).
    pub runs: &'a [String],
    /// The target whose run goes first (the reference).
    pub reference: Option<&'a str>,
    /// Load runs of different experiments or seeds, with a note.
    pub force: bool,
}

/// The named runs, loaded, the reference first. Different experiments or seeds are refused
/// unless `force`.
pub fn for_comparison(req: Request<'_>) -> Result<Loaded, LoadError> {
    let Resolved { runs, mut notes } = resolve(req.results, req.runs)?;
    let mut runs = runs
        .iter()
        .map(|dir| load_run(dir))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(name) = req.reference {
        let Some(i) = runs.iter().position(|r| r.target == name) else {
            let names: Vec<&str> = runs.iter().map(|r| r.target.as_str()).collect();
            return Err(LoadError::NoReference {
                name: name.to_string(),
                among: names.join(", "),
            });
        };
        let first = runs.remove(i);
        runs.insert(0, first);
    }
    if let Err(why) = check_comparable(&runs) {
        if !req.force {
            return Err(LoadError::NotComparable(why));
        }
        notes.push(why);
    }
    Ok(Loaded { runs, notes })
}

/// What a comparison argument named: run directories, in order (an experiment's latest run per
/// target, targets in name order), and notes about runs passed over.
#[derive(Debug, Default)]
pub struct Resolved {
    pub runs: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// Each argument is a run directory (it has a `manifest.json`) or an experiment's name, which
/// stands for the latest finished run of each of its targets under `results`.
pub fn resolve(results: &Path, args: &[String]) -> Result<Resolved, LoadError> {
    let mut out = Resolved::default();
    for arg in args {
        let path = Path::new(arg);
        if path.join("manifest.json").is_file() {
            out.runs.push(path.to_path_buf());
            continue;
        }
        let dir = results.join(arg);
        if !dir.is_dir() || path.components().count() != 1 {
            return Err(LoadError::NotARun {
                arg: arg.clone(),
                results: results.to_path_buf(),
            });
        }
        latest_per_target(&dir, &mut out)?;
    }
    Ok(out)
}

/// The latest finished run of each target in an experiment's directory (run directories are
/// named `<UTC time>-<target>`, so the greatest name is the latest); an unfinished later run is
/// passed over with a note.
fn latest_per_target(dir: &Path, out: &mut Resolved) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::List {
        dir: dir.to_path_buf(),
        source,
    })?;
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
        return Err(LoadError::NoFinishedRun {
            dir: dir.to_path_buf(),
        });
    }
    out.runs.extend(latest.into_values());
    Ok(())
}

/// A run directory read for comparison.
pub fn load_run(dir: &Path) -> Result<RunInput, LoadError> {
    let run = RunDir::open(dir)?;
    let phases = run
        .summary
        .phases
        .iter()
        .map(|p| PhaseInput {
            name: p.name.clone(),
            summary: p.clone(),
            histograms: run.histograms.get(&p.name).cloned().unwrap_or_default(),
            load: run.load_of(&p.name),
        })
        .collect();
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
fn slices(path: &Path) -> Result<Vec<SliceRow>, ResultsError> {
    let mut out = Vec::new();
    for (i, v) in json_lines(path)? {
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| ResultsError::Malformed {
                    path: path.to_path_buf(),
                    line: i,
                    column: 1,
                    field: k.to_string(),
                    message: "missing, or not a number".into(),
                })
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
fn timeline(path: &Path) -> Result<Vec<Scrape>, LoadError> {
    let mut out: Vec<Scrape> = Vec::new();
    let lines = super::rows::read_scrape_lines(path)?;
    for s in lines.items {
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
fn json_lines(path: &Path) -> Result<Vec<(usize, Value)>, ResultsError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|v| (i + 1, v))
                .map_err(|e| ResultsError::Malformed {
                    path: path.to_path_buf(),
                    line: i + 1,
                    column: e.column(),
                    field: ".".into(),
                    message: e.to_string(),
                })
        })
        .collect()
}
