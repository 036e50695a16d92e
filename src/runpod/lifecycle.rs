//! A pod's life: create → wait for RUNNING → wait for the engine's `/health` → run → terminate.
//!
//! Termination happens whatever the run does — returns, fails, panics — and when the process is
//! told to stop (the `shutdown` future: Ctrl-C, SIGTERM), unless the pod is kept on purpose.
//! Every pod is written to a ledger the moment it exists and struck off only once its deletion
//! is confirmed, so after a `kill -9` the next run (or `inferlab down --all`) finds it and
//! terminates it.

use crate::runpod::api::{ApiError, Pod, RunPod};
use crate::runpod::deploy::{Deployment, UnsetVar};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Why a pod's life could not begin or be tracked. A pod that never became ready is not an
/// error here: `with_pod` ends with `Ended::NotReady` and the report says why.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("ledger {}: {source}", path.display())]
    LedgerIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {}: {source}", path.display())]
    LedgerFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Env(#[from] UnsetVar),
}

/// Why a pod did not become ready, for its report.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    #[error("pod {id} is {status}")]
    Failed { id: String, status: String },
    #[error("pod {id} not RUNNING after {after:?} (last status {last})")]
    NotRunning {
        id: String,
        after: Duration,
        last: String,
    },
    #[error("the engine did not answer {health} within {after:?} (last: {last})")]
    Unhealthy {
        health: String,
        after: Duration,
        last: String,
    },
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// One pod this tool created and has not yet seen terminated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub pod_id: String,
    pub deployment: String,
    pub gpu: String,
    pub created_at: String,
    /// The process that created it: a pod whose creator is gone is a leftover.
    pub pid: u32,
}

/// Read-modify-write of the ledger, one at a time within this process (a matrix changes it
/// from several pods' tasks).
static LEDGER_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The pods this tool created, in a JSON file.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `INFERLAB_LEDGER`, else `$XDG_STATE_HOME/inferlab/pods.json`, else
    /// `~/.local/state/inferlab/pods.json`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        if let Some(p) = env("INFERLAB_LEDGER").filter(|p| !p.is_empty()) {
            return Self::new(p);
        }
        let state = env("XDG_STATE_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        Self::new(state.join("inferlab/pods.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> Result<Vec<LedgerEntry>, LifecycleError> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) if s.trim().is_empty() => Ok(Vec::new()),
            Ok(s) => serde_json::from_str(&s).map_err(|source| LifecycleError::LedgerFormat {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(self.io(source)),
        }
    }

    fn io(&self, source: std::io::Error) -> LifecycleError {
        LifecycleError::LedgerIo {
            path: self.path.clone(),
            source,
        }
    }

    fn write(&self, entries: &[LedgerEntry]) -> Result<(), LifecycleError> {
        let err = |e: std::io::Error| self.io(e);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // Written whole and renamed into place: a crash never leaves half a ledger.
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let text = serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".into());
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }

    pub fn add(&self, entry: LedgerEntry) -> Result<(), LifecycleError> {
        let _one_at_a_time = LEDGER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.entries()?;
        all.retain(|e| e.pod_id != entry.pod_id);
        all.push(entry);
        self.write(&all)
    }

    pub fn remove(&self, pod_id: &str) -> Result<(), LifecycleError> {
        let _one_at_a_time = LEDGER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.entries()?;
        all.retain(|e| e.pod_id != pod_id);
        self.write(&all)
    }
}

/// Whether a process with this id is running.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Terminates ledger pods: all of them, or only leftovers (whose creating process is gone).
/// Returns each pod and what happened; confirmed deletions leave the ledger.
pub async fn reap(
    api: &RunPod,
    ledger: &Ledger,
    all: bool,
) -> Result<Vec<(LedgerEntry, Result<(), ApiError>)>, LifecycleError> {
    let mut out = Vec::new();
    for e in ledger.entries()? {
        if !all && process_alive(e.pid) {
            continue;
        }
        let r = api.delete_pod(&e.pod_id).await;
        if r.is_ok() {
            ledger.remove(&e.pod_id)?;
        }
        out.push((e, r));
    }
    Ok(out)
}

/// Polling bounds.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    /// First wait between polls; doubles up to `max`.
    pub first: Duration,
    pub max: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(2),
            max: Duration::from_secs(15),
        }
    }
}

/// What happened to the pod, for the results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PodReport {
    pub deployment: String,
    pub pod_id: Option<String>,
    pub gpu: String,
    pub gpu_count: u32,
    pub image: String,
    pub data_center: Option<String>,
    pub cost_per_hour: Option<f64>,
    pub url: Option<String>,
    /// Seconds from the create call to confirmed termination (or to the end, when kept).
    pub held_s: f64,
    pub cost_usd: Option<f64>,
    pub terminated: bool,
    pub kept: bool,
    /// (seconds since create, event)
    pub timeline: Vec<(f64, String)>,
    /// The pod's logs, fetched when it failed to become ready.
    pub logs: Option<String>,
    pub error: Option<String>,
}

