use super::super::compare::{PhaseInput, Scrape};
use super::*;
use crate::core::metrics::LatencyStats;
use crate::core::report::summary::{Capacity, CapacityProbe, NamedSummary, SearchedOver};
use std::collections::BTreeMap;

fn run(target: &str, scale: u64) -> RunInput {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for v in 1..=50u64 {
        h.record(v * 1000 * scale).unwrap();
    }
    let scrape = |at_s: f64, phase: &str, start: bool, kv: f64| Scrape {
        at_s,
        phase: phase.into(),
        phase_start: start,
        values: BTreeMap::from([("kv_cache_usage".to_string(), kv)]),
    };
    RunInput {
        slices: Vec::new(),
        target: target.into(),
        experiment: "x".into(),
        seed: 1,
        engine: target.into(),
        version: Some("1.0".into()),
        mode: "replay".into(),
        dir: format!("results/x/T-{target}"),
        provenance: vec![("model".into(), "tiny <m>".into())],
        phases: vec![PhaseInput {
            name: "load".into(),
            summary: NamedSummary::of(
                "load",
                PhaseSummary {
                    requests: 50,
                    ttft: Some(LatencyStats::of(50, 25.0 * scale as f64, 0.0, 0.0)),
                    ..PhaseSummary::default()
                },
            ),
            histograms: BTreeMap::from([
                (LatencyMetric::Ttft, h.clone()),
                (LatencyMetric::ChunkItl, h),
            ]),
            load: None,
        }],
        timeline: vec![
            scrape(0.0, "load", true, 0.0),
            scrape(1.0, "load", false, 0.4),
            scrape(2.0, "load", false, 0.1),
        ],
    }
}

#[test]
fn the_page_is_self_contained_and_every_chart_has_marks() {
    let page = report(&[run("vllm", 1), run("sglang", 2)]);
    assert!(page.starts_with("<!DOCTYPE html>"));
    for external in ["http://", "https://", "<script", "<link", "@import", "url("] {
        assert!(!page.contains(external), "{external}");
    }
    let charts = page.matches("<svg").count();
    assert_eq!(charts, 3, "TTFT, ITL and KV usage");
    for svg in page.split("<svg").skip(1) {
        let svg = &svg[..svg.find("</svg>").unwrap()];
        assert_eq!(svg.matches("<path class=\"series\"").count(), 2, "{svg}");
        assert!(svg.contains("d=\"M") && svg.contains('L'), "{svg}");
    }
    assert!(page.contains("tiny &lt;m&gt;"), "provenance is escaped");
    assert!(page.contains("vllm (n = 50)"));
    assert!(page.contains(">load</text>"), "phase marker");
    assert!(page.contains("(2.00× ["), "ratio with its interval");
}

#[test]
fn sliced_runs_get_charts_over_time() {
    let mut r = run("vllm", 1);
    assert!(!report(std::slice::from_ref(&r)).contains("slice by slice"));
    r.slices = (0..4)
        .map(|i| super::super::compare::SliceRow {
            start_s: f64::from(i),
            end_s: f64::from(i + 1),
            values: BTreeMap::from([
                ("requests_sent".to_string(), f64::from(i + 1)),
                ("ttft_p50_ms".to_string(), 10.0 * f64::from(i + 1)),
                ("server_preemptions_increase".to_string(), f64::from(i)),
            ]),
        })
        .collect();
    let page = report(&[r]);
    assert!(page.contains("slice by slice"));
    assert!(page.contains("Requests sent per second per slice"));
    assert!(page.contains("TTFT p50 per slice"));
    assert!(page.contains("Server preemptions per slice"));
    // Only the columns the slices have are drawn.
    assert!(!page.contains("E2E p90 per slice"));
    assert!(!page.contains("Server KV-cache usage"));
}

