//! Schedules: determinism, shapes per workload kind, lengths and arrivals.

use super::*;
use crate::core::fidelity;
use crate::spec::{Arrival, LengthDist};
use crate::spec_io;

const SRC: &str = r#"schema_version = 1
description = "t"
seed = 11
[targets.llamacpp]
[model]
name = "m"
[[phase]]
name = "cold"
warmup = 1
workload = { kind = "shared_prefix", groups = 3, prefix_tokens = 50, suffixes = 2, suffix_tokens = 5 }
request = { api = "completions", output_tokens = 4 }
[[phase]]
name = "warm"
workload = { kind = "shared_prefix", reuse = "cold", suffixes = 1, suffix_tokens = 5, concurrency = 2 }
request = { api = "chat", output_tokens = 4 }
[[phase]]
name = "load"
workload = { kind = "concurrent", concurrency = 4, requests = 10, input_tokens = 20 }
request = { api = "completions", output_tokens = 4 }
"#;

fn exp() -> Experiment {
    spec_io::parse("t.toml", "t", SRC).unwrap()
}

#[test]
fn a_schedule_counts_its_requests_and_its_widest_phase() {
    let s = schedule(&exp(), 5);
    // cold: 1 warmup + 3 groups × 2 suffixes; warm: 3 × 1; load: 10.
    assert_eq!(s.planned(), 7 + 3 + 10);
    assert_eq!(
        s.max_concurrency(),
        4,
        "load keeps four in flight, the others fewer"
    );
}

#[test]
fn a_replay_keeps_the_warmups_a_timed_warmup_sent() {
    let src = SRC.replace("warmup = 1", "warmup = 3\nwarmup_duration = \"1s\"");
    let mut s = schedule(&spec_io::parse("t.toml", "t", &src).unwrap(), 5);
    assert_eq!(s.phases[0].requests.iter().filter(|r| r.warmup).count(), 3);
    // The second repeat's warmups are another phase run's: not counted.
    let recorded = [
        ("cold", 0, 0),
        ("cold", 0, 1),
        ("warm", 0, 0),
        ("cold", 0, 3),
        ("cold", 1, 2),
    ];
    s.keep_recorded_warmups(recorded.iter().copied());
    let cold = &s.phases[0];
    assert_eq!(cold.warmup_limit, None, "the limit is spent");
    assert_eq!(
        cold.requests.iter().filter(|r| r.warmup).count(),
        2,
        "warmups 0 and 1 were recorded; index 3 is a measured request"
    );
    assert_eq!(cold.requests.len(), 2 + 6);
    assert_eq!(
        s.phases[2].requests.len(),
        10,
        "phases without a limit stay whole"
    );
}

#[test]
fn same_seed_and_salt_same_schedule_byte_for_byte() {
    let a = serde_json::to_string(&schedule(&exp(), 5)).unwrap();
    let b = serde_json::to_string(&schedule(&exp(), 5)).unwrap();
    assert_eq!(a, b);
    let c = serde_json::to_string(&schedule(&exp(), 6)).unwrap();
    assert_ne!(a, c, "the salt changes the prompts");
}

#[test]
fn shared_prefix_structure() {
    let s = schedule(&exp(), 1);
    let cold = &s.phases[0];
    assert_eq!(cold.requests.len(), 1 + 6);
    assert!(cold.requests[0].warmup);
    let groups: Vec<_> = cold.requests[1..]
        .iter()
        .map(|r| r.group.unwrap())
        .collect();
    assert_eq!(groups, [0, 1, 2, 0, 1, 2]);
    let prefix = |r: &PlannedRequest| r.prompt.split(' ').take(50).collect::<Vec<_>>().join(" ");
    // Same group, same prefix; different groups, different prefixes; suffixes differ.
    assert_eq!(prefix(&cold.requests[1]), prefix(&cold.requests[4]));
    assert_ne!(prefix(&cold.requests[1]), prefix(&cold.requests[2]));
    assert_ne!(cold.requests[1].prompt, cold.requests[4].prompt);
    assert_eq!(cold.requests[1].prompt.split(' ').count(), 55);
    // The warm phase reuses cold's prefixes with new suffixes.
    let warm = &s.phases[1];
    assert_eq!(
        warm.pacing,
        Pacing::Closed {
            concurrency: 2,
            limit: None
        }
    );
    assert_eq!(warm.requests.len(), 3);
    for (w, c) in warm.requests.iter().zip(&cold.requests[1..4]) {
        assert_eq!(prefix(w), prefix(c));
        assert_ne!(w.prompt, c.prompt);
        assert_eq!(w.api, Api::Chat);
    }
}

#[test]
fn concurrent_prompts_are_distinct_and_sized() {
    let s = schedule(&exp(), 1);
    let load = &s.phases[2];
    assert_eq!(
        load.pacing,
        Pacing::Closed {
            concurrency: 4,
            limit: None
        }
    );
    assert_eq!(load.requests.len(), 10);
    let mut prompts: Vec<_> = load.requests.iter().map(|r| r.prompt.as_str()).collect();
    assert!(prompts.iter().all(|p| p.split(' ').count() == 20));
    prompts.sort();
    prompts.dedup();
    assert_eq!(prompts.len(), 10);
}

