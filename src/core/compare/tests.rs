use super::*;
use crate::core::metrics::{LatencyStats, PhaseSummary};

fn hist(values_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for v in values_us {
        h.record(v).unwrap();
    }
    h
}

/// `n` TTFTs around `center_us`, spread ±20 % by a fixed stream.
fn spread(center_us: f64, n: u64, stream: u64) -> Histogram<u64> {
    let mut rng = Rng::for_stream(7, 0, "spread", stream, 0);
    hist((0..n).map(|_| (center_us * (0.8 + 0.4 * rng.unit())) as u64))
}

fn run(target: &str, ttft: Histogram<u64>) -> RunInput {
    let p50 = ttft.value_at_quantile(0.5) as f64 / 1e3;
    RunInput {
        slices: Vec::new(),
        target: target.into(),
        experiment: "x".into(),
        seed: 3,
        engine: target.into(),
        version: Some("1".into()),
        mode: "replay".into(),
        dir: format!("results/x/20261205T000000Z-{target}"),
        provenance: vec![("model".into(), "tiny".into())],
        timeline: Vec::new(),
        phases: vec![PhaseInput {
            name: "warm".into(),
            summary: NamedSummary::of(
                "warm",
                PhaseSummary {
                    requests: ttft.len(),
                    ttft: Some(LatencyStats::of(ttft.len(), p50, p50 * 1.2, p50 * 1.5)),
                    errors: BTreeMap::from([("timeout".to_string(), 1)]),
                    ..PhaseSummary::default()
                },
            ),
            histograms: BTreeMap::from([(LatencyMetric::Ttft, ttft)]),
            load: None,
        }],
    }
}

#[test]
fn the_same_distribution_is_not_a_significant_difference() {
    let mut rng = Rng::for_stream(1, 0, "t", 0, 0);
    let (lo, hi) = ratio_of_medians_interval(
        &spread(50_000.0, 200, 1),
        &spread(50_000.0, 200, 2),
        &mut rng,
    )
    .unwrap();
    assert!(lo < 1.0 && hi > 1.0, "[{lo}, {hi}]");
    assert!(hi - lo < 0.2, "[{lo}, {hi}]");
}

#[test]
fn a_thirty_percent_shift_is_significant_and_inside_its_interval() {
    let mut rng = Rng::for_stream(1, 0, "t", 0, 0);
    let (lo, hi) = ratio_of_medians_interval(
        &spread(50_000.0, 200, 1),
        &spread(65_000.0, 200, 2),
        &mut rng,
    )
    .unwrap();
    assert!(lo > 1.0 && lo < 1.3 && hi > 1.3, "[{lo}, {hi}]");
}

#[test]
fn few_samples_give_wide_intervals() {
    let mut rng = Rng::for_stream(1, 0, "t", 0, 0);
    let (lo, hi) =
        ratio_of_medians_interval(&spread(50_000.0, 5, 1), &spread(50_000.0, 5, 2), &mut rng)
            .unwrap();
    assert!(hi - lo > 0.15, "[{lo}, {hi}]");
}

#[test]
fn runs_side_by_side_with_ratios_to_the_first() {
    let runs = [
        run("vllm", spread(50_000.0, 200, 1)),
        run("sglang", spread(65_000.0, 200, 2)),
    ];
    check_comparable(&runs).unwrap();
    let c = compare(&runs);
    assert_eq!(c.reference, "vllm");
    let p = &c.phases[0];
    let ttft = p.rows.iter().find(|r| r.metric == "ttft.p50").unwrap();
    assert_eq!(ttft.cells[0].ratio, None);
    let s = &ttft.cells[1];
    assert!((s.ratio.unwrap() - 1.3).abs() < 0.1, "{s:?}");
    assert_eq!(s.significant, Some(true));
    let p90 = p.rows.iter().find(|r| r.metric == "ttft.p90").unwrap();
    assert!(p90.cells[1].ratio.is_some() && p90.cells[1].significant.is_none());
    assert!(
        p.rows.iter().all(|r| r.metric != "tpot.p50"),
        "rows without values are left out"
    );
    let md = c.markdown();
    assert!(md.contains("| metric | vllm | sglang |"), "{md}");
    assert!(
        md.contains("| errors by kind | timeout 1 | timeout 1 |"),
        "{md}"
    );
    assert!(md.contains("× ["), "{md}");
    // The same inputs give the same intervals.
    assert_eq!(compare(&runs).phases[0].rows[1].cells, ttft.cells);
}

#[test]
fn different_experiments_or_seeds_are_refused() {
    let a = run("vllm", spread(50_000.0, 20, 1));
    let mut b = run("sglang", spread(50_000.0, 20, 2));
    b.seed = 4;
    let e = check_comparable(&[a.clone(), b.clone()]).unwrap_err();
    assert!(e.contains("different seeds") && e.contains("seed 4"), "{e}");
    b.seed = 3;
    b.experiment = "y".into();
    let e = check_comparable(&[a, b]).unwrap_err();
    assert!(
        e.contains("different experiments") && e.contains("--force"),
        "{e}"
    );
}

#[test]
fn two_runs_of_one_target_are_told_apart_by_their_directory() {
    let a = run("vllm", spread(50_000.0, 20, 1));
    let mut b = a.clone();
    b.dir = "results/x/20261206T000000Z-vllm".into();
    let c = compare(&[a, b]);
    assert_eq!(c.targets[1].target, "vllm@20261206T000000Z-vllm");
}
