//! Resident memory per completed request on a long run: requests against the truth server at
//! ITL 0 (every request as fast as the machine allows), each record appended to a JSONL file as
//! it completes and then dropped, as a run does. Prints the resident set before and after, and
//! the growth per request.
//!
//! `cargo bench --bench memory` runs 1 000 000 requests (`INFERLAB_BENCH_REQUESTS` to change);
//! under `cargo test --benches` it runs 2 000 as a smoke test.

use inferlab::client::{self, Endpoint};
use inferlab::engine::TargetKind;
use inferlab::run::{self, run_phase};
use inferlab::spec::{Api, Timeouts};
use inferlab::truth::{TruthConfig, TruthServer};
use inferlab::workload::{Pacing, PhasePlan, PlannedRequest};
use std::io::Write;
use std::time::Duration;
use tokio::time::Instant;

/// Resident set size in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: u32 = std::env::var("INFERLAB_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let concurrency = 64;
    let tokens = 4;
    let server = TruthServer::start(
        TruthConfig {
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            tokens,
            workers: 1,
            record: false,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("truth server");
    let ep = Endpoint {
        base_url: server.url(),
        api_key: None,
        model: "truth".into(),
        kind: TargetKind::Openai,
        continuous_usage: false,
    };
    let timeouts = Timeouts::default();
    let plan = PhasePlan {
        name: "memory".into(),
        pacing: Pacing::Closed {
            concurrency,
            limit: None,
        },
        requests: (0..n)
            .map(|i| PlannedRequest {
                index: i,
                api: Api::Completions,
                prompt: "memory".into(),
                max_tokens: tokens,
                ..PlannedRequest::default()
            })
            .collect(),
        warmup_limit: None,
        sessions: Vec::new(),
    };
    let schedule_kib = rss_kib();
    let dir = std::env::temp_dir().join(format!("inferlab-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("requests.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("requests.jsonl"));
    let rt = run::client_runtime(None).expect("runtime");
    let (mut done, mut failed) = (0u64, 0u64);
    let mut at_10_percent = None;
    let started = std::time::Instant::now();
    rt.block_on(async {
        let http = client::http_client(&timeouts, concurrency as usize).expect("client");
        run_phase(
            &http,
            &ep,
            &plan,
            &timeouts,
            Instant::now(),
            false,
            &mut |c| {
                done += 1;
                failed += u64::from(!c.record.ok());
                serde_json::to_writer(&mut out, &c.record).expect("write");
                out.write_all(b"\n").expect("write");
                if done == u64::from(n / 10) {
                    at_10_percent = rss_kib();
                }
            },
        )
        .await;
    });
    out.flush().expect("flush");
    let elapsed = started.elapsed();
    let end_kib = rss_kib();
    let bytes_on_disk = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{done} requests ({failed} failed) in {:.1} s ({:.0}/s), {:.1} MiB of records on disk",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        bytes_on_disk as f64 / 1048576.0
    );
    if let (Some(s), Some(t), Some(e)) = (schedule_kib, at_10_percent, end_kib) {
        // From 10 % on: connections, buffers and the allocator's pools are warm by then, and
        // the schedule itself (held for the whole run) is counted apart.
        let per = (e.saturating_sub(t) * 1024) as f64 / (done as f64 * 0.9);
        let whole = (e.saturating_sub(s) * 1024) as f64 / done as f64;
        println!(
            "resident: {s} KiB with the schedule built, {t} KiB at 10 %, {e} KiB at the end: \
             {per:.1} bytes per completed request after 10 %, {whole:.1} over the whole run"
        );
    }
    assert_eq!(failed, 0, "requests failed against the truth server");
}