#[test]
fn length_distributions_sample_within_their_clamps() {
    let mut rng = Rng::for_stream(3, 0, "l", 0, 0);
    let d = LengthDist::Lognormal {
        median: 200.0,
        sigma: 0.5,
        min: 16,
        max: 1024,
    };
    let mut xs: Vec<u32> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
    xs.sort_unstable();
    assert!(xs.iter().all(|&x| (16..=1024).contains(&x)));
    let median = xs[xs.len() / 2];
    assert!((190..=210).contains(&median), "median {median}");
    let d = LengthDist::Uniform { min: 10, max: 12 };
    let seen: std::collections::BTreeSet<u32> = (0..1000).map(|_| d.sample(&mut rng)).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [10, 11, 12]);
    let d = LengthDist::Normal {
        mean: 32.0,
        stddev: 100.0,
        min: 4,
        max: 64,
    };
    assert!(
        (0..1000)
            .map(|_| d.sample(&mut rng))
            .all(|x| (4..=64).contains(&x))
    );
}

#[test]
fn phases_with_length_distributions_vary_prompt_and_output_lengths() {
    let src = SRC.replace(
        "workload = { kind = \"concurrent\", concurrency = 4, requests = 10, input_tokens = 20 }",
        "workload = { kind = \"concurrent\", concurrency = 4, requests = 10 }\ninput_lengths = { dist = \"uniform\", min = 5, max = 50 }\noutput_lengths = { dist = \"uniform\", min = 1, max = 9 }",
    );
    let e = spec_io::parse("t.toml", "t", &src).unwrap();
    let a = schedule(&e, 1);
    let load = &a.phases[2];
    let lens: Vec<u32> = load.requests.iter().map(|r| r.input_tokens).collect();
    assert!(lens.iter().all(|&l| (5..=50).contains(&l)));
    assert!(lens.iter().collect::<std::collections::BTreeSet<_>>().len() > 3);
    for r in &load.requests {
        assert_eq!(r.prompt.split(' ').count() as u32, r.input_tokens);
        assert!((1..=9).contains(&r.max_tokens));
    }
    // Lengths come from the seed, not the salt.
    let b = schedule(&e, 2);
    let lens_b: Vec<u32> = b.phases[2]
        .requests
        .iter()
        .map(|r| r.input_tokens)
        .collect();
    assert_eq!(lens, lens_b);
}

#[test]
fn a_ramp_sends_every_arrival_and_sets_no_limit() {
    let src = SRC.replace(
        "workload = { kind = \"concurrent\", concurrency = 4, requests = 10, input_tokens = 20 }",
        "workload = { kind = \"ramp\", from = 1.0, to = 6.0, duration = \"6s\", max_concurrency = 8, input_tokens = 20 }",
    );
    let e = spec_io::parse("t.toml", "t", &src).unwrap();
    let load = &schedule(&e, 1).phases[2];
    assert!(matches!(
        load.pacing,
        Pacing::Open {
            max_concurrency: Some(8),
            limit: None
        }
    ));
    // (1 + 6) / 2 req/s over 6 s, all inside the ramp.
    let at: Vec<Duration> = load.requests.iter().filter_map(|r| r.at).collect();
    assert_eq!(at.len(), 21);
    assert!(at.iter().all(|&t| t < Duration::from_secs(6)));
    assert!(at.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn rng_is_uniform_enough() {
    let mut r = Rng::for_stream(1, 2, "x", 0, 0);
    let mut counts = [0u32; 10];
    for _ in 0..100_000 {
        counts[r.below(10) as usize] += 1;
    }
    assert!(
        counts.iter().all(|&c| (9_000..11_000).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn generated_arrivals_pass_their_own_ks_test() {
    for (process, cdf_shape) in [
        (Arrival::Poisson, 1.0),
        (Arrival::Gamma { burstiness: 0.5 }, 0.5),
        (Arrival::Gamma { burstiness: 4.0 }, 4.0),
    ] {
        let mut rng = Rng::for_stream(7, 0, "t", 0, 0);
        let at = arrivals(&mut rng, process, 10.0, Some(2_000), None);
        let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let theta = 1.0 / (10.0 * cdf_shape);
        let d = fidelity::ks(&gaps, |x| fidelity::gamma_p(cdf_shape, x / theta));
        assert!(
            d < 1.63 / (gaps.len() as f64).sqrt(),
            "{process:?}: D = {d}"
        );
        // The wrong process is rejected.
        let wrong = fidelity::ks(&gaps, |x| {
            fidelity::gamma_p(if cdf_shape == 1.0 { 4.0 } else { 1.0 }, x / theta)
        });
        assert!(
            wrong > 1.63 / (gaps.len() as f64).sqrt(),
            "{process:?}: wrong D = {wrong}"
        );
        let mean = at.last().unwrap().as_secs_f64() / (at.len() - 1) as f64;
        assert!((mean - 0.1).abs() < 0.01, "{process:?}: mean gap {mean}");
    }
    let mut rng = Rng::for_stream(7, 0, "t", 0, 0);
    let at = arrivals(
        &mut rng,
        Arrival::Constant,
        4.0,
        None,
        Some(Duration::from_secs(2)),
    );
    assert_eq!(at.len(), 8);
    assert_eq!(at[1], Duration::from_millis(250));
}
