//! Results on disk and views for people: `results/<experiment>/<UTC time>-<target>/` with
//! `manifest.json`, `requests.jsonl` (appended as requests complete), `summary.json` and
//! `histograms/<phase>/<metric>.hdr` (HdrHistogram V2 + DEFLATE, mergeable). Every JSON object
//! carries `schema_version`. Also: the deterministic snapshot view and the phase table.

use crate::core::assert::{Lookup, Path as MetricPath, Verdict, turn_of};
use crate::core::catalog::{Dim, Value, server_metric_is_time};
use crate::core::metrics::{Histograms, LatencyStats, PhaseSummary};
use crate::core::record::RequestRecord;
use crate::core::server::ServerSummary;
use crate::observe::scrape::ScrapeRecord;
use crate::spec::{Experiment, RequestShape, Workload};
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub const RESULTS_SCHEMA_VERSION: u32 = 1;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One line of `requests.jsonl`: flat, units in names, times in ms from the run's origin.
#[derive(Debug, Serialize)]
pub struct RequestRow<'a> {
    pub schema_version: u32,
    pub phase: &'a str,
    pub index: u32,
    pub warmup: bool,
    pub group: Option<u32>,
    pub session: Option<u32>,
    pub turn: Option<u32>,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub error_detail: Option<&'a str>,
    pub http_status: Option<u16>,
    pub intended_ms: f64,
    pub sent_ms: f64,
    pub headers_ms: Option<f64>,
    pub end_ms: f64,
    pub client_queue_ms: f64,
    pub ttft_ms: Option<f64>,
    pub ttft_scheduled_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub ntpot_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub output_tokens: u64,
    pub cached_tokens: Option<u64>,
    pub usage_reported: bool,
    pub token_counting: crate::core::record::TokenCounting,
    pub output_chunks: usize,
    pub output_chars: u64,
    pub events: u32,
    pub send_attempts: u32,
    /// Each output chunk's arrival, ms after the send.
    pub chunk_offsets_ms: Vec<f64>,
    pub chunk_tokens: Vec<Option<u32>>,
    pub server_cache_n: Option<u64>,
    pub server_prompt_n: Option<u64>,
    pub server_prompt_ms: Option<f64>,
}

impl<'a> RequestRow<'a> {
    pub fn new(r: &'a RequestRecord) -> Self {
        Self {
            schema_version: RESULTS_SCHEMA_VERSION,
            phase: &r.phase,
            index: r.index,
            warmup: r.warmup,
            group: r.group,
            session: r.session,
            turn: r.turn,
            ok: r.ok(),
            error_kind: r.failure.as_ref().map(|f| f.kind.to_string()),
            error_detail: r.failure.as_ref().map(|f| f.detail.as_str()),
            http_status: r.status,
            intended_ms: ms(r.intended),
            sent_ms: ms(r.sent),
            headers_ms: r.headers.map(ms),
            end_ms: ms(r.end),
            client_queue_ms: ms(r.client_queue()),
            ttft_ms: r.ttft().map(ms),
            ttft_scheduled_ms: r.ttft_scheduled().map(ms),
            e2e_ms: r.e2e().map(ms),
            tpot_ms: r.tpot().map(ms),
            ntpot_ms: r.ntpot().map(ms),
            prompt_tokens: r.usage.map(|u| u.prompt_tokens),
            output_tokens: r.output_tokens(),
            cached_tokens: r.usage.and_then(|u| u.cached_tokens),
            usage_reported: r.usage.is_some(),
            token_counting: r.token_counting,
            output_chunks: r.chunks.len(),
            output_chars: r.output_chars,
            events: r.events,
            send_attempts: r.send_attempts,
            chunk_offsets_ms: r
                .chunks
                .iter()
                .map(|c| ms(c.at.saturating_sub(r.sent)))
                .collect(),
            chunk_tokens: r.chunks.iter().map(|c| c.tokens).collect(),
            server_cache_n: r.server_timings.and_then(|t| t.cache_n),
            server_prompt_n: r.server_timings.and_then(|t| t.prompt_n),
            server_prompt_ms: r.server_timings.and_then(|t| t.prompt_ms),
        }
    }
}

