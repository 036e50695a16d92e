//! Replay pacing fidelity: how closely a replayed stream reproduces the recorded gaps between
//! SSE records, measured through the real client path (replay server → reqwest → SSE decoder).
//!
//! `cargo bench --bench replay` replays every exchange of the committed
//! `wiremock-fixtures/concurrency/llamacpp` fixture (recorded from llama-server): one at a time,
//! then eight at a time, and prints median / p99 / max of |replayed gap − recorded gap| and of
//! the first-record offset error. It also measures the client's cost per chunk: a synthetic
//! exchange of 20 000 records all due at once is streamed as fast as loopback allows, and the
//! wall time of reading it (HTTP, SSE decoding, JSON, timestamps) is divided by the records.
//! Each replay runs with and without a scraper polling the recorded `/metrics` every 50 ms, to
//! show whether scraping disturbs the client's timing. Under `cargo test --benches` it replays
//! two exchanges and a short burst as a smoke test.

use inferlab::client::{self, Endpoint};
use inferlab::core::engine::TargetKind;
use inferlab::core::record::Point;
use inferlab::observe::scrape::Scraper;
use inferlab::replay::{Exchange, Fixture, FixtureEvent, ReplayServer, Source};
use inferlab::spec::{Api, Timeouts};
use inferlab::workload::PlannedRequest;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The request to replay `ex`: only its API matters, the body is sent as recorded.
fn planned(ex: &Exchange) -> PlannedRequest {
    PlannedRequest {
        index: ex.index,
        warmup: false,
        group: None,
        api: if ex.path.ends_with("chat/completions") {
            Api::Chat
        } else {
            Api::Completions
        },
        prompt: String::new(),
        max_tokens: 0,
        ignore_eos: false,
        temperature: 0.0,
        ..PlannedRequest::default()
    }
}

/// (gap errors, first-record errors) in ms for one exchange.
async fn replay_one(http: &reqwest::Client, ep: &Endpoint, ex: &Exchange) -> (Vec<f64>, f64) {
    let req = planned(ex);
    let now = Instant::now();
    let ctx = client::RequestCtx {
        http,
        ep,
        phase: &ex.phase,
        timeouts: &Timeouts::default(),
        origin: now,
        capture: true,
    };
    let (_, cap) = client::execute(&ctx, &req, &ex.body, now, None).await;
    let cap = cap.expect("capture requested");
    let got: Vec<f64> = cap
        .events
        .iter()
        .map(|e| e.offset.as_secs_f64() * 1e3)
        .collect();
    let want: Vec<f64> = ex.events.iter().map(|e| e.offset_us as f64 / 1e3).collect();
    assert_eq!(
        got.len(),
        want.len(),
        "replayed a different number of records"
    );
    let gaps = got
        .windows(2)
        .zip(want.windows(2))
        .map(|(g, w)| ((g[1] - g[0]) - (w[1] - w[0])).abs())
        .collect();
    (gaps, (got[0] - want[0]).abs())
}

