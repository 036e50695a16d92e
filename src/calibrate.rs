//! `inferlab calibrate`: how far this machine's client is from the truth.
//!
//! Drives an in-process [`TruthServer`] through exactly the code path experiments use
//! (`run::run_phase` → `client::execute`), matches every record to the server's by the request
//! id header, and compares: TTFT as the client measured it against the server's (first write −
//! arrival), each chunk gap against the server's gap between the same two writes, the request
//! rate achieved against what a zero-overhead client would get, connections opened, and the
//! client's CPU (the process's, less the server threads').
//!
//! Steady state only: the first wave of requests (one per concurrent stream, which opens the
//! connections) is excluded from every error statistic.

use crate::client::{self, Endpoint};
use crate::core::engine::TargetKind;
use crate::core::record::RequestRecord;
use crate::run;
use crate::spec::{Api, Timeouts};
use crate::truth::{TruthConfig, TruthRecord, TruthServer};
use crate::watch::Watch;
use crate::workload::{Pacing, PhasePlan, PlannedRequest};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    pub concurrency: Vec<u32>,
    /// Requests per stream at each level (the first wave included).
    pub rounds: u32,
    pub ttft: Duration,
    pub itl: Duration,
    pub tokens: u32,
    /// Inter-token latencies tried, at `ceiling_concurrency`, to find the ceiling (empty: skip).
    pub ceiling_itls: Vec<Duration>,
    pub ceiling_concurrency: u32,
    pub server_workers: usize,
    /// Counts every request for a progress line or a Prometheus endpoint, as a run would (to
    /// measure what watching a run costs the client's timing).
    pub watch: Option<Arc<Watch>>,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        Self {
            concurrency: vec![1, 64, 256, 512],
            rounds: 5,
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(10),
            tokens: 64,
            ceiling_itls: [8000, 4000, 2000, 1000]
                .into_iter()
                .map(Duration::from_micros)
                .collect(),
            ceiling_concurrency: 512,
            server_workers: 1,
            watch: None,
        }
    }
}

/// One level: `concurrency` streams, each request `tokens` chunks at `ttft`/`itl`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Level {
    pub concurrency: u32,
    pub ttft_ms: f64,
    pub itl_ms: f64,
    pub tokens: u32,
    pub requests: usize,
    /// Requests in the steady-state statistics (matched, complete, first wave excluded).
    pub steady_requests: usize,
    /// Requests that failed on the client or could not be matched to the server's record.
    pub failed: usize,
    /// Client TTFT − true TTFT, over steady requests (positive: the client reports more).
    pub ttft_error_median_ms: f64,
    pub ttft_error_p99_ms: f64,
    /// The TTFT error's two halves (medians): client send → server has the whole request, and
    /// server wrote the first chunk → client read it.
    pub send_median_ms: f64,
    pub receive_median_ms: f64,
    /// |client gap − true gap| for every chunk gap of steady requests.
    pub itl_error_p50_ms: f64,
    pub itl_error_p99_ms: f64,
    /// ITL p99 as the client measured it, and the truth's.
    pub itl_p99_client_ms: f64,
    pub itl_p99_true_ms: f64,
    /// How late the truth server wrote chunks after their deadlines (steady requests): the
    /// machine's own scheduling noise, which the client's error cannot be expected to beat.
    pub server_late_p50_ms: f64,
    pub server_late_p99_ms: f64,
    pub achieved_rps: f64,
    /// A zero-overhead closed loop: concurrency / (ttft + (tokens − 1)·itl).
    pub theoretical_rps: f64,
    pub rate_ratio: f64,
    /// Chunks the server wrote per second over the steady window.
    pub chunks_per_s: f64,
    pub connections: u64,
    /// Client CPU over the level, in cores (`None` where the OS does not say).
    pub client_cpu_cores: Option<f64>,
    pub server_cpu_cores: Option<f64>,
    pub wall_s: f64,
}

