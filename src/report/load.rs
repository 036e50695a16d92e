//! Reading finished runs back: a run directory's `manifest.json`, `summary.json`, stored
//! histograms and `/metrics` scrapes as a [`RunInput`] for comparison and the report, and the latest run of each target of an
//! experiment under a results root. Every failure names the directory or file and what is
//! missing; nothing is written.

use crate::core::compare::{Load, PhaseInput, RunInput, Scrape, SliceRow};
use hdrhistogram::serialization::Deserializer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Latency histograms a comparison draws intervals from.
const HISTOGRAMS: &[&str] = &["ttft", "tpot", "chunk_itl", "token_itl", "e2e"];

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
        let target = match read_json(&run.join("manifest.json")) {
            Ok(m) => str_at(&m, "/target/name").unwrap_or_default(),
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
    let manifest = read_json(&dir.join("manifest.json"))?;
    let summary_path = dir.join("summary.json");
    if !summary_path.is_file() {
        return Err(format!(
            "{}: no summary.json: the run did not finish (its requests.jsonl keeps every request that completed)",
            dir.display()
        ));
    }
    let summary = read_json(&summary_path)?;
    let field = |v: &Value, file: &str, ptr: &str| -> Result<String, String> {
        str_at(v, ptr).ok_or_else(|| {
            format!(
                "{}: field `{}` is missing",
                dir.join(file).display(),
                ptr.trim_start_matches('/').replace('/', ".")
            )
        })
    };
    let phases = summary
        .get("phases")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{}: field `phases` is missing", summary_path.display()))?;
    let phases = phases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p.get("name").and_then(Value::as_str).ok_or_else(|| {
                format!(
                    "{}: field `phases[{i}].name` is missing",
                    summary_path.display()
                )
            })?;
            Ok(PhaseInput {
                name: name.to_string(),
                summary: p.clone(),
                histograms: histograms(&dir.join("histograms").join(name))?,
                load: load_of(&manifest, name),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(RunInput {
        target: field(&manifest, "manifest.json", "/target/name")?,
        experiment: field(&manifest, "manifest.json", "/experiment/name")?,
        seed: manifest
            .get("seed")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                format!(
                    "{}: field `seed` is missing",
                    dir.join("manifest.json").display()
                )
            })?,
        engine: field(&manifest, "manifest.json", "/target/kind")?,
        version: str_at(&manifest, "/server_version"),
        mode: str_at(&manifest, "/mode").unwrap_or_default(),
        dir: dir.display().to_string(),
        provenance: provenance(&manifest),
        phases,
        timeline: timeline(&dir.join("server_metrics.jsonl"))?,
        slices: slices(&dir.join("slices.jsonl"))?,
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

/// The load a phase offered, from the manifest's experiment: a closed loop's concurrency or an
/// open loop's rate.
fn load_of(manifest: &Value, phase: &str) -> Option<Load> {
    let phases = manifest.pointer("/experiment/phases")?.as_array()?;
    let w = phases
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(phase))?
        .get("workload")?;
    if w.get("kind").and_then(Value::as_str) == Some("concurrent") {
        return w.get("concurrency")?.as_f64().map(Load::Concurrency);
    }
    w.get("rate_per_s")?.as_f64().map(Load::RatePerS)
}

/// Where a run came from, for people: model, hardware (a recording's model details), when,
/// the client's calibration, the code's revision.
fn provenance(manifest: &Value) -> Vec<(String, String)> {
    let details = manifest
        .pointer("/fixture/model_details")
        .or_else(|| manifest.pointer("/model_details"));
    let mut out = Vec::new();
    let mut put = |label: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((label.to_string(), v));
        }
    };
    put("model", str_at(manifest, "/model"));
    put("hardware", details.and_then(|d| str_at(d, "/hardware")));
    put(
        "recorded",
        manifest
            .pointer("/fixture/engine_version")
            .and_then(|_| str_at(manifest, "/fixture/recorded_at")),
    );
    put("started", str_at(manifest, "/started_at"));
    put(
        "client TTFT error p99",
        manifest
            .pointer("/calibration/ttft_error_p99_ms")
            .and_then(Value::as_f64)
            .map(|ms| format!("{ms:.3} ms")),
    );
    put(
        "git revision",
        str_at(manifest, "/git_revision").map(|r| r.chars().take(12).collect()),
    );
    out
}

/// The run's successful `/metrics` scrapes, in order; an absent file is an empty timeline.
fn timeline(path: &Path) -> Result<Vec<Scrape>, String> {
    let mut out: Vec<Scrape> = Vec::new();
    for (_, v) in json_lines(path)? {
        if v.get("ok").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let (Some(at_ms), Some(phase)) = (
            v.get("at_ms").and_then(Value::as_f64),
            v.get("phase").and_then(Value::as_str),
        ) else {
            continue;
        };
        let values = v
            .get("values")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let phase_start = v.get("point").and_then(Value::as_str) == Some("start")
            && out.last().is_none_or(|last| last.phase != phase);
        out.push(Scrape {
            at_s: at_ms / 1e3,
            phase: phase.to_string(),
            phase_start,
            values,
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

/// The latency histograms stored for one phase; a missing one is simply absent (a phase
/// without successes has none).
fn histograms(dir: &Path) -> Result<BTreeMap<String, hdrhistogram::Histogram<u64>>, String> {
    let mut out = BTreeMap::new();
    for metric in HISTOGRAMS {
        let path = dir.join(format!("{metric}.hdr"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let h = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("{}: not an HdrHistogram: {e:?}", path.display()))?;
        out.insert(metric.to_string(), h);
    }
    Ok(out)
}

/// A JSON file; an error names the file, line and column.
pub(crate) fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: {e} (half-written?)",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// The string (or the number, as text) at a JSON pointer; `None` when absent or null.
pub(crate) fn str_at(v: &Value, ptr: &str) -> Option<String> {
    match v.pointer(ptr)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}