#[test]
fn a_capacity_search_gets_a_table_of_what_it_found() {
    let mut r = run("vllm", 1);
    assert!(!report(std::slice::from_ref(&r)).contains("Capacity search"));
    let probe = |phase: &str, load: f64, passed: bool| CapacityProbe {
        phase: phase.into(),
        load,
        passed,
        figures_passed: None,
    };
    r.phases[0].summary.capacity = Some(Capacity {
        over: SearchedOver::Concurrency,
        max_passing: Some(4.0),
        first_failing: Some(5.0),
        converged: true,
        cut_short: false,
        probes: vec![probe("load_c1", 1.0, true), probe("load_c8", 8.0, false)],
    });
    let page = report(&[r]);
    assert!(page.contains("<h2>Capacity search</h2>"));
    assert!(
        page.contains("<td><b>4</b></td><td>5</td><td>1 met, 8 missed</td>"),
        "{page}"
    );
}

#[test]
fn a_cdf_climbs_to_one() {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for v in [1000, 2000, 2000, 4000] {
        h.record(v).unwrap();
    }
    let c = cdf(&h);
    assert_eq!(c.first().unwrap().1, 0.0);
    let (x, y) = *c.last().unwrap();
    assert!((x - 4.0).abs() < 0.01 && y == 1.0, "{c:?}");
    assert!(c.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 <= w[1].0));
}

#[test]
fn sweeps_get_latency_against_load_and_conversations_ttft_by_turn() {
    let sweep = |target: &str, scale: f64| {
        let mut r = run(target, 1);
        let phase = r.phases[0].clone();
        r.phases = [1.0, 2.0, 4.0]
            .into_iter()
            .map(|c| PhaseInput {
                name: format!("c{c}"),
                summary: {
                    let turn = |p50: f64| PhaseSummary {
                        ttft: Some(LatencyStats::of(1, p50, p50, p50)),
                        ..PhaseSummary::default()
                    };
                    let mut s = NamedSummary::of(
                        &format!("c{c}"),
                        PhaseSummary {
                            ttft: Some(LatencyStats::of(
                                1,
                                10.0 * c * scale,
                                15.0 * c * scale,
                                20.0 * c * scale,
                            )),
                            tpot: Some(LatencyStats::of(1, 5.0 * c, 5.0 * c, 5.0 * c)),
                            output_throughput: 100.0 * c.sqrt(),
                            ..PhaseSummary::default()
                        },
                    );
                    s.by_turn = BTreeMap::from([(0, turn(30.0)), (1, turn(12.0))]);
                    s
                },
                load: Some(Load::Concurrency(c)),
                ..phase.clone()
            })
            .collect();
        r
    };
    let page = report(&[sweep("vllm", 1.0), sweep("sglang", 2.0)]);
    let svg_of = |title: &str| {
        let start = page.find(&format!("<title>{title}")).unwrap();
        let end = start + page[start..].find("</svg>").unwrap();
        page[start..end].to_string()
    };
    let latency = svg_of("TTFT against offered load");
    assert_eq!(
        latency.matches("<path class=\"series\"").count(),
        4,
        "{latency}"
    );
    assert!(latency.contains("vllm p99") && latency.contains("requests in flight"));
    let pareto = svg_of("Output throughput: per server against per user");
    assert_eq!(pareto.matches("<path class=\"series\"").count(), 2);
    let turns = svg_of("TTFT p50 by turn, phase c1");
    assert_eq!(turns.matches("<path class=\"series\"").count(), 2);
    // Phases that are not conversations have no chart by turn (nor a "no data" note).
    assert!(!report(&[run("vllm", 1)]).contains("by turn"));
    // One phase alone is no sweep, nor are phases at one load.
    assert!(!report(&[run("vllm", 1)]).contains("Across load"));
    let mut same = sweep("vllm", 1.0);
    for p in &mut same.phases {
        p.load = Some(Load::Concurrency(4.0));
    }
    assert!(!report(&[same]).contains("Across load"));
}