/// How a deployed run ended.
#[derive(Debug)]
pub enum Ended<T> {
    Finished(T),
    /// The pod never became ready (the report says why).
    NotReady,
    /// `shutdown` fired: the signal's name.
    Stopped(&'static str),
    /// The run panicked; the payload is resumed by the caller after teardown.
    Panicked(Box<dyn std::any::Any + Send>),
}

/// A ready pod, as the run sees it.
#[derive(Debug, Clone)]
pub struct ReadyPod {
    pub pod: Pod,
    pub url: String,
}

/// Where pods come from and are written down: the API, the ledger, the environment (for the
/// pod's `$VAR` values and the proxy URL) and how often to poll.
#[derive(Clone, Copy)]
pub struct Landlord<'a> {
    pub api: &'a RunPod,
    pub ledger: &'a Ledger,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub polling: Polling,
}

/// Creates the deployment's pod, waits until its engine answers, runs `run` against it, and
/// terminates it — also on failure, panic and `shutdown` — unless `keep`.
pub async fn with_pod<F, Fut, T>(
    pods: Landlord<'_>,
    dep: &Deployment,
    keep: bool,
    shutdown: impl Future<Output = &'static str>,
    log: &mut dyn FnMut(&str),
    run: F,
) -> Result<(Ended<T>, PodReport), LifecycleError>
where
    F: FnOnce(ReadyPod) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let Landlord {
        api,
        ledger,
        env,
        polling: _,
    } = pods;
    let body = dep.create_request(env)?;
    let mut report = PodReport {
        deployment: dep.name.clone(),
        gpu: dep.gpu_id.clone(),
        gpu_count: dep.gpu_count,
        image: dep.image.clone(),
        ..PodReport::default()
    };
    reap_leftovers(api, ledger, log).await?;
    let started = Instant::now();
    let id = create(api, ledger, dep, &body, &mut report, started, log).await?;
    let url = crate::env::runpod_proxy_url(env, &id, &dep.port.to_string());
    report.url = Some(url.clone());
    let ended = {
        let work = async {
            let ready = ready(pods, &id, &url, dep, &mut report, started, log).await;
            let Some(pod) = ready else {
                return Ended::NotReady;
            };
            match tokio::spawn(run(ReadyPod {
                pod,
                url: url.clone(),
            }))
            .await
            {
                Ok(t) => Ended::Finished(t),
                Err(e) if e.is_panic() => Ended::Panicked(e.into_panic()),
                Err(e) => {
                    report.error = Some(e.to_string());
                    Ended::NotReady
                }
            }
        };
        tokio::select! {
            e = work => e,
            sig = shutdown => Ended::Stopped(sig),
        }
    };
    if let Ended::Stopped(sig) = &ended {
        stamp(&mut report, started, format!("stopped by {sig}"));
        log(&format!("{sig}: terminating pod {id}"));
    }
    release(api, ledger, &id, keep, &mut report, started, log).await;
    report.held_s = started.elapsed().as_secs_f64();
    report.cost_usd = report.cost_per_hour.map(|c| c * report.held_s / 3600.0);
    Ok((ended, report))
}

fn stamp(report: &mut PodReport, started: Instant, what: String) {
    report
        .timeline
        .push((started.elapsed().as_secs_f64(), what));
}

/// Terminates the pods in the ledger whose creating process is gone.
async fn reap_leftovers(
    api: &RunPod,
    ledger: &Ledger,
    log: &mut dyn FnMut(&str),
) -> Result<(), LifecycleError> {
    for (e, r) in reap(api, ledger, false).await? {
        match r {
            Ok(()) => log(&format!(
                "terminated leftover pod {} ({}, created {} by a process that is gone)",
                e.pod_id, e.deployment, e.created_at
            )),
            Err(err) => log(&format!("leftover pod {} not terminated: {err}", e.pod_id)),
        }
    }
    Ok(())
}

/// Creates the pod and writes it to the ledger; its id.
async fn create(
    api: &RunPod,
    ledger: &Ledger,
    dep: &Deployment,
    body: &super::api::CreatePod,
    report: &mut PodReport,
    started: Instant,
    log: &mut dyn FnMut(&str),
) -> Result<String, LifecycleError> {
    let pod = api.create_pod(body).await?;
    let id = pod.id.clone();
    report.pod_id = Some(id.clone());
    report.cost_per_hour = pod.cost;
    stamp(report, started, format!("created pod {id}"));
    log(&format!(
        "created pod {id} ({} × {})",
        dep.gpu_count, dep.gpu_id
    ));
    if let Err(e) = ledger.add(LedgerEntry {
        pod_id: id.clone(),
        deployment: dep.name.clone(),
        gpu: dep.gpu_id.clone(),
        created_at: crate::clock::now_rfc3339(),
        pid: std::process::id(),
    }) {
        log(&format!("warning: {e}"));
    }
    Ok(id)
}

