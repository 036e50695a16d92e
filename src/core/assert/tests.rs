//! Assertions: grammar, dimensions, evaluation and explanations.

use super::*;
use rstest::rstest;

fn lookup(p: &Path) -> Option<Value> {
    let time = |v| {
        Some(Value {
            value: v,
            dim: Dim::Time,
        })
    };
    match p.to_string().as_str() {
        "warm.ttft.p50" => time(0.020),
        "cold.ttft.p50" => time(0.400),
        "cold.ttft.p99" => time(0.900),
        "all.error_rate" => Some(Value {
            value: 0.0,
            dim: Dim::Plain,
        }),
        "c1.output_throughput" => Some(Value {
            value: 100.0,
            dim: Dim::Plain,
        }),
        "c8.output_throughput" => Some(Value {
            value: 420.0,
            dim: Dim::Plain,
        }),
        "r2.5.ttft.p50" => time(0.3),
        "warm.turn3.ttft.p50" => time(0.05),
        "warm.turn0.ttft.p50" => time(0.5),
        "warm.server.prefix_cache_hit_rate" => Some(Value {
            value: 0.9,
            dim: Dim::Plain,
        }),
        "c8.server.kv_cache_usage.max" => Some(Value {
            value: 0.97,
            dim: Dim::Plain,
        }),
        "warm.server.ttft_mean" => time(0.012),
        _ => None,
    }
}

const PHASES: &[&str] = &["cold", "warm", "c1", "c8", "r2.5"];

#[rstest]
#[case("warm.ttft.p50 <= 0.5 * cold.ttft.p50", true)]
#[case("warm.ttft.p50 <= 0.01 * cold.ttft.p50", false)]
#[case("all.error_rate == 0", true)]
#[case("c8.output_throughput > 1.5 * c1.output_throughput", true)]
#[case("cold.ttft.p99 < 2s", true)]
#[case("cold.ttft.p99 < 500ms", false)]
#[case("cold.ttft.p99 - warm.ttft.p50 >= 880ms", true)]
#[case("cold.ttft.p50 / warm.ttft.p50 >= 20", true)]
#[case("all.error_rate <= 1%", true)]
#[case("(warm.ttft.p50 + 1ms) * 2 < 50ms", true)]
#[case("-cold.ttft.p50 < 0s", true)]
#[case("warm.ttft.p50<1e2ms", true)]
#[case("warm.server.prefix_cache_hit_rate >= 0.8", true)]
#[case("r2.5.ttft.p50 < 1s", true)]
#[case("warm.turn3.ttft.p50 < warm.turn0.ttft.p50", true)]
#[case("c8.server.kv_cache_usage.max < 0.95", false)]
#[case("warm.server.ttft_mean < warm.ttft.p50", true)]
fn evaluates(#[case] src: &str, #[case] passed: bool) {
    let a = Assertion::parse(src).unwrap();
    a.check(PHASES, &[]).unwrap();
    let v = a.evaluate(&lookup);
    assert_eq!(v.passed, passed, "{v}");
}

#[rstest]
#[case("warm.ttft.p50 <=", 17, "ends too early")]
#[case("warm.ttft.p50 0.5", 15, "expected a comparison")]
#[case("warm.ttft.p50 <= 0.5 ** cold.ttft.p50", 23, "expected a number")]
#[case("warm.ttft.p50 <= 2 parsecs", 20, "unknown unit")]
#[case("warm <= 1", 1, "phase.metric")]
#[case("(warm.ttft.p50 <= 1s", 16, "expected `)`")]
#[case("warm.ttft.p50 <= 1s 2", 21, "unexpected `2`")]
#[case("warm.ttft.p50 <= cold.ttft.p42", 18, "unknown statistic `p42`")]
fn syntax_errors_point_at_the_column(
    #[case] src: &str,
    #[case] column: usize,
    #[case] needle: &str,
) {
    let e = Assertion::parse(src).unwrap_err();
    assert_eq!(e.column, column, "{e}");
    assert!(e.message.contains(needle), "{e}");
}

#[rstest]
#[case("hot.ttft.p50 < 1s", 1, "unknown phase `hot`")]
#[case("warm.tfft.p50 < 1s", 1, "unknown metric `tfft`")]
#[case("warm.ttft < 1s", 1, "add a statistic")]
#[case("warm.ttft.p50 < 2", 15, "needs a unit")]
#[case("warm.ttft.p50 * cold.ttft.p50 < 1s", 15, "multiplies two durations")]
#[case("1s < 1s + cold.ttft.p50 + cold.error_rate", 25, "adds a duration")]
#[case("warm.server.kv_cache_usage < 1", 1, "add mean, min or max")]
#[case("warm.server.ttft_mean < 1", 23, "needs a unit")]
#[case("warm.gpu.temp.max < 1", 1, "unknown gpu metric")]
fn semantic_errors(#[case] src: &str, #[case] column: usize, #[case] needle: &str) {
    let e = Assertion::parse(src)
        .unwrap()
        .check(PHASES, &[])
        .unwrap_err();
    assert_eq!(e.column, column, "{e}");
    assert!(e.message.contains(needle), "{e}");
}

