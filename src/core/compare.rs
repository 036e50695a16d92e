//! Runs of one experiment on several targets, side by side per phase: client latencies at
//! p50/p90/p99, throughput, goodput, errors by kind, and the server's view (prefix hits, cached
//! tokens, KV usage peak, preemptions, running and waiting peaks, its TTFT beside the
//! client's), each with its ratio to the first run.
//!
//! Whether a difference of medians is more than noise is judged by a bootstrap of the ratio of
//! medians, drawn from each run's stored HDR histogram (the whole distribution at three
//! significant digits): the table shows medians, so the interval is about what is shown; no
//! shape is assumed (latencies are skewed and often bimodal: cold and warm, prefill and decode);
//! and only the histograms are needed, not the raw requests. A rank test on the histogram counts
//! would answer another question (whether one distribution tends to lie above the other), and
//! its p-value says nothing about how large the difference is. Each resample's median is drawn
//! directly: the median of n draws from a distribution is its value at a quantile distributed
//! Beta(k, n + 1 − k), k = ⌈n/2⌉, which makes a resample O(1) whatever n is.

use crate::core::assert::format_value;
use crate::core::catalog::{Dim, LatencyMetric, Stat};
use crate::core::report::summary::NamedSummary;
use crate::core::rng::Rng;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const COMPARE_SCHEMA_VERSION: u32 = 1;
/// Bootstrap resamples per interval.
pub const BOOTSTRAP_ROUNDS: usize = 2000;
pub const CONFIDENCE: f64 = 0.95;
const METHOD: &str = "95 % bootstrap interval of the ratio of medians (2000 resamples drawn from each run's stored HDR histogram); significant when the interval excludes 1";

/// One run directory's figures, as read from its files.
#[derive(Debug, Clone)]
pub struct RunInput {
    pub target: String,
    pub experiment: String,
    pub seed: u64,
    pub engine: String,
    pub version: Option<String>,
    pub mode: String,
    /// The run directory, for the provenance table.
    pub dir: String,
    /// More of where the run came from, for people (model, hardware, git revision, …).
    pub provenance: Vec<(String, String)>,
    pub phases: Vec<PhaseInput>,
    /// The server's `/metrics` over the run, scrape by scrape.
    pub timeline: Vec<Scrape>,
    /// With `[observe] slice`: the client's figures per time slice (`slices.jsonl`).
    pub slices: Vec<SliceRow>,
}

/// One time slice of a run: its middle and its numeric columns by name.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRow {
    pub start_s: f64,
    pub end_s: f64,
    pub values: BTreeMap<String, f64>,
}

/// One scrape of the server's `/metrics`, canonical series by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Scrape {
    /// Seconds from the run's start.
    pub at_s: f64,
    pub phase: String,
    /// The first scrape of its phase.
    pub phase_start: bool,
    pub values: BTreeMap<String, f64>,
}

/// One phase of a run: its summary as `summary.json` holds it and the histograms stored beside
/// it (µs).
#[derive(Debug, Clone)]
pub struct PhaseInput {
    pub name: String,
    pub summary: NamedSummary,
    pub histograms: BTreeMap<LatencyMetric, Histogram<u64>>,
    /// The load it offered: concurrency (closed loop) or requests/s (open loop).
    pub load: Option<Load>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    Concurrency(f64),
    RatePerS(f64),
}

/// A row of the comparison: its key and label, where its value is in a phase summary, and for
/// medians the histogram their interval is drawn from.
struct RowSpec {
    key: &'static str,
    label: &'static str,
    value: Figure,
}

/// Where a row's value is in a phase's summary.
#[derive(Clone, Copy)]
enum Figure {
    /// A latency statistic, in milliseconds.
    Latency(LatencyMetric, Stat),
    Field(fn(&NamedSummary) -> Option<f64>),
}

impl Figure {
    fn of(self, s: &NamedSummary) -> Option<f64> {
        match self {
            Figure::Latency(m, stat) => s.summary.latency(m).map(|l| l.stat(stat)),
            Figure::Field(f) => f(s),
        }
    }

    /// The histogram a median's interval is drawn from.
    fn median_of(self) -> Option<LatencyMetric> {
        match self {
            Figure::Latency(m, Stat::P50) => Some(m),
            _ => None,
        }
    }
}

const fn row(
    key: &'static str,
    label: &'static str,
    value: fn(&NamedSummary) -> Option<f64>,
) -> RowSpec {
    RowSpec {
        key,
        label,
        value: Figure::Field(value),
    }
}

const fn latency(
    key: &'static str,
    label: &'static str,
    metric: LatencyMetric,
    stat: Stat,
) -> RowSpec {
    RowSpec {
        key,
        label,
        value: Figure::Latency(metric, stat),
    }
}