/// Waits until the pod runs and its engine answers; `None` (the report says why, with the
/// pod's logs) when it does not.
async fn ready(
    pods: Landlord<'_>,
    id: &str,
    url: &str,
    dep: &Deployment,
    report: &mut PodReport,
    started: Instant,
    log: &mut dyn FnMut(&str),
) -> Option<Pod> {
    let (api, polling) = (pods.api, pods.polling);
    let pod = match wait_running(api, id, dep, polling, report, started, log).await {
        Ok(pod) => pod,
        Err(e) => {
            report.error = Some(e.to_string());
            report.logs = api.logs(id).await.ok();
            return None;
        }
    };
    report.data_center.clone_from(&pod.data_center_id);
    if pod.cost.is_some() {
        report.cost_per_hour = pod.cost;
    }
    if let Err(e) = wait_healthy(url, dep, polling, log).await {
        report.error = Some(e.to_string());
        report.logs = api.logs(id).await.ok();
        return None;
    }
    stamp(report, started, "engine healthy".into());
    Some(pod)
}

/// Terminates the pod (and takes it off the ledger), unless it is kept; a pod that could not
/// be terminated is said loudly and stays in the ledger.
async fn release(
    api: &RunPod,
    ledger: &Ledger,
    id: &str,
    keep: bool,
    report: &mut PodReport,
    started: Instant,
    log: &mut dyn FnMut(&str),
) {
    if keep {
        report.kept = true;
        log(&format!(
            "keeping pod {id} (--keep): `inferlab down {id}` terminates it"
        ));
        return;
    }
    match api.delete_pod(id).await {
        Ok(()) => {
            report.terminated = true;
            stamp(report, started, "terminated".into());
            log(&format!("terminated pod {id}"));
            if let Err(e) = ledger.remove(id) {
                log(&format!("warning: {e}"));
            }
        }
        Err(e) => {
            let msg = format!(
                "POD {id} MAY STILL BE BILLING: terminating it failed: {e}; it stays in the ledger ({}): run `inferlab down --all`",
                ledger.path().display()
            );
            log(&msg);
            report.error = Some(msg);
        }
    }
}

async fn wait_running(
    api: &RunPod,
    id: &str,
    dep: &Deployment,
    polling: Polling,
    report: &mut PodReport,
    started: Instant,
    log: &mut dyn FnMut(&str),
) -> Result<Pod, NotReady> {
    let deadline = Instant::now() + dep.provision_timeout;
    let mut wait = polling.first;
    let mut last = String::new();
    loop {
        match api.get_pod(id).await {
            Ok(p) => {
                let status = p.status.clone().unwrap_or_default();
                if status != last {
                    report
                        .timeline
                        .push((started.elapsed().as_secs_f64(), status.clone()));
                    log(&format!("pod {id}: {status}"));
                    last.clone_from(&status);
                }
                match status.as_str() {
                    "RUNNING" => return Ok(p),
                    "ERROR" | "EXITED" | "TERMINATED" => {
                        return Err(NotReady::Failed {
                            id: id.to_string(),
                            status,
                        });
                    }
                    _ => {}
                }
            }
            Err(e) => log(&format!("pod {id}: {e}")),
        }
        if Instant::now() + wait > deadline {
            if last.is_empty() {
                last = "unknown".into();
            }
            return Err(NotReady::NotRunning {
                id: id.to_string(),
                after: dep.provision_timeout,
                last,
            });
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(polling.max);
    }
}

async fn wait_healthy(
    url: &str,
    dep: &Deployment,
    polling: Polling,
    log: &mut dyn FnMut(&str),
) -> Result<(), NotReady> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(NotReady::Client)?;
    let deadline = Instant::now() + dep.ready_timeout;
    let mut wait = polling.first;
    let health = format!("{url}/health");
    let mut last = String::new();
    loop {
        let now = match http.get(&health).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) if e.is_connect() => "not accepting connections".to_string(),
            Err(e) if e.is_timeout() => "timed out".to_string(),
            Err(_) => "request failed".to_string(),
        };
        if now != last {
            log(&format!("{health}: {now}"));
            last = now;
        }
        if Instant::now() + wait > deadline {
            return Err(NotReady::Unhealthy {
                health,
                after: dep.ready_timeout,
                last,
            });
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(polling.max);
    }
}
