//! Server metrics joined to a run: `/metrics` faults are recorded and reported, never fatal;
//! counter resets are handled; a server-side assertion fails with its numbers.

use crate::common;

use inferlab::spec::Experiment;
use inferlab::spec_io;
use inferlab::trial::TrialOutcome;

fn experiment(extra_assert: &str) -> Experiment {
    experiment_of(6, extra_assert)
}

/// `requests` requests two at a time (~30 ms each against the scripted server).
fn experiment_of(requests: u32, extra_assert: &str) -> Experiment {
    let src = format!(
        r#"schema_version = 1
description = "observe"
seed = 1
[targets.box]
kind = "openai"
[model]
name = "m"
[observe]
interval = "50ms"
[[phase]]
name = "load"
workload = {{ kind = "concurrent", concurrency = 2, requests = {requests}, input_tokens = 8 }}
request = {{ api = "completions", output_tokens = 5 }}
[[assert]]
expr = "all.error_rate == 0"
[[assert]]
expr = "{extra_assert}"
"#
    );
    spec_io::parse("observe.toml", "observe", &src).unwrap()
}

async fn run(server: &common::Scripted, exp: &Experiment) -> TrialOutcome {
    common::run_live(exp, &server.url, "observe").await
}

fn vllm(queries: f64, hits: f64, running: f64) -> (u16, String) {
    (
        200,
        format!(
            "# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{{engine=\"0\"}} {queries}\n\
             vllm:prefix_cache_hits_total{{engine=\"0\"}} {hits}\nvllm:num_requests_running{{engine=\"0\"}} {running}\n\
             vllm:kv_cache_usage_perc{{engine=\"0\"}} 0.5\nvllm:num_preemptions_total{{engine=\"0\"}} 0\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_assertion_fails_with_its_numbers_and_resets_are_handled() {
    let server = common::start().await;
    // A generic target reads the vLLM names it finds, and (unlike kind = "vllm") asks nothing
    // of /metrics before the first phase, so the scripted answers come in this order:
    // start, then a restart (counters drop), then growth: Δqueries = 100 + 200, Δhits = 50 + 100.
    *server.metrics.lock().unwrap() = vec![
        vllm(1000.0, 900.0, 0.0),
        vllm(100.0, 50.0, 2.0),
        vllm(300.0, 150.0, 1.0),
    ];
    let out = run(
        &server,
        &experiment("all.server.prefix_cache_hit_rate >= 0.9"),
    )
    .await;
    let s = out.summary.server("load").expect("server summary");
    assert!(s.counter_resets >= 1);
    assert_eq!(s.prefix_cache_hit_rate, Some(0.5));
    assert_eq!(s.gauges["kv_cache_usage"].max, 0.5);
    let v = &out.verdicts[1];
    assert!(!v.passed);
    let text = v.to_string();
    assert!(
        text.contains("all.server.prefix_cache_hit_rate = 0.5"),
        "{text}"
    );
    assert!(out.verdicts[0].passed, "the requests themselves succeeded");
    assert!(out.dir.join("server_metrics.jsonl").is_file());
    assert!(
        out.summary.server_metrics.scraped(),
        "{}",
        out.summary.server_metrics
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_garbage_metrics_are_reported_and_the_run_completes() {
    for (answers, expected) in [
        (vec![], "unavailable: /metrics answered HTTP 404"),
        (
            vec![(200, "<html><body>hello</body></html>".to_string())],
            "unavailable: not a Prometheus exposition (1 malformed lines)",
        ),
        (
            vec![(200, "vllm:num_requests_running{engine=\"0\"".to_string())],
            "unavailable: not a Prometheus exposition (1 malformed lines)",
        ),
        (
            vec![(200, "python_gc_objects_collected_total 1\n".to_string())],
            "unavailable: no engine metrics in /metrics",
        ),
    ] {
        let server = common::start().await;
        *server.metrics.lock().unwrap() = answers;
        let out = run(&server, &experiment("load.server.preemptions == 0")).await;
        assert_eq!(out.summary.server_metrics.to_string(), expected);
        assert_eq!(out.summary.phase("load").unwrap().succeeded, 6);
        let v = &out.verdicts[1];
        assert!(!v.passed);
        assert_eq!(
            v.reason.as_deref(),
            Some("no data for load.server.preemptions")
        );
    }
}

/// A stand-in for `nvidia-smi … -lms 20`: two GPUs, a new timestamp every 20 ms.
const FAKE_SMI: &str = r#"i=0; while true; do i=$((i+1)); for g in 0 1; do echo "2026/11/28 12:00:00.$i, $g, GPU-$g, NVIDIA H100 80GB HBM3, $((70 + g * 10)), 40, 70000, 81559, 500.5, 60, 1980"; done; sleep 0.02; done"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_command_samples_join_phases_and_replay() {
    let server = common::start().await;
    *server.metrics.lock().unwrap() = vec![vllm(10.0, 5.0, 1.0)];
    // ~300 ms of load: long enough for the sampler's shell to start and print on a loaded
    // machine (it prints every 20 ms).
    let exp = experiment_of(20, "load.gpu.util.mean > 0.5");
    let trial = common::TrialBuilder::new("gpu")
        .url(&server.url)
        .var("INFERLAB_BOX_GPU_COMMAND", FAKE_SMI)
        .record();
    let live = trial.run(&exp).await;
    assert!(
        live.passed(),
        "{}",
        live.verdicts
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let g = live.summary.server("load").unwrap().gauges["gpu_util"];
    assert!(
        (g.mean - 0.75).abs() < 1e-9,
        "two GPUs at 70 % and 80 %: {g:?}"
    );
    assert_eq!(
        live.summary.server("load").unwrap().gauges["gpu_power_w"].max,
        1001.0
    );

    // Replayed: the recorded GPU samples come back as data.
    let replayed = trial.replay(&exp).await;
    assert!(replayed.passed());
    assert_eq!(
        replayed.summary.server("load").unwrap().gauges["gpu_util"].mean,
        g.mean
    );

    // A GPU command that does not exist: recorded, the run completes.
    let out = common::TrialBuilder::new("gpu-missing")
        .url(&server.url)
        .var("INFERLAB_BOX_GPU_COMMAND", "no-such-nvidia-smi-binary")
        .run(&exp)
        .await;
    assert_eq!(out.summary.phase("load").unwrap().succeeded, 20);
    assert!(!out.verdicts[1].passed);
    let lines = std::fs::read_to_string(out.dir.join("server_metrics.jsonl")).unwrap();
    assert!(lines.contains("GPU command ended"), "{lines}");
}
