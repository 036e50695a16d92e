//! Tables and verdict lines for people.

use super::RunSummary;
use crate::core::assert::Verdict;
use crate::core::metrics::{LatencyStats, PhaseSummary};
use crate::core::server::ServerSummary;

/// One line of server-side figures for the phase table.
fn server_line(s: &ServerSummary) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(r) = s.prefix_cache_hit_rate {
        parts.push(format!("prefix-cache hits {:.0}%", r * 100.0));
    }
    if let Some(g) = s.gauges.get("kv_cache_usage") {
        parts.push(format!("kv usage mean {:.2} max {:.2}", g.mean, g.max));
    }
    if let Some(p) = s.deltas.get("preemptions") {
        parts.push(format!("preemptions {p}"));
    }
    for (name, label) in [
        ("requests_running", "running"),
        ("requests_waiting", "waiting"),
    ] {
        if let Some(g) = s.gauges.get(name) {
            parts.push(format!("{label} max {}", g.max));
        }
    }
    if let Some(t) = s.server_ttft_mean_ms {
        parts.push(format!("server ttft mean {t:.1}ms"));
    }
    if let Some(g) = s.gauges.get("gpu_util") {
        parts.push(format!("gpu util mean {:.0}%", g.mean * 100.0));
    }
    if s.scrape_failures > 0 {
        parts.push(format!(
            "{} of {} scrapes failed",
            s.scrape_failures, s.scrapes
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The per-phase table printed after a run.
pub fn phase_table(summary: &RunSummary) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<12} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "phase",
        "ok",
        "err",
        "ttft p50",
        "ttft p99",
        "tpot p50",
        "e2e p50",
        "req/s",
        "out tok/s",
        "itl p50",
        "cached"
    );
    out.push_str(&header);
    out.push('\n');
    let fmt_ms = |s: Option<&LatencyStats>, f: fn(&LatencyStats) -> f64| match s {
        Some(s) => format!("{:.1}ms", f(s)),
        None => "-".to_string(),
    };
    let rows = summary
        .phases
        .iter()
        .map(|p| (p.name.as_str(), &p.summary))
        .chain(std::iter::once(("all", &summary.all)));
    for (name, s) in rows {
        out.push_str(&format!(
            "{:<12} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9.2} {:>9.1} {:>9} {:>8}\n",
            name,
            s.succeeded,
            s.failed,
            fmt_ms(s.ttft.as_ref(), |x| x.p50_ms),
            fmt_ms(s.ttft.as_ref(), |x| x.p99_ms),
            fmt_ms(s.tpot.as_ref(), |x| x.p50_ms),
            fmt_ms(s.e2e.as_ref(), |x| x.p50_ms),
            s.request_throughput,
            s.output_throughput,
            fmt_ms(s.chunk_itl.as_ref(), |x| x.p50_ms),
            s.cached_token_ratio
                .map_or_else(|| "-".to_string(), |r| format!("{:.0}%", r * 100.0)),
        ));
        if !s.errors.is_empty() {
            let e: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            out.push_str(&format!("{:<12} errors: {}\n", "", e.join(", ")));
        }
        if let Some(line) = summary.server(name).and_then(server_line) {
            out.push_str(&format!("{:<12} server: {line}\n", ""));
        }
        for line in [
            capacity_line(summary, name),
            intervals_line(summary, name),
            serverless_line(summary, name),
            turns_line(summary, name),
            load_line(summary, name, s),
        ]
        .into_iter()
        .flatten()
        {
            out.push_str(&format!("{:<12} {line}\n", ""));
        }
    }
    out.push_str(&format!("prompt lengths: {}\n", summary.prompt_lengths));
    if !summary.server_metrics.scraped() {
        out.push_str(&format!("server metrics: {}\n", summary.server_metrics));
    }
    out
}

