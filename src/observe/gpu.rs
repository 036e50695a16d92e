//! GPU telemetry, off by default and configured per target from the environment:
//!
//! - `INFERLAB_<T>_GPU_COMMAND`: a command that prints nvidia-smi CSV rows continuously, e.g.
//!   `ssh pod nvidia-smi --query-gpu=timestamp,index,uuid,name,utilization.gpu,utilization.memory,memory.used,memory.total,power.draw,temperature.gpu,clocks.sm --format=csv,noheader,nounits -lms 500`;
//! - `INFERLAB_<T>_DCGM_URL`: a dcgm-exporter `/metrics` URL, scraped at the observe interval;
//! - a RunPod pod (`INFERLAB_<T>_RUNPOD_POD` with `RUNPOD_API_KEY`): the pod's runtime GPU
//!   utilisation from the REST API, polled every 5 s at the fastest, backing off on 429.
//!
//! Samples become records tagged with the phase running when they arrived; a failing sampler
//! is recorded (once per failure) and never stops the run. GPU memory in use says little about
//! KV occupancy (engines preallocate); use the engine's gauges for that.

use crate::client::Secret;
use crate::core::prom::parse_filtered;
use crate::core::record::{Point, ScrapeRecord, ScrapeSource};
use crate::core::server::{Canonical, SmiRow, canonical, canonical_smi, parse_smi_line};
use crate::observe::scrape::CurrentPhase;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Where GPU samples come from.
#[derive(Debug, Clone)]
pub enum GpuSource {
    Command(String),
    Dcgm(String),
    RunPod {
        api: String,
        pod: String,
        key: Secret,
    },
}

impl GpuSource {
    /// From the environment of target `name` (`env` reads a variable); `pod` is the RunPod
    /// pod the target runs on, when it does.
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        name: &str,
        pod: Option<&str>,
    ) -> Option<Self> {
        let var = |s: &str| env(&crate::env::target_var(name, s)).filter(|v| !v.trim().is_empty());
        if let Some(cmd) = var("GPU_COMMAND") {
            return Some(GpuSource::Command(cmd));
        }
        if let Some(url) = var("DCGM_URL") {
            return Some(GpuSource::Dcgm(url));
        }
        if let (Some(pod), Some(key)) = (pod, env("RUNPOD_API_KEY")) {
            let api = env("INFERLAB_RUNPOD_API")
                .unwrap_or_else(|| "https://api.runpod.io/v2".to_string());
            return Some(GpuSource::RunPod {
                api: api.trim_end_matches('/').to_string(),
                pod: pod.to_string(),
                key: Secret::new(key),
            });
        }
        None
    }

    /// Words for manifests (no credentials).
    pub fn describe(&self) -> String {
        match self {
            GpuSource::Command(c) => format!("nvidia-smi command: {c}"),
            GpuSource::Dcgm(u) => format!("dcgm-exporter: {}", crate::client::display_url(u)),
            GpuSource::RunPod { pod, .. } => format!("RunPod runtime API, pod {pod}"),
        }
    }
}

fn record(
    phase: &CurrentPhase,
    origin: Instant,
    values: Canonical,
    error: Option<String>,
) -> Option<ScrapeRecord> {
    let (name, start) = phase.as_ref()?;
    let now = Instant::now();
    Some(ScrapeRecord {
        phase: name.clone(),
        point: Point::Periodic,
        at: now.saturating_duration_since(origin),
        in_phase: now.saturating_duration_since(*start),
        error,
        issues: 0,
        values,
        raw: None,
        status: None,
        source: ScrapeSource::Gpu,
    })
}

