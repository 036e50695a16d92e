//! The RunPod commands: `plan`, `up`, `down`, and `run --deploy`.

use crate::{RunArgs, env};
use anyhow::Context;
use inferlab::report;
use inferlab::runpod::api::RunPod;
use inferlab::runpod::deploy::{self, Deployment};
use inferlab::runpod::lifecycle::{self, Ended, Ledger, PodReport, Polling};
use std::path::Path;
use std::process::ExitCode;
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
async fn check_fit(d: &Deployment) -> bool {
    let gpu_gb = deploy::gpu_memory_gb(&d.gpu_id).unwrap_or(0.0);
    let fit = d.fit_own();
    print!("{}", deploy::explain(d, &fit, gpu_gb));
    fit.fits
}

pub async fn plan(path: &Path) -> anyhow::Result<ExitCode> {
    let d = load(path)?;
    let fits = check_fit(&d).await;
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
    Ok(if fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn up(path: &Path) -> anyhow::Result<ExitCode> {
    let d = load(path)?;
    if !check_fit(&d).await {
        eprintln!("refused: {} does not fit its GPU", d.name);
        return Ok(ExitCode::from(2));
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
            Ok(ExitCode::SUCCESS)
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
            Ok(ExitCode::from(match other {
                Ended::Stopped(_) => 130,
                _ => 2,
            }))
        }
    }
}

pub async fn down(pods: &[String], all: bool) -> anyhow::Result<ExitCode> {
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
        return Ok(ExitCode::from(2));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn run(path: &Path, mut args: RunArgs, keep: bool) -> anyhow::Result<ExitCode> {
    let d = load(path)?;
    if !check_fit(&d).await {
        eprintln!(
            "refused: {} does not fit its GPU; nothing was created",
            d.name
        );
        return Ok(ExitCode::from(2));
    }
    // Nothing is rented for a run that would select no trial.
    let Some(exps) = crate::load_all(&args.experiments)? else {
        return Ok(ExitCode::from(2));
    };
    let selected = exps.iter().any(|e| {
        e.targets.iter().any(|t| {
            let name = format!("{}::{}", e.name, t.name);
            t.name == d.serves
                && (args.filters.is_empty() || args.filters.iter().any(|f| name.contains(f)))
        })
    });
    if !selected {
        eprintln!(
            "refused: no trial of target `{}` (the target {} serves) matches {:?}; nothing was created",
            d.serves, d.name, args.filters
        );
        return Ok(ExitCode::from(2));
    }
    let api = RunPod::from_env(&env).map_err(anyhow::Error::msg)?;
    let ledger = Ledger::from_env(&env);
    // Only the trials of the target the pod stands for.
    args.only = Some(d.serves.clone());
    let target = d.serves.to_ascii_uppercase().replace('-', "_");
    let port = d.port.to_string();
    let results = args.results.clone();
    let (ended, mut report) = lifecycle::with_pod(
        &api,
        &ledger,
        &d,
        &env,
        polling(),
        keep,
        shutdown_signal(),
        &mut |m| eprintln!("{m}"),
        move |pod| async move {
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
    let (code, tokens) = match ended {
        Ended::Finished(Ok((code, tokens))) => (code, tokens),
        Ended::Finished(Err(e)) => {
            report.error = Some(e.clone());
            eprintln!("error: {e}");
            (ExitCode::from(2), 0)
        }
        Ended::NotReady => (ExitCode::from(2), 0),
        Ended::Stopped(sig) => (ExitCode::from(if sig == "SIGTERM" { 143 } else { 130 }), 0),
        Ended::Panicked(p) => {
            write_report(&results, &report, 0)?;
            std::panic::resume_unwind(p);
        }
    };
    if let Some(e) = &report.error {
        eprintln!("{e}");
    }
    write_report(&results, &report, tokens)?;
    Ok(code)
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
        report::utc_compact(std::time::SystemTime::now()),
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