impl Level {
    /// The client's ITL p99 lies within 20 % of the truth's.
    pub fn itl_faithful(&self) -> bool {
        self.steady_requests > 0
            && (self.itl_p99_client_ms - self.itl_p99_true_ms).abs() <= 0.2 * self.itl_p99_true_ms
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub schema_version: u32,
    pub cpus: usize,
    pub os: &'static str,
    pub client_runtime: String,
    pub server_workers: usize,
    pub levels: Vec<Level>,
    /// The ceiling search, highest rate first tried last.
    pub ceiling_grid: Vec<Level>,
    /// Highest chunks/s whose client ITL p99 stayed within 20 % of the truth's.
    pub ceiling_chunks_per_s: Option<f64>,
    pub ceiling_client_cpu_cores: Option<f64>,
}

/// Runs the calibration on the current tokio runtime.
pub async fn calibrate(
    opts: &CalibrateOptions,
    mut progress: impl FnMut(&Level),
) -> std::io::Result<Calibration> {
    let mut levels = Vec::new();
    for &c in &opts.concurrency {
        let level = measure(
            c,
            opts.rounds,
            opts.ttft,
            opts.itl,
            opts.tokens,
            opts.server_workers,
            opts.watch.as_ref(),
        )
        .await?;
        progress(&level);
        levels.push(level);
    }
    let mut grid = Vec::new();
    for &itl in &opts.ceiling_itls {
        let level = measure(
            opts.ceiling_concurrency,
            opts.rounds.max(2),
            itl,
            itl,
            opts.tokens,
            opts.server_workers,
            opts.watch.as_ref(),
        )
        .await?;
        progress(&level);
        grid.push(level);
    }
    let best = grid
        .iter()
        .filter(|l| l.itl_faithful())
        .max_by(|a, b| a.chunks_per_s.total_cmp(&b.chunks_per_s));
    let handle = tokio::runtime::Handle::current();
    let flavor = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread".to_string(),
        _ => format!("multi_thread({})", handle.metrics().num_workers()),
    };
    Ok(Calibration {
        schema_version: crate::report::RESULTS_SCHEMA_VERSION,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: std::env::consts::OS,
        client_runtime: flavor,
        server_workers: opts.server_workers,
        ceiling_chunks_per_s: best.map(|l| l.chunks_per_s),
        ceiling_client_cpu_cores: best.and_then(|l| l.client_cpu_cores),
        levels,
        ceiling_grid: grid,
    })
}

/// One level against a fresh truth server; with `watch`, counted as a watched run is.
pub async fn measure(
    concurrency: u32,
    rounds: u32,
    ttft: Duration,
    itl: Duration,
    tokens: u32,
    server_workers: usize,
    watch: Option<&Arc<Watch>>,
) -> std::io::Result<Level> {
    let concurrency = concurrency.max(1);
    let server = TruthServer::start(
        TruthConfig {
            ttft,
            itl,
            tokens,
            workers: server_workers,
            record: true,
        },
        "127.0.0.1:0".parse().expect("a literal socket address"),
    )?;
    let timeouts = Timeouts::default();
    let http = client::http_client(&timeouts, concurrency as usize)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let ep = Endpoint {
        base_url: server.url(),
        api_key: None,
        model: "truth".into(),
        kind: TargetKind::Openai,
        continuous_usage: false,
    };
    let phase = calibration_phase(concurrency, rounds, tokens);
    let mut records: Vec<RequestRecord> = Vec::with_capacity(phase.requests.len());
    let cpu0 = crate::cpu::process_cpu_time();
    let scpu0 = server.cpu_time();
    let origin = Instant::now();
    let keep = run::Keep {
        capture: false,
        watch: watch.cloned(),
    };
    if let Some(w) = watch {
        w.trial_started("calibrate", "truth");
        w.phase_started(
            &format!("c{concurrency}"),
            None,
            phase.planned() as u64,
            None,
        );
    }
    run::run_phase(&http, &ep, &phase, &timeouts, origin, &keep, &mut |c| {
        if let Some(w) = watch {
            w.completed(&c.record);
        }
        records.push(c.record)
    })
    .await;
    if let Some(w) = watch {
        w.phase_ended();
    }
    let wall = origin.elapsed();
    let cpu1 = crate::cpu::process_cpu_time();
    let scpu1 = server.cpu_time();
    let server_cpu = scpu0.zip(scpu1).map(|(a, b)| b.saturating_sub(a));
    let client_cpu = cpu0
        .zip(cpu1)
        .zip(server_cpu)
        .map(|((a, b), s)| b.saturating_sub(a).saturating_sub(s));
    let truths = server.take_records();
    let connections = server.connections();
    drop(server);
    Ok(compare(Compared {
        concurrency,
        ttft,
        itl,
        tokens,
        origin: origin.into_std(),
        records: &records,
        truths,
        connections,
        wall,
        client_cpu,
        server_cpu,
    }))
}