/// One line of `server_metrics.jsonl`: a scrape, its canonical series flattened under `values`.
#[derive(Debug, Serialize)]
struct ScrapeRow<'a> {
    schema_version: u32,
    phase: &'a str,
    point: &'static str,
    at_ms: f64,
    in_phase_ms: f64,
    ok: bool,
    error: Option<&'a str>,
    http_status: Option<u16>,
    malformed_lines: usize,
    values: &'a crate::core::server::Canonical,
}

/// A results directory being written.
pub struct ResultsDir {
    pub path: PathBuf,
    /// Until a [`RequestWriter`] takes it.
    requests: Option<BufWriter<File>>,
    server_metrics: Option<BufWriter<File>>,
}

/// Appends records to `requests.jsonl` on a thread of its own, so serialising and writing
/// never happen on the threads that read sockets. A record is on disk (flushed) as soon as no
/// other record waits behind it: under load several go out in one write.
pub struct RequestWriter {
    tx: Option<std::sync::mpsc::Sender<RequestRecord>>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl RequestWriter {
    fn spawn(mut file: BufWriter<File>) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<RequestRecord>();
        let thread = std::thread::Builder::new()
            .name("inferlab-records".into())
            .spawn(move || {
                let mut errors: Vec<String> = Vec::new();
                let mut note = |r: io::Result<()>| {
                    if let Err(e) = r
                        && errors.len() < 5
                    {
                        errors.push(e.to_string());
                    }
                };
                let write = |f: &mut BufWriter<File>, r: &RequestRecord| -> io::Result<()> {
                    serde_json::to_writer(&mut *f, &RequestRow::new(r))?;
                    f.write_all(b"\n")
                };
                while let Ok(r) = rx.recv() {
                    note(write(&mut file, &r));
                    while let Ok(more) = rx.try_recv() {
                        note(write(&mut file, &more));
                    }
                    note(file.flush());
                }
                errors
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn send(&self, r: RequestRecord) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r);
        }
    }

    /// Waits until every record sent is written; the first few write errors.
    pub fn finish(mut self) -> Vec<String> {
        self.close()
    }

    fn close(&mut self) -> Vec<String> {
        drop(self.tx.take());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RequestWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl ResultsDir {
    /// Creates `root/<experiment>/<UTC time>-<target>[-N]/`.
    pub fn create(
        root: &Path,
        experiment: &str,
        target: &str,
        started: SystemTime,
    ) -> io::Result<Self> {
        let parent = root.join(experiment);
        std::fs::create_dir_all(&parent)?;
        let base = format!("{}-{target}", crate::clock::utc_compact(started));
        let mut path = parent.join(&base);
        let mut n = 1;
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    n += 1;
                    path = parent.join(format!("{base}-{n}"));
                }
                Err(e) => return Err(e),
            }
        }
        let requests = BufWriter::new(File::create(path.join("requests.jsonl"))?);
        Ok(Self {
            path,
            requests: Some(requests),
            server_metrics: None,
        })
    }

    /// Appends one scrape to `server_metrics.jsonl` (created on first use).
    pub fn append_scrape(&mut self, r: &ScrapeRecord) -> io::Result<()> {
        if self.server_metrics.is_none() {
            self.server_metrics = Some(BufWriter::new(File::create(
                self.path.join("server_metrics.jsonl"),
            )?));
        }
        let Some(w) = self.server_metrics.as_mut() else {
            return Ok(());
        };
        let row = ScrapeRow {
            schema_version: RESULTS_SCHEMA_VERSION,
            phase: &r.phase,
            point: r.point.as_str(),
            at_ms: ms(r.at),
            in_phase_ms: ms(r.in_phase),
            ok: r.error.is_none(),
            error: r.error.as_deref(),
            http_status: r.status,
            malformed_lines: r.issues,
            values: &r.values,
        };
        serde_json::to_writer(&mut *w, &row)?;
        w.write_all(b"\n")?;
        w.flush()
    }

    /// Appends one request and flushes, so the line is on disk when this returns.
    /// The writer of `requests.jsonl` (once).
    pub fn request_writer(&mut self) -> io::Result<RequestWriter> {
        let file = self
            .requests
            .take()
            .ok_or_else(|| io::Error::other("requests.jsonl already has its writer"))?;
        RequestWriter::spawn(file)
    }

    pub fn write_json(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        let tmp = self.path.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, self.path.join(name))
    }

    /// Writes each non-empty histogram as `histograms/<phase>/<metric>.hdr`.
    pub fn write_histograms(&self, phase: &str, hists: &Histograms) -> io::Result<()> {
        let dir = self.path.join("histograms").join(phase);
        std::fs::create_dir_all(&dir)?;
        let mut ser = V2DeflateSerializer::new();
        for (metric, h) in hists {
            if h.is_empty() {
                continue;
            }
            let mut buf = Vec::new();
            ser.serialize(h, &mut buf)
                .map_err(|e| io::Error::other(format!("histogram {phase}/{metric}: {e:?}")))?;
            std::fs::write(dir.join(format!("{metric}.hdr")), buf)?;
        }
        Ok(())
    }
}