/// A server figure of the phase, when it was scraped.
fn server(
    s: &NamedSummary,
    f: impl Fn(&crate::core::server::ServerSummary) -> Option<f64>,
) -> Option<f64> {
    s.server.as_ref().and_then(f)
}

fn gauge_max(s: &NamedSummary, name: &str) -> Option<f64> {
    server(s, |v| v.gauges.get(name).map(|g| g.max))
}

const ROWS: &[RowSpec] = &[
    row("requests", "requests", |s| Some(s.summary.requests as f64)),
    latency("ttft.p50", "TTFT p50 (ms)", LatencyMetric::Ttft, Stat::P50),
    latency("ttft.p90", "TTFT p90 (ms)", LatencyMetric::Ttft, Stat::P90),
    latency("ttft.p99", "TTFT p99 (ms)", LatencyMetric::Ttft, Stat::P99),
    latency("tpot.p50", "TPOT p50 (ms)", LatencyMetric::Tpot, Stat::P50),
    latency("tpot.p90", "TPOT p90 (ms)", LatencyMetric::Tpot, Stat::P90),
    latency("tpot.p99", "TPOT p99 (ms)", LatencyMetric::Tpot, Stat::P99),
    latency(
        "chunk_itl.p50",
        "chunk ITL p50 (ms)",
        LatencyMetric::ChunkItl,
        Stat::P50,
    ),
    latency(
        "chunk_itl.p90",
        "chunk ITL p90 (ms)",
        LatencyMetric::ChunkItl,
        Stat::P90,
    ),
    latency(
        "chunk_itl.p99",
        "chunk ITL p99 (ms)",
        LatencyMetric::ChunkItl,
        Stat::P99,
    ),
    latency(
        "token_itl.p50",
        "token ITL p50 (ms)",
        LatencyMetric::TokenItl,
        Stat::P50,
    ),
    latency(
        "token_itl.p90",
        "token ITL p90 (ms)",
        LatencyMetric::TokenItl,
        Stat::P90,
    ),
    latency(
        "token_itl.p99",
        "token ITL p99 (ms)",
        LatencyMetric::TokenItl,
        Stat::P99,
    ),
    latency("e2e.p50", "E2E p50 (ms)", LatencyMetric::E2e, Stat::P50),
    latency("e2e.p90", "E2E p90 (ms)", LatencyMetric::E2e, Stat::P90),
    latency("e2e.p99", "E2E p99 (ms)", LatencyMetric::E2e, Stat::P99),
    row("request_throughput", "requests/s", |s| {
        Some(s.summary.request_throughput)
    }),
    row("output_throughput", "output tokens/s", |s| {
        Some(s.summary.output_throughput)
    }),
    row("goodput", "goodput (requests/s within the SLO)", |s| {
        s.summary.goodput
    }),
    row("error_rate", "error rate", |s| Some(s.summary.error_rate)),
    row("cached_tokens", "cached prompt tokens", |s| {
        Some(s.summary.cached_tokens as f64)
    }),
    row(
        "server.prefix_cache_hit_rate",
        "server: prefix-cache hit rate",
        |s| server(s, |v| v.prefix_cache_hit_rate),
    ),
    row("server.kv_cache_usage.max", "server: KV usage peak", |s| {
        gauge_max(s, "kv_cache_usage")
    }),
    row("server.preemptions", "server: preemptions", |s| {
        server(s, |v| v.deltas.get("preemptions").copied())
    }),
    row("server.requests_running.max", "server: running peak", |s| {
        gauge_max(s, "requests_running")
    }),
    row("server.requests_waiting.max", "server: waiting peak", |s| {
        gauge_max(s, "requests_waiting")
    }),
    row("server.ttft_mean", "server: TTFT mean (ms)", |s| {
        server(s, |v| v.server_ttft_mean_ms)
    }),
    latency(
        "ttft.mean",
        "client: TTFT mean (ms)",
        LatencyMetric::Ttft,
        Stat::Mean,
    ),
];

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub schema_version: u32,
    pub experiment: String,
    /// The seed, when every run has the same one.
    pub seed: Option<u64>,
    /// The target every ratio is to.
    pub reference: String,
    pub method: &'static str,
    pub targets: Vec<TargetInfo>,
    pub phases: Vec<PhaseComparison>,
}

#[derive(Debug, Serialize)]
pub struct TargetInfo {
    pub target: String,
    pub engine: String,
    pub version: Option<String>,
    pub mode: String,
    pub run_dir: String,
}

#[derive(Debug, Serialize)]
pub struct PhaseComparison {
    pub phase: String,
    pub rows: Vec<RowComparison>,
    /// Failed requests by error kind, per target.
    pub errors: Vec<TargetErrors>,
}

#[derive(Debug, Serialize)]
pub struct RowComparison {
    pub metric: &'static str,
    pub label: &'static str,
    pub cells: Vec<Cell>,
}

