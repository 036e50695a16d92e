//! The RunPod commands: `plan`, `up`, `down`, and `run --deploy`.

use crate::env;
use inferlab::harness::{Exit, RunArgs};
use inferlab::runpod::api::RunPod;
use inferlab::runpod::deploy::{self, Deployment};
use inferlab::runpod::lifecycle::{self, Ended, Ledger};
use inferlab::runpod::matrix::{self, polling, shutdown_signal};
use std::path::Path;

fn load(path: &Path) -> anyhow::Result<Deployment> {
    deploy::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Prints the fit; refuses (false) a deployment that cannot fit.
fn check_fit(d: &Deployment) -> bool {
    matrix::check_fit(d, crate::CONSOLE)
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
        let api = RunPod::from_env(&env)?;
        match api.gpu_catalog(d.gpu_count).await {
            Ok(gpus) => {
                let options = d.fitting_gpus(&gpus);
                match options.first() {
                    Some(o) => println!(
                        "cheapest available GPU that fits: {} × {} ({} GB) at ${:.2}/h",
                        d.gpu_count, o.id, o.memory_gb, o.per_hour_usd
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
    let api = RunPod::from_env(&env)?;
    let ledger = Ledger::from_env(&env);
    let pods = lifecycle::Landlord {
        api: &api,
        ledger: &ledger,
        env: &env,
        polling: polling(&env),
    };
    let (ended, report) = lifecycle::with_pod(
        pods,
        &d,
        true,
        shutdown_signal(),
        &mut |m| eprintln!("{m}"),
        |pod| async move { pod.url },
    )
    .await?;
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
    let api = RunPod::from_env(&env)?;
    let ledger = Ledger::from_env(&env);
    let mut failed = false;
    if all {
        let done = lifecycle::reap(&api, &ledger, true).await?;
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

/// `run --deploy`: the trials of the target each deployment serves, on a pod of its own.
pub async fn run(path: &Path, args: RunArgs, keep: bool) -> anyhow::Result<Exit> {
    Ok(matrix::run(path, args, keep, env, crate::CONSOLE).await?)
}
