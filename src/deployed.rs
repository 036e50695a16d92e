//! The RunPod commands: `plan`, `up`, `down`, and `run --deploy`.

use crate::{Exit, RunArgs, RunResult, env};
use anyhow::Context;
use inferlab::report;
use inferlab::runpod::api::RunPod;
use inferlab::runpod::deploy::{self, Deployment};
use inferlab::runpod::lifecycle::{self, Ended, Ledger, PodReport, Polling};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn load(path: &Path) -> anyhow::Result<Deployment> {
    deploy::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Polling from `INFERLAB_RUNPOD_POLL_MS` (tests make it fast), else the default.
fn polling() -> Polling {
    match env("INFERLAB_RUNPOD_POLL_MS").and_then(|v| v.parse::<u64>().ok()) {
        Some(ms) => Polling {
            first: Duration::from_millis(ms),
            max: Duration::from_millis(ms * 4),
        },
        None => Polling::default(),
    }
}

/// Resolves on Ctrl-C or SIGTERM, with the signal's name.
async fn shutdown_signal() -> &'static str {
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

/// Prints the fit; refuses (false) a deployment that cannot fit.
fn check_fit(d: &Deployment) -> bool {
    let gpu_gb = deploy::gpu_memory_gb(&d.gpu_id).unwrap_or(0.0);
    let fit = d.fit_own();
    print!("{}", deploy::explain(d, &fit, gpu_gb));
    fit.fits
}

pub async fn plan(path: &Path) -> anyhow::Result<Exit> {
    let cells = deploy::load_all(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut all_fit = true;
    for (i, d) in cells.iter().enumerate() {
        if i > 0 {
            println!();
        }
        all_fit &= plan_one(d).await?;
    }
    Ok(if all_fit { Exit::Success } else { Exit::Failed })
}

async fn plan_one(d: &Deployment) -> anyhow::Result<bool> {
    let fits = check_fit(d);
    if env("RUNPOD_API_KEY").is_some() {
        let api = RunPod::from_env(&env).map_err(anyhow::Error::msg)?;
        match api.gpu_catalog(d.gpu_count).await {
            Ok(gpus) => {
                let mut options: Vec<(f64, String, f64)> = gpus
                    .iter()
                    .filter(|g| g.availability.as_deref() != Some("NONE"))
                    .filter_map(|g| {
                        let mem = g.memory.or_else(|| deploy::gpu_memory_gb(&g.id))?;
                        let price = g.price.as_ref().and_then(|p| {
                            if d.cloud == "COMMUNITY" {
                                p.community.or(p.secure)
                            } else {
                                p.secure
                            }
                        })?;
                        d.fit(mem, d.gpu_count)
                            .fits
                            .then(|| (price * f64::from(d.gpu_count), g.id.clone(), mem))
                    })
                    .collect();
                options.sort_by(|a, b| a.0.total_cmp(&b.0));
                match options.first() {
                    Some((price, id, mem)) => println!(
                        "cheapest available GPU that fits: {} × {id} ({mem} GB) at ${price:.2}/h",
                        d.gpu_count
                    ),
                    None => println!(
                        "no available GPU in the catalog fits {} of them",
                        d.gpu_count
                    ),
                }
            }
            Err(e) => eprintln!("warning: GPU catalog: {e}"),
        }
    }
    Ok(fits)
}

pub async fn up(path: &Path) -> anyhow::Result<Exit> {
    let d = load(path)?;
    if !check_fit(&d) {
        eprintln!("refused: {} does not fit its GPU", d.name);
        return Ok(Exit::BadInput);
    }
    let api = RunPod::from_env(&env).map_err(anyhow::Error::msg)?;
    let ledger = Ledger::from_env(&env);
    let (ended, report) = lifecycle::with_pod(
        &api,
        &ledger,
        &d,
        &env,
        polling(),
        true,
        shutdown_signal(),
        &mut |m| eprintln!("{m}"),
        |pod| async move { pod.url },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    match ended {
        Ended::Finished(url) => {
            println!(
                "pod {} is up: {url}",
                report.pod_id.as_deref().unwrap_or("?")
            );
            Ok(Exit::Success)
        }
        // `up` keeps nothing that failed: terminate it now.
        other => {
            if let Some(id) = &report.pod_id {
                match api.delete_pod(id).await {
                    Ok(()) => {
                        let _ = ledger.remove(id);
                        eprintln!("terminated pod {id}");
                    }
                    Err(e) => eprintln!("POD {id} MAY STILL BE BILLING: {e}"),
                }
            }
            if let Some(e) = &report.error {
                eprintln!("{e}");
            }
            Ok(match other {
                Ended::Stopped(sig) => Exit::stopped_by(sig),
                _ => Exit::BadInput,
            })
        }
    }
}

pub async fn down(pods: &[String], all: bool) -> anyhow::Result<Exit> {
    let api = RunPod::from_env(&env).map_err(anyhow::Error::msg)?;
    let ledger = Ledger::from_env(&env);
    let mut failed = false;
    if all {
        let done = lifecycle::reap(&api, &ledger, true)
            .await
            .map_err(anyhow::Error::msg)?;
        if done.is_empty() {
            println!("no pods in the ledger ({})", ledger.path().display());
        }
        for (e, r) in done {
            match r {
                Ok(()) => println!("terminated pod {} ({})", e.pod_id, e.deployment),
                Err(err) => {
                    eprintln!("pod {}: {err}", e.pod_id);
                    failed = true;
                }
            }
        }
    }
    for id in pods {
        match api.delete_pod(id).await {
            Ok(()) => {
                let _ = ledger.remove(id);
                println!("terminated pod {id}");
            }
            Err(e) => {
                eprintln!("pod {id}: {e}");
                failed = true;
            }
        }
    }
    if !all && pods.is_empty() {
        eprintln!("name the pods to terminate, or --all for every pod in the ledger");
        return Ok(Exit::BadInput);
    }
    Ok(if failed { Exit::Failed } else { Exit::Success })
}

pub async fn run(path: &Path, args: RunArgs, keep: bool) -> anyhow::Result<Exit> {
    let cells = deploy::load_all(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut refused = false;
    for d in &cells {
        if !check_fit(d) {
            eprintln!("refused: {} does not fit its GPU", d.name);
            refused = true;
        }
    }
    // Nothing is rented for a run that would select no trial.
    let Some(exps) = crate::load_all(&args.experiments)? else {
        return Ok(Exit::BadInput);
    };
    for d in &cells {
        let selection = inferlab::harness::Selection {
            filters: args.filters.clone(),
            target: Some(d.serves.clone()),
        };
        let selected = exps
            .iter()
            .any(|e| e.targets.iter().any(|t| selection.matches(e, t)));
        if !selected {
            eprintln!(
                "refused: no trial of target `{}` (the target {} serves) matches {:?}",
                d.serves, d.name, args.filters
            );
            refused = true;
        }
    }
    if refused {
        eprintln!("nothing was created");
        return Ok(Exit::BadInput);
    }
    let api = RunPod::from_env(&env).map_err(anyhow::Error::msg)?;
    let ledger = Ledger::from_env(&env);
    let matrix = cells.len() > 1;
    // One stop signal ends every pod's run.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel::<Option<&'static str>>(None);
    tokio::spawn(async move {
        let sig = shutdown_signal().await;
        let _ = stop_tx.send(Some(sig));
    });
    // Pods come up in parallel, up to the matrix's bound; measurements take turns, so no two
    // runs compete for this machine's client.
    let slots = Arc::new(tokio::sync::Semaphore::new(
        cells.first().map_or(1, |d| d.parallel),
    ));
    let measuring = Arc::new(tokio::sync::Mutex::new(()));
    let stamp = inferlab::clock::utc_compact(std::time::SystemTime::now());
    let results_root = if matrix {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("matrix");
        args.results.join(format!("matrix-{stem}-{stamp}"))
    } else {
        args.results.clone()
    };
    let outcomes = futures_util::future::join_all(cells.iter().map(|d| {
        let cell_args = RunArgs {
            experiments: args.experiments.clone(),
            fixtures: args.fixtures.clone(),
            filters: args.filters.clone(),
            only: Some(d.serves.clone()),
            results: if matrix {
                results_root.join(&d.name)
            } else {
                results_root.clone()
            },
            overrides: args.overrides.clone(),
            interrupt: false,
            cost_per_hour: None,
        };
        let (api, ledger, slots, measuring) = (&api, &ledger, slots.clone(), measuring.clone());
        let mut stop = stop_rx.clone();
        async move {
            let _slot = slots.acquire_owned().await;
            let prefix = if matrix {
                format!("[{}] ", d.name)
            } else {
                String::new()
            };
            let shutdown = async move {
                loop {
                    if let Some(sig) = *stop.borrow_and_update() {
                        return sig;
                    }
                    if stop.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            };
            let result = run_on_pod(
                api, ledger, d, cell_args, keep, shutdown, measuring, &prefix,
            )
            .await;
            (d, result)
        }
    }))
    .await;

    let mut worst = Exit::Success;
    let mut rows = Vec::new();
    for (d, result) in outcomes {
        match result {
            Ok((code, report, result)) => {
                worst = worst.max(code);
                write_report(
                    &results_root,
                    &report,
                    result.as_ref().map_or(0, |r| r.output_tokens),
                )?;
                rows.push((d, code, report, result));
            }
            Err(e) => {
                eprintln!("[{}] {e:#}", d.name);
                worst = worst.max(Exit::BadInput);
            }
        }
    }
    if matrix {
        print!("{}", matrix_table(&rows));
        let path = results_root.join("matrix.json");
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(d, code, report, result)| {
                serde_json::json!({
                    "deployment": d.name,
                    "engine": d.engine.as_str(),
                    "model": d.model,
                    "gpu": d.gpu_id,
                    "gpu_count": d.gpu_count,
                    "exit_code": code.code(),
                    "pod": report,
                    "trials": result.as_ref().map(|r| r.trials.clone()).unwrap_or_default(),
                })
            })
            .collect();
        std::fs::create_dir_all(&results_root)?;
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("matrix: {}", path.display());
    }
    Ok(worst)
}

/// One deployment's pod: its exit code, its report, and what ran on it.
#[allow(clippy::too_many_arguments)]
async fn run_on_pod(
    api: &RunPod,
    ledger: &Ledger,
    d: &Deployment,
    mut args: RunArgs,
    keep: bool,
    shutdown: impl std::future::Future<Output = &'static str>,
    measuring: Arc<tokio::sync::Mutex<()>>,
    prefix: &str,
) -> anyhow::Result<(Exit, PodReport, Option<RunResult>)> {
    let target = d.serves.to_ascii_uppercase().replace('-', "_");
    let port = d.port.to_string();
    let results = args.results.clone();
    let (ended, mut report) = lifecycle::with_pod(
        api,
        ledger,
        d,
        &env,
        polling(),
        keep,
        shutdown,
        &mut |m| eprintln!("{prefix}{m}"),
        move |pod| async move {
            let _turn = measuring.lock().await;
            args.cost_per_hour = pod.pod.cost;
            args.overrides
                .insert(format!("INFERLAB_{target}_RUNPOD_POD"), pod.pod.id.clone());
            args.overrides
                .insert(format!("INFERLAB_{target}_RUNPOD_PORT"), port);
            // The pod, not a URL from the environment.
            args.overrides
                .insert(format!("INFERLAB_{target}_URL"), String::new());
            crate::run(args).await.map_err(|e| format!("{e:#}"))
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let (code, result) = match ended {
        Ended::Finished(Ok(r)) => (r.code, Some(r)),
        Ended::Finished(Err(e)) => {
            report.error = Some(e);
            (Exit::BadInput, None)
        }
        Ended::NotReady => (Exit::BadInput, None),
        Ended::Stopped(sig) => (Exit::stopped_by(sig), None),
        Ended::Panicked(p) => {
            let _ = write_report(&results, &report, 0);
            std::panic::resume_unwind(p);
        }
    };
    if let Some(e) = &report.error {
        eprintln!("{prefix}{e}");
    }
    Ok((code, report, result))
}

type Row<'a> = (&'a Deployment, Exit, PodReport, Option<RunResult>);

/// The matrix side by side: one line per deployment and trial.
fn matrix_table(rows: &[Row<'_>]) -> String {
    let mut out = format!(
        "\n{:<44} {:<28} {:>6} {:>10} {:>10} {:>10} {:>9} {:>8}\n",
        "deployment", "trial", "result", "ttft p50", "tpot p50", "out tok/s", "$/h", "cost $"
    );
    let ms = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    for (d, code, report, result) in rows {
        let price = report
            .cost_per_hour
            .map_or("-".into(), |c| format!("{c:.2}"));
        let cost = report.cost_usd.map_or("-".into(), |c| format!("{c:.4}"));
        match result.as_ref().filter(|r| !r.trials.is_empty()) {
            Some(r) => {
                for t in &r.trials {
                    out.push_str(&format!(
                        "{:<44} {:<28} {:>6} {:>10} {:>10} {:>10.1} {:>9} {:>8}\n",
                        d.name,
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
                let what = report
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("exit {}", code.code()));
                out.push_str(&format!("{:<44} {:<28} {:>6} {}\n", d.name, "-", "-", what));
            }
        }
    }
    out
}

/// `results/deployments/<UTC>-<deployment>.json`: the pod, its timeline, its cost, and the
/// cost per million output tokens of what ran on it.
fn write_report(results: &Path, report: &PodReport, output_tokens: u64) -> anyhow::Result<()> {
    let dir = results.join("deployments");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let per_mtok = report
        .cost_usd
        .filter(|_| output_tokens > 0)
        .map(|c| c * 1e6 / output_tokens as f64);
    let mut v = serde_json::to_value(report)?;
    v["schema_version"] = serde_json::json!(report::RESULTS_SCHEMA_VERSION);
    v["output_tokens"] = serde_json::json!(output_tokens);
    v["cost_per_million_output_tokens_usd"] = serde_json::json!(per_mtok);
    let path = dir.join(format!(
        "{}-{}.json",
        inferlab::clock::utc_compact(std::time::SystemTime::now()),
        report.deployment
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&v)?)
        .with_context(|| format!("writing {}", path.display()))?;
    match (report.cost_usd, per_mtok) {
        (Some(c), Some(m)) => println!(
            "pod cost ${c:.4} for {:.0} s; ${m:.2} per million output tokens",
            report.held_s
        ),
        (Some(c), None) => println!("pod cost ${c:.4} for {:.0} s", report.held_s),
        _ => {}
    }
    println!("deployment report: {}", path.display());
    Ok(())
}
