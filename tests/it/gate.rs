//! Regression gates end to end: an experiment with repeats is recorded, replayed, saved as a
//! baseline, and gated against it — passing at the recorded pace, failing when the replay is
//! slowed down, skipped or failed (on CI) without a baseline, failed on a broken one.

use crate::common;

use inferlab::baseline::{Baseline, BaselineState};
use inferlab::core::assert::Outcome;
use inferlab::replay::Fixture;
use inferlab::spec::Experiment;
use inferlab::spec_io;
use inferlab::trial::{self, Baselines, TrialOptions, TrialOutcome};
use std::path::Path;

const EXPERIMENT: &str = r#"schema_version = 1
description = "gate"
seed = 4
repeats = 3
[targets.box]
kind = "openai"
[model]
name = "m"
[[phase]]
name = "steady"
workload = { kind = "concurrent", concurrency = 1, requests = 3, input_tokens = 8 }
request = { api = "completions", output_tokens = 5 }
[[assert]]
expr = "steady.e2e.p50 <= 1.5 * baseline.steady.e2e.p50"
[[assert]]
expr = "all.error_rate == 0"
"#;

fn opts(root: &Path, required: bool) -> TrialOptions {
    TrialOptions {
        watch: None,
        results_root: root.join("results"),
        fixtures_root: root.join("fixtures"),
        salt: None,
        interrupt: None,
        cost_per_hour: None,
        baselines: Baselines {
            root: root.join("baselines"),
            required,
        },
    }
}

async fn run(exp: &Experiment, root: &Path, env: &[(&str, &str)], required: bool) -> TrialOutcome {
    let target = exp.target("box").unwrap();
    let plan = trial::plan(exp, target, &common::env_with(env), &root.join("fixtures")).unwrap();
    trial::run_trial(exp, target, plan, &opts(root, required))
        .await
        .unwrap()
}

fn gate(out: &TrialOutcome) -> &inferlab::core::assert::Verdict {
    &out.verdicts[0]
}

// One scenario read top to bottom: its steps share the runs it makes.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_passes_at_the_recorded_pace_and_fails_slowed_down() {
    let root = common::scratch("test-gate");
    let server = common::start().await;
    let exp = spec_io::parse("gate.toml", "gate", EXPERIMENT).unwrap();
    let url = server.url.clone();

    // Recorded live, three repeats with fresh prompts each; no baseline yet: skipped.
    let live = run(
        &exp,
        &root,
        &[("INFERLAB_BOX_URL", &url), ("INFERLAB_RECORD", "1")],
        false,
    )
    .await;
    assert!(live.passed(), "{:?}", live.verdicts);
    assert_eq!(gate(&live).outcome, Outcome::Skipped);
    assert!(
        gate(&live)
            .reason
            .as_deref()
            .unwrap()
            .contains("inferlab baseline save gate::box"),
        "{:?}",
        gate(&live).reason
    );
    let fixture = Fixture::load(&live.fixture_written.clone().unwrap()).unwrap();
    let mut repeats: Vec<u32> = fixture.exchanges.iter().map(|e| e.repeat).collect();
    repeats.dedup();
    assert_eq!(repeats, [0, 1, 2], "exchanges by repeat");
    let prompts: std::collections::HashSet<String> = fixture
        .exchanges
        .iter()
        .map(|e| e.body["prompt"].to_string())
        .collect();
    assert_eq!(prompts.len(), 9, "fresh prompts in every repeat");
    let rows = std::fs::read_to_string(live.dir.join("requests.jsonl")).unwrap();
    assert_eq!(rows.matches("\"repeat\":2").count(), 3);
    // Pooled figures over every repeat, and per-repeat intervals beside them.
    let phase = &live.summary.phases[0];
    assert_eq!(phase.summary.requests, 9);
    let i = &phase.intervals["e2e.p50_ms"];
    assert_eq!(i.values.len(), 3);
    assert!(i.ci_low <= i.mean && i.mean <= i.ci_high);
    assert_eq!(live.summary.all_intervals["error_rate"].values, [0.0; 3]);
    assert!(
        !phase.intervals.contains_key("requests"),
        "totals are pooled, not averaged"
    );
    let summary = std::fs::read_to_string(live.dir.join("summary.json")).unwrap();
    assert!(summary.contains("\"method\": \"student_t_mean_of_repeats\""));

    // On CI a missing baseline fails.
    let replay = run(&exp, &root, &[], true).await;
    assert_eq!(gate(&replay).outcome, Outcome::Failed);
    assert!(!replay.passed());
    assert!(
        gate(&replay)
            .reason
            .as_deref()
            .unwrap()
            .contains("(required on CI)")
    );

    // Saved from that replay: the gate reads it.
    let saved = Baseline::from_run(&replay.dir, "2026-12-06T00:00:00Z".into()).unwrap();
    assert_eq!(saved.repeats, 3);
    assert!(saved.phases[0].histograms.contains_key("e2e"));
    let file = saved.save(&root.join("baselines")).unwrap();
    assert!(file.ends_with("gate__box.json"));
    let loaded = Baseline::load(&file).unwrap();
    assert_eq!(loaded.phases[0].intervals, saved.phases[0].intervals);

    let again = run(&exp, &root, &[], true).await;
    assert_ne!(gate(&again).outcome, Outcome::Failed, "{}", gate(&again));
    assert!(again.passed(), "{}", gate(&again));
    assert!(gate(&again).interval.is_some());
    // Five times slower in every offset: beyond 1.5× by far, whatever the noise.
    let slowed = run(&exp, &root, &[("INFERLAB_REPLAY_SLOWDOWN", "5")], true).await;
    assert_eq!(gate(&slowed).outcome, Outcome::Failed, "{}", gate(&slowed));
    assert!(!slowed.passed());

    // A broken baseline fails with its file, line and column.
    std::fs::write(
        &file,
        "{\n  \"schema_version\": 1,\n  \"experiment\": 3\n}\n",
    )
    .unwrap();
    let broken = run(&exp, &root, &[], false).await;
    let why = gate(&broken).reason.clone().unwrap();
    assert_eq!(gate(&broken).outcome, Outcome::Failed);
    assert!(why.contains("gate__box.json:3:"), "{why}");
    assert!(why.contains("field `experiment`"), "{why}");
    assert!(matches!(
        BaselineState::read(&root.join("baselines"), "gate", "box", true, false),
        BaselineState::Broken(_)
    ));
    let _ = std::fs::remove_dir_all(&root);
}

