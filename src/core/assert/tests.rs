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