/// `rounds` (at least two) requests per stream at `concurrency`, each for `tokens` chunks.
fn calibration_phase(concurrency: u32, rounds: u32, tokens: u32) -> PhasePlan {
    let n = concurrency * rounds.max(2);
    PhasePlan {
        name: "calibrate".into(),
        repeat: 0,
        pacing: Pacing::Closed {
            concurrency,
            limit: None,
        },
        requests: (0..n)
            .map(|i| PlannedRequest {
                index: i,
                api: Api::Completions,
                prompt: "calibrate".into(),
                input_tokens: 1,
                max_tokens: tokens,
                ..PlannedRequest::default()
            })
            .collect(),
        warmup_limit: None,
        sessions: Vec::new(),
    }
}

struct Compared<'a> {
    concurrency: u32,
    ttft: Duration,
    itl: Duration,
    tokens: u32,
    origin: std::time::Instant,
    records: &'a [RequestRecord],
    truths: Vec<TruthRecord>,
    connections: u64,
    wall: Duration,
    client_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Signed difference `a − b` in milliseconds.
fn diff_ms(a: Duration, b: Duration) -> f64 {
    ms(a) - ms(b)
}

/// Nearest-rank percentile of an unsorted sample (`NaN` when empty).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// What the steady requests say, paired with their truth.
struct Samples {
    send: Vec<f64>,
    receive: Vec<f64>,
    ttft_err: Vec<f64>,
    gap_err: Vec<f64>,
    gaps_client: Vec<f64>,
    gaps_true: Vec<f64>,
    late: Vec<f64>,
    window_start: Duration,
    window_end: Duration,
    steady: usize,
    steady_chunks: usize,
}

impl Default for Samples {
    fn default() -> Self {
        Self {
            send: Vec::new(),
            receive: Vec::new(),
            ttft_err: Vec::new(),
            gap_err: Vec::new(),
            gaps_client: Vec::new(),
            gaps_true: Vec::new(),
            late: Vec::new(),
            window_start: Duration::MAX,
            window_end: Duration::ZERO,
            steady: 0,
            steady_chunks: 0,
        }
    }
}

impl Samples {
    fn add(&mut self, r: &RequestRecord, t: &TruthRecord, origin: std::time::Instant) {
        let since = |i: std::time::Instant| i.saturating_duration_since(origin);
        self.steady += 1;
        self.steady_chunks += t.writes.len();
        self.window_start = self.window_start.min(r.sent);
        self.window_end = self.window_end.max(r.end);
        let true_ttft = t.writes[0] - t.arrived;
        let client_ttft = r.chunks[0].at.saturating_sub(r.sent);
        self.ttft_err.push(diff_ms(client_ttft, true_ttft));
        self.send.push(diff_ms(since(t.arrived), r.sent));
        self.receive
            .push(diff_ms(r.chunks[0].at, since(t.writes[0])));
        for (i, &w) in t.writes.iter().enumerate() {
            let deadline = t.arrived + t.ttft + t.itl * i as u32;
            self.late.push(ms(w.saturating_duration_since(deadline)));
        }
        for i in 1..t.writes.len() {
            let tg = since(t.writes[i]).saturating_sub(since(t.writes[i - 1]));
            let cg = r.chunks[i].at.saturating_sub(r.chunks[i - 1].at);
            self.gap_err.push(diff_ms(cg, tg).abs());
            self.gaps_client.push(ms(cg));
            self.gaps_true.push(ms(tg));
        }
    }
}