/// One target's value of a row; `ratio` is to the reference's, the interval and the verdict are
/// given for medians.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub target: String,
    pub value: Option<f64>,
    pub ratio: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub significant: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct TargetErrors {
    pub target: String,
    pub errors: BTreeMap<String, u64>,
}

/// Why runs cannot be compared as they are: they come from different experiments or seeds.
pub fn check_comparable(runs: &[RunInput]) -> Result<(), String> {
    let Some(first) = runs.first() else {
        return Err("nothing to compare".into());
    };
    let list = |f: &dyn Fn(&RunInput) -> String| {
        runs.iter()
            .map(|r| format!("{} ({})", f(r), r.dir))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if runs.iter().any(|r| r.experiment != first.experiment) {
        return Err(format!(
            "these runs are of different experiments: {} (--force compares them anyway)",
            list(&|r| r.experiment.clone())
        ));
    }
    if runs.iter().any(|r| r.seed != first.seed) {
        return Err(format!(
            "these runs have different seeds, so different prompts and schedules: {} (--force compares them anyway)",
            list(&|r| format!("seed {}", r.seed))
        ));
    }
    Ok(())
}

/// The comparison of `runs` (at least one), ratios to the first.
pub fn compare(runs: &[RunInput]) -> Comparison {
    let labels = labels(runs);
    let reference = labels.first().cloned().unwrap_or_default();
    let seed = runs.first().map(|r| r.seed);
    let mut phase_names: Vec<&str> = Vec::new();
    for p in runs.iter().flat_map(|r| &r.phases) {
        if !phase_names.contains(&p.name.as_str()) {
            phase_names.push(&p.name);
        }
    }
    let phases = phase_names
        .iter()
        .enumerate()
        .map(|(pi, name)| {
            let of: Vec<Option<&PhaseInput>> = runs
                .iter()
                .map(|r| r.phases.iter().find(|p| p.name == *name))
                .collect();
            let rows = ROWS
                .iter()
                .enumerate()
                .map(|(ri, spec)| compare_row(spec, &of, &labels, seed.unwrap_or(0), pi, ri))
                .filter(|r| r.cells.iter().any(|c| c.value.is_some()))
                .collect();
            let errors = of
                .iter()
                .zip(&labels)
                .map(|(p, label)| TargetErrors {
                    target: label.clone(),
                    errors: p.map(errors_of).unwrap_or_default(),
                })
                .collect();
            PhaseComparison {
                phase: name.to_string(),
                rows,
                errors,
            }
        })
        .collect();
    Comparison {
        schema_version: COMPARE_SCHEMA_VERSION,
        experiment: runs
            .first()
            .map(|r| r.experiment.clone())
            .unwrap_or_default(),
        seed: seed.filter(|s| runs.iter().all(|r| r.seed == *s)),
        reference,
        method: METHOD,
        targets: runs
            .iter()
            .zip(&labels)
            .map(|(r, label)| TargetInfo {
                target: label.clone(),
                engine: r.engine.clone(),
                version: r.version.clone(),
                mode: r.mode.clone(),
                run_dir: r.dir.clone(),
            })
            .collect(),
        phases,
    }
}

/// Target names, with the run directory added where two runs share one.
fn labels(runs: &[RunInput]) -> Vec<String> {
    runs.iter()
        .map(|r| {
            if runs.iter().filter(|o| o.target == r.target).count() > 1 {
                let dir = r.dir.rsplit('/').find(|s| !s.is_empty()).unwrap_or(&r.dir);
                format!("{}@{dir}", r.target)
            } else {
                r.target.clone()
            }
        })
        .collect()
}

fn errors_of(p: &PhaseInput) -> BTreeMap<String, u64> {
    p.summary.summary.errors.clone()
}

fn compare_row(
    spec: &RowSpec,
    of: &[Option<&PhaseInput>],
    labels: &[String],
    seed: u64,
    phase: usize,
    row: usize,
) -> RowComparison {
    let value = |p: Option<&PhaseInput>| spec.value.of(&p?.summary);
    let reference = of.first().copied().flatten();
    let base = value(reference);
    let cells = of
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (p, label))| {
            let v = value(*p);
            let ratio = match (v, base) {
                (Some(v), Some(b)) if b != 0.0 => Some(v / b),
                _ => None,
            };
            let interval = match (spec.value.median_of(), i) {
                (Some(metric), 1..) => {
                    let mut rng = Rng::for_stream(seed, 0, "compare", phase as u64, row as u64);
                    rng = Rng::for_stream(rng.next_u64(), 0, "target", i as u64, 0);
                    match (histogram(reference, metric), histogram(*p, metric)) {
                        (Some(a), Some(b)) => ratio_of_medians_interval(a, b, &mut rng),
                        _ => None,
                    }
                }
                _ => None,
            };
            Cell {
                target: label.clone(),
                value: v,
                ratio: if i == 0 { None } else { ratio },
                ci_low: interval.map(|x| x.0),
                ci_high: interval.map(|x| x.1),
                significant: interval.map(|(lo, hi)| lo > 1.0 || hi < 1.0),
            }
        })
        .collect();
    RowComparison {
        metric: spec.key,
        label: spec.label,
        cells,
    }
}

