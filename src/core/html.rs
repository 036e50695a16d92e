//! The HTML report of one experiment's runs: one self-contained page (inline CSS and SVG, no
//! script, nothing fetched) that opens from disk offline. Sections: where each run came from;
//! per phase, the side-by-side table of [`compare`](super::compare) and the TTFT and ITL
//! distributions of every target overlaid (CDFs from the stored histograms); the server's
//! timelines (KV usage, running and waiting requests, prefix-cache hits) with phase boundaries.

use super::compare::{Cell, Comparison, Load, RunInput, compare};
use super::svg::{Chart, Series, escape, line_chart};
use crate::core::catalog::{LatencyMetric, Stat};
use crate::core::metrics::PhaseSummary;
use hdrhistogram::Histogram;
use std::fmt::Write as _;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1340px;color:#222;padding:0 16px}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}.sig{font-weight:600}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{width:640px;max-width:100%;height:auto;border:1px solid #eee}\
.chart .title{font-weight:600;font-size:13px}.chart .tick{font-size:10px;fill:#555}.chart .label{font-size:11px;fill:#333}\
.chart .legend{font-size:11px}.chart .grid{stroke:#eee}.chart .axis{stroke:#999}\
.chart .marker{stroke:#bbb;stroke-dasharray:4 3;font-size:10px;fill:#777}.empty{color:#888}.note{color:#555}";

/// Server series drawn over time, with their axis labels.
const TIMELINES: &[(&str, &str, &str)] = &[
    ("kv_cache_usage", "KV-cache usage", "fraction of the cache"),
    ("requests_running", "Requests running", "requests"),
    ("requests_waiting", "Requests waiting", "requests"),
    (
        "prefix_cache_hit_rate",
        "Prefix-cache hit rate",
        "hit ÷ queried tokens since the last scrape",
    ),
];

/// A run's points of one server series over time; the hit rate is derived from the growth of
/// the hit and query counters between consecutive scrapes (none where nothing was queried, or
/// where a counter went back: a restarted server).
fn timeline_points(r: &RunInput, key: &str) -> Vec<(f64, f64)> {
    if key != "prefix_cache_hit_rate" {
        return r
            .timeline
            .iter()
            .filter_map(|s| Some((s.at_s, *s.values.get(key)?)))
            .collect();
    }
    r.timeline
        .windows(2)
        .filter_map(|w| {
            let delta = |k: &str| Some(w[1].values.get(k)? - w[0].values.get(k)?);
            let (hits, queries) = (delta("prefix_cache_hits")?, delta("prefix_cache_queries")?);
            (queries > 0.0 && hits >= 0.0).then(|| (w[1].at_s, hits / queries))
        })
        .collect()
}

/// The page for `runs` (of one experiment; the first is the reference of every ratio).
pub fn report(runs: &[RunInput]) -> String {
    let c = compare(runs);
    let mut o = String::new();
    let title = format!("inferlab: {}", c.experiment);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        escape(&title),
        escape(&title)
    );
    let _ = write!(
        o,
        "<p class=\"note\">{} — ratios are to <b>{}</b>.</p>",
        escape(&names(&c).join(" vs ")),
        escape(&c.reference)
    );
    provenance(&mut o, runs, &c);
    capacity(&mut o, runs);
    for (i, phase) in c.phases.iter().enumerate() {
        let _ = write!(o, "<h2>Phase <code>{}</code></h2>", escape(&phase.phase));
        phase_table(&mut o, &c, i);
        o.push_str("<div class=\"charts\">");
        for (metric, what) in [
            (LatencyMetric::Ttft, "TTFT"),
            (LatencyMetric::ChunkItl, "Inter-chunk latency"),
        ] {
            o.push_str(&line_chart(&cdf_chart(
                runs,
                &c,
                &phase.phase,
                metric,
                what,
            )));
        }
        if let Some(chart) = by_turn_chart(runs, &c, &phase.phase) {
            o.push_str(&line_chart(&chart));
        }
        o.push_str("</div>");
    }
    load_charts(&mut o, runs, &c);
    slice_charts(&mut o, runs, &c);
    timelines(&mut o, runs, &c);
    let _ = writeln!(
        o,
        "<p class=\"note\">For medians, [low, high] is a {} (in bold when significant).</p></body></html>",
        escape(c.method)
    );
    o
}

fn names(c: &Comparison) -> Vec<String> {
    c.targets.iter().map(|t| t.target.clone()).collect()
}

fn provenance(o: &mut String, runs: &[RunInput], c: &Comparison) {
    o.push_str("<h2>Runs</h2><table><tr><th>target</th><th>engine</th><th>version</th><th>mode</th><th>seed</th>");
    let mut keys: Vec<&str> = Vec::new();
    for (k, _) in runs.iter().flat_map(|r| &r.provenance) {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    for k in &keys {
        let _ = write!(o, "<th>{}</th>", escape(k));
    }
    o.push_str("<th>results</th></tr>");
    for (r, t) in runs.iter().zip(&c.targets) {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&t.target),
            escape(&t.engine),
            escape(t.version.as_deref().unwrap_or("–")),
            escape(&t.mode),
            r.seed
        );
        for k in &keys {
            let v = r
                .provenance
                .iter()
                .find(|(key, _)| key == k)
                .map_or("–", |(_, v)| v.as_str());
            let _ = write!(o, "<td>{}</td>", escape(v));
        }
        let _ = write!(o, "<td>{}</td></tr>", escape(&t.run_dir));
    }
    o.push_str("</table>");
}

/// What each run's capacity searches found (a phase summary's `capacity` block), probe by probe.
fn capacity(o: &mut String, runs: &[RunInput]) {
    let mut rows = String::new();
    for r in runs {
        for p in &r.phases {
            let Some(c) = &p.summary.capacity else {
                continue;
            };
            let num = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |v| format!("{v}"));
            let probes: Vec<String> = c
                .probes
                .iter()
                .map(|x| {
                    let met = if x.passed { "met" } else { "missed" };
                    format!("{} {met}", x.load)
                })
                .collect();
            let _ = write!(
                rows,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><b>{}</b>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.target),
                escape(&p.name),
                escape(c.over.as_str()),
                escape(&num(c.max_passing)),
                crate::core::units::capacity_bound(c.converged, c.cut_short),
                escape(&num(c.first_failing)),
                escape(&probes.join(", "))
            );
        }
    }
    if rows.is_empty() {
        return;
    }
    o.push_str("<h2>Capacity search</h2><p class=\"note\">The highest load whose probe met the SLO, the lowest that missed it, and every probe in the order run; each probe is a phase below.</p><table><tr><th>target</th><th>search</th><th>over</th><th>highest meeting the SLO</th><th>lowest missing it</th><th>probes</th></tr>");
    o.push_str(&rows);
    o.push_str("</table>");
}

