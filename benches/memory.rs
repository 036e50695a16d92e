//! Resident memory per completed request on a long run: a whole trial (schedule, client,
//! records appended to `requests.jsonl` as they complete, running summaries, fidelity rows,
//! summary and histograms written at the end) against the truth server at ITL 0, every request
//! as fast as the machine allows.
//!
//! Each size runs in a fresh process, which reports its peak resident set; the growth between
//! the small and the large run, divided by the extra requests, is what one request costs —
//! schedule included.
//!
//! `cargo bench --bench memory` compares 100 000 and 1 000 000 requests
//! (`INFERLAB_BENCH_REQUESTS` sets the large size); under `cargo test --benches` it compares
//! 1 000 and 5 000 as a smoke test.

use inferlab::run;
use inferlab::spec_io;
use inferlab::trial::{self, TrialOptions};
use inferlab::truth::{TruthConfig, TruthServer};
use std::time::{Duration, Instant};

const CHILD: &str = "INFERLAB_MEMORY_BENCH_CHILD";

/// Peak and current resident set in KiB (Linux).
fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// One trial of `n` requests; prints `peak_kib current_kib seconds failed`.
fn child(n: u32) {
    let server = TruthServer::start(
        TruthConfig {
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            tokens: 4,
            workers: 1,
            record: false,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("truth server");
    let src = format!(
        r#"schema_version = 1
description = "memory"
seed = 1
[targets.box]
kind = "openai"
[model]
name = "truth"
[observe]
metrics = false
[[phase]]
name = "load"
workload = {{ kind = "concurrent", concurrency = 64, requests = {n}, input_tokens = 8 }}
request = {{ api = "completions", output_tokens = 4 }}
[[assert]]
expr = "all.error_rate == 0"
"#
    );
    let exp = spec_io::parse("memory.toml", "memory", &src).expect("experiment");
    let target = exp.target("box").expect("target").clone();
    let url = server.url();
    let env = move |k: &str| (k == "INFERLAB_BOX_URL").then(|| url.clone());
    let root = std::env::temp_dir().join(format!("inferlab-memory-{}", std::process::id()));
    let plan = trial::plan(&exp, &target, &env, &root.join("fixtures")).expect("plan");
    let opts = TrialOptions {
        watch: None,
        results_root: root.join("results"),
        fixtures_root: root.join("fixtures"),
        salt: Some(1),
        interrupt: None,
        cost_per_hour: None,
        baselines: Default::default(),
    };
    let rt = run::client_runtime(None).expect("runtime");
    let started = Instant::now();
    let out = rt
        .block_on(trial::run_trial(&exp, &target, plan, &opts))
        .expect("trial");
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&root);
    let (peak, now) = rss_kib().unwrap_or((0, 0));
    println!("{peak} {now} {secs} {}", out.summary.all.failed);
}

fn main() {
    if let Some(n) = std::env::var(CHILD).ok().and_then(|v| v.parse().ok()) {
        child(n);
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let large: u32 = std::env::var("INFERLAB_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 5_000 });
    let small = if full { large / 10 } else { 1_000 };
    let exe = std::env::current_exe().expect("own path");
    let mut runs = Vec::new();
    for n in [small, large] {
        let out = std::process::Command::new(&exe)
            .env(CHILD, n.to_string())
            .output()
            .expect("child run");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or("");
        let f: Vec<f64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        assert!(
            out.status.success() && f.len() == 4,
            "child run of {n} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(f[3], 0.0, "requests failed against the truth server");
        println!(
            "{n:>8} requests: peak resident {:.1} MiB, {:.1} s ({:.0} requests/s)",
            f[0] / 1024.0,
            f[2],
            f64::from(n) / f[2]
        );
        runs.push((n, f[0]));
    }
    let (n0, p0) = runs[0];
    let (n1, p1) = runs[1];
    let per = (p1 - p0).max(0.0) * 1024.0 / f64::from(n1 - n0);
    println!("peak resident per extra request, schedule included: {per:.0} bytes");
}
