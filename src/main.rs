//! `inferlab`: a thin CLI over the library. Exit codes ([`Exit`]): 0 success, 1 an assertion
//! failed (or a replay did not match its recording), 2 bad input or a trial that could not run,
//! 130 interrupted (Ctrl-C; what completed is summarised and written first), 143 SIGTERM.

use anyhow::Context;
use clap::Parser;
use inferlab::calibrate::{self, CalibrateOptions};
use inferlab::harness::{self, Event, Exit, RunArgs, Selection, console};
use inferlab::run;
use inferlab::runpod::matrix::Console;
use inferlab::spec::Experiment;
use inferlab::truth::TruthServer;
use inferlab::watch::Watching;
use std::path::Path;

mod args;
mod deployed;

use args::{Cli, Command, RunCmd};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = dispatch(&cli).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        Exit::BadInput
    });
    ExitCode::from(exit.code())
}

fn dispatch(cli: &Cli) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::List => list(cli),
        Command::Validate { files } => Ok(if console::validate(&cli.experiments, files)? {
            Exit::Success
        } else {
            Exit::BadInput
        }),
        Command::Run(r) => run_cmd(cli, r),
        Command::Compare { runs, json } => {
            let c = inferlab::core::compare::compare(&load_runs(runs)?);
            if *json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print!("{}", c.markdown());
            }
            Ok(Exit::Success)
        }
        Command::Baseline(args::BaselineCommand::Save {
            trial,
            run_dir,
            results,
        }) => save_baselines(cli, trial, run_dir.as_deref(), results),
        Command::Report { runs, output } => {
            let runs = load_runs(runs)?;
            std::fs::write(output, inferlab::core::html::report(&runs))
                .with_context(|| format!("writing {}", output.display()))?;
            println!("report: {}", output.display());
            Ok(Exit::Success)
        }
        Command::Plan { deployment } => {
            run::client_runtime(None)?.block_on(deployed::plan(deployment))
        }
        Command::Up { deployment } => run::client_runtime(None)?.block_on(deployed::up(deployment)),
        Command::Down { pods, all } => {
            run::client_runtime(None)?.block_on(deployed::down(pods, *all))
        }
        Command::TruthServer(t) => {
            let server = TruthServer::start(t.config()?, t.bind)
                .with_context(|| format!("binding {}", t.bind))?;
            println!("truth server on {} (Ctrl-C to stop)", server.url());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(tokio::signal::ctrl_c())?;
            Ok(Exit::Success)
        }
        Command::Summarize { run_dir, force } => summarize(cli, run_dir, *force),
        Command::Calibrate(c) => {
            let rt = run::client_runtime(Some(c.client_workers))?;
            let watching = Watching::start(c.watch())?;
            let opts = CalibrateOptions {
                watch: watching.watch.clone(),
                ..c.options()?
            };
            rt.block_on(calibrate_cmd(&opts, &c.results))
        }
    }
}

/// `run`: the selected trials here, or on a rented pod with `--deploy`.
fn run_cmd(cli: &Cli, r: &RunCmd) -> anyhow::Result<Exit> {
    let rt = run::client_runtime(None).context("starting the async runtime")?;
    let watching = Watching::start(r.watch.config())?;
    let mut args = RunArgs {
        experiments: cli.experiments.clone(),
        fixtures: cli.fixtures.clone(),
        results: r.results.clone(),
        baselines: cli.baselines.clone(),
        selection: Selection {
            filters: r.filters.clone(),
            target: r.target.clone(),
            source: None,
        },
        interrupt: None,
        cost_per_hour: None,
        watch: watching.watch.clone(),
    };
    let code = match &r.deploy {
        None => rt.block_on(async {
            args.interrupt = Some(harness::interrupt_on_ctrl_c());
            let watch = watching.watch.clone();
            let mut print = |e: Event<'_>| {
                // Progress lines out of the way of what is printed.
                if let Some(w) = &watch {
                    w.settle();
                }
                console::print_event(e)
            };
            Ok(harness::run(args, &env, &mut print).await?.code)
        }),
        // A deployed run handles its signals itself: it must release the pod.
        Some(deployment) => rt.block_on(deployed::run(deployment, args, r.keep)),
    }?;
    // A run stopped by a signal is left at once.
    if !matches!(code, Exit::Interrupted | Exit::Terminated) {
        rt.block_on(watching.finish());
    }
    Ok(code)
}

