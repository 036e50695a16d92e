//! One experiment × one target, end to end: decide the mode from the environment and the
//! fixtures, run the schedule (against the live URL or the replay server), write the results,
//! evaluate the assertions, build the snapshot view. The CLI and the generated tests both call
//! this, so `inferlab run` and `cargo test --test experiments` do the same thing.

use crate::client::{self, Endpoint, Secret};
use crate::core::assert::Verdict;
use crate::core::engine::TargetKind;
use crate::core::metrics;
use crate::core::record::RequestRecord;
use crate::core::server::{self, Canonical, ServerSummary};
use crate::observe::gpu::{self, GpuSource};
use crate::observe::scrape::{self, Point, ScrapeRecord, Scraper};
use crate::replay::{
    Exchange, Fixture, FixtureMeta, RecordedGpu, RecordedScrape, ReplayServer, Source, fixture_dir,
};
use crate::report::{self, NamedSummary, ResultsDir, RunSummary, SnapshotView, VerdictRow};
use crate::run::{self, Completed};
use crate::spec::{Experiment, TargetSpec};
use crate::workload;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How a trial runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Live,
    /// Live, and the exchanges are written as the target's fixture.
    Record,
    Replay,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Record => "record",
            Mode::Replay => "replay",
        }
    }
}

/// What the environment and the fixtures say about a trial.
#[derive(Debug, Clone)]
pub enum Plan {
    Live {
        endpoint: Endpoint,
        record: bool,
        /// GPU telemetry configured for the target, if any.
        gpu: Option<GpuSource>,
        /// `INFERLAB_<T>_MODEL_DETAILS`: JSON describing the model, kept in a recording.
        model_details: Option<serde_json::Value>,
    },
    Replay {
        dir: PathBuf,
    },
    /// Cannot run; the reason says what to set.
    Ignored {
        reason: String,
    },
}

impl Plan {
    pub fn mode(&self) -> Option<Mode> {
        match self {
            Plan::Live { record: true, .. } => Some(Mode::Record),
            Plan::Live { .. } => Some(Mode::Live),
            Plan::Replay { .. } => Some(Mode::Replay),
            Plan::Ignored { .. } => None,
        }
    }
}

use crate::env::target_var;

/// Decides the mode. `env` reads an environment variable (a parameter so tests need not touch
/// the process environment). `Err` is bad input (e.g. a malformed URL).
pub fn plan(
    exp: &Experiment,
    target: &TargetSpec,
    env: &dyn Fn(&str) -> Option<String>,
    fixtures_root: &Path,
) -> Result<Plan, String> {
    let get = |s: &str| env(&target_var(&target.name, s)).filter(|v| !v.trim().is_empty());
    let url = get("URL");
    let pod = get("RUNPOD_POD");
    let serverless = get("RUNPOD_ENDPOINT");
    if let Some(id) = serverless {
        if url.is_some() || pod.is_some() {
            return Err(format!(
                "{} is set with {} or {}: set one",
                target_var(&target.name, "RUNPOD_ENDPOINT"),
                target_var(&target.name, "URL"),
                target_var(&target.name, "RUNPOD_POD")
            ));
        }
        let id = id.trim();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "{} must be a RunPod endpoint id",
                target_var(&target.name, "RUNPOD_ENDPOINT")
            ));
        }
        let endpoint = Endpoint {
            base_url: format!("{}/openai", crate::runpod::serverless_url(env, id)),
            // The endpoint takes the RunPod key unless the target has its own.
            api_key: get("API_KEY")
                .or_else(|| env("RUNPOD_API_KEY"))
                .map(Secret::new),
            model: get("MODEL").unwrap_or_else(|| exp.model.clone()),
            kind: target.kind,
            continuous_usage: target.continuous_usage_stats,
        };
        let record =
            env("INFERLAB_RECORD").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        return Ok(Plan::Live {
            endpoint,
            record,
            gpu: None,
            model_details: model_details(&get, &target.name)?,
        });
    }
    let base = match (url, pod) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "both {} and {} are set: set one",
                target_var(&target.name, "URL"),
                target_var(&target.name, "RUNPOD_POD")
            ));
        }
        (Some(url), None) => Some(
            Endpoint::normalize_url(&url)
                .map_err(|e| format!("{}: {e}", target_var(&target.name, "URL")))?,
        ),
        (None, Some(pod)) => {
            let port = get("RUNPOD_PORT").unwrap_or_else(|| "8000".to_string());
            let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok(pod.trim()) || port.trim().parse::<u16>().is_err() {
                return Err(format!(
                    "{} must be a pod id and {} a port number",
                    target_var(&target.name, "RUNPOD_POD"),
                    target_var(&target.name, "RUNPOD_PORT")
                ));
            }
            Some(crate::runpod::proxy_url(env, pod.trim(), port.trim()))
        }
        (None, None) => None,
    };
    if let Some(base_url) = base {
        let endpoint = Endpoint {
            base_url,
            api_key: get("API_KEY").map(Secret::new),
            model: get("MODEL").unwrap_or_else(|| exp.model.clone()),
            kind: target.kind,
            continuous_usage: target.continuous_usage_stats,
        };
        let record =
            env("INFERLAB_RECORD").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let gpu = GpuSource::from_env(env, &target.name);
        return Ok(Plan::Live {
            endpoint,
            record,
            gpu,
            model_details: model_details(&get, &target.name)?,
        });
    }
    let dir = fixture_dir(fixtures_root, &exp.name, &target.name);
    if Fixture::exists(&dir) {
        return Ok(Plan::Replay { dir });
    }
    Ok(Plan::Ignored {
        reason: format!(
            "no live endpoint ({} unset) and no fixture in {}",
            target_var(&target.name, "URL"),
            dir.display()
        ),
    })
}