/// Starts sampling; samples outside a phase are dropped. Ends when `current` closes.
pub fn spawn(
    source: GpuSource,
    interval: Duration,
    current: watch::Receiver<CurrentPhase>,
    origin: Instant,
    tx: mpsc::UnboundedSender<ScrapeRecord>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match source {
            GpuSource::Command(cmd) => command(cmd, current, origin, tx).await,
            GpuSource::Dcgm(url) => {
                poll(interval, current, origin, tx, move |http| {
                    let url = url.clone();
                    async move { dcgm_sample(&http, &url).await }
                })
                .await
            }
            GpuSource::RunPod { api, pod, key } => {
                poll(
                    interval.max(Duration::from_secs(5)),
                    current,
                    origin,
                    tx,
                    move |http| {
                        let url = format!("{api}/pods/{pod}");
                        let key = key.clone();
                        async move { runpod_sample(&http, &url, &key).await }
                    },
                )
                .await
            }
        }
    })
}

/// One polled sample: values, or why there are none; and how long to wait before the next.
struct Polled {
    values: Canonical,
    error: Option<String>,
    retry_after: Option<Duration>,
}

impl Polled {
    fn ok(values: Canonical) -> Self {
        Self {
            values,
            error: None,
            retry_after: None,
        }
    }

    fn failed(error: String) -> Self {
        Self {
            values: Canonical::new(),
            error: Some(error),
            retry_after: None,
        }
    }
}

/// Polls `sample` while a phase runs: at its start when no poll was made within `interval`,
/// then every `interval` (or later, when a sample asks for it).
async fn poll<F, Fut>(
    interval: Duration,
    mut current: watch::Receiver<CurrentPhase>,
    origin: Instant,
    tx: mpsc::UnboundedSender<ScrapeRecord>,
    sample: F,
) where
    F: Fn(reqwest::Client) -> Fut,
    Fut: std::future::Future<Output = Polled>,
{
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return;
    };
    // Deadlines are absolute: a phase change never postpones a poll, and a phase shorter than
    // the interval still gets one (the first poll comes as soon as a phase runs).
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            changed = current.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        if current.borrow().is_none() {
            // Between phases: nothing to attribute a sample to. Wait for the next phase; the
            // poll that is due then runs at once.
            if current.changed().await.is_err() {
                return;
            }
            continue;
        }
        let polled = sample(http.clone()).await;
        next = tokio::time::Instant::now() + polled.retry_after.unwrap_or(interval).max(interval);
        let phase = current.borrow().clone();
        if let Some(r) = record(&phase, origin, polled.values, polled.error)
            && tx.send(r).is_err()
        {
            return;
        }
    }
}

async fn dcgm_sample(http: &reqwest::Client, url: &str) -> Polled {
    let resp = match http.get(url).send().await {
        Ok(r) => r,
        Err(e) => return Polled::failed(format!("dcgm-exporter: {e}")),
    };
    if !resp.status().is_success() {
        return Polled::failed(format!(
            "dcgm-exporter answered HTTP {}",
            resp.status().as_u16()
        ));
    }
    let text = match resp.text().await {
        Ok(t) => t,
        Err(e) => return Polled::failed(format!("dcgm-exporter: {e}")),
    };
    let e = parse_filtered(&text, &|n| n.starts_with("DCGM_FI_DEV_"));
    let c = canonical(crate::core::engine::TargetKind::Openai, &e);
    if c.is_empty() {
        return Polled::failed("no DCGM_FI_DEV_* series at the dcgm-exporter URL".to_string());
    }
    Polled::ok(c)
}

