//! Open-loop pacer fidelity: how late requests leave relative to their intended send times
//! (`sent − intended`) at 100, 500 and 1000 requests/s against the loopback scripted server,
//! whose 200 ms streams keep up to ~200 requests in flight; and the cost of generating a
//! one-million-request schedule.
//!
//! `cargo bench --bench pacer` prints the table. Under `cargo test --benches` it runs a short
//! 100 req/s burst as a smoke test.

#[path = "../tests/it/common/mod.rs"]
mod common;

use inferlab::client::{self, Endpoint};
use inferlab::core::engine::TargetKind;
use inferlab::run::{Completed, Keep, run_phase};
use inferlab::spec::{Api, Timeouts};
use inferlab::spec_io;
use inferlab::workload::{Pacing, PhasePlan, PlannedRequest, schedule};
use std::time::Duration;
use tokio::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn lateness(url: &str, rate: f64, seconds: f64) {
    let n = (rate * seconds) as u32;
    let plan = PhasePlan {
        name: format!("r{rate}"),
        repeat: 0,
        pacing: Pacing::Open {
            max_concurrency: Some(256),
            limit: None,
        },
        warmup_limit: None,
        sessions: Vec::new(),
        requests: (0..n)
            .map(|i| PlannedRequest {
                index: i,
                warmup: false,
                group: None,
                api: Api::Completions,
                prompt: "slow".into(),
                max_tokens: 20,
                ignore_eos: false,
                temperature: 0.0,
                at: Some(Duration::from_secs_f64(f64::from(i) / rate)),
                ..PlannedRequest::default()
            })
            .collect(),
    };
    let ep = Endpoint {
        base_url: url.to_string(),
        api_key: None,
        model: "m".into(),
        kind: TargetKind::Openai,
        continuous_usage: false,
    };
    let timeouts = Timeouts::default();
    let http = client::http_client(&timeouts, 256).expect("client");
    let mut late = Vec::new();
    let mut failed = 0;
    let mut in_flight_max = 0usize;
    let mut ends: Vec<(f64, f64)> = Vec::new();
    let mut sink = |c: Completed| {
        late.push(c.record.client_queue().as_secs_f64() * 1e3);
        ends.push((c.record.sent.as_secs_f64(), c.record.end.as_secs_f64()));
        if !c.record.ok() {
            failed += 1;
        }
    };
    run_phase(
        &http,
        &ep,
        &plan,
        &timeouts,
        Instant::now(),
        &Keep::default(),
        &mut sink,
    )
    .await;
    // Peak concurrency from the send/end intervals.
    let mut events: Vec<(f64, i32)> = ends.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cur = 0i32;
    for (_, d) in events {
        cur += d;
        in_flight_max = in_flight_max.max(cur as usize);
    }
    late.sort_by(f64::total_cmp);
    println!(
        "{rate:>6} req/s  n={n:<5} lateness p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms   peak in flight {in_flight_max:>3}   failed {failed}",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN),
    );
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = common::start().await;
        if !full {
            lateness(&server.url, 100.0, 0.3).await;
            return;
        }
        for rate in [100.0, 500.0, 1000.0] {
            lateness(&server.url, rate, 4.0).await;
        }
    });
    if full {
        let src = "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = { kind = \"rate\", process = \"poisson\", rate = 1000.0, requests = 1000000, input_tokens = 64 }\nrequest = { api = \"completions\", output_tokens = 16 }\n";
        let exp = spec_io::parse("big.toml", "big", src).expect("experiment");
        let before = rss_kib();
        let t = std::time::Instant::now();
        let s = schedule(&exp, 1);
        let took = t.elapsed();
        let after = rss_kib();
        println!(
            "schedule of {} requests (64-word prompts, Poisson arrivals): {:.2} s, resident memory +{} MiB",
            s.phases[0].requests.len(),
            took.as_secs_f64(),
            after
                .zip(before)
                .map_or(0, |(a, b)| a.saturating_sub(b) / 1024)
        );
    }
}