/// `MODEL_DETAILS` as JSON; a value that is not JSON is bad input, not silently dropped.
fn model_details(
    get: &dyn Fn(&str) -> Option<String>,
    target: &str,
) -> Result<Option<serde_json::Value>, String> {
    get("MODEL_DETAILS")
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| format!("{}: not JSON: {e}", target_var(target, "MODEL_DETAILS")))
}

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("{0}")]
    Fixture(#[from] crate::replay::FixtureError),
    #[error(
        "fixture {dir} does not belong to this experiment: {why}; re-record it with INFERLAB_RECORD=1 and a live target"
    )]
    FixtureMismatch { dir: String, why: String },
    #[error("results directory: {0}")]
    Results(#[source] std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("replay server: {0}")]
    Replay(#[source] std::io::Error),
    #[error("trial cannot run: {0}")]
    NotRunnable(String),
    #[error("{0}")]
    ContextTooSmall(String),
}

/// Where results and fixtures go.
#[derive(Debug, Clone)]
pub struct TrialOptions {
    pub results_root: PathBuf,
    pub fixtures_root: PathBuf,
    /// Prompt salt for live runs; `None` picks a fresh one (so the server's prefix cache holds
    /// nothing from earlier runs).
    pub salt: Option<u64>,
    /// Becomes `true` to stop the run (Ctrl-C): the phase in progress is abandoned (its
    /// requests in flight are lost), the rest is summarised and written as usual.
    pub interrupt: Option<watch::Receiver<bool>>,
    /// What the target costs per hour (a rented pod): the summary then prices the trial.
    pub cost_per_hour: Option<f64>,
}

/// Everything a trial produced.
#[derive(Debug)]
pub struct TrialOutcome {
    pub mode: Mode,
    pub dir: PathBuf,
    pub summary: RunSummary,
    pub verdicts: Vec<Verdict>,
    pub snapshot: SnapshotView,
    /// Replay requests with no recorded exchange (the experiment changed since recording).
    pub replay_unmatched: Vec<String>,
    pub fixture_written: Option<PathBuf>,
    /// Problems writing `requests.jsonl` (the run went on).
    pub write_errors: Vec<String>,
}

impl TrialOutcome {
    pub fn passed(&self) -> bool {
        self.replay_unmatched.is_empty() && self.verdicts.iter().all(|v| v.passed)
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    schema_version: u32,
    inferlab_version: &'static str,
    experiment: &'a Experiment,
    target: &'a TargetSpec,
    mode: Mode,
    url: String,
    model: &'a str,
    seed: u64,
    salt: u64,
    server_version: Option<&'a str>,
    server_config: Option<&'a serde_json::Value>,
    /// The client measured against the truth server just before the run (`calibrate = true`).
    calibration: Option<&'a crate::calibrate::Level>,
    fixture: Option<&'a FixtureMeta>,
    gpu_telemetry: Option<String>,
    git_revision: Option<String>,
    started_at: String,
    finished_at: Option<String>,
    requests_planned: usize,
    requests_completed: usize,
    interrupted: bool,
}

fn git_revision() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Sends a side request (version, configuration, tokenizer) with the target's key and a short
/// timeout; the successful response, or `None` (these are best effort).
async fn side_request(ep: &Endpoint, req: reqwest::RequestBuilder) -> Option<reqwest::Response> {
    let mut req = req.timeout(Duration::from_secs(5));
    if let Some(k) = &ep.api_key {
        req = req.bearer_auth(k.expose());
    }
    let resp = req.send().await.ok()?;
    resp.status().is_success().then_some(resp)
}

/// Running summaries of a trial's records, fed one record at a time.
struct Tally {
    slo: crate::core::metrics::Slo,
    phases: HashMap<String, PhaseTally>,
    all: metrics::Summarizer,
    completed: usize,
}

/// One phase's share of a [`Tally`].
struct PhaseTally {
    summary: metrics::Summarizer,
    turns: std::collections::BTreeMap<u32, metrics::Summarizer>,
    rows: Vec<crate::fidelity::Row>,
    /// The phase's first warmup request, whole (a serverless cold start).
    first_warmup: Option<RequestRecord>,
}

impl PhaseTally {
    fn new(slo: crate::core::metrics::Slo) -> Self {
        Self {
            summary: metrics::Summarizer::new(slo),
            turns: std::collections::BTreeMap::new(),
            rows: Vec::new(),
            first_warmup: None,
        }
    }
}

impl Tally {
    fn new(exp: &Experiment) -> Self {
        Self {
            slo: exp.slo,
            phases: HashMap::new(),
            all: metrics::Summarizer::new(exp.slo),
            completed: 0,
        }
    }

    fn add(&mut self, r: &RequestRecord) {
        self.completed += 1;
        self.all.add(r);
        // The phase's name is copied once per phase, not per record.
        if !self.phases.contains_key(&r.phase) {
            self.phases
                .insert(r.phase.clone(), PhaseTally::new(self.slo));
        }
        let Some(p) = self.phases.get_mut(&r.phase) else {
            return;
        };
        p.summary.add(r);
        if let Some(t) = r.turn {
            p.turns
                .entry(t)
                .or_insert_with(|| metrics::Summarizer::new(self.slo))
                .add(r);
        }
        p.rows.push(crate::fidelity::Row::from(r));
        if r.warmup && p.first_warmup.as_ref().is_none_or(|w| r.index < w.index) {
            p.first_warmup = Some(r.clone());
        }
    }
}

/// GET an absolute URL as JSON with the target's key (best effort).
async fn get_json_url(
    http: &reqwest::Client,
    ep: &Endpoint,
    url: &str,
) -> Option<serde_json::Value> {
    side_request(ep, http.get(url)).await?.json().await.ok()
}

/// GET `path` as JSON (best effort).
async fn get_json(http: &reqwest::Client, ep: &Endpoint, path: &str) -> Option<serde_json::Value> {
    side_request(ep, http.get(format!("{}{path}", ep.base_url)))
        .await?
        .json()
        .await
        .ok()
}

/// The server's version and cache/parallelism configuration, as far as it exposes them (best
/// effort: a server that says nothing gets `None`s, never an error).
async fn server_info(
    http: &reqwest::Client,
    ep: &Endpoint,
) -> (Option<String>, Option<serde_json::Value>) {
    let Some((path, pointer)) = ep.kind.version_endpoint() else {
        return (None, None);
    };
    let doc = get_json(http, ep, path).await;
    let version = doc
        .as_ref()
        .and_then(|v| v.pointer(pointer))
        .and_then(|x| x.as_str())
        .map(str::to_string);
    let config = match ep.kind {
        TargetKind::Vllm => {
            // `vllm:cache_config_info` carries the cache configuration in its labels.
            match side_request(ep, http.get(format!("{}/metrics", ep.base_url))).await {
                Some(r) => r.text().await.ok().and_then(|text| {
                    let e = crate::core::prom::parse_filtered(&text, &|n| {
                        n == "vllm:cache_config_info"
                    });
                    let s = e.samples.first()?;
                    Some(serde_json::Value::Object(
                        s.labels
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                            .collect(),
                    ))
                }),
                None => None,
            }
        }
        kind => doc.map(|d| {
            let keep = kind.config_pointers();
            serde_json::Value::Object(
                keep.iter()
                    .filter_map(|(name, ptr)| Some((name.to_string(), d.pointer(ptr)?.clone())))
                    .collect(),
            )
        }),
    };
    (version, config)
}

/// The context window a single request gets on the server, when it says: llama.cpp's per-slot
/// `n_ctx`, vLLM's `max_model_len` from `/v1/models`.
async fn server_context(
    http: &reqwest::Client,
    ep: &Endpoint,
    config: Option<&serde_json::Value>,
) -> Option<(u64, &'static str)> {
    match ep.kind {
        TargetKind::Llamacpp => Some((config?.get("n_ctx")?.as_u64()?, "llama.cpp n_ctx per slot")),
        TargetKind::Vllm | TargetKind::Sglang | TargetKind::Openai => {
            let models = get_json(http, ep, "/v1/models").await?;
            let m = models.pointer("/data/0/max_model_len")?.as_u64()?;
            Some((m, "max_model_len from /v1/models"))
        }
        // Any request would wake a worker and spoil the cold start the first warmup measures.
        TargetKind::RunpodServerless => None,
    }
}

/// Refuses to start when a planned request (declared prompt + max_tokens) cannot fit the
/// server's context: the server would answer it with an error, and the phase would measure
/// errors, not latency. Conversations grow with the server's answers and are checked by the
/// server itself.
fn check_context(
    exp: &Experiment,
    schedule: &workload::Schedule,
    context: Option<(u64, &'static str)>,
) -> Result<(), TrialError> {
    let Some((ctx, source)) = context else {
        return Ok(());
    };
    for phase in &schedule.phases {
        // +1 for the BOS token; chat templates add a few more, which the server will report.
        if let Some(r) = phase
            .requests
            .iter()
            .filter(|r| !r.warmup)
            .max_by_key(|r| u64::from(r.input_tokens) + u64::from(r.max_tokens))
            && u64::from(r.input_tokens) + 1 + u64::from(r.max_tokens) > ctx
        {
            return Err(TrialError::ContextTooSmall(format!(
                "{}: phase `{}` plans a request of {} prompt + {} output tokens, more than the server's context of {ctx} tokens ({source}); shorten the phase's lengths or give the server a larger context",
                exp.name, phase.name, r.input_tokens, r.max_tokens
            )));
        }
    }
    Ok(())
}

/// Token count of `text` by the server's own tokenizer, without special tokens.
async fn tokenize(http: &reqwest::Client, ep: &Endpoint, text: &str) -> Option<u64> {
    let body = match ep.kind {
        TargetKind::Llamacpp => serde_json::json!({ "content": text, "add_special": false }),
        TargetKind::Vllm => {
            serde_json::json!({ "model": ep.model, "prompt": text, "add_special_tokens": false })
        }
        TargetKind::Sglang | TargetKind::Openai | TargetKind::RunpodServerless => return None,
    };
    let resp = side_request(
        ep,
        http.post(format!("{}/tokenize", ep.base_url)).json(&body),
    )
    .await?;
    let v: serde_json::Value = resp.json().await.ok()?;
    v.get("count")
        .and_then(serde_json::Value::as_u64)
        .or_else(|| Some(v.get("tokens")?.as_array()?.len() as u64))
}

/// Checks the first generated prompt of each phase (up to eight) against the server's
/// tokenizer and says whether prompt lengths are exact, in words for the summary.
/// Prompts counted per phase with the experiment's tokenizer (the first ones; a million-request
/// phase would take seconds).
const COUNTED_PER_PHASE: usize = 2000;

/// Counts planned prompts with the model's tokenizer against their declared lengths.
/// Conversations are left out: the server's chat template adds tokens the tokenizer alone
/// does not know.
fn count_prompt_lengths(
    t: &crate::tokenize::ModelTokenizer,
    schedule: &workload::Schedule,
) -> String {
    let (mut checked, mut differ) = (0usize, Vec::new());
    for p in &schedule.phases {
        for r in p
            .requests
            .iter()
            .filter(|r| r.input_tokens > 0 && r.messages.is_none())
            .take(COUNTED_PER_PHASE)
        {
            checked += 1;
            match t.count(&r.prompt) {
                Some(n) if n == r.input_tokens as usize => {}
                n => differ.push((p.name.as_str(), r.index, r.input_tokens, n)),
            }
        }
    }
    if checked == 0 {
        return format!(
            "approximate: no single-prompt requests to count with tokenizer {} (conversations carry the server's chat template)",
            t.file
        );
    }
    match differ.first() {
        None => format!(
            "exact: {checked} prompts have their declared lengths, counted with tokenizer {}",
            t.file
        ),
        Some((phase, index, want, got)) => format!(
            "approximate: {} of {checked} prompts differ from their declared lengths (tokenizer {}), e.g. {phase}[{index}]: declared {want}, counted {}",
            differ.len(),
            t.file,
            got.map_or("nothing".to_string(), |n| n.to_string())
        ),
    }
}

async fn check_prompt_lengths(
    http: &reqwest::Client,
    ep: &Endpoint,
    schedule: &workload::Schedule,
) -> String {
    // (text, declared tokens): a phase's first measured prompt, or its first session message.
    let sample: Vec<(&str, u64)> = schedule
        .phases
        .iter()
        .filter_map(|p| {
            p.requests
                .iter()
                .find(|r| !r.warmup && r.input_tokens > 0)
                .map(|r| (r.prompt.as_str(), u64::from(r.input_tokens)))
                .or_else(|| {
                    let m = &p.sessions.first()?.steps.first()?.message;
                    Some((m.as_str(), m.split_whitespace().count() as u64))
                })
        })
        .take(8)
        .collect();
    if sample.is_empty() {
        return "approximate: no generated prompts to check".to_string();
    }
    let (mut declared, mut counted) = (0u64, 0u64);
    for (text, n_declared) in &sample {
        let Some(n) = tokenize(http, ep, text).await else {
            return "approximate: the server has no usable /tokenize endpoint".to_string();
        };
        declared += n_declared;
        counted += n;
    }
    if declared == counted {
        format!(
            "exact: {} sampled prompts tokenize to their declared {declared} tokens (server /tokenize)",
            sample.len()
        )
    } else {
        format!(
            "approximate: {} sampled prompts declared {declared} tokens, the server's tokenizer counts {counted} ({:.3}×)",
            sample.len(),
            counted as f64 / declared as f64
        )
    }
}

/// Whether server metrics were collected, in words for the summary.
fn server_metrics_status(
    exp: &Experiment,
    target: &TargetSpec,
    scrapes: &[ScrapeRecord],
) -> String {
    if !target.kind.serves_metrics() {
        return format!("none: {} targets have no /metrics", target.kind);
    }
    if !exp.observe.metrics {
        return "off".to_string();
    }
    let metrics: Vec<&ScrapeRecord> = scrapes.iter().filter(|r| !r.gpu).collect();
    let ok = metrics.iter().filter(|r| r.error.is_none()).count();
    if ok > 0 {
        return format!("scraped ({ok} of {} scrapes succeeded)", metrics.len());
    }
    match metrics.iter().find_map(|r| r.error.as_deref()) {
        Some(e) => format!("unavailable: {e}"),
        None => "unavailable".to_string(),
    }
}

fn fresh_salt() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Runs one trial. Requests are appended to `requests.jsonl` as they complete.
pub async fn run_trial(
    exp: &Experiment,
    target: &TargetSpec,
    plan: Plan,
    opts: &TrialOptions,
) -> Result<TrialOutcome, TrialError> {
    let started = SystemTime::now();
    let mode = plan.mode().ok_or_else(|| match &plan {
        Plan::Ignored { reason } => TrialError::NotRunnable(reason.clone()),
        _ => unreachable!("only Ignored has no mode"),
    })?;
    let mut gpu_source = None;
    let mut model_details = None;
    let mut recorded_gpu = Vec::new();
    let mut recorded_indices: Option<Vec<(String, u32)>> = None;
    let (endpoint, salt, fixture_meta, replay) = match plan {
        Plan::Live {
            endpoint,
            gpu,
            model_details: details,
            ..
        } => {
            gpu_source = gpu;
            model_details = details;
            (endpoint, opts.salt.unwrap_or_else(fresh_salt), None, None)
        }
        Plan::Replay { dir } => {
            let fixture = Fixture::load(&dir)?;
            let m = &fixture.meta;
            let mismatch = |why: String| TrialError::FixtureMismatch {
                dir: dir.display().to_string(),
                why,
            };
            if m.experiment != exp.name || m.target != target.name {
                return Err(mismatch(format!(
                    "it was recorded for {}::{}",
                    m.experiment, m.target
                )));
            }
            if m.seed != exp.seed {
                return Err(mismatch(format!(
                    "it was recorded with seed {}, the experiment has {}",
                    m.seed, exp.seed
                )));
            }
            recorded_gpu = fixture.gpu.clone();
            recorded_indices = Some(
                fixture
                    .exchanges
                    .iter()
                    .map(|e| (e.phase.clone(), e.index))
                    .collect(),
            );
            let server = ReplayServer::start(&fixture)
                .await
                .map_err(TrialError::Replay)?;
            let endpoint = Endpoint {
                base_url: server.base_url(),
                api_key: None,
                model: m.model.clone(),
                kind: target.kind,
                continuous_usage: target.continuous_usage_stats,
            };
            (endpoint, m.salt, Some(fixture.meta), Some(server))
        }
        Plan::Ignored { .. } => unreachable!("handled above"),
    };
    let mut schedule = workload::schedule(exp, salt);
    // A warmup bounded by time sent as many requests as the recording's timing allowed: a
    // replay sends exactly those, so every one has its recorded exchange.
    if let Some(indices) = &recorded_indices {
        for phase in &mut schedule.phases {
            if phase.warmup_limit.take().is_some() {
                let planned = phase.requests.iter().filter(|r| r.warmup).count() as u32;
                let sent = indices
                    .iter()
                    .filter(|(p, i)| *p == phase.name && *i < planned)
                    .count() as u32;
                phase.requests.retain(|r| !r.warmup || r.index < sent);
            }
        }
    }
    let planned: usize = schedule.phases.iter().map(|p| p.requests.len()).sum();
    let max_conc = schedule
        .phases
        .iter()
        .map(|p| p.max_in_flight().unwrap_or(p.requests.len()).min(256))
        .max()
        .unwrap_or(1);
    let http = client::http_client(&exp.timeouts, max_conc)
        .map_err(|e| TrialError::Client(e.to_string()))?;
    let (server_version, server_config) = match &fixture_meta {
        Some(m) => (m.engine_version.clone(), m.server_config.clone()),
        None => server_info(&http, &endpoint).await,
    };
    if fixture_meta.is_none() {
        check_context(
            exp,
            &schedule,
            server_context(&http, &endpoint, server_config.as_ref()).await,
        )?;
    }
    // A short calibration at the run's largest concurrency: the client's error on this machine,
    // now, recorded with the results.
    let calibration = if exp.calibrate {
        Some(
            crate::calibrate::measure(
                max_conc as u32,
                3,
                Duration::from_millis(20),
                Duration::from_millis(5),
                16,
                1,
            )
            .await
            .map_err(|e| TrialError::Client(format!("calibration: {e}")))?,
        )
    } else {
        None
    };
    let noise_floor = calibration
        .as_ref()
        .map(|c| c.ttft_error_p99_ms / 1e3)
        .filter(|f| f.is_finite());
    let prompt_lengths = match (&exp.tokenizer, &fixture_meta) {
        (Some(t), _) => count_prompt_lengths(t, &schedule),
        (None, Some(m)) => m
            .prompt_lengths
            .clone()
            .unwrap_or_else(|| "approximate: not checked when recorded".to_string()),
        (None, None) => check_prompt_lengths(&http, &endpoint, &schedule).await,
    };

    let mut results = ResultsDir::create(&opts.results_root, &exp.name, &target.name, started)
        .map_err(TrialError::Results)?;
    let git = git_revision();
    let mut manifest = Manifest {
        schema_version: report::RESULTS_SCHEMA_VERSION,
        inferlab_version: env!("CARGO_PKG_VERSION"),
        experiment: exp,
        target,
        mode,
        url: client::display_url(&endpoint.base_url),
        model: &endpoint.model,
        seed: exp.seed,
        salt,
        server_version: server_version.as_deref(),
        server_config: server_config.as_ref(),
        calibration: calibration.as_ref(),
        fixture: fixture_meta.as_ref(),
        gpu_telemetry: gpu_source.as_ref().map(GpuSource::describe),
        git_revision: git,
        started_at: crate::clock::utc_rfc3339(started),
        finished_at: None,
        requests_planned: planned,
        requests_completed: 0,
        interrupted: false,
    };
    results
        .write_json("manifest.json", &manifest)
        .map_err(TrialError::Results)?;

    let capture = mode == Mode::Record;
    // Each record goes to disk as it completes and into these running summaries; only a few
    // dozen bytes of it (fidelity's row) stay in memory, so a run's memory does not grow with
    // its length.
    let mut tally = Tally::new(exp);
    let mut exchanges: Vec<Exchange> = Vec::new();
    let mut write_errors = Vec::new();
    let writer = results.request_writer().map_err(TrialError::Results)?;
    let origin = Instant::now();
    let scraper = if exp.observe.metrics && target.kind.serves_metrics() {
        Scraper::new(
            &endpoint.base_url,
            endpoint.api_key.clone(),
            target.kind,
            capture,
        )
        .ok()
        .map(Arc::new)
    } else {
        None
    };
    let (phase_tx, phase_rx) = watch::channel(None);
    let (scrape_tx, mut scrape_rx) = mpsc::unbounded_channel();
    let periodic = scraper.as_ref().map(|s| {
        scrape::spawn_periodic(s.clone(), exp.observe.interval, phase_rx, origin, scrape_tx)
    });
    let (gpu_tx, mut gpu_rx) = mpsc::unbounded_channel();
    let gpu_task = gpu_source.as_ref().map(|src| {
        gpu::spawn(
            src.clone(),
            exp.observe.interval,
            phase_tx.subscribe(),
            origin,
            gpu_tx,
        )
    });
    let mut scrapes: Vec<ScrapeRecord> = Vec::new();
    let mut interrupted = false;
    // Serverless: the endpoint's worker and job counts around each phase (live only; /health
    // does not wake a worker).
    let health_url = (target.kind.is_serverless() && fixture_meta.is_none())
        .then(|| format!("{}/health", endpoint.base_url.trim_end_matches("/openai")));
    let mut serverless: std::collections::BTreeMap<String, report::ServerlessPhase> =
        std::collections::BTreeMap::new();
    for plan in &schedule.phases {
        if opts.interrupt.as_ref().is_some_and(|i| *i.borrow()) {
            interrupted = true;
            break;
        }
        if let Some(url) = &health_url {
            let before = get_json_url(&http, &endpoint, url).await;
            let warm = before.as_ref().and_then(|h| {
                let n = |k: &str| h.pointer(&format!("/workers/{k}")).and_then(|v| v.as_u64());
                Some(n("idle")? + n("running")? > 0)
            });
            serverless.insert(
                plan.name.clone(),
                report::ServerlessPhase {
                    health_before: before,
                    warm_before: warm,
                    ..Default::default()
                },
            );
        }
        let start = Instant::now();
        let mut phase_scrapes = Vec::new();
        if let Some(s) = &scraper {
            phase_scrapes.push(s.scrape(&plan.name, Point::Start, start, origin).await);
        }
        let _ = phase_tx.send(Some((plan.name.clone(), start)));
        {
            let mut sink = |c: Completed| {
                if let Some(cap) = &c.capture {
                    let path = c.path;
                    if let Some(ex) =
                        Exchange::from_capture(&c.record.phase, c.record.index, path, c.body, cap)
                    {
                        exchanges.push(ex);
                    }
                }
                tally.add(&c.record);
                writer.send(c.record);
            };
            let phase = run::run_phase(
                &http,
                &endpoint,
                plan,
                &exp.timeouts,
                origin,
                capture,
                &mut sink,
            );
            match opts.interrupt.clone() {
                None => phase.await,
                Some(mut stop) => {
                    tokio::select! {
                        () = phase => {}
                        _ = stop.wait_for(|s| *s) => interrupted = true,
                    }
                }
            }
        }
        let _ = phase_tx.send(None);
        if let Some(url) = &health_url {
            let after = get_json_url(&http, &endpoint, url).await;
            if let Some(p) = serverless.get_mut(&plan.name) {
                p.health_after = after;
            }
        }
        if let Some(s) = &scraper {
            phase_scrapes.push(s.scrape(&plan.name, Point::End, start, origin).await);
        }
        while let Ok(r) = scrape_rx.try_recv() {
            phase_scrapes.push(r);
        }
        while let Ok(r) = gpu_rx.try_recv() {
            phase_scrapes.push(r);
        }
        for g in recorded_gpu.iter().filter(|g| g.phase == plan.name) {
            let in_phase = Duration::from_millis(g.in_phase_ms);
            phase_scrapes.push(ScrapeRecord {
                phase: g.phase.clone(),
                point: Point::Periodic,
                at: start.saturating_duration_since(origin) + in_phase,
                in_phase,
                error: g.error.clone(),
                issues: 0,
                values: g.values.clone(),
                raw: None,
                status: None,
                gpu: true,
            });
        }
        phase_scrapes.sort_by_key(|r| r.at);
        for r in &phase_scrapes {
            if let Err(e) = results.append_scrape(r)
                && write_errors.len() < 5
            {
                write_errors.push(e.to_string());
            }
        }
        scrapes.extend(phase_scrapes);
        if interrupted {
            break;
        }
    }
    drop(phase_tx);
    // Every record on disk before the summary is written.
    for e in writer.finish() {
        if write_errors.len() < 5 {
            write_errors.push(e);
        }
    }
    if let Some(p) = periodic {
        let _ = p.await;
    }
    if let Some(g) = gpu_task {
        g.abort();
    }
    let replay_unmatched = replay
        .as_ref()
        .map(ReplayServer::unmatched)
        .unwrap_or_default();
    drop(replay);

    let server_of = |phase: Option<&str>, client_ttft_ms: Option<f64>| -> Option<ServerSummary> {
        let rows: Vec<Option<&Canonical>> = scrapes
            .iter()
            .filter(|r| phase.is_none_or(|p| r.phase == p))
            .map(|r| r.error.is_none().then_some(&r.values))
            .collect();
        (!rows.is_empty()).then(|| server::summarize_server(&rows, client_ttft_ms))
    };
    let Tally {
        phases: mut tallies,
        all: all_acc,
        completed,
        ..
    } = tally;
    let mut phases = Vec::new();
    let mut first_warmup: HashMap<&str, RequestRecord> = HashMap::new();
    for p in &exp.phases {
        let t = tallies
            .remove(&p.name)
            .unwrap_or_else(|| PhaseTally::new(exp.slo));
        if let Some(w) = t.first_warmup {
            first_warmup.insert(&p.name, w);
        }
        let (summary, hists) = t.summary.finish();
        results
            .write_histograms(&p.name, &hists)
            .map_err(TrialError::Results)?;
        let server = server_of(Some(&p.name), summary.ttft.map(|t| t.mean_ms));
        phases.push(NamedSummary {
            name: p.name.clone(),
            summary,
            server,
            fidelity: crate::fidelity::fidelity(p, &t.rows),
            by_turn: t
                .turns
                .into_iter()
                .map(|(turn, acc)| (turn, acc.finish().0))
                .collect(),
        });
    }
    let (all, hists) = all_acc.finish();
    results
        .write_histograms("all", &hists)
        .map_err(TrialError::Results)?;
    let all_server = server_of(None, all.ttft.map(|t| t.mean_ms));
    let cost = opts.cost_per_hour.map(|per_hour| {
        let usd = per_hour * all.duration_s / 3600.0;
        report::Cost {
            per_hour_usd: per_hour,
            trial_usd: usd,
            per_million_output_tokens_usd: (all.output_tokens > 0)
                .then(|| usd * 1e6 / all.output_tokens as f64),
        }
    });
    let mut summary = RunSummary {
        schema_version: report::RESULTS_SCHEMA_VERSION,
        experiment: exp.name.clone(),
        target: target.name.clone(),
        mode: mode.as_str().to_string(),
        prompt_lengths: prompt_lengths.clone(),
        phases,
        all,
        all_server,
        server_metrics: server_metrics_status(exp, target, &scrapes),
        interrupted,
        // Filled in below: the assertions read the summary they are stored in.
        assertions: Vec::new(),
        cost,
        serverless: target.kind.is_serverless().then(|| {
            // Each phase's first warmup request is its cold start.
            for plan in &schedule.phases {
                let p = serverless.entry(plan.name.clone()).or_default();
                if let Some(r) = first_warmup.get(plan.name.as_str()) {
                    p.cold_start_ttft_ms = r.ttft().map(|d| d.as_secs_f64() * 1e3);
                    p.cold_start_e2e_ms = r
                        .ok()
                        .then(|| r.e2e())
                        .flatten()
                        .map(|d| d.as_secs_f64() * 1e3);
                    p.cold_start_error = r.failure.as_ref().map(|f| f.kind.to_string());
                }
            }
            report::Serverless {
                note: report::SERVERLESS_NOTE,
                phases: serverless,
            }
        }),
    };
    let verdicts: Vec<Verdict> = exp
        .assertions
        .iter()
        .map(|a| Verdict {
            noise_floor,
            ..a.evaluate(&summary)
        })
        .collect();
    summary.assertions = verdicts.iter().map(VerdictRow::from).collect();
    results
        .write_json("summary.json", &summary)
        .map_err(TrialError::Results)?;
    manifest.finished_at = Some(crate::clock::utc_rfc3339(SystemTime::now()));
    manifest.requests_completed = completed;
    manifest.interrupted = interrupted;
    results
        .write_json("manifest.json", &manifest)
        .map_err(TrialError::Results)?;

    let fixture_written = if capture {
        let order = |e: &Exchange| {
            let phase = exp
                .phases
                .iter()
                .position(|p| p.name == e.phase)
                .unwrap_or(usize::MAX);
            (phase, e.index)
        };
        exchanges.sort_by_key(order);
        let dir = fixture_dir(&opts.fixtures_root, &exp.name, &target.name);
        let fixture = Fixture {
            meta: FixtureMeta {
                schema_version: crate::replay::FIXTURE_SCHEMA_VERSION,
                source: Source::Recorded,
                engine: target.kind.engine_name().to_string(),
                engine_version: server_version.clone(),
                server_config: server_config.clone(),
                prompt_lengths: Some(prompt_lengths.clone()),
                model: endpoint.model.clone(),
                model_details: model_details.clone(),
                recorded_at: crate::clock::utc_rfc3339(started),
                experiment: exp.name.clone(),
                target: target.name.clone(),
                seed: exp.seed,
                salt,
                inferlab_version: env!("CARGO_PKG_VERSION").to_string(),
                notes: None,
            },
            exchanges,
            gpu: scrapes
                .iter()
                .filter(|r| r.gpu)
                .map(|r| RecordedGpu {
                    phase: r.phase.clone(),
                    in_phase_ms: u64::try_from(r.in_phase.as_millis()).unwrap_or(u64::MAX),
                    values: r.values.clone(),
                    error: r.error.clone(),
                })
                .collect(),
            scrapes: scrapes
                .iter()
                .filter(|r| !r.gpu)
                .filter_map(|r| {
                    Some(RecordedScrape {
                        phase: r.phase.clone(),
                        point: r.point,
                        in_phase_ms: u64::try_from(r.in_phase.as_millis()).unwrap_or(u64::MAX),
                        status: r.status?,
                        text: r.raw.clone()?,
                    })
                })
                .collect(),
        };
        fixture.write(&dir)?;
        Some(dir)
    } else {
        None
    };

    let snapshot = report::snapshot_view(exp, &target.name, &endpoint.model, &summary);
    Ok(TrialOutcome {
        mode,
        dir: results.path.clone(),
        summary,
        verdicts,
        snapshot,
        replay_unmatched,
        fixture_written,
        write_errors,
    })
}
