//! Record → replay round trips through `trial::run_trial`, mode selection from the
//! environment, and the ways a fixture can stop matching its experiment.

use crate::common;

use inferlab::replay::{Fixture, Source};
use inferlab::report::Mode;
use inferlab::spec::Experiment;
use inferlab::spec_io;
use inferlab::trial::{self, Plan, TrialOptions};
use std::path::{Path, PathBuf};

const EXPERIMENT: &str = r#"schema_version = 1
description = "round trip"
seed = 9
[targets.box]
kind = "openai"
[model]
name = "m"
[[phase]]
name = "cold"
workload = { kind = "shared_prefix", groups = 2, prefix_tokens = 30, suffixes = 1, suffix_tokens = 4 }
request = { api = "completions", output_tokens = 5 }
[[phase]]
name = "warm"
workload = { kind = "shared_prefix", reuse = "cold", suffixes = 2, suffix_tokens = 4, concurrency = 2 }
request = { api = "chat", output_tokens = 5 }
[[assert]]
expr = "all.error_rate == 0"
[[assert]]
expr = "warm.output_tokens == 20"
"#;

fn scratch(name: &str) -> PathBuf {
    common::scratch(&format!("test-{name}"))
}

fn experiment(src: &str) -> Experiment {
    spec_io::parse("round_trip.toml", "round_trip", src).unwrap()
}

