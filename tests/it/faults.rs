//! Server faults are recorded per request by kind; the run completes; statistics include only
//! successful requests. Streaming faults come from the scripted server, status codes and slow
//! headers from wiremock.

use crate::common;

use inferlab::client::{self, Endpoint, Secret};
use inferlab::core::engine::TargetKind;
use inferlab::core::metrics::{Slo, summarize};
use inferlab::core::record::{ErrorKind, RequestRecord, TokenCounting};
use inferlab::run::{Completed, run_schedule};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn endpoint(url: &str) -> Endpoint {
    Endpoint {
        base_url: url.to_string(),
        api_key: None,
        model: "m".into(),
        kind: TargetKind::Llamacpp,
        continuous_usage: false,
    }
}

async fn run(ep: &Endpoint, prompts: &[&str]) -> Vec<RequestRecord> {
    let schedule = common::schedule(prompts, 1);
    let http = client::http_client(&common::timeouts(), 4).unwrap();
    let mut out = Vec::new();
    let mut sink = |c: Completed| out.push(c.record);
    run_schedule(&http, ep, &schedule, &common::timeouts(), false, &mut sink).await;
    out.sort_by_key(|r| r.index);
    out
}

fn kind(r: &RequestRecord) -> Option<ErrorKind> {
    r.failure.as_ref().map(|f| f.kind)
}

#[tokio::test]
async fn streaming_faults_are_recorded_by_kind_and_the_run_completes() {
    let server = common::start().await;
    let prompts = [
        "ok",
        "in_stream_error",
        "reset",
        "stall",
        "malformed",
        "no_usage",
        "no_done",
        "ok",
    ];
    let records = run(&endpoint(&server.url), &prompts).await;
    assert_eq!(records.len(), prompts.len(), "every request is recorded");
    let kinds: Vec<_> = records.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(ErrorKind::StreamError),
            Some(ErrorKind::Disconnect),
            Some(ErrorKind::TimeoutIdle),
            Some(ErrorKind::Decode),
            None,
            Some(ErrorKind::Disconnect),
            None,
        ]
    );
    assert_eq!(
        records[1].failure.as_ref().unwrap().detail,
        "KV cache exhausted"
    );
    // A stream without usage still succeeds, with the client's token count.
    let no_usage = &records[5];
    assert!(no_usage.usage.is_none());
    assert_eq!(no_usage.output_tokens(), u64::from(common::TOKENS));
    assert_eq!(no_usage.token_counting, TokenCounting::Unknown);
    assert_eq!(records[0].token_counting, TokenCounting::OnePerChunk);
    // Partial streams keep what arrived before the fault.
    assert_eq!(records[2].chunks.len(), 2);

    let (s, _) = summarize(&records, &Slo::default());
    assert_eq!((s.requests, s.succeeded, s.failed), (8, 3, 5));
    assert_eq!(s.error_rate, 5.0 / 8.0);
    assert_eq!(s.errors.get("disconnect"), Some(&2));
    assert_eq!(s.errors.get("stream_error"), Some(&1));
    assert_eq!(s.errors.get("timeout_idle"), Some(&1));
    assert_eq!(s.errors.get("decode"), Some(&1));
    assert_eq!(s.usage_missing, 1);
    // Latency statistics cover the three successful requests only.
    assert_eq!(s.ttft.unwrap().count, 3);
    assert_eq!(s.output_tokens, 3 * u64::from(common::TOKENS));
}

#[tokio::test]
async fn status_codes_and_non_sse_bodies() {
    let mock = MockServer::start().await;
    let ep = endpoint(&mock.uri());
    let cases: &[(u16, &str)] = &[
        (400, "exceed_context_size_error"),
        (429, "rate limited"),
        (503, "loading model"),
    ];
    for &(status, msg) in cases {
        Mock::given(method("POST"))
            .and(path("/v1/completions"))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("retry-after", "1")
                    .set_body_json(serde_json::json!({"error": {"message": msg, "code": status}})),
            )
            .up_to_n_times(1)
            .named(format!("status {status}"))
            .mount(&mock)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/v1/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("{\"id\":\"x\",\"choices\":[]}", "application/json"),
        )
        .up_to_n_times(1)
        .named("non-SSE body")
        .mount(&mock)
        .await;
    let records = run(&ep, &["ok"; 4]).await;
    let kinds: Vec<_> = records.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            Some(ErrorKind::Http(400)),
            Some(ErrorKind::Http(429)),
            Some(ErrorKind::Http(503)),
            Some(ErrorKind::Decode),
        ]
    );
    assert_eq!(
        records[0].failure.as_ref().unwrap().detail,
        "exceed_context_size_error"
    );
    assert_eq!(records[1].status, Some(429));
    let (s, _) = summarize(&records, &Slo::default());
    assert_eq!(s.errors.get("http_429"), Some(&1));
    assert_eq!(s.error_rate, 1.0);
    assert!(s.ttft.is_none());
}

/// Headers that never come within the first-byte timeout. The server holds them 80 times
/// longer than the client waits, so the outcome does not depend on the machine's speed, and the
/// test waits 50 ms, not seconds.
#[tokio::test]
async fn slow_headers_are_a_first_byte_timeout() {
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/completions"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(4)))
        .named("slow headers")
        .mount(&mock)
        .await;
    let timeouts = inferlab::spec::Timeouts {
        first_byte: Duration::from_millis(50),
        ..common::timeouts()
    };
    let schedule = common::schedule(&["ok"], 1);
    let http = client::http_client(&timeouts, 1).unwrap();
    let mut records = Vec::new();
    let mut sink = |c: Completed| records.push(c.record);
    run_schedule(
        &http,
        &endpoint(&mock.uri()),
        &schedule,
        &timeouts,
        false,
        &mut sink,
    )
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(kind(&records[0]), Some(ErrorKind::TimeoutFirstByte));
    // Never before the deadline.
    assert!(records[0].end - records[0].sent >= Duration::from_millis(50));
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    // Bind and drop to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let records = run(&endpoint(&format!("http://127.0.0.1:{port}")), &["ok"]).await;
    assert_eq!(kind(&records[0]), Some(ErrorKind::Connect));
}

#[tokio::test]
async fn api_key_is_sent_but_never_recorded() {
    let server = common::start().await;
    let mut ep = endpoint(&server.url);
    ep.api_key = Some(Secret::new("sk-live-0123456789"));
    let schedule = common::schedule(&["ok", "in_stream_error"], 1);
    let http = client::http_client(&common::timeouts(), 1).unwrap();
    let mut completed = Vec::new();
    let mut sink = |c: Completed| completed.push(c);
    run_schedule(&http, &ep, &schedule, &common::timeouts(), true, &mut sink).await;
    assert_eq!(
        server.auth_seen.lock().unwrap().as_slice(),
        ["Bearer sk-live-0123456789"; 2]
    );
    for c in &completed {
        let text = format!("{:?} {:?} {}", c.record, c.capture, c.body);
        assert!(!text.contains("sk-live"), "secret leaked: {text}");
        assert!(c.capture.as_ref().is_some_and(|cap| !cap.events.is_empty()));
    }
}