/// `baseline save`: one file per run, each described.
fn save_baselines(
    cli: &Cli,
    trial: &str,
    run_dir: Option<&Path>,
    results: &Path,
) -> anyhow::Result<Exit> {
    use inferlab::baseline::{Baseline, runs_to_save};
    let (runs, notes) = runs_to_save(results, trial, run_dir)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    let saved_at = inferlab::clock::utc_rfc3339(std::time::SystemTime::now());
    for run in runs {
        let b = Baseline::of(&run, saved_at.clone())?;
        let path = b.save(&cli.baselines)?;
        println!("{}", b.describe_saved(&path, &run.dir));
    }
    Ok(Exit::Success)
}

/// The runs `compare` and `report` name, the reference first; notes on stderr.
fn load_runs(args: &args::RunsArgs) -> anyhow::Result<Vec<inferlab::core::compare::RunInput>> {
    let loaded = inferlab::report::load::for_comparison(inferlab::report::load::Request {
        results: &args.results,
        runs: &args.runs,
        reference: args.reference.as_deref(),
        force: args.force,
    })?;
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    Ok(loaded.runs)
}

async fn calibrate_cmd(opts: &CalibrateOptions, results: &Path) -> anyhow::Result<Exit> {
    println!(
        "calibrating against the built-in truth server: ttft {:?}, itl {:?}, {} tokens",
        opts.ttft, opts.itl, opts.tokens
    );
    let cal = calibrate::calibrate(opts, |l| {
        eprintln!(
            "  C={} itl={:.3} ms: ttft error median {:.3} ms",
            l.concurrency, l.itl_ms, l.ttft_error_median_ms
        )
    })
    .await
    .context("starting the truth server")?;
    print!("{}", calibrate::table(&cal));
    std::fs::create_dir_all(results).with_context(|| format!("creating {}", results.display()))?;
    let path = results.join("calibration.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cal)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("written: {}", path.display());
    Ok(Exit::Success)
}

/// `summarize`: a killed run's summary, rebuilt and written.
fn summarize(cli: &Cli, dir: &Path, force: bool) -> anyhow::Result<Exit> {
    use inferlab::trial::recover;
    let (name, _) = recover::manifest_names(dir)?;
    let Some(experiments) = load_all(&cli.experiments)? else {
        return Ok(Exit::BadInput);
    };
    let Some(exp) = experiments.iter().find(|e| e.name == name) else {
        anyhow::bail!(
            "{}: the run is of experiment `{name}`, which is not in {} (--experiments names the folder)",
            dir.display(),
            cli.experiments.display()
        );
    };
    let r = recover::recover(dir, exp, &cli.baselines, force)?;
    print!("{}", r.describe(dir));
    Ok(Exit::Success)
}

/// Loads every experiment; prints each error; `None` when any file is bad.
fn load_all(dir: &Path) -> anyhow::Result<Option<Vec<Experiment>>> {
    let found = harness::discover(dir)?;
    for (_, e) in &found.invalid {
        eprintln!("{e}");
    }
    Ok(found.invalid.is_empty().then_some(found.experiments))
}

fn env(name: &str) -> Option<String> {
    inferlab::env::process(name)
}

fn list(cli: &Cli) -> anyhow::Result<Exit> {
    let Some(exps) = load_all(&cli.experiments)? else {
        return Ok(Exit::BadInput);
    };
    for line in console::listing(&exps, &env, &cli.fixtures) {
        println!("{line}");
    }
    Ok(Exit::Success)
}

/// Where the library's words go: stdout, stderr, and each trial's progress.
pub const CONSOLE: Console = Console {
    out: |s| println!("{s}"),
    err: |s| eprintln!("{s}"),
    event: console::print_event,
};