const CAPACITY: &str = r#"schema_version = 1
description = "capacity"
seed = 5
[targets.box]
kind = "openai"
[model]
name = "m"
[[phase]]
name = "search"
workload = { kind = "capacity", over = "concurrency", min = 1, max = 4, step = 1, max_probes = 5, requests = 4, input_tokens = 8, slo = ["probe.e2e.p90 <= 1s"] }
request = { api = "completions", output_tokens = 5 }
[[assert]]
expr = "search.max_passing >= 1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_search_probes_as_phases_records_and_replays() {
    let root = common::scratch("test-capacity");
    let server = common::start().await;
    let exp = spec_io::parse("capacity.toml", "capacity", CAPACITY).unwrap();
    let url = server.url.clone();

    // The fake server's pace does not change with load: every probe meets a 1 s SLO, so the
    // search doubles to the top (1, 2, 4) and says the highest passed.
    let live = run(
        &exp,
        &root,
        &[("INFERLAB_BOX_URL", &url), ("INFERLAB_RECORD", "1")],
        false,
    )
    .await;
    assert!(live.passed(), "{:?}", live.verdicts);
    let names: Vec<&str> = live
        .summary
        .phases
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["search", "search_c1", "search_c2", "search_c4"]);
    let c = live.summary.phases[0].capacity.clone().unwrap();
    assert_eq!(
        (c.max_passing, c.first_failing, c.converged),
        (Some(4.0), None, true)
    );
    assert_eq!(live.summary.phase("search_c4").unwrap().requests, 4);
    assert_eq!(live.summary.all.requests, 12);
    let manifest = std::fs::read_to_string(live.dir.join("manifest.json")).unwrap();
    assert!(
        manifest.contains("\"search_c2\""),
        "the manifest lists the probes"
    );
    let fixture = Fixture::load(&live.fixture_written.clone().unwrap()).unwrap();
    assert_eq!(fixture.exchanges.len(), 12);

    // Replayed: the same probes, from the recording.
    let replay = run(&exp, &root, &[], false).await;
    assert!(
        replay.replay_unmatched.is_empty(),
        "{:?}",
        replay.replay_unmatched
    );
    let c = replay.summary.phases[0].capacity.clone().unwrap();
    assert_eq!(c.max_passing, Some(4.0));
    assert_eq!(
        serde_json::to_string(&replay.snapshot).unwrap(),
        serde_json::to_string(&live.snapshot).unwrap()
    );
    // Forty times slower, concurrency 1 already misses the SLO: nothing passes, one probe. The
    // fake server sleeps 10 ms + 5 x 4 ms before its last event, so every recorded stream ends
    // at 30 ms or later and every slowed one at 1.2 s or later, whatever the load.
    let slowed = run(&exp, &root, &[("INFERLAB_REPLAY_SLOWDOWN", "40")], false).await;
    let c = slowed.summary.phases[0].capacity.clone().unwrap();
    assert_eq!((c.max_passing, c.first_failing), (None, Some(1.0)));
    assert_eq!(c.probes.len(), 1);
    assert!(!slowed.passed(), "search.max_passing is 0");
    let _ = std::fs::remove_dir_all(&root);
}