#[test]
fn failure_shows_operands_and_margin() {
    let a = Assertion::parse("warm.ttft.p50 <= 0.01 * cold.ttft.p50").unwrap();
    let text = a.evaluate(&lookup).to_string();
    assert!(
        text.starts_with("FAILED warm.ttft.p50 <= 0.01 * cold.ttft.p50"),
        "{text}"
    );
    assert!(text.contains("warm.ttft.p50 = 20.000 ms"), "{text}");
    assert!(text.contains("cold.ttft.p50 = 400.000 ms"), "{text}");
    assert!(text.contains("left 20.000 ms <= right 4.000 ms"), "{text}");
    assert!(
        text.contains("margin (right − left) = -16.000 ms"),
        "{text}"
    );
}

#[test]
fn missing_data_fails_with_the_reason() {
    let a = Assertion::parse("c1.ttft.p50 < 1s").unwrap();
    let v = a.evaluate(&lookup);
    assert!(!v.passed);
    assert_eq!(v.reason.as_deref(), Some("no data for c1.ttft.p50"));
}

#[test]
fn a_difference_inside_the_noise_floor_is_flagged() {
    // warm 20 ms, cold 400 ms: 0.06 × cold = 24 ms, 4 ms from warm.
    let a = Assertion::parse("warm.ttft.p50 <= 0.06 * cold.ttft.p50").unwrap();
    let mut v = a.evaluate(&lookup);
    assert_eq!(v.within_noise_floor(), None);
    v.noise_floor = Some(0.005);
    assert_eq!(v.within_noise_floor(), Some(true));
    assert!(v.to_string().contains("not a measured difference"), "{v}");
    v.noise_floor = Some(0.003);
    assert_eq!(v.within_noise_floor(), Some(false));
    assert!(!v.to_string().contains("not a measured difference"), "{v}");
}

#[test]
fn paths_may_name_a_target_and_then_compare_targets() {
    let targets = ["vllm", "sglang"];
    let a = Assertion::parse_with_targets(
        "sglang.warm.ttft.p50 <= 1.2 * vllm.warm.server.prefix_cache_hit_rate",
        &targets,
    )
    .unwrap();
    let paths = a.paths();
    assert_eq!(paths[0].target.as_deref(), Some("sglang"));
    assert_eq!(paths[0].to_string(), "sglang.warm.ttft.p50");
    assert_eq!(paths[1].target.as_deref(), Some("vllm"));
    assert_eq!(paths[1].scope, Scope::Server);
    assert!(a.is_across_targets());
    assert_eq!(a.targets_read(), ["sglang", "vllm"]);
    assert!(!a.applies_to("vllm") && !a.applies_to("sglang"));
    // Without the target names, the same text is a phase path (and a bad one).
    let plain = Assertion::parse("warm.ttft.p50 < 1s").unwrap();
    assert!(!plain.is_across_targets() && plain.applies_to("vllm"));
    // Comparing targets, every path names one.
    let mixed =
        Assertion::parse_with_targets("sglang.warm.ttft.p50 <= warm.ttft.p50", &targets).unwrap();
    let e = mixed.check(&["warm"], &targets).unwrap_err();
    assert_eq!(e.column, 25);
    assert!(
        e.message.contains("name the target of `warm.ttft.p50`"),
        "{e}"
    );
}

/// A run with five repeats against a baseline of five: `warm.e2e.p50` repeats at `run_ms` plus
/// the offsets, the baseline's at 100 ms plus the same offsets; `pairing` says whether the two
/// come from corresponding repeats.
struct WithRepeats {
    run_ms: f64,
    paired: bool,
}

const OFFSETS_MS: [f64; 5] = [-4.0, -2.0, 0.0, 2.0, 4.0];

impl Lookup for WithRepeats {
    fn value(&self, p: &Path) -> Option<Value> {
        self.estimate(p).map(|(v, _)| v)
    }

    fn estimate(&self, p: &Path) -> Option<(Value, Option<Repeated>)> {
        let (ms, pairing, repeats) = match p.to_string().as_str() {
            "warm.e2e.p50" => (self.run_ms, "run", true),
            "baseline.warm.e2e.p50" => (100.0, if self.paired { "run" } else { "base" }, true),
            "warm.e2e.p99" => (self.run_ms, "run", false),
            _ => return None,
        };
        let v = Value {
            value: ms / 1e3,
            dim: Dim::Time,
        };
        let r = repeats.then(|| Repeated {
            values: OFFSETS_MS.iter().map(|o| (ms + o) / 1e3).collect(),
            pairing: pairing.to_string(),
        });
        Some((v, r))
    }
}