/// A capacity search: what it found, and each probe's verdict in order.
fn capacity_line(summary: &RunSummary, name: &str) -> Option<String> {
    let c = summary
        .phases
        .iter()
        .find(|p| p.name == name)?
        .capacity
        .as_ref()?;
    let fmt = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |v| format!("{v}"));
    let probes: Vec<String> = c
        .probes
        .iter()
        .map(|p| format!("{} {}", p.load, if p.passed { "met" } else { "missed" }))
        .collect();
    Some(format!(
        "capacity: highest {} meeting the SLO {}{} (lowest missing it: {}); probes: {}",
        c.over.as_str(),
        fmt(c.max_passing),
        crate::core::units::capacity_bound(c.converged, c.cut_short),
        fmt(c.first_failing),
        probes.join(", ")
    ))
}

/// With repeats: the table's main figures as means over the repeats with their intervals.
fn intervals_line(summary: &RunSummary, name: &str) -> Option<String> {
    let intervals = summary.intervals(name)?;
    let n = summary.repeats.as_ref()?.repeats;
    let parts: Vec<String> = [
        ("ttft.p50_ms", "ttft p50", "ms"),
        ("ttft.p99_ms", "ttft p99", "ms"),
        ("tpot.p50_ms", "tpot p50", "ms"),
        ("e2e.p50_ms", "e2e p50", "ms"),
        ("output_throughput", "out tok/s", ""),
    ]
    .into_iter()
    .filter_map(|(key, label, unit)| {
        let i = intervals.get(key)?;
        Some(format!(
            "{label} {:.1}{unit} [{:.1}, {:.1}]",
            i.mean, i.ci_low, i.ci_high
        ))
    })
    .collect();
    (!parts.is_empty()).then(|| format!("mean of {n} repeats [95% CI]: {}", parts.join(", ")))
}

/// A serverless phase's cold start and whether a worker was up before it.
fn serverless_line(summary: &RunSummary, name: &str) -> Option<String> {
    let p = summary.serverless.as_ref()?.phases.get(name)?;
    let cold = match (p.cold_start_ttft_ms, &p.cold_start_error) {
        (Some(t), _) => format!("first request {t:.1}ms to first token"),
        (None, Some(e)) => format!("first request failed: {e}"),
        (None, None) => "first request: -".to_string(),
    };
    let warm = match p.warm_before {
        Some(true) => "workers warm before",
        Some(false) => "no worker up before (cold start)",
        None => "worker state unknown",
    };
    Some(format!("serverless: {cold}; {warm}"))
}

/// A conversation phase's TTFT median per turn.
fn turns_line(summary: &RunSummary, name: &str) -> Option<String> {
    let p = summary.phases.iter().find(|p| p.name == name)?;
    if p.by_turn.is_empty() {
        return None;
    }
    let turns: Vec<String> = p
        .by_turn
        .iter()
        .map(|(t, s)| match &s.ttft {
            Some(x) => format!("t{t} {:.1}ms", x.p50_ms),
            None => format!("t{t} -"),
        })
        .collect();
    Some(format!("ttft p50 by turn: {}", turns.join(", ")))
}

/// An open-loop phase's offered load: declared, scheduled and achieved rates.
fn load_line(summary: &RunSummary, name: &str, s: &PhaseSummary) -> Option<String> {
    let f = &summary.phases.iter().find(|p| p.name == name)?.fidelity;
    let (Some(d), Some(sch), Some(a)) = (f.declared_rate, f.scheduled_rate, f.achieved_rate) else {
        return None;
    };
    let ks = match (f.ks_statistic, f.ks_critical) {
        (Some(k), Some(c)) => format!(", KS {k:.3} (1% critical {c:.3})"),
        _ => String::new(),
    };
    Some(format!(
        "load: declared {d:.2} req/s, scheduled {sch:.2}, achieved {a:.2}{ks}, late sends {}, dropped {}, cancelled {}{}",
        s.late_sends,
        s.dropped,
        s.cancelled,
        if f.ok { "" } else { " — DRIFTED" }
    ))
}

/// Assertion verdicts, one block each.
pub fn verdict_lines(verdicts: &[Verdict]) -> String {
    verdicts.iter().map(|v| format!("{v}\n")).collect()
}