/// A phase's summary with its name, in schedule order.
#[derive(Debug, Clone, Serialize)]
pub struct NamedSummary {
    pub name: String,
    #[serde(flatten)]
    pub summary: PhaseSummary,
    /// Server-side figures from `/metrics`, when scraped.
    pub server: Option<ServerSummary>,
    /// Declared versus achieved load.
    pub fidelity: crate::fidelity::Fidelity,
    /// Multi-turn and agentic phases: the same figures by turn (or step) index.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_turn: BTreeMap<u32, PhaseSummary>,
}

/// An assertion verdict as stored.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictRow {
    pub expr: String,
    pub passed: bool,
    pub lhs: Option<f64>,
    pub rhs: Option<f64>,
    /// `s` for durations (values in seconds), empty for plain numbers.
    pub unit: &'static str,
    pub operands: BTreeMap<String, Option<f64>>,
    pub reason: Option<String>,
    /// With a calibration: the sides differ by no more than the client's own error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_noise_floor: Option<bool>,
}

impl From<&Verdict> for VerdictRow {
    fn from(v: &Verdict) -> Self {
        Self {
            expr: v.source.clone(),
            passed: v.passed,
            lhs: v.lhs,
            rhs: v.rhs,
            unit: match v.dim {
                Dim::Time => "s",
                Dim::Plain => "",
            },
            operands: v
                .operands
                .iter()
                .map(|o| (o.path.clone(), o.value.map(|x| x.value)))
                .collect(),
            reason: v.reason.clone(),
            within_noise_floor: v.within_noise_floor(),
        }
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub schema_version: u32,
    pub experiment: String,
    pub target: String,
    pub mode: String,
    /// Whether prompts have exactly their declared token lengths: checked against the server's
    /// tokenizer (`/tokenize`) on a sample of prompts when the engine has one.
    pub prompt_lengths: String,
    pub phases: Vec<NamedSummary>,
    pub all: PhaseSummary,
    pub all_server: Option<ServerSummary>,
    /// `scraped (…)`, `unavailable: <why>` or `off`.
    pub server_metrics: String,
    /// The run was stopped (Ctrl-C) before its schedule ended: figures cover what completed.
    pub interrupted: bool,
    pub assertions: Vec<VerdictRow>,
    /// On a rented pod: the trial's share of its cost (the measured duration at its hourly
    /// price; provisioning and loading are in the deployment report, not here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Serverless targets: cold starts and worker counts per phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serverless: Option<Serverless>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub per_hour_usd: f64,
    pub trial_usd: f64,
    pub per_million_output_tokens_usd: Option<f64>,
}

/// What a serverless endpoint did around each phase.
#[derive(Debug, Clone, Serialize)]
pub struct Serverless {
    pub note: &'static str,
    pub phases: BTreeMap<String, ServerlessPhase>,
}

pub const SERVERLESS_NOTE: &str = "RunPod serverless re-chunks the engine's stream: chunk gaps (chunk_itl) are the platform's, not the engine's ITL. Each phase's first warmup request is reported as its cold start, apart from TTFT.";

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerlessPhase {
    /// The endpoint's `/health` (`jobs`, `workers`) right before and right after the phase.
    pub health_before: Option<serde_json::Value>,
    pub health_after: Option<serde_json::Value>,
    /// Whether a worker was idle or running before the phase (`None`: health unknown).
    pub warm_before: Option<bool>,
    /// The phase's first warmup request: what a user waits after idle.
    pub cold_start_ttft_ms: Option<f64>,
    pub cold_start_e2e_ms: Option<f64>,
    pub cold_start_error: Option<String>,
}

impl RunSummary {
    pub fn server(&self, name: &str) -> Option<&ServerSummary> {
        if name == "all" {
            return self.all_server.as_ref();
        }
        self.phases.iter().find(|p| p.name == name)?.server.as_ref()
    }

