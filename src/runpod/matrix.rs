//! `run --deploy`: rent a pod for each deployment of a file (one, or a matrix), run the trials
//! of the target it serves against it, and release it however the run ends. Pods come up in
//! parallel, up to the matrix's bound; measurements take turns, so no two runs compete for this
//! machine's client. Each pod's report goes to `results/deployments/`; a matrix also writes
//! `matrix.json` and a side-by-side table. What is printed goes through a [`Console`].

use super::api::{ApiError, RunPod};
use super::deploy::{self, Deployment};
use super::lifecycle::{self, Ended, Ledger, LifecycleError, PodReport, Polling};
use crate::env::TargetSource;
use crate::harness::DiscoveryError;
use crate::harness::{self, Event, Exit, RunArgs, RunResult, Selection};
use crate::spec::SpecError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a deployed run could not go ahead, or its outputs could not be written; what happened on
/// a pod (not ready, failed trials) is in its report instead.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error(transparent)]
    Deployments(#[from] SpecError),
    #[error(transparent)]
    Experiments(#[from] DiscoveryError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a deployed run's words go: `out` and `err` lines, and the trials' events.
#[derive(Clone, Copy)]
pub struct Console {
    pub out: fn(&str),
    pub err: fn(&str),
    pub event: fn(Event<'_>),
}

/// Polling from `INFERLAB_RUNPOD_POLL_MS` (tests make it fast), else the default.
pub fn polling(env: &dyn Fn(&str) -> Option<String>) -> Polling {
    match env("INFERLAB_RUNPOD_POLL_MS").and_then(|v| v.parse::<u64>().ok()) {
        Some(ms) => Polling {
            first: Duration::from_millis(ms),
            max: Duration::from_millis(ms * 4),
        },
        None => Polling::default(),
    }
}

/// Resolves on Ctrl-C or SIGTERM, with the signal's name.
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Says how a deployment fits its GPU; `false` for one that cannot.
pub fn check_fit(d: &Deployment, console: Console) -> bool {
    let gpu_gb = deploy::gpu_memory_gb(&d.gpu_id).unwrap_or(0.0);
    let fit = d.fit_own();
    (console.out)(deploy::explain(d, &fit, gpu_gb).trim_end_matches('\n'));
    fit.fits
}

/// One deployment's pod: its exit, its report, and what ran on it.
struct Cell<'a> {
    deployment: &'a Deployment,
    exit: Exit,
    report: PodReport,
    result: Option<RunResult>,
}

/// Runs `args`' trials on a pod of each deployment in `path`; `Err` is bad input or a RunPod
/// client that cannot be built.
pub async fn run(
    path: &Path,
    args: RunArgs,
    keep: bool,
    env: fn(&str) -> Option<String>,
    console: Console,
) -> Result<Exit, MatrixError> {
    let cells = deploy::load_all(path)?;
    if !preflight(&cells, &args, console)? {
        (console.err)("nothing was created");
        return Ok(Exit::BadInput);
    }
    let api = RunPod::from_env(&env)?;
    let ledger = Ledger::from_env(&env);
    let matrix = cells.len() > 1;
    // One stop signal ends every pod's run.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel::<Option<&'static str>>(None);
    tokio::spawn(async move {
        let _ = stop_tx.send(Some(shutdown_signal().await));
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(
        cells.first().map_or(1, |d| d.parallel),
    ));
    let measuring = Arc::new(tokio::sync::Mutex::new(()));
    let root = results_root(path, &args.results, matrix);
    let ran = futures_util::future::join_all(cells.iter().map(|d| {
        let mut cell_args = args.clone();
        // A pod serves one target: only that target's trials run on it.
        cell_args.selection.target = Some(d.serves.clone());
        if matrix {
            cell_args.results = root.join(&d.name);
        }
        let pod = Pod {
            api: &api,
            ledger: &ledger,
            env,
            keep,
            slots: slots.clone(),
            measuring: measuring.clone(),
            prefix: if matrix {
                format!("[{}] ", d.name)
            } else {
                String::new()
            },
            console,
        };
        let stop = stop_rx.clone();
        async move { (d, pod.run(d, cell_args, stopped(stop)).await) }
    }))
    .await;
    let mut worst = Exit::Success;
    let mut rows = Vec::new();
    for (d, result) in ran {
        match result {
            Ok(cell) => {
                worst = worst.max(cell.exit);
                let tokens = cell.result.as_ref().map_or(0, |r| r.output_tokens);
                write_report(&root, &cell.report, tokens, console)?;
                rows.push(cell);
            }
            Err(e) => {
                (console.err)(&format!("[{}] {e}", d.name));
                worst = worst.max(Exit::BadInput);
            }
        }
    }
    if matrix {
        (console.out)(table(&rows).trim_end_matches('\n'));
        let written = write_matrix(&root, &rows)?;
        (console.out)(&format!("matrix: {}", written.display()));
    }
    Ok(worst)
}

/// Refuses (`false`, saying why) a run that would rent a pod for nothing: a deployment that
/// does not fit its GPU, or one whose target no selected trial uses.
fn preflight(cells: &[Deployment], args: &RunArgs, console: Console) -> Result<bool, MatrixError> {
    let mut ok = true;
    for d in cells {
        if !check_fit(d, console) {
            (console.err)(&format!("refused: {} does not fit its GPU", d.name));
            ok = false;
        }
    }
    let found = harness::discover(&args.experiments)?;
    for (_, e) in &found.invalid {
        (console.err)(&e.to_string());
    }
    if !found.invalid.is_empty() {
        return Ok(false);
    }
    for d in cells {
        let selection = Selection {
            target: Some(d.serves.clone()),
            ..args.selection.clone()
        };
        let selected = found
            .experiments
            .iter()
            .any(|e| e.targets.iter().any(|t| selection.matches(e, t)));
        if !selected {
            (console.err)(&format!(
                "refused: no trial of target `{}` (the target {} serves) matches {:?}",
                d.serves, d.name, args.selection.filters
            ));
            ok = false;
        }
    }
    Ok(ok)
}

/// A matrix's results go under one directory of their own: `matrix-<file>-<UTC>`.
fn results_root(path: &Path, results: &Path, matrix: bool) -> PathBuf {
    if !matrix {
        return results.to_path_buf();
    }
    let stamp = crate::clock::utc_compact(std::time::SystemTime::now());
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("matrix");
    results.join(format!("matrix-{stem}-{stamp}"))
}

/// Resolves with the signal's name once the shared stop signal fires.
async fn stopped(mut stop: tokio::sync::watch::Receiver<Option<&'static str>>) -> &'static str {
    loop {
        if let Some(sig) = *stop.borrow_and_update() {
            return sig;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// What one deployment's pod needs to run.
struct Pod<'a> {
    api: &'a RunPod,
    ledger: &'a Ledger,
    env: fn(&str) -> Option<String>,
    keep: bool,
    slots: Arc<tokio::sync::Semaphore>,
    measuring: Arc<tokio::sync::Mutex<()>>,
    prefix: String,
    console: Console,
}

impl Pod<'_> {
    async fn run(
        self,
        d: &Deployment,
        mut args: RunArgs,
        shutdown: impl std::future::Future<Output = &'static str>,
    ) -> Result<Cell<'_>, LifecycleError> {
        let _slot = self.slots.acquire_owned().await;
        let results = args.results.clone();
        let port = d.port.to_string();
        let (env, console, measuring) = (self.env, self.console, self.measuring);
        let (prefix, err) = (self.prefix.clone(), console.err);
        let pods = lifecycle::Landlord {
            api: self.api,
            ledger: self.ledger,
            env: &env,
            polling: polling(&env),
        };
        let (ended, mut report) = lifecycle::with_pod(
            pods,
            d,
            self.keep,
            shutdown,
            &mut |m| err(&format!("{prefix}{m}")),
            move |pod| async move {
                let _turn = measuring.lock().await;
                args.cost_per_hour = pod.pod.cost;
                args.selection.source = Some(TargetSource::Pod {
                    id: pod.pod.id.clone(),
                    port,
                });
                let mut event = console.event;
                harness::run(args, &env, &mut event)
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await?;
        let (exit, result) = match ended {
            Ended::Finished(Ok(r)) => (r.code, Some(r)),
            Ended::Finished(Err(e)) => {
                report.error = Some(e);
                (Exit::BadInput, None)
            }
            Ended::NotReady => (Exit::BadInput, None),
            Ended::Stopped(sig) => (Exit::stopped_by(sig), None),
            Ended::Panicked(p) => {
                let _ = write_report(&results, &report, 0, console);
                std::panic::resume_unwind(p);
            }
        };
        if let Some(e) = &report.error {
            err(&format!("{}{e}", self.prefix));
        }
        Ok(Cell {
            deployment: d,
            exit,
            report,
            result,
        })
    }
}

/// The matrix side by side: one line per deployment and trial.
fn table(rows: &[Cell<'_>]) -> String {
    let mut out = format!(
        "\n{:<44} {:<28} {:>6} {:>10} {:>10} {:>10} {:>9} {:>8}\n",
        "deployment", "trial", "result", "ttft p50", "tpot p50", "out tok/s", "$/h", "cost $"
    );
    let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    for c in rows {
        let name = &c.deployment.name;
        let price = c
            .report
            .cost_per_hour
            .map_or("-".into(), |c| format!("{c:.2}"));
        let cost = c.report.cost_usd.map_or("-".into(), |c| format!("{c:.4}"));
        match c.result.as_ref().filter(|r| !r.trials.is_empty()) {
            Some(r) => {
                for t in &r.trials {
                    out.push_str(&format!(
                        "{:<44} {:<28} {:>6} {:>10} {:>10} {:>10.1} {:>9} {:>8}\n",
                        name,
                        t.trial,
                        if t.passed { "ok" } else { "FAILED" },
                        ms(t.ttft_p50_ms),
                        ms(t.tpot_p50_ms),
                        t.output_throughput,
                        price,
                        cost
                    ));
                }
            }
            None => {
                let what = c
                    .report
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("exit {}", c.exit.code()));
                out.push_str(&format!("{name:<44} {:<28} {:>6} {what}\n", "-", "-"));
            }
        }
    }
    out
}

/// `matrix.json`: per deployment, what it was, its exit code, its pod and its trials.
fn write_matrix(root: &Path, rows: &[Cell<'_>]) -> Result<PathBuf, MatrixError> {
    let deployments: Vec<serde_json::Value> = rows
        .iter()
        .map(|c| {
            let d = c.deployment;
            serde_json::json!({
                "deployment": d.name,
                "engine": d.engine.as_str(),
                "model": d.model,
                "gpu": d.gpu_id,
                "gpu_count": d.gpu_count,
                "exit_code": c.exit.code(),
                "pod": c.report,
                "trials": c.result.as_ref().map(|r| r.trials.clone()).unwrap_or_default(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "schema_version": crate::report::RESULTS_SCHEMA_VERSION,
        "deployments": deployments,
    });
    let path = root.join("matrix.json");
    write_json(&path, &json)?;
    Ok(path)
}

/// `results/deployments/<UTC>-<deployment>.json`: the pod, its timeline, its cost, and the
/// cost per million output tokens of what ran on it.
fn write_report(
    results: &Path,
    report: &PodReport,
    output_tokens: u64,
    console: Console,
) -> Result<(), MatrixError> {
    let dir = results.join("deployments");
    let per_mtok = report
        .cost_usd
        .filter(|_| output_tokens > 0)
        .map(|c| c * 1e6 / output_tokens as f64);
    let mut v = serde_json::to_value(report).unwrap_or_default();
    v["schema_version"] = serde_json::json!(crate::report::RESULTS_SCHEMA_VERSION);
    v["output_tokens"] = serde_json::json!(output_tokens);
    v["cost_per_million_output_tokens_usd"] = serde_json::json!(per_mtok);
    let path = dir.join(format!(
        "{}-{}.json",
        crate::clock::utc_compact(std::time::SystemTime::now()),
        report.deployment
    ));
    write_json(&path, &v)?;
    match (report.cost_usd, per_mtok) {
        (Some(c), Some(m)) => (console.out)(&format!(
            "pod cost ${c:.4} for {:.0} s; ${m:.2} per million output tokens",
            report.held_s
        )),
        (Some(c), None) => (console.out)(&format!("pod cost ${c:.4} for {:.0} s", report.held_s)),
        _ => {}
    }
    (console.out)(&format!("deployment report: {}", path.display()));
    Ok(())
}

/// Writes a JSON value pretty-printed, creating its directory.
fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), MatrixError> {
    // A `Value` always encodes.
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, text))
        .map_err(|source| MatrixError::Write {
            path: path.to_path_buf(),
            source,
        })
}