fn compare(c: Compared<'_>) -> Level {
    let by_id: HashMap<&str, &TruthRecord> = c
        .truths
        .iter()
        .filter_map(|t| t.id.as_deref().map(|id| (id, t)))
        .collect();
    let mut x = Samples::default();
    let mut failed = 0;
    for r in c.records {
        let id = client::request_id(&r.phase, r.index);
        let Some(t) = by_id.get(id.as_str()).filter(|t| {
            r.ok() && t.complete && t.writes.len() == r.chunks.len() && !t.writes.is_empty()
        }) else {
            failed += 1;
            continue;
        };
        // The first wave opens the connections: not steady.
        if r.index >= c.concurrency {
            x.add(r, t, c.origin);
        }
    }
    let Samples {
        mut send,
        mut receive,
        mut ttft_err,
        mut gap_err,
        mut gaps_client,
        mut gaps_true,
        mut late,
        window_start,
        window_end,
        steady,
        steady_chunks,
    } = x;
    let window = window_end.saturating_sub(window_start).as_secs_f64();
    let per_request = c.ttft + c.itl * c.tokens.saturating_sub(1);
    let theoretical = f64::from(c.concurrency) / per_request.as_secs_f64().max(1e-9);
    let achieved = if window > 0.0 {
        steady as f64 / window
    } else {
        0.0
    };
    let cores = |d: Option<Duration>| d.map(|d| d.as_secs_f64() / c.wall.as_secs_f64().max(1e-9));
    Level {
        concurrency: c.concurrency,
        ttft_ms: ms(c.ttft),
        itl_ms: ms(c.itl),
        tokens: c.tokens,
        requests: c.records.len(),
        steady_requests: steady,
        failed,
        ttft_error_median_ms: percentile(&mut ttft_err, 50.0),
        ttft_error_p99_ms: percentile(&mut ttft_err, 99.0),
        send_median_ms: percentile(&mut send, 50.0),
        receive_median_ms: percentile(&mut receive, 50.0),
        itl_error_p50_ms: percentile(&mut gap_err, 50.0),
        itl_error_p99_ms: percentile(&mut gap_err, 99.0),
        itl_p99_client_ms: percentile(&mut gaps_client, 99.0),
        itl_p99_true_ms: percentile(&mut gaps_true, 99.0),
        server_late_p50_ms: percentile(&mut late, 50.0),
        server_late_p99_ms: percentile(&mut late, 99.0),
        achieved_rps: achieved,
        theoretical_rps: theoretical,
        rate_ratio: achieved / theoretical,
        chunks_per_s: if window > 0.0 {
            steady_chunks as f64 / window
        } else {
            0.0
        },
        connections: c.connections,
        client_cpu_cores: cores(c.client_cpu),
        server_cpu_cores: cores(c.server_cpu),
        wall_s: c.wall.as_secs_f64(),
    }
}

/// The table `inferlab calibrate` prints.
pub fn table(cal: &Calibration) -> String {
    let mut out = format!(
        "client runtime {}, truth server {} thread(s), {} CPUs ({})\n",
        cal.client_runtime, cal.server_workers, cal.cpus, cal.os
    );
    out.push_str(&header());
    for l in &cal.levels {
        out.push_str(&row(l));
    }
    if !cal.ceiling_grid.is_empty() {
        out.push_str("\nceiling search (ITL p99 within 20 % of the truth's):\n");
        out.push_str(&header());
        for l in &cal.ceiling_grid {
            out.push_str(&row(l));
        }
        match cal.ceiling_chunks_per_s {
            Some(c) => out.push_str(&format!(
                "ceiling: {:.0} chunks/s on {} of a core\n",
                c,
                cal.ceiling_client_cpu_cores
                    .map_or("?".into(), |x| format!("{x:.2}"))
            )),
            None => out.push_str("ceiling: no level kept ITL p99 within 20 %\n"),
        }
    }
    out
}

fn header() -> String {
    format!(
        "{:>5} {:>6} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9} {:>7} {:>6} {:>9} {:>5} {:>6} {:>5}\n",
        "C",
        "itl",
        "reqs",
        "ttft-e50",
        "ttft-e99",
        "send50",
        "recv50",
        "itl-e50",
        "itl-e99",
        "itl99-cl",
        "itl99-tr",
        "late99",
        "rate%",
        "chunks/s",
        "conns",
        "cpu",
        "fail"
    )
}

/// Milliseconds with three decimals, `-` for a statistic with no sample.
fn fmt_ms(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.3}")
    }
}

fn row(l: &Level) -> String {
    format!(
        "{:>5} {:>6} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9} {:>7} {:>6.1} {:>9.0} {:>5} {:>6} {:>5}\n",
        l.concurrency,
        fmt_ms(l.itl_ms),
        l.steady_requests,
        fmt_ms(l.ttft_error_median_ms),
        fmt_ms(l.ttft_error_p99_ms),
        fmt_ms(l.send_median_ms),
        fmt_ms(l.receive_median_ms),
        fmt_ms(l.itl_error_p50_ms),
        fmt_ms(l.itl_error_p99_ms),
        fmt_ms(l.itl_p99_client_ms),
        fmt_ms(l.itl_p99_true_ms),
        fmt_ms(l.server_late_p99_ms),
        l.rate_ratio * 100.0,
        l.chunks_per_s,
        l.connections,
        l.client_cpu_cores.map_or("-".into(), |x| format!("{x:.2}")),
        l.failed
    )
}