/// One RunPod runtime sample. On 429 the next poll waits `Retry-After` (30 s when absent).
async fn runpod_sample(http: &reqwest::Client, url: &str, key: &Secret) -> Polled {
    let resp = match http.get(url).bearer_auth(key.expose()).send().await {
        Ok(r) => r,
        Err(e) => return Polled::failed(key.redact(&format!("RunPod API: {e}"))),
    };
    let status = resp.status().as_u16();
    if status == 429 {
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(30);
        let mut p = Polled::failed(format!(
            "RunPod API rate limit (429); next poll in {retry} s"
        ));
        p.retry_after = Some(Duration::from_secs(retry));
        return p;
    }
    if !(200..300).contains(&status) {
        return Polled::failed(format!("RunPod API answered HTTP {status}"));
    }
    let v: serde_json::Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return Polled::failed(format!("RunPod API: {e}")),
    };
    let Some(gpus) = v.pointer("/runtime/gpus").and_then(|g| g.as_array()) else {
        return Polled::failed(
            "the pod reports no runtime GPU data (not RUNNING yet?)".to_string(),
        );
    };
    let mean = |key: &str| {
        let xs: Vec<f64> = gpus.iter().filter_map(|g| g.get(key)?.as_f64()).collect();
        (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64 / 100.0)
    };
    let mut c = Canonical::new();
    if let Some(u) = mean("util") {
        c.insert("gpu_util".into(), u);
    }
    if let Some(m) = mean("memoryUtil") {
        c.insert("gpu_mem_util".into(), m);
    }
    Polled::ok(c)
}

