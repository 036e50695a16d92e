//! The truth server says exactly what it did, and calibration against it measures the client.
//! Only gross properties are checked here: exact figures belong to `inferlab calibrate` and the
//! calibration bench, not to a test on a loaded 2-core machine.

use crate::common;

use inferlab::calibrate;
use inferlab::client::REQUEST_ID_HEADER;
use inferlab::truth::{TruthConfig, TruthServer};
use std::time::Duration;

fn server(ttft_ms: u64, itl_ms: u64) -> TruthServer {
    TruthServer::start(
        TruthConfig {
            ttft: Duration::from_millis(ttft_ms),
            itl: Duration::from_millis(itl_ms),
            tokens: 8,
            workers: 1,
            record: true,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
}

fn data_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn streams_max_tokens_chunks_at_the_deadlines_and_records_each_write() {
    let s = server(30, 5);
    let http = reqwest::Client::new();
    let body = http
        .post(format!("{}/v1/completions", s.url()))
        .header(REQUEST_ID_HEADER, "p/7")
        .json(
            &serde_json::json!({"model": "truth", "prompt": "x", "max_tokens": 6, "stream": true}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = data_lines(&body);
    // Six token chunks, the usage chunk, [DONE].
    assert_eq!(data.len(), 8, "{body}");
    assert_eq!(data[7], "[DONE]");
    let last: serde_json::Value = serde_json::from_str(data[5]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let usage: serde_json::Value = serde_json::from_str(data[6]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 6);

    let records = s.take_records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.id.as_deref(), Some("p/7"));
    assert!(r.complete);
    assert_eq!(r.writes.len(), 6);
    // Never before a deadline, in order; late only by what a loaded machine's scheduler adds
    // (the bound is a sanity check: sleeping until a deadline, not for a fixed time).
    for (i, w) in r.writes.iter().enumerate() {
        let deadline = r.arrived + Duration::from_millis(30 + 5 * i as u64);
        assert!(*w >= deadline, "chunk {i} written before its deadline");
        assert!(
            *w - deadline < Duration::from_millis(500),
            "chunk {i} written {:?} late",
            *w - deadline
        );
    }
    assert!(r.writes.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn chat_streams_deltas_and_headers_override_the_timing() {
    let s = server(1000, 1000);
    let http = reqwest::Client::new();
    let body = http
        .post(format!("{}/v1/chat/completions", s.url()))
        .header("x-truth-ttft-us", "1000")
        .header("x-truth-itl-us", "2000")
        .json(&serde_json::json!({"model": "truth", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(data_lines(&body)[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["content"], " tok");
    let records = s.take_records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.ttft, Duration::from_millis(1));
    assert_eq!(r.itl, Duration::from_millis(2));
    assert_eq!(r.id, None);
    // Paced by the headers: no chunk before its 1 ms + 2 ms·i deadline, and all three before
    // the first deadline the server's own 1 s TTFT would have set.
    assert_eq!(r.writes.len(), 3);
    for (i, w) in r.writes.iter().enumerate() {
        assert!(*w >= r.arrived + Duration::from_millis(1 + 2 * i as u64));
        assert!(
            *w < r.arrived + Duration::from_secs(1),
            "chunk {i} paced by the default"
        );
    }
}

#[tokio::test]
async fn bad_requests_get_errors_not_streams() {
    let s = server(1, 1);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/completions", s.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid JSON body"));
    let r = http
        .post(format!("{}/v1/completions", s.url()))
        .json(&serde_json::json!({"prompt": "x", "stream": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http.get(format!("{}/nope", s.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{}/v1/models", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.take_records().is_empty());
}

#[tokio::test]
async fn records_are_served_as_json_with_offsets() {
    let s = server(1, 1);
    let http = reqwest::Client::new();
    for _ in 0..2 {
        http.post(format!("{}/v1/completions", s.url()))
            .json(&serde_json::json!({"prompt": "x", "max_tokens": 2, "stream": true}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    let rows: serde_json::Value = http
        .get(format!("{}/truth/records", s.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let writes = rows[0]["writes_us"].as_array().unwrap();
    assert_eq!(writes.len(), 2);
    assert!(writes[0].as_u64().unwrap() >= rows[0]["arrived_us"].as_u64().unwrap() + 1000);
    // One keep-alive connection carried both.
    assert_eq!(rows[0]["connection"], rows[1]["connection"]);
    assert_eq!(s.connections(), 1);
}

/// Every request is matched to the server's record, each stream reuses its one connection,
/// and the figures obey causality: the client stamps a send before the server can have the
/// request, and cannot report a shorter TTFT than the server produced, nor a rate above the
/// theoretical one. The size of the error is bounded relative to the machine's own noise (the
/// truth server's lateness), so a loaded machine does not fail it; its value on a quiet one is
/// `inferlab calibrate`'s and the calibration bench's business.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn calibration_measures_a_small_client_error() {
    let level = calibrate::measure(
        16,
        4,
        Duration::from_millis(20),
        Duration::from_millis(5),
        16,
        1,
        None,
    )
    .await
    .unwrap();
    let all = serde_json::to_string(&level).unwrap();
    assert_eq!(level.requests, 64);
    assert_eq!(level.failed, 0, "{all}");
    assert_eq!(level.steady_requests, 48);
    assert!(level.send_median_ms > 0.0, "{all}");
    // The receive half may dip below zero by the instant between the server's write returning
    // and its clock read; never by a TTFT.
    assert!(level.ttft_error_median_ms > -1.0, "{all}");
    let noise = level.server_late_p99_ms;
    assert!(noise.is_finite() && noise >= 0.0, "{all}");
    assert!(
        level.ttft_error_median_ms < 20.0 + 4.0 * noise,
        "TTFT error median beyond the machine's noise: {all}"
    );
    assert!(level.itl_error_p50_ms < 20.0 + 4.0 * noise, "{all}");
    assert!(
        (16..=32).contains(&level.connections),
        "{} connections for 16 streams",
        level.connections
    );
    assert!(
        level.rate_ratio > 0.0 && level.rate_ratio <= 1.0 + 1e-9,
        "rate ratio {}",
        level.rate_ratio
    );
}

/// `calibrate = true`: a short calibration runs before the phases, lands in the manifest, and
/// every time assertion carries the noise floor it measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_experiment_can_embed_a_calibration() {
    let s = server(10, 2);
    let src = r#"schema_version = 1
description = "calibrated"
seed = 1
calibrate = true
[targets.box]
kind = "openai"
[model]
name = "truth"
[[phase]]
name = "a"
workload = { kind = "concurrent", concurrency = 2, requests = 4, input_tokens = 8 }
request = { api = "completions", output_tokens = 4 }
[[phase]]
name = "b"
workload = { kind = "concurrent", concurrency = 2, requests = 4, input_tokens = 8 }
request = { api = "completions", output_tokens = 4 }
[[assert]]
expr = "b.ttft.p50 <= 10 * a.ttft.p50"
[[assert]]
expr = "all.error_rate == 0"
"#;
    let exp = inferlab::spec_io::parse("calibrated.toml", "calibrated", src).unwrap();
    let out = common::run_live(&exp, &s.url(), "calibrated").await;
    assert!(out.passed(), "{:?}", out.verdicts);
    let floor = out.verdicts[0].noise_floor.expect("a noise floor");
    assert!(floor > 0.0, "noise floor {floor} s");
    // Plain numbers have no noise floor to lie inside.
    assert_eq!(out.verdicts[1].within_noise_floor(), None);
    assert!(out.verdicts[0].within_noise_floor().is_some());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.dir.join("manifest.json")).unwrap())
            .unwrap();
    let cal = &manifest["calibration"];
    assert_eq!(cal["failed"], 0, "{cal}");
    assert!(cal["steady_requests"].as_u64().unwrap() > 0, "{cal}");
    // The floor is the calibration's TTFT error p99, whatever this machine's load made it.
    let p99_s = cal["ttft_error_p99_ms"].as_f64().unwrap() / 1e3;
    assert!(
        (floor - p99_s).abs() < 1e-9,
        "floor {floor} s vs p99 {p99_s} s"
    );
}