fn histogram(p: Option<&PhaseInput>, metric: LatencyMetric) -> Option<&Histogram<u64>> {
    p?.histograms.get(&metric)
}

/// One bootstrap resample's median of `h`: the value at a quantile drawn from the distribution
/// of the median of `h.len()` draws (Beta(k, n + 1 − k), k = ⌈n/2⌉).
fn resampled_median(h: &Histogram<u64>, rng: &mut Rng) -> f64 {
    let n = h.len() as f64;
    let k = (n / 2.0).ceil();
    let q = rng.beta(k, n + 1.0 - k);
    h.value_at_quantile(q) as f64
}

/// The [`CONFIDENCE`] percentile-bootstrap interval of median(b) / median(a); `None` when
/// either histogram is empty or a resampled median of `a` is zero.
pub fn ratio_of_medians_interval(
    a: &Histogram<u64>,
    b: &Histogram<u64>,
    rng: &mut Rng,
) -> Option<(f64, f64)> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut ratios = Vec::with_capacity(BOOTSTRAP_ROUNDS);
    for _ in 0..BOOTSTRAP_ROUNDS {
        let ma = resampled_median(a, rng);
        let mb = resampled_median(b, rng);
        if ma <= 0.0 {
            return None;
        }
        ratios.push(mb / ma);
    }
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    let at = |q: f64| ratios[((q * BOOTSTRAP_ROUNDS as f64) as usize).min(BOOTSTRAP_ROUNDS - 1)];
    Some((at(tail), at(1.0 - tail)))
}

/// A number as the tables show it: the way assertion verdicts print a plain number.
pub fn number(v: f64) -> String {
    format_value(v, Dim::Plain)
}

/// A cell's ratio to the reference as the tables show it (`1.23× [1.05, 1.41]`, or `1.23×`
/// without an interval) and whether the difference is significant; `None` for the reference
/// and for a cell without a ratio.
pub fn ratio_text(c: &Cell) -> Option<(String, bool)> {
    let r = c.ratio?;
    Some(match (c.ci_low, c.ci_high, c.significant) {
        (Some(lo), Some(hi), Some(sig)) => (format!("{r:.2}× [{lo:.2}, {hi:.2}]"), sig),
        _ => (format!("{r:.2}×"), false),
    })
}

fn cell_text(c: &Cell) -> String {
    let Some(v) = c.value else {
        return "–".into();
    };
    match ratio_text(c) {
        Some((ratio, sig)) => format!("{} ({ratio}{})", number(v), if sig { " *" } else { "" }),
        None => number(v),
    }
}

impl Comparison {
    /// The comparison as Markdown: provenance, then one table per phase.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let names: Vec<&str> = self.targets.iter().map(|t| t.target.as_str()).collect();
        let _ = writeln!(out, "# `{}`: {}\n", self.experiment, names.join(" vs "));
        let _ = writeln!(
            out,
            "| target | engine | version | mode | run |\n|---|---|---|---|---|"
        );
        for t in &self.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                t.target,
                t.engine,
                t.version.as_deref().unwrap_or("–"),
                t.mode,
                t.run_dir
            );
        }
        for p in &self.phases {
            let _ = writeln!(out, "\n## phase `{}`\n", p.phase);
            let _ = writeln!(out, "| metric | {} |", names.join(" | "));
            let _ = writeln!(out, "|---{}|", "|---".repeat(names.len()));
            for r in &p.rows {
                let cells: Vec<String> = r.cells.iter().map(cell_text).collect();
                let _ = writeln!(out, "| {} | {} |", r.label, cells.join(" | "));
            }
            if p.errors.iter().any(|e| !e.errors.is_empty()) {
                let cells: Vec<String> = p
                    .errors
                    .iter()
                    .map(|e| {
                        if e.errors.is_empty() {
                            "–".into()
                        } else {
                            let kinds: Vec<String> =
                                e.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
                            kinds.join(", ")
                        }
                    })
                    .collect();
                let _ = writeln!(out, "| errors by kind | {} |", cells.join(" | "));
            }
        }
        let _ = writeln!(
            out,
            "\nRatios are to `{}`. For medians, [low, high] is a {} (marked *). Other rows give the ratio alone.",
            self.reference, METHOD
        );
        out
    }
}

#[cfg(test)]
mod tests;