/// `sh -c cmd` with its stdout piped, killed when dropped.
fn spawn_shell(cmd: &str) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// Runs the nvidia-smi command and turns its rows into samples, one per timestamp.
async fn command(
    cmd: String,
    current: watch::Receiver<CurrentPhase>,
    origin: Instant,
    tx: mpsc::UnboundedSender<ScrapeRecord>,
) {
    // A failure is reported in the next phase that runs, so it is never lost between phases.
    let fail = |msg: String| {
        let mut current = current.clone();
        let tx = tx.clone();
        async move {
            loop {
                let phase = current.borrow().clone();
                if let Some(r) = record(&phase, origin, Canonical::new(), Some(msg.clone())) {
                    let _ = tx.send(r);
                    return;
                }
                if current.changed().await.is_err() {
                    return;
                }
            }
        }
    };
    let mut child = match spawn_shell(&cmd) {
        Ok(c) => c,
        Err(e) => return fail(format!("GPU command failed to start: {e}")).await,
    };
    let Some(stdout) = child.stdout.take() else {
        return fail("GPU command has no stdout".to_string()).await;
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut group: Vec<SmiRow> = Vec::new();
    let mut group_ts = String::new();
    let mut closed = current.clone();
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            changed = closed.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        match line {
            Ok(Some(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                let ts = line.split(',').next().unwrap_or("").trim().to_string();
                if ts != group_ts && !group.is_empty() {
                    let phase = current.borrow().clone();
                    if let Some(r) = record(&phase, origin, canonical_smi(&group), None)
                        && tx.send(r).is_err()
                    {
                        return;
                    }
                    group.clear();
                }
                group_ts = ts;
                match parse_smi_line(&line) {
                    Ok(row) => group.push(row),
                    Err(e) => fail(format!("GPU command printed an unreadable row ({e})")).await,
                }
            }
            Ok(None) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return fail(format!("GPU command ended ({status})")).await;
            }
            Err(e) => return fail(format!("reading the GPU command's output: {e}")).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[tokio::test]
    async fn runpod_runtime_rate_limits_and_errors() {
        let mock = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v2/pods/abc"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "7"))
            .up_to_n_times(1)
            .named("rate limited once")
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/pods/abc"))
            .and(header("authorization", "Bearer rp-key-123456"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "abc", "status": "RUNNING",
                "runtime": {"uptime": 100, "gpus": [{"id": "g0", "util": 80, "memoryUtil": 40}, {"id": "g1", "util": 60, "memoryUtil": 20}]}
            })))
            .named("runtime")
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path("/v2/pods/starting"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"id": "starting", "status": "STARTING", "runtime": null}),
            ))
            .named("no runtime yet")
            .mount(&mock)
            .await;
        let http = reqwest::Client::new();
        let key = Secret::new("rp-key-123456");
        let url = format!("{}/v2/pods/abc", mock.uri());
        let p = runpod_sample(&http, &url, &key).await;
        assert_eq!(p.retry_after, Some(Duration::from_secs(7)));
        assert!(p.error.unwrap().contains("429"));
        let p = runpod_sample(&http, &url, &key).await;
        assert!(p.error.is_none(), "{:?}", p.error);
        assert_eq!(p.values["gpu_util"], 0.7);
        assert!((p.values["gpu_mem_util"] - 0.3).abs() < 1e-12);
        let p = runpod_sample(&http, &format!("{}/v2/pods/starting", mock.uri()), &key).await;
        assert!(p.error.unwrap().contains("no runtime GPU data"));
        let p = runpod_sample(&http, &format!("{}/v2/pods/missing", mock.uri()), &key).await;
        assert_eq!(p.error.as_deref(), Some("RunPod API answered HTTP 404"));
    }

    /// The poll loop on tokio's paused clock: exact instants, no real waiting. Polls come on
    /// absolute deadlines, as soon as a phase runs, never between phases, and a sample's
    /// `retry_after` postpones the next one.
    #[tokio::test(start_paused = true)]
    async fn polls_on_deadlines_inside_phases_and_backs_off_when_asked() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        let origin = Instant::now();
        let (phase_tx, phase_rx) = watch::channel::<CurrentPhase>(None);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let task = tokio::spawn(poll(
            Duration::from_millis(500),
            phase_rx,
            origin,
            tx,
            move |_| {
                // The second sample asks for 7 s of quiet (a 429's Retry-After).
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    Polled {
                        values: Canonical::new(),
                        error: None,
                        retry_after: (n == 1).then(|| Duration::from_secs(7)),
                    }
                }
            },
        ));
        let drain = |rx: &mut mpsc::UnboundedReceiver<ScrapeRecord>| {
            std::iter::from_fn(|| rx.try_recv().ok()).collect::<Vec<_>>()
        };

        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "no poll before a phase runs"
        );
        phase_tx.send(Some(("a".into(), Instant::now()))).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let a = drain(&mut rx);
        let at: Vec<_> = a.iter().map(|r| (r.phase.as_str(), r.in_phase)).collect();
        // At the start, one interval later, then nothing until 7 s after that poll.
        assert_eq!(
            at,
            [("a", Duration::ZERO), ("a", Duration::from_millis(500))]
        );
        assert!(a.iter().all(|r| r.is_gpu() && r.point == Point::Periodic));

        phase_tx.send(None).unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(drain(&mut rx).is_empty(), "no sample between phases");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // The poll that fell due between phases runs as soon as the next phase starts.
        phase_tx.send(Some(("b".into(), Instant::now()))).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let b = drain(&mut rx);
        let at: Vec<_> = b.iter().map(|r| (r.phase.as_str(), r.in_phase)).collect();
        assert_eq!(at, [("b", Duration::ZERO)]);
        assert_eq!(b[0].at, Duration::from_secs(14));

        drop(phase_tx);
        task.await.unwrap();
    }

    #[test]
    fn sources_from_the_environment() {
        let env = |k: &str| (k == "RUNPOD_API_KEY").then(|| "rp-secret-1".to_string());
        assert!(
            GpuSource::from_env(&env, "vllm", None).is_none(),
            "a key alone names no pod"
        );
        let s = GpuSource::from_env(&env, "vllm", Some("abc")).unwrap();
        assert!(
            matches!(&s, GpuSource::RunPod { api, pod, .. } if api == "https://api.runpod.io/v2" && pod == "abc")
        );
        assert!(!s.describe().contains("rp-secret"));
        assert!(GpuSource::from_env(&|_| None, "vllm", Some("abc")).is_none());
        let env =
            |k: &str| (k == "INFERLAB_X_DCGM_URL").then(|| "http://h:9400/metrics".to_string());
        assert!(matches!(
            GpuSource::from_env(&env, "x", Some("abc")),
            Some(GpuSource::Dcgm(_))
        ));
    }
}
