//! Open-loop, batch and sweep phases against the scripted server: sends follow the schedule,
//! waits for a concurrency slot count as client queueing, and a duration limit drops waiting
//! arrivals and cancels requests in flight — each counted, none lost. Bounds are generous: CI
//! machines are noisy 2-core boxes.

use crate::common;

use inferlab::spec::Experiment;
use inferlab::spec_io;
use inferlab::trial::TrialOutcome;

fn experiment(phases: &str, asserts: &str) -> Experiment {
    let src = format!(
        "schema_version = 1\ndescription = \"pacing\"\nseed = 5\n[targets.box]\nkind = \"openai\"\n[model]\nname = \"m\"\n[observe]\nmetrics = false\n{phases}\n{asserts}"
    );
    spec_io::parse("pacing.toml", "pacing", &src).unwrap()
}

async fn run(exp: &Experiment) -> TrialOutcome {
    let server = common::start().await;
    common::run_live(exp, &server.url, "pacing").await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_on_schedule() {
    // 50 req/s, evenly spaced; each scripted request takes ~30 ms, so ~2 are in flight.
    let exp = experiment(
        "[[phase]]\nname = \"load\"\nworkload = { kind = \"rate\", process = \"constant\", rate = 50.0, requests = 20, input_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 5 }",
        "[[assert]]\nexpr = \"load.fidelity.ok == 1\"",
    );
    let out = run(&exp).await;
    let s = out.summary.phase("load").unwrap();
    assert_eq!(
        (s.requests, s.succeeded, s.dropped, s.cancelled),
        (20, 20, 0, 0)
    );
    // Every send at or after its intended instant, 20 ms apart; late only by a loaded machine's
    // wake-up delay (the bounds are sanity checks; the lateness itself is the pacer bench's).
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.dir.join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut intended: Vec<f64> = rows
        .iter()
        .map(|r| r["intended_ms"].as_f64().unwrap())
        .collect();
    for r in &rows {
        assert!(r["sent_ms"].as_f64().unwrap() >= r["intended_ms"].as_f64().unwrap());
    }
    intended.sort_by(f64::total_cmp);
    for w in intended.windows(2) {
        assert!(
            (w[1] - w[0] - 20.0).abs() < 0.01,
            "intended gaps {intended:?}"
        );
    }
    let queue = s.client_queue.unwrap();
    assert!(
        queue.p50_ms < 25.0,
        "median send lateness {:.3} ms",
        queue.p50_ms
    );
    let f = out.summary.phases[0].fidelity;
    let achieved = f.achieved_rate.unwrap();
    assert!(
        (achieved / 50.0 - 1.0).abs() < 0.35,
        "achieved {achieved:.2} req/s"
    );
    assert!(out.passed(), "{:?}", out.verdicts);
    // ttft_scheduled ≥ ttft: measured from the intended send.
    assert!(s.ttft_scheduled.unwrap().mean_ms >= s.ttft.unwrap().mean_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_queues_and_a_limit_drops_and_cancels() {
    // 200 req/s offered for 150 ms with one slot and ~30 ms per request: arrivals queue behind
    // the slot, and when the limit passes the waiting ones are dropped and the one in flight
    // is cancelled.
    let exp = experiment(
        "[[phase]]\nname = \"load\"\nworkload = { kind = \"rate\", process = \"constant\", rate = 200.0, duration = \"150ms\", max_concurrency = 1, input_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 5 }",
        "[[assert]]\nexpr = \"load.dropped > 0\"",
    );
    let out = run(&exp).await;
    let s = out.summary.phase("load").unwrap();
    assert_eq!(
        s.requests + s.dropped + s.cancelled,
        30,
        "every arrival is accounted for"
    );
    assert!(s.dropped >= 15, "dropped {}", s.dropped);
    assert!(s.cancelled <= 1);
    assert_eq!(s.failed, 0, "harness limits are not server errors");
    assert_eq!(s.error_rate, 0.0);
    assert!(s.late_sends >= 1);
    assert!(s.client_queue.unwrap().max_ms > 20.0);
    assert!(out.passed());
    let lines = std::fs::read_to_string(out.dir.join("requests.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 30);
    assert!(lines.contains("\"error_kind\":\"dropped\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_release_together_and_wait_for_each_other() {
    let exp = experiment(
        "[[phase]]\nname = \"b\"\nworkload = { kind = \"batch\", batch_size = 4, batches = 3, input_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 5 }",
        "",
    );
    let out = run(&exp).await;
    assert_eq!(out.summary.phase("b").unwrap().succeeded, 12);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.dir.join("requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_batch = vec![Vec::new(); 3];
    for r in &rows {
        let i = r["index"].as_u64().unwrap() as usize;
        by_batch[i / 4].push((
            r["sent_ms"].as_f64().unwrap(),
            r["end_ms"].as_f64().unwrap(),
        ));
    }
    for w in by_batch.windows(2) {
        let last_end = w[0].iter().map(|x| x.1).fold(0.0, f64::max);
        let first_sent = w[1].iter().map(|x| x.0).fold(f64::MAX, f64::min);
        assert!(
            first_sent >= last_end,
            "a batch started before the previous one finished"
        );
    }
    // Within a batch the sends are together (generous: 15 ms on a loaded machine).
    let spread: Vec<f64> = by_batch
        .iter()
        .map(|b| {
            b.iter().map(|x| x.0).fold(f64::MIN, f64::max)
                - b.iter().map(|x| x.0).fold(f64::MAX, f64::min)
        })
        .collect();
    assert!(median(spread.clone()) < 15.0, "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_become_named_phases() {
    let exp = experiment(
        "[[phase]]\nname = \"sweep\"\nworkload = { kind = \"sweep\", rates = [20, 40.5], process = \"poisson\", requests = 8, input_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 5 }\n[[phase]]\nname = \"closed\"\nworkload = { kind = \"sweep\", concurrencies = [1, 4], requests = 8, input_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 5 }",
        "[[assert]]\nexpr = \"r40.5.requests == 8\"\n[[assert]]\nexpr = \"c4.request_throughput > c1.request_throughput\"",
    );
    let names: Vec<&str> = exp.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["r20", "r40.5", "c1", "c4"]);
    let out = run(&exp).await;
    assert!(
        out.passed(),
        "{}",
        out.verdicts
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Records a run into a scratch fixture and returns the request bodies in order.
async fn recorded_bodies(exp: &Experiment, tag: &str) -> (TrialOutcome, Vec<serde_json::Value>) {
    let server = common::start().await;
    let trial = common::TrialBuilder::new(&format!("sessions-{tag}"))
        .url(&server.url)
        .record();
    let out = trial.run(exp).await;
    let fixture = inferlab::replay::Fixture::load(out.fixture_written.as_ref().unwrap()).unwrap();
    let bodies = fixture.exchanges.iter().map(|e| e.body.clone()).collect();
    // The recording replays: every conversation turn matches its recorded exchange.
    let replayed = trial.replay(exp).await;
    assert!(
        replayed.replay_unmatched.is_empty(),
        "{:?}",
        replayed.replay_unmatched
    );
    assert!(replayed.passed());
    (out, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_sessions_carry_the_conversation() {
    let exp = experiment(
        "[[phase]]\nname = \"chat\"\nworkload = { kind = \"multi_turn\", sessions = 3, turns = 3, system_tokens = 10, first_tokens = 20, turn_tokens = 5, session_concurrency = 2, think_time = \"5ms\" }\nrequest = { api = \"chat\", output_tokens = 5 }",
        "[[assert]]\nexpr = \"chat.turn2.requests == 3\"",
    );
    let (out, bodies) = recorded_bodies(&exp, "multi").await;
    assert!(out.passed(), "{:?}", out.verdicts);
    assert_eq!(bodies.len(), 9);
    let turns: Vec<u64> = out.summary.phases[0]
        .by_turn
        .keys()
        .map(|&t| u64::from(t))
        .collect();
    assert_eq!(turns, [0, 1, 2]);
    for b in &bodies {
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"], "system");
        // system + (user, assistant) per earlier turn + this turn's user message.
        assert_eq!(m.len() % 2, 0);
        let turn = (m.len() - 2) / 2;
        for k in 0..turn {
            assert_eq!(m[2 + 2 * k]["role"], "assistant");
            assert_eq!(
                m[2 + 2 * k]["content"],
                " t0 t1 t2 t3 t4",
                "the server's answer is carried"
            );
        }
        assert_eq!(m.last().unwrap()["role"], "user");
        let words = m.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .split(' ')
            .count();
        assert_eq!(words, if turn == 0 { 20 } else { 5 });
    }
    // The system prompt is shared by every session.
    let systems: std::collections::BTreeSet<String> = bodies
        .iter()
        .map(|b| b["messages"][0]["content"].to_string())
        .collect();
    assert_eq!(systems.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentic_sessions_grow_with_tool_results_and_fan_out() {
    let exp = experiment(
        "[[phase]]\nname = \"agent\"\nworkload = { kind = \"agentic\", sessions = 2, steps = 3, task_tokens = 12, tool_result_tokens = 30, parallel_calls = 2, session_concurrency = 2 }\nrequest = { api = \"chat\", output_tokens = 5 }",
        "[[assert]]\nexpr = \"agent.turn2.requests == 4\"",
    );
    let (out, bodies) = recorded_bodies(&exp, "agent").await;
    assert!(out.passed(), "{:?}", out.verdicts);
    assert_eq!(bodies.len(), 12, "2 sessions × 3 steps × 2 parallel calls");
    let longest = bodies
        .iter()
        .map(|b| b["messages"].as_array().unwrap().len())
        .max()
        .unwrap();
    assert_eq!(longest, 5, "task, answer, tool result, answer, tool result");
    let last = bodies
        .iter()
        .find(|b| b["messages"].as_array().unwrap().len() == 5)
        .unwrap();
    assert!(
        last["messages"][4]["content"]
            .as_str()
            .unwrap()
            .starts_with("Tool result: ")
    );
    assert!(
        last["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Task: ")
    );
}

#[test]
fn session_workloads_need_chat() {
    let src = "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = { kind = \"multi_turn\", sessions = 1, turns = 2, first_tokens = 4, turn_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 4 }\n";
    let e = spec_io::parse("s.toml", "s", src).unwrap_err().to_string();
    assert!(
        e.contains("phase[0].request.api: multi_turn and agentic sessions are conversations"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_duration_ends_the_phase_and_cancels_what_is_in_flight() {
    // Two workers, ~30 ms per request, 150 ms: well under the 100 planned requests are sent.
    let exp = experiment(
        "[[phase]]\nname = \"load\"\nworkload = { kind = \"concurrent\", concurrency = 2, requests = 100, input_tokens = 4, duration = \"150ms\" }\nrequest = { api = \"completions\", output_tokens = 5 }",
        "[[assert]]\nexpr = \"load.requests < 100\"",
    );
    let out = run(&exp).await;
    let s = out.summary.phase("load").unwrap();
    assert!(out.passed(), "{:?}", out.verdicts);
    assert!(s.succeeded >= 2, "{s:?}");
    assert!(s.cancelled <= 2, "at most one per worker: {}", s.cancelled);
    assert_eq!(s.failed, 0);
    // Nothing finished long after the limit (generous: 150 ms + one request + a loaded
    // machine's slack).
    assert!(s.duration_s < 1.5, "phase took {:.3} s", s.duration_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_lengths_are_checked_with_the_servers_tokenizer() {
    let src = |kind: &str| {
        format!(
            "schema_version = 1\ndescription = \"d\"\nseed = 5\n[targets.box]\nkind = \"{kind}\"\n[model]\nname = \"m\"\n[observe]\nmetrics = false\n[[phase]]\nname = \"p\"\nworkload = {{ kind = \"single\", requests = 2, input_tokens = 12 }}\nrequest = {{ api = \"completions\", output_tokens = 5 }}\n"
        )
    };
    let server = common::start().await;
    let exp = spec_io::parse("t.toml", "t", &src("llamacpp")).unwrap();
    let out = common::run_live(&exp, &server.url, "tokenize").await;
    assert_eq!(
        out.summary.prompt_lengths.to_string(),
        "exact: 1 sampled prompts tokenize to exactly the 12 tokens declared for them in all (server /tokenize)"
    );
    let exp = spec_io::parse("t.toml", "t", &src("openai")).unwrap();
    let out = common::run_live(&exp, &server.url, "tokenize").await;
    assert_eq!(
        out.summary.prompt_lengths.to_string(),
        "approximate: the server has no usable /tokenize endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_cannot_fit_the_servers_context_are_refused_before_sending() {
    let src = |input: u32| {
        format!(
            "schema_version = 1\ndescription = \"d\"\nseed = 5\n[targets.box]\nkind = \"openai\"\n[model]\nname = \"m\"\n[observe]\nmetrics = false\n[[phase]]\nname = \"long\"\nworkload = {{ kind = \"single\", requests = 2, input_tokens = {input} }}\nrequest = {{ api = \"completions\", output_tokens = 5 }}\n"
        )
    };
    let server = common::start().await;
    let exp = spec_io::parse("t.toml", "t", &src(100)).unwrap();
    let trial = common::TrialBuilder::new("ctx").url(&server.url);
    let err = trial.try_run(&exp).await.unwrap_err().to_string();
    assert!(
        err.contains("phase `long` plans a request of 100 prompt + 5 output tokens, more than the server's context of 64 tokens (max_model_len from /v1/models)"),
        "{err}"
    );
    let exp = spec_io::parse("t.toml", "t", &src(40)).unwrap();
    assert!(common::run_live(&exp, &server.url, "ctx").await.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_warmup_records_and_replays() {
    let exp = experiment(
        "[[phase]]\nname = \"p\"\nwarmup_duration = \"80ms\"\nworkload = { kind = \"single\", requests = 2, input_tokens = 4 }\nrequest = { api = \"completions\", output_tokens = 5 }",
        "",
    );
    // `recorded_bodies` records, then replays and checks that every request matched.
    let (out, bodies) = recorded_bodies(&exp, "warmup").await;
    let s = out.summary.phase("p").unwrap();
    assert!(
        (1..=6).contains(&s.warmup_requests),
        "{} warmups in 80 ms",
        s.warmup_requests
    );
    assert_eq!(s.requests, 2);
    assert_eq!(bodies.len() as u64, s.warmup_requests + 2);
}