#[rstest]
// Runs apart: left − right = run − 105 ms, se = 1.414·√(1 + 1.05²) ≈ 2.05 ms, df ≈ 8: ± 4.7 ms.
#[case(90.0, false, Outcome::Passed)]
#[case(102.0, false, Outcome::Inconclusive)]
#[case(108.0, false, Outcome::Inconclusive)]
#[case(115.0, false, Outcome::Failed)]
// Paired by repeat, the shared offsets cancel (± 0.2 ms): the same 3 ms decide.
#[case(102.0, true, Outcome::Passed)]
#[case(108.0, true, Outcome::Failed)]
fn a_gate_over_repeats_decides_on_the_interval_of_the_difference(
    #[case] run_ms: f64,
    #[case] paired: bool,
    #[case] expected: Outcome,
) {
    let a = Assertion::parse("warm.e2e.p50 <= 1.05 * baseline.warm.e2e.p50").unwrap();
    a.check(&["warm"], &[]).unwrap();
    assert!(a.reads_baseline());
    let v = a.evaluate(&WithRepeats { run_ms, paired });
    assert_eq!(v.outcome, expected, "{v}");
    let (lo, hi) = v.interval.unwrap();
    let diff = run_ms / 1e3 - 0.105;
    assert!(
        ((lo + hi) / 2.0 - diff).abs() < 1e-9,
        "centred on the difference"
    );
    let half = (hi - lo) / 2.0;
    let s = (10.0f64).sqrt() / 1e3; // the offsets' standard deviation
    if paired {
        assert_eq!(v.interval_method, Some(IntervalMethod::Paired));
        // Per-repeat differences: diff − 0.05·offset, standard deviation 0.05·s.
        let expected_half = crate::core::interval::t975(4.0) * 0.05 * s / 5f64.sqrt();
        assert!((half - expected_half).abs() < 1e-9, "{half}");
    } else {
        assert_eq!(v.interval_method, Some(IntervalMethod::Welch));
        let se1 = s / 5f64.sqrt();
        let se = se1 * (1.0 + 1.05f64.powi(2)).sqrt();
        let df = se.powi(4) / (se1.powi(4) / 4.0 + (1.05 * se1).powi(4) / 4.0);
        assert!(
            (half - crate::core::interval::t975(df) * se).abs() < 1e-7,
            "{half}"
        );
    }
    // Inconclusive passes unless the experiment is strict; failed never passes.
    assert_eq!(v.passed, expected != Outcome::Failed);
    assert_eq!(v.clone().strict(true).passed, expected == Outcome::Passed);
    let text = v.to_string();
    assert!(text.contains("(mean of 5 repeats, 95 % CI"), "{text}");
    assert!(text.contains("left − right: 95 % CI"), "{text}");
    if expected == Outcome::Inconclusive {
        assert!(text.starts_with("ok? "), "{text}");
        assert!(v.strict(true).to_string().starts_with("UNSURE"));
    }
}

#[test]
fn without_spreads_a_verdict_is_plain_and_a_path_written_twice_is_one_quantity() {
    // No spread on either side: an ordinary verdict, no interval.
    let a = Assertion::parse("warm.e2e.p99 <= 1.05 * warm.e2e.p99").unwrap();
    let lookup = WithRepeats {
        run_ms: 100.0,
        paired: false,
    };
    let v = a.evaluate(&lookup);
    assert_eq!(v.interval, None);
    assert_eq!(v.outcome, Outcome::Passed);
    // The same path on both sides cancels, repeat by repeat: a zero-width interval.
    let a = Assertion::parse("warm.e2e.p50 - warm.e2e.p50 >= 0s").unwrap();
    let v = a.evaluate(&lookup);
    assert_eq!(v.interval, Some((0.0, 0.0)), "{v}");
    assert_eq!(v.outcome, Outcome::Passed);
}

#[test]
fn baseline_paths_parse_print_and_refuse_a_target() {
    let a = Assertion::parse("warm.ttft.p99 <= 1.1 * baseline.warm.ttft.p99").unwrap();
    let paths = a.paths();
    assert!(!paths[0].baseline && paths[1].baseline);
    assert_eq!(paths[1].to_string(), "baseline.warm.ttft.p99");
    assert_eq!(paths[1].phase, "warm");
    assert!(!a.is_across_targets());
    // A phase named `baseline` is still read as one where a metric or a scope follows.
    let a = Assertion::parse(
        "baseline.ttft.p50 + baseline.server.ttft_mean <= baseline.baseline.ttft.p50",
    )
    .unwrap();
    let p = a.paths();
    assert!(!p[0].baseline && p[0].phase == "baseline");
    assert!(!p[1].baseline && p[1].phase == "baseline");
    assert!(p[2].baseline && p[2].phase == "baseline");
    let e = Assertion::parse_with_targets(
        "vllm.warm.ttft.p99 <= baseline.vllm.warm.ttft.p99",
        &["vllm", "sglang"],
    )
    .unwrap_err();
    assert!(
        e.message.contains("a baseline belongs to one target"),
        "{e}"
    );
    let across = Assertion::parse_with_targets(
        "vllm.warm.ttft.p99 <= baseline.warm.ttft.p99",
        &["vllm", "sglang"],
    )
    .unwrap();
    let e = across.check(&["warm"], &["vllm", "sglang"]).unwrap_err();
    assert!(e.message.contains("not a baseline"), "{e}");
}