fn cell_html(cell: &Cell) -> String {
    let Some(v) = cell.value else {
        return "–".into();
    };
    let value = super::compare::number(v);
    match super::compare::ratio_text(cell) {
        Some((ratio, true)) => format!("{value} <span class=\"sig\">({ratio})</span>"),
        Some((ratio, false)) => format!("{value} ({ratio})"),
        None => value,
    }
}

fn phase_table(o: &mut String, c: &Comparison, i: usize) {
    let p = &c.phases[i];
    o.push_str("<table><tr><th>metric</th>");
    for n in names(c) {
        let _ = write!(o, "<th>{}</th>", escape(&n));
    }
    o.push_str("</tr>");
    for r in &p.rows {
        let _ = write!(o, "<tr><td>{}</td>", escape(r.label));
        for cell in &r.cells {
            let _ = write!(o, "<td>{}</td>", cell_html(cell));
        }
        o.push_str("</tr>");
    }
    o.push_str("<tr><td>errors by kind</td>");
    for e in &p.errors {
        let text: Vec<String> = e.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let text = if text.is_empty() {
            "none".to_string()
        } else {
            text.join(", ")
        };
        let _ = write!(o, "<td>{}</td>", escape(&text));
    }
    o.push_str("</tr></table>");
}

/// The cumulative distribution of a histogram (µs) as (ms, fraction) points.
pub fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = h.len() as f64;
    if total == 0.0 {
        return Vec::new();
    }
    let mut out = vec![(h.min() as f64 / 1e3, 0.0)];
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen += v.count_at_value();
        out.push((
            h.highest_equivalent(v.value_iterated_to()) as f64 / 1e3,
            seen as f64 / total,
        ));
    }
    out
}