async fn measure(
    label: &str,
    fixture: &Fixture,
    exchanges: &[Exchange],
    concurrency: usize,
    scrape_every: Option<Duration>,
) {
    let server = ReplayServer::start(fixture).await.expect("replay server");
    // Optionally a scraper hitting the replay server's recorded /metrics alongside, on its own
    // task and connection, as trials do.
    let scraper = scrape_every.map(|every| {
        let s =
            Scraper::new(&server.base_url(), None, TargetKind::Llamacpp, false).expect("scraper");
        tokio::spawn(async move {
            let start = Instant::now();
            let mut n = 0u32;
            loop {
                tokio::time::sleep(every).await;
                let r = s.scrape("c1", Point::Periodic, start, start).await;
                assert!(r.error.is_none(), "{:?}", r.error);
                n += 1;
                if n > 100_000 {
                    break;
                }
            }
        })
    });
    let ep = Endpoint {
        base_url: server.base_url(),
        api_key: None,
        model: fixture.meta.model.clone(),
        kind: TargetKind::Llamacpp,
        continuous_usage: false,
    };
    let http = client::http_client(&Timeouts::default(), concurrency).expect("client");
    let mut gaps = Vec::new();
    let mut firsts = Vec::new();
    let ep = Arc::new(ep);
    for batch in exchanges.chunks(concurrency) {
        let mut tasks = Vec::new();
        for ex in batch {
            let (http, ep, ex) = (http.clone(), ep.clone(), ex.clone());
            tasks.push(tokio::spawn(
                async move { replay_one(&http, &ep, &ex).await },
            ));
        }
        for t in tasks {
            let (g, f) = t.await.expect("task");
            gaps.extend(g);
            firsts.push(f);
        }
    }
    if let Some(s) = scraper {
        s.abort();
    }
    assert!(server.unmatched().is_empty(), "{:?}", server.unmatched());
    gaps.sort_by(f64::total_cmp);
    firsts.sort_by(f64::total_cmp);
    println!(
        "{label:<28} gaps {:>5}: |err| median {:.3} ms  p99 {:.3} ms  max {:.3} ms   first record ({}): median {:.3} ms  p99 {:.3} ms",
        gaps.len(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps.last().copied().unwrap_or(f64::NAN),
        firsts.len(),
        percentile(&firsts, 0.5),
        percentile(&firsts, 0.99),
    );
}

/// Client cost per chunk: `events` records with offset 0, read through `client::execute`.
async fn overhead(fixture: &Fixture, events: usize) {
    let mut synthetic = fixture.clone();
    synthetic.meta.source = Source::Synthetic;
    let mut ex = fixture.exchanges[0].clone();
    let template = ex
        .events
        .iter()
        .find(|e| e.data.contains("\"content\":\"") && !e.data.contains("\"content\":\"\""))
        .expect("a content record")
        .data
        .clone();
    ex.headers_offset_us = 0;
    ex.events = (0..events)
        .map(|_| FixtureEvent {
            offset_us: 0,
            event: None,
            data: template.clone(),
        })
        .chain(std::iter::once(FixtureEvent {
            offset_us: 0,
            event: None,
            data: "[DONE]".into(),
        }))
        .collect();
    synthetic.exchanges = vec![ex.clone(); 5];
    let server = ReplayServer::start(&synthetic)
        .await
        .expect("replay server");
    let ep = Endpoint {
        base_url: server.base_url(),
        api_key: None,
        model: fixture.meta.model.clone(),
        kind: TargetKind::Llamacpp,
        continuous_usage: false,
    };
    let http = client::http_client(&Timeouts::default(), 1).expect("client");
    let mut per_chunk = Vec::new();
    for _ in 0..5 {
        let req = planned(&ex);
        let now = Instant::now();
        let ctx = client::RequestCtx {
            http: &http,
            ep: &ep,
            phase: "x",
            timeouts: &Timeouts::default(),
            origin: now,
            capture: false,
        };
        let (rec, _) = client::execute(&ctx, &req, &ex.body, now, None).await;
        assert!(rec.ok(), "{:?}", rec.failure);
        assert_eq!(rec.chunks.len(), events);
        per_chunk.push(now.elapsed().as_secs_f64() * 1e6 / events as f64);
    }
    per_chunk.sort_by(f64::total_cmp);
    println!(
        "client cost per chunk ({events} chunks, best/median of 5): {:.2} / {:.2} µs",
        per_chunk[0], per_chunk[2]
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wiremock-fixtures/concurrency/llamacpp");
    let fixture = Fixture::load(&dir).expect("committed fixture");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let c1: Vec<Exchange> = fixture
            .exchanges
            .iter()
            .filter(|e| e.phase == "c1")
            .cloned()
            .collect();
        let c8: Vec<Exchange> = fixture
            .exchanges
            .iter()
            .filter(|e| e.phase == "c8")
            .cloned()
            .collect();
        if !full {
            measure(
                "smoke (2 exchanges)",
                &fixture,
                &c1[..2],
                1,
                Some(Duration::from_millis(20)),
            )
            .await;
            overhead(&fixture, 200).await;
            return;
        }
        overhead(&fixture, 20_000).await;
        let scrape = Some(Duration::from_millis(50));
        for (label, exchanges, concurrency, scrape) in [
            ("one at a time (c1 phase)", &c1, 1, None),
            ("c1, scraping every 50 ms", &c1, 1, scrape),
            ("eight at a time (c8 phase)", &c8, 8, None),
            ("c8, scraping every 50 ms", &c8, 8, scrape),
        ] {
            measure(label, &fixture, exchanges, concurrency, scrape).await;
        }
    });
}