    pub fn phase(&self, name: &str) -> Option<&PhaseSummary> {
        if name == "all" {
            return Some(&self.all);
        }
        self.phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.summary)
    }
}

/// What an assertion can read of a run: client figures of a phase or of `all`, a turn's
/// (`turnN`), the fidelity block, and server or GPU figures (durations in seconds).
impl Lookup for RunSummary {
    fn value(&self, p: &MetricPath) -> Option<Value> {
        let client = self.phase(&p.phase)?;
        // Turns and fidelity belong to a phase; `all` has neither.
        let named = self.phases.iter().find(|n| n.name == p.phase);
        match p.scope.as_deref() {
            None => client.value(&p.metric, p.stat.as_deref()).ok().flatten(),
            Some(scope) if turn_of(scope).is_some() => named?
                .by_turn
                .get(&turn_of(scope)?)?
                .value(&p.metric, p.stat.as_deref())
                .ok()
                .flatten(),
            Some("fidelity") => Some(Value {
                value: named?.fidelity.value(&p.metric)?,
                dim: Dim::Plain,
            }),
            Some(scope) => Some(Value {
                value: self
                    .server(&p.phase)?
                    .value(scope, &p.metric, p.stat.as_deref())?,
                dim: if server_metric_is_time(&p.metric) {
                    Dim::Time
                } else {
                    Dim::Plain
                },
            }),
        }
    }
}

/// What a snapshot holds: only what is deterministic for a given experiment and server
/// behaviour — configuration, counts, token totals, error kinds, assertion outcomes. No timing.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotView {
    pub experiment: String,
    pub target: String,
    pub target_kind: String,
    pub seed: u64,
    pub model: String,
    pub phases: Vec<SnapshotPhase>,
    pub assertions: Vec<SnapshotAssertion>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotPhase {
    pub name: String,
    pub workload: Workload,
    pub request: RequestShape,
    pub warmup: u32,
    pub requests: u64,
    pub succeeded: u64,
    pub errors: BTreeMap<String, u64>,
    /// Absent for conversations: their prompts carry the server's answers, whose token counts
    /// vary between live runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    pub usage_missing: u64,
    /// Canonical server series the engine reported over the phase (names only: values vary).
    pub server_series: Vec<String>,
    /// The deterministic part of the fidelity block (achieved rates and KS vary with load).
    pub fidelity: SnapshotFidelity,
}

/// Fidelity figures that depend only on the schedule and the server's token accounting,
/// rounded to 3 decimals.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFidelity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_length_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_length_ratio: Option<f64>,
}