fn opts(root: &Path) -> TrialOptions {
    TrialOptions {
        watch: None,
        results_root: root.join("results"),
        fixtures_root: root.join("fixtures"),
        salt: None,
        interrupt: None,
        cost_per_hour: None,
        baselines: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_reproduces_the_run() {
    let root = scratch("roundtrip");
    let server = common::start().await;
    let exp = experiment(EXPERIMENT);
    let target = exp.target("box").unwrap().clone();
    let env = common::env_with(&[
        ("INFERLAB_BOX_URL", &format!("{}/v1", server.url)),
        ("INFERLAB_BOX_API_KEY", "sk-secret-key-123"),
        ("INFERLAB_RECORD", "1"),
    ]);
    let plan = trial::plan(&exp, &target, &env, &root.join("fixtures")).unwrap();
    assert_eq!(plan.mode(), Some(Mode::Record));
    let live = trial::run_trial(&exp, &target, plan, &opts(&root))
        .await
        .unwrap();
    assert!(live.passed(), "{:?}", live.verdicts);
    let fixture_dir = live.fixture_written.clone().unwrap();
    let fixture = Fixture::load(&fixture_dir).unwrap();
    assert_eq!(fixture.meta.source, Source::Recorded);
    assert_eq!(fixture.exchanges.len(), 6);
    for f in ["meta.json", "exchanges.jsonl"] {
        let text = std::fs::read_to_string(fixture_dir.join(f)).unwrap();
        assert!(!text.contains("sk-secret"), "{f} holds the key");
    }
    for f in ["manifest.json", "requests.jsonl", "summary.json"] {
        let text = std::fs::read_to_string(live.dir.join(f)).unwrap();
        assert!(!text.contains("sk-secret"), "{f} holds the key");
        assert!(
            text.contains("\"schema_version\""),
            "{f} lacks schema_version"
        );
    }
    // One line per request, appended as each completed.
    let lines = std::fs::read_to_string(live.dir.join("requests.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    assert!(live.dir.join("histograms/warm/ttft.hdr").is_file());

    // No URL now: the fixture makes it a replay.
    let plan = trial::plan(
        &exp,
        &target,
        &common::env_with(&[]),
        &root.join("fixtures"),
    )
    .unwrap();
    assert_eq!(plan.mode(), Some(Mode::Replay));
    let replayed = trial::run_trial(&exp, &target, plan, &opts(&root))
        .await
        .unwrap();
    assert!(
        replayed.replay_unmatched.is_empty(),
        "{:?}",
        replayed.replay_unmatched
    );
    assert!(replayed.passed());
    assert_eq!(
        serde_json::to_string(&replayed.snapshot).unwrap(),
        serde_json::to_string(&live.snapshot).unwrap()
    );
    // Pacing survives the round trip (generous bound: this is a loaded 2-core machine).
    let ttft = |o: &trial::TrialOutcome| o.summary.phase("all").unwrap().ttft.unwrap().p50_ms;
    let (a, b) = (ttft(&live), ttft(&replayed));
    assert!(
        (a - b).abs() < 15.0 + 0.5 * a,
        "recorded TTFT p50 {a:.2} ms, replayed {b:.2} ms"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_experiment_no_longer_matches_its_fixture() {
    let root = scratch("mismatch");
    let server = common::start().await;
    let exp = experiment(EXPERIMENT);
    let target = exp.target("box").unwrap().clone();
    let env = common::env_with(&[("INFERLAB_BOX_URL", &server.url), ("INFERLAB_RECORD", "1")]);
    let plan = trial::plan(&exp, &target, &env, &root.join("fixtures")).unwrap();
    trial::run_trial(&exp, &target, plan, &opts(&root))
        .await
        .unwrap();

    // Longer suffixes → different requests → no recorded exchange.
    let changed = experiment(&EXPERIMENT.replace(
        "suffixes = 2, suffix_tokens = 4",
        "suffixes = 2, suffix_tokens = 5",
    ));
    let plan = trial::plan(
        &changed,
        &target,
        &common::env_with(&[]),
        &root.join("fixtures"),
    )
    .unwrap();
    let out = trial::run_trial(&changed, &target, plan, &opts(&root))
        .await
        .unwrap();
    assert_eq!(out.replay_unmatched.len(), 4, "{:?}", out.replay_unmatched);
    assert!(out.replay_unmatched[0].contains("POST /v1/chat/completions"));
    assert!(!out.passed());
    assert_eq!(
        out.summary.phase("warm").unwrap().errors.get("http_404"),
        Some(&4)
    );

    // Another seed: refused before anything runs.
    let reseeded = experiment(&EXPERIMENT.replace("seed = 9", "seed = 10"));
    let plan = trial::plan(
        &reseeded,
        &target,
        &common::env_with(&[]),
        &root.join("fixtures"),
    )
    .unwrap();
    let err = trial::run_trial(&reseeded, &target, plan, &opts(&root))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("recorded with seed 9, the experiment has 10"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn modes_come_from_the_environment() {
    let root = scratch("modes");
    let exp = experiment(EXPERIMENT);
    let target = exp.target("box").unwrap();
    let fixtures = root.join("fixtures");
    match trial::plan(&exp, target, &common::env_with(&[]), &fixtures).unwrap() {
        Plan::Ignored { reason } => {
            assert!(reason.contains("INFERLAB_BOX_URL unset"), "{reason}");
        }
        p => panic!("{p:?}"),
    }
    let plan = trial::plan(
        &exp,
        target,
        &common::env_with(&[("INFERLAB_BOX_URL", "http://h:8000/v1/")]),
        &fixtures,
    )
    .unwrap();
    match plan {
        Plan::Live {
            endpoint,
            record,
            gpu,
            model_details,
        } => {
            assert!(model_details.is_none());
            assert!(gpu.is_none());
            assert_eq!(endpoint.base_url, "http://h:8000");
            assert_eq!(endpoint.model, "m");
            assert!(!record);
        }
        p => panic!("{p:?}"),
    }
    let plan = trial::plan(
        &exp,
        target,
        &common::env_with(&[
            ("INFERLAB_BOX_RUNPOD_POD", "abc123"),
            ("INFERLAB_BOX_MODEL", "llama"),
        ]),
        &fixtures,
    )
    .unwrap();
    match plan {
        Plan::Live { endpoint, .. } => {
            assert_eq!(endpoint.base_url, "https://abc123-8000.proxy.runpod.net");
            assert_eq!(endpoint.model, "llama");
        }
        p => panic!("{p:?}"),
    }
    let both = common::env_with(&[
        ("INFERLAB_BOX_URL", "http://h"),
        ("INFERLAB_BOX_RUNPOD_POD", "abc"),
    ]);
    assert!(
        trial::plan(&exp, target, &both, &fixtures)
            .unwrap_err()
            .to_string()
            .contains("set one")
    );
    let bad = common::env_with(&[("INFERLAB_BOX_URL", "h:8000")]);
    assert!(
        trial::plan(&exp, target, &bad, &fixtures)
            .unwrap_err()
            .to_string()
            .contains("not an http(s) URL")
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_slowed_down_stretches_every_recorded_offset() {
    let root = scratch("slowdown");
    let server = common::start().await;
    let exp = experiment(EXPERIMENT);
    let target = exp.target("box").unwrap().clone();
    let env = common::env_with(&[("INFERLAB_BOX_URL", &server.url), ("INFERLAB_RECORD", "1")]);
    let plan = trial::plan(&exp, &target, &env, &root.join("fixtures")).unwrap();
    let live = trial::run_trial(&exp, &target, plan, &opts(&root))
        .await
        .unwrap();
    let fixture = Fixture::load(&live.fixture_written.unwrap()).unwrap();
    // A replayed request's first token comes no earlier than three times its recorded first
    // event's offset, so the shortest replayed TTFT is at least three times the shortest
    // recorded first offset (a lower bound: a loaded machine only adds to it).
    let first_ms = fixture
        .exchanges
        .iter()
        .map(|e| e.events.first().map_or(0, |ev| ev.offset_us))
        .min()
        .unwrap() as f64
        / 1e3;
    assert!(first_ms > 1.0, "the fake server paces its tokens");

    let slowed = common::env_with(&[("INFERLAB_REPLAY_SLOWDOWN", "3")]);
    let plan = trial::plan(&exp, &target, &slowed, &root.join("fixtures")).unwrap();
    assert!(matches!(plan, Plan::Replay { slowdown, .. } if slowdown == 3.0));
    let out = trial::run_trial(&exp, &target, plan, &opts(&root))
        .await
        .unwrap();
    assert!(out.passed(), "{:?}", out.verdicts);
    let ttft_min = out.summary.phase("all").unwrap().ttft.unwrap().min_ms;
    assert!(
        ttft_min >= 3.0 * first_ms,
        "replayed TTFT min {ttft_min:.2} ms, recorded first event at {first_ms:.2} ms at the earliest"
    );
    let manifest = std::fs::read_to_string(out.dir.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"replay_slowdown\": 3.0"), "{manifest}");

    for bad in ["0", "-1", "fast", "inf"] {
        let env = common::env_with(&[("INFERLAB_REPLAY_SLOWDOWN", bad)]);
        let err = trial::plan(&exp, &target, &env, &root.join("fixtures"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("INFERLAB_REPLAY_SLOWDOWN must be a positive number"),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