fn cdf_chart(
    runs: &[RunInput],
    c: &Comparison,
    phase: &str,
    metric: LatencyMetric,
    what: &str,
) -> Chart {
    let series = runs
        .iter()
        .zip(&c.targets)
        .filter_map(|(r, t)| {
            let h = r
                .phases
                .iter()
                .find(|p| p.name == phase)?
                .histograms
                .get(&metric)?;
            Some(Series {
                label: format!("{} (n = {})", t.target, h.len()),
                points: cdf(h),
            })
        })
        .collect();
    Chart {
        title: format!("{what}, phase {phase}: cumulative distribution"),
        x_label: format!("{what} (ms)"),
        y_label: "fraction of samples".into(),
        series,
        markers: Vec::new(),
        y_at_least: Some(1.0),
    }
}

/// TTFT p50 by turn (or agent step) of a conversation phase, per target.
fn by_turn_chart(runs: &[RunInput], c: &Comparison, phase: &str) -> Option<Chart> {
    let series: Vec<Series> = runs
        .iter()
        .zip(&c.targets)
        .filter_map(|(r, t)| {
            // A run whose phase has no turns (not a conversation there) draws no line.
            let p = r
                .phases
                .iter()
                .find(|p| p.name == phase && !p.summary.by_turn.is_empty())?;
            let mut points: Vec<(f64, f64)> = p
                .summary
                .by_turn
                .iter()
                .filter_map(|(turn, s)| Some((f64::from(*turn), s.ttft.as_ref()?.p50_ms)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Some(Series {
                label: t.target.clone(),
                points,
            })
        })
        .collect();
    (!series.is_empty()).then(|| Chart {
        title: format!("TTFT p50 by turn, phase {phase}"),
        x_label: "turn (0: the first)".into(),
        y_label: "TTFT p50 (ms)".into(),
        series,
        markers: Vec::new(),
        y_at_least: None,
    })
}

/// Phases that offered different loads of one kind, with each one's load, in load order.
fn load_points(r: &RunInput) -> Vec<(f64, &PhaseSummary)> {
    let mut points: Vec<(Load, &PhaseSummary)> = r
        .phases
        .iter()
        .filter_map(|p| Some((p.load?, &p.summary.summary)))
        .collect();
    let same_kind = points
        .windows(2)
        .all(|w| std::mem::discriminant(&w[0].0) == std::mem::discriminant(&w[1].0));
    points.sort_by(|a, b| load_value(a.0).total_cmp(&load_value(b.0)));
    let distinct = points
        .windows(2)
        .filter(|w| load_value(w[0].0) != load_value(w[1].0))
        .count();
    // Phases at one load (two APIs side by side, cold and warm) are no sweep.
    if distinct == 0 || !same_kind {
        return Vec::new();
    }
    points
        .into_iter()
        .map(|(l, s)| (load_value(l), s))
        .collect()
}

fn load_value(l: Load) -> f64 {
    match l {
        Load::Concurrency(x) | Load::RatePerS(x) => x,
    }
}

/// Across phases that offered different loads (a sweep): TTFT p50 and p99 against the load,
/// and output throughput per server against throughput per user (the Pareto view).
fn load_charts(o: &mut String, runs: &[RunInput], c: &Comparison) {
    let Some(first) = runs.first() else {
        return;
    };
    if load_points(first).is_empty() {
        return;
    }
    let x_label = match first.phases.iter().find_map(|p| p.load) {
        Some(Load::RatePerS(_)) => "offered rate (requests/s)",
        _ => "requests in flight (closed loop)",
    };
    let mut latency = Vec::new();
    let mut pareto = Vec::new();
    for (r, t) in runs.iter().zip(&c.targets) {
        let points = load_points(r);
        for stat in [Stat::P50, Stat::P99] {
            latency.push(Series {
                label: format!("{} {}", t.target, stat.name()),
                points: points
                    .iter()
                    .filter_map(|(x, s)| Some((*x, s.ttft.as_ref()?.stat(stat))))
                    .collect(),
            });
        }
        pareto.push(Series {
            label: t.target.clone(),
            points: points
                .iter()
                .filter_map(|(_, s)| {
                    let tpot = s.tpot.as_ref()?.p50_ms;
                    let total = s.output_throughput;
                    (tpot > 0.0).then(|| (1e3 / tpot, total))
                })
                .collect(),
        });
    }
    o.push_str("<h2>Across load</h2><p class=\"note\">One point per phase. Throughput per user is 1000 / TPOT p50; per server, the phase's output tokens per second (one GPU on a pod; here one CPU).</p><div class=\"charts\">");
    o.push_str(&line_chart(&Chart {
        title: "TTFT against offered load".into(),
        x_label: x_label.into(),
        y_label: "TTFT (ms)".into(),
        series: latency,
        markers: Vec::new(),
        y_at_least: None,
    }));
    o.push_str(&line_chart(&Chart {
        title: "Output throughput: per server against per user".into(),
        x_label: "output tokens/s per user".into(),
        y_label: "output tokens/s per server".into(),
        series: pareto,
        markers: Vec::new(),
        y_at_least: None,
    }));
    o.push_str("</div>");
}

/// The client's figures per time slice, when the runs were sliced: what a phase's figures
/// average away when the load changes over time.
const SLICE_CHARTS: &[(&str, &str, &str)] = &[
    ("requests_sent", "Requests sent per second", "requests/s"),
    ("output_throughput", "Output tokens per second", "tokens/s"),
    ("concurrency_mean", "Requests in flight (mean)", "requests"),
    ("ttft_p50_ms", "TTFT p50", "ms"),
    ("itl_p50_ms", "Inter-token latency p50", "ms"),
    ("e2e_p90_ms", "E2E p90", "ms"),
    (
        "server_kv_cache_usage_mean",
        "Server KV-cache usage (mean of its scrapes)",
        "fraction",
    ),
    (
        "server_requests_waiting_max",
        "Requests waiting at the server (max of its scrapes)",
        "requests",
    ),
    (
        "server_preemptions_increase",
        "Server preemptions",
        "preemptions",
    ),
    (
        "server_prefix_cache_hit_rate",
        "Server prefix-cache hit rate",
        "fraction",
    ),
];

fn slice_charts(o: &mut String, runs: &[RunInput], c: &Comparison) {
    if runs.iter().all(|r| r.slices.is_empty()) {
        return;
    }
    o.push_str("<h2>Over time, slice by slice</h2><p class=\"note\">Each event counts in the time slice it happened in (a send where it was sent, a TTFT where the first chunk came, a gap where its chunk came); the server's figures come from the scrapes taken in the slice (a counter's increase since the scrape before); points sit in the middle of their slice.</p><div class=\"charts\">");
    for (key, what, unit) in SLICE_CHARTS {
        let series: Vec<Series> = runs
            .iter()
            .zip(&c.targets)
            .map(|(r, t)| Series {
                label: t.target.clone(),
                points: r
                    .slices
                    .iter()
                    .filter_map(|s| {
                        let width = s.end_s - s.start_s;
                        let v = *s.values.get(*key)?;
                        // Sends are counts per slice: per second, so widths compare.
                        let v = if *key == "requests_sent" && width > 0.0 {
                            v / width
                        } else {
                            v
                        };
                        Some(((s.start_s + s.end_s) / 2.0, v))
                    })
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        o.push_str(&line_chart(&Chart {
            title: format!("{what} per slice"),
            x_label: "time since the run started (s)".into(),
            y_label: (*unit).into(),
            series,
            markers: Vec::new(),
            y_at_least: None,
        }));
    }
    o.push_str("</div>");
}

fn timelines(o: &mut String, runs: &[RunInput], c: &Comparison) {
    if runs.iter().all(|r| r.timeline.is_empty()) {
        o.push_str("<h2>Server</h2><p class=\"empty\">No /metrics scrapes in these runs.</p>");
        return;
    }
    o.push_str("<h2>Server over time</h2><p class=\"note\">From each run's /metrics scrapes; dashed lines mark where the first run's phases began.</p><div class=\"charts\">");
    let markers: Vec<(f64, String)> = runs
        .first()
        .map(|r| {
            r.timeline
                .iter()
                .filter(|s| s.phase_start)
                .map(|s| (s.at_s, s.phase.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut drawn = 0;
    for (key, what, unit) in TIMELINES {
        let series: Vec<Series> = runs
            .iter()
            .zip(&c.targets)
            .map(|(r, t)| Series {
                label: t.target.clone(),
                points: timeline_points(r, key),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        drawn += 1;
        o.push_str(&line_chart(&Chart {
            title: format!("{what} over the run"),
            x_label: "time since the run started (s)".into(),
            y_label: (*unit).into(),
            series,
            markers: markers.clone(),
            y_at_least: matches!(*key, "kv_cache_usage" | "prefix_cache_hit_rate").then_some(1.0),
        }));
    }
    if drawn == 0 {
        o.push_str("<p class=\"empty\">The scrapes hold none of the series drawn here.</p>");
    }
    o.push_str("</div>");
}

#[cfg(test)]
mod tests;