fn round3(x: Option<f64>) -> Option<f64> {
    x.map(|v| (v * 1000.0).round() / 1000.0)
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotAssertion {
    pub expr: String,
    pub passed: bool,
}

pub fn snapshot_view(
    exp: &Experiment,
    target: &str,
    model: &str,
    summary: &RunSummary,
) -> SnapshotView {
    let kind = exp
        .target(target)
        .map_or_else(String::new, |t| t.kind.to_string());
    SnapshotView {
        experiment: exp.name.clone(),
        target: target.to_string(),
        target_kind: kind,
        seed: exp.seed,
        model: model.to_string(),
        phases: exp
            .phases
            .iter()
            .filter_map(|p| {
                let s = summary.phase(&p.name)?;
                Some(SnapshotPhase {
                    name: p.name.clone(),
                    workload: p.workload.clone(),
                    request: p.request,
                    warmup: p.warmup,
                    requests: s.requests,
                    succeeded: s.succeeded,
                    errors: s.errors.clone(),
                    prompt_tokens: (!p.workload.is_session()).then_some(s.prompt_tokens),
                    output_tokens: s.output_tokens,
                    cached_tokens: exp.snapshot.cached_tokens.then_some(s.cached_tokens),
                    usage_missing: s.usage_missing,
                    server_series: summary
                        .server(&p.name)
                        .map(server_series)
                        .unwrap_or_default(),
                    fidelity: {
                        let f = summary
                            .phases
                            .iter()
                            .find(|n| n.name == p.name)
                            .map(|n| n.fidelity);
                        SnapshotFidelity {
                            declared_rate: f.and_then(|f| f.declared_rate),
                            scheduled_rate: round3(f.and_then(|f| f.scheduled_rate)),
                            output_length_ratio: round3(f.and_then(|f| f.output_length_ratio)),
                            input_length_ratio: round3(f.and_then(|f| f.input_length_ratio)),
                        }
                    },
                })
            })
            .collect(),
        assertions: summary
            .assertions
            .iter()
            .map(|a| SnapshotAssertion {
                expr: a.expr.clone(),
                passed: a.passed,
            })
            .collect(),
    }
}

fn server_series(s: &ServerSummary) -> Vec<String> {
    let mut names: Vec<String> = s.gauges.keys().chain(s.deltas.keys()).cloned().collect();
    names.sort();
    names
}

/// One line of server-side figures for the phase table.
fn server_line(s: &ServerSummary) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(r) = s.prefix_cache_hit_rate {
        parts.push(format!("prefix-cache hits {:.0}%", r * 100.0));
    }
    if let Some(g) = s.gauges.get("kv_cache_usage") {
        parts.push(format!("kv usage mean {:.2} max {:.2}", g.mean, g.max));
    }
    if let Some(p) = s.deltas.get("preemptions") {
        parts.push(format!("preemptions {p}"));
    }
    for (name, label) in [
        ("requests_running", "running"),
        ("requests_waiting", "waiting"),
    ] {
        if let Some(g) = s.gauges.get(name) {
            parts.push(format!("{label} max {}", g.max));
        }
    }
    if let Some(t) = s.server_ttft_mean_ms {
        parts.push(format!("server ttft mean {t:.1}ms"));
    }
    if let Some(g) = s.gauges.get("gpu_util") {
        parts.push(format!("gpu util mean {:.0}%", g.mean * 100.0));
    }
    if s.scrape_failures > 0 {
        parts.push(format!(
            "{} of {} scrapes failed",
            s.scrape_failures, s.scrapes
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The per-phase table printed after a run.
pub fn phase_table(summary: &RunSummary) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<12} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "phase",
        "ok",
        "err",
        "ttft p50",
        "ttft p99",
        "tpot p50",
        "e2e p50",
        "req/s",
        "out tok/s",
        "itl p50",
        "cached"
    );
    out.push_str(&header);
    out.push('\n');
    let fmt_ms = |s: Option<&LatencyStats>, f: fn(&LatencyStats) -> f64| match s {
        Some(s) => format!("{:.1}ms", f(s)),
        None => "-".to_string(),
    };
    let rows = summary
        .phases
        .iter()
        .map(|p| (p.name.as_str(), &p.summary))
        .chain(std::iter::once(("all", &summary.all)));
    for (name, s) in rows {
        out.push_str(&format!(
            "{:<12} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9.2} {:>9.1} {:>9} {:>8}\n",
            name,
            s.succeeded,
            s.failed,
            fmt_ms(s.ttft.as_ref(), |x| x.p50_ms),
            fmt_ms(s.ttft.as_ref(), |x| x.p99_ms),
            fmt_ms(s.tpot.as_ref(), |x| x.p50_ms),
            fmt_ms(s.e2e.as_ref(), |x| x.p50_ms),
            s.request_throughput,
            s.output_throughput,
            fmt_ms(s.chunk_itl.as_ref(), |x| x.p50_ms),
            s.cached_token_ratio
                .map_or_else(|| "-".to_string(), |r| format!("{:.0}%", r * 100.0)),
        ));
        if !s.errors.is_empty() {
            let e: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            out.push_str(&format!("{:<12} errors: {}\n", "", e.join(", ")));
        }
        if let Some(line) = summary.server(name).and_then(server_line) {
            out.push_str(&format!("{:<12} server: {line}\n", ""));
        }
        if let Some(p) = summary.serverless.as_ref().and_then(|s| s.phases.get(name)) {
            let cold = match (p.cold_start_ttft_ms, &p.cold_start_error) {
                (Some(t), _) => format!("first request {t:.1}ms to first token"),
                (None, Some(e)) => format!("first request failed: {e}"),
                (None, None) => "first request: -".to_string(),
            };
            let warm = match p.warm_before {
                Some(true) => "workers warm before",
                Some(false) => "no worker up before (cold start)",
                None => "worker state unknown",
            };
            out.push_str(&format!("{:<12} serverless: {cold}; {warm}\n", ""));
        }
        if let Some(p) = summary.phases.iter().find(|p| p.name == name)
            && !p.by_turn.is_empty()
        {
            let turns: Vec<String> = p
                .by_turn
                .iter()
                .map(|(t, s)| match &s.ttft {
                    Some(x) => format!("t{t} {:.1}ms", x.p50_ms),
                    None => format!("t{t} -"),
                })
                .collect();
            out.push_str(&format!(
                "{:<12} ttft p50 by turn: {}\n",
                "",
                turns.join(", ")
            ));
        }
        if let Some(f) = summary
            .phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.fidelity)
            && let (Some(d), Some(sch), Some(a)) =
                (f.declared_rate, f.scheduled_rate, f.achieved_rate)
        {
            let ks = match (f.ks_statistic, f.ks_critical) {
                (Some(k), Some(c)) => format!(", KS {k:.3} (1% critical {c:.3})"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{:<12} load: declared {d:.2} req/s, scheduled {sch:.2}, achieved {a:.2}{ks}, late sends {}, dropped {}, cancelled {}{}\n",
                "",
                s.late_sends,
                s.dropped,
                s.cancelled,
                if f.ok { "" } else { " — DRIFTED" }
            ));
        }
    }
    out.push_str(&format!("prompt lengths: {}\n", summary.prompt_lengths));
    if !summary.server_metrics.starts_with("scraped") {
        out.push_str(&format!("server metrics: {}\n", summary.server_metrics));
    }
    out
}

/// Assertion verdicts, one block each.
pub fn verdict_lines(verdicts: &[Verdict]) -> String {
    verdicts.iter().map(|v| format!("{v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::assert::Assertion;
    use crate::core::metrics::{Slo, summarize};
    use crate::fidelity::Fidelity;

    fn run_summary() -> RunSummary {
        let (empty, _) = summarize(std::iter::empty(), &Slo::default());
        let server = ServerSummary {
            prefix_cache_hit_rate: Some(0.9),
            server_ttft_mean_ms: Some(40.0),
            deltas: [("preemptions".to_string(), 3.0)].into(),
            ..ServerSummary::default()
        };
        let fidelity = Fidelity {
            declared_rate: None,
            scheduled_rate: None,
            achieved_rate: Some(4.5),
            ks_statistic: None,
            ks_critical: None,
            output_length_ratio: None,
            input_length_ratio: None,
            ok: true,
        };
        RunSummary {
            schema_version: RESULTS_SCHEMA_VERSION,
            experiment: "e".into(),
            target: "t".into(),
            mode: "replay".into(),
            prompt_lengths: String::new(),
            phases: vec![NamedSummary {
                name: "warm".into(),
                summary: empty.clone(),
                server: Some(server),
                fidelity,
                by_turn: [(1, empty.clone())].into(),
            }],
            all: empty,
            all_server: None,
            server_metrics: "off".into(),
            interrupted: false,
            assertions: Vec::new(),
            cost: None,
            serverless: None,
        }
    }

    fn value(s: &RunSummary, path: &str) -> Option<Value> {
        let a = Assertion::parse(&format!("{path} >= 0")).unwrap();
        let v = a.evaluate(s);
        v.operands[0].value
    }

    #[test]
    fn a_run_summary_answers_every_scope_of_a_path() {
        let s = run_summary();
        let plain = |x: f64| {
            Some(Value {
                value: x,
                dim: Dim::Plain,
            })
        };
        assert_eq!(value(&s, "warm.requests"), plain(0.0));
        assert_eq!(value(&s, "all.requests"), plain(0.0));
        assert_eq!(value(&s, "warm.turn1.requests"), plain(0.0));
        assert_eq!(value(&s, "warm.fidelity.achieved_rate"), plain(4.5));
        assert_eq!(value(&s, "warm.fidelity.ok"), plain(1.0));
        assert_eq!(value(&s, "warm.server.prefix_cache_hit_rate"), plain(0.9));
        assert_eq!(value(&s, "warm.server.preemptions"), plain(3.0));
        // Server durations are seconds, and say so.
        assert_eq!(
            value(&s, "warm.server.ttft_mean"),
            Some(Value {
                value: 0.04,
                dim: Dim::Time
            })
        );
        // No samples, no turn, no phase, no server view: no value (the verdict says which).
        assert_eq!(value(&s, "warm.ttft.p50"), None);
        assert_eq!(value(&s, "warm.turn2.requests"), None);
        assert_eq!(value(&s, "cold.requests"), None);
        assert_eq!(value(&s, "all.server.preemptions"), None);
        assert_eq!(value(&s, "all.fidelity.ok"), None);
    }
}
