//! `inferlab`: a thin CLI over the library. Exit codes ([`Exit`]): 0 success, 1 an assertion
//! failed (or a replay did not match its recording), 2 bad input or a trial that could not run,
//! 130 interrupted (Ctrl-C; what completed is summarised and written first), 143 SIGTERM.

use anyhow::Context;
use clap::Parser;
use inferlab::calibrate::{self, CalibrateOptions};
use inferlab::harness::{self, Event, Exit, RunArgs, Selection};
use inferlab::runpod::matrix::Console;
use inferlab::spec::Experiment;
use inferlab::spec_io;
use inferlab::trial::{Plan, TrialOutcome};
use inferlab::truth::TruthServer;
use inferlab::watch::{Exporter, ProgressStyle, ProgressThread, Watch};
use inferlab::{report, run};
use std::path::{Path, PathBuf};

mod args;
mod deployed;

use args::{Cli, Command};
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
        Command::Validate { files } => validate(cli, files),
        Command::Run {
            filters,
            target,
            results,
            deploy,
            keep,
            watch,
        } => {
            let rt = run::client_runtime(None).context("starting the async runtime")?;
            let watching = Watching::start(watch)?;
            let mut args = RunArgs {
                experiments: cli.experiments.clone(),
                fixtures: cli.fixtures.clone(),
                results: results.clone(),
                baselines: cli.baselines.clone(),
                selection: Selection {
                    filters: filters.clone(),
                    target: target.clone(),
                    source: None,
                },
                interrupt: None,
                cost_per_hour: None,
                watch: watching.watch.clone(),
            };
            let code = match deploy {
                None => rt.block_on(async {
                    args.interrupt = Some(interrupt_on_ctrl_c());
                    let watch = watching.watch.clone();
                    let mut print = |e: Event<'_>| {
                        // Progress lines out of the way of what is printed.
                        if let Some(w) = &watch {
                            w.settle();
                        }
                        print_event(e)
                    };
                    Ok(harness::run(args, &env, &mut print).await?.code)
                }),
                // A deployed run handles its signals itself: it must release the pod.
                Some(deployment) => rt.block_on(deployed::run(deployment, args, *keep)),
            }?;
            // A run stopped by a signal is left at once.
            if !matches!(code, Exit::Interrupted | Exit::Terminated) {
                rt.block_on(watching.finish());
            }
            Ok(code)
        }
        Command::Compare { runs, json } => {
            let runs = load_runs(runs)?;
            let c = inferlab::core::compare::compare(&runs);
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
            let rt = run::client_runtime(None)?;
            rt.block_on(deployed::plan(deployment))
        }
        Command::Up { deployment } => {
            let rt = run::client_runtime(None)?;
            rt.block_on(deployed::up(deployment))
        }
        Command::Down { pods, all } => {
            let rt = run::client_runtime(None)?;
            rt.block_on(deployed::down(pods, *all))
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
            let watching = Watching::start(&c.watch())?;
            let opts = CalibrateOptions {
                watch: watching.watch.clone(),
                ..c.options()?
            };
            rt.block_on(calibrate_cmd(&opts, &c.results))
        }
    }
}

/// The runs `compare` and `report` name, loaded, the reference first; notes on stderr.
/// Different experiments or seeds are refused unless `force`.
/// `baseline save`: one file per run, each described.
fn save_baselines(
    cli: &Cli,
    trial: &str,
    run_dir: Option<&Path>,
    results: &Path,
) -> anyhow::Result<Exit> {
    use inferlab::baseline::{Baseline, runs_to_save};
    let (runs, notes) = runs_to_save(results, trial, run_dir).map_err(anyhow::Error::msg)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    let saved_at = inferlab::clock::utc_rfc3339(std::time::SystemTime::now());
    for run in runs {
        let b = Baseline::of(&run, saved_at.clone()).map_err(anyhow::Error::msg)?;
        let path = b.save(&cli.baselines).map_err(anyhow::Error::msg)?;
        let phases: Vec<&str> = b.phases.iter().map(|p| p.name.as_str()).collect();
        println!(
            "baseline {}::{}: {} ({} mode, {} repeat{}, phases {}) from {}",
            b.experiment,
            b.target,
            path.display(),
            b.source.mode,
            b.repeats,
            if b.repeats == 1 { "" } else { "s" },
            phases.join(", "),
            run.dir.display()
        );
        if b.repeats < 2 {
            println!(
                "  note: one run, so no intervals: assertions against it compare single figures; `repeats = N` in the experiment gives noise-aware verdicts"
            );
        }
    }
    Ok(Exit::Success)
}

fn load_runs(args: &args::RunsArgs) -> anyhow::Result<Vec<inferlab::core::compare::RunInput>> {
    use inferlab::core::compare;
    use inferlab::report::load;
    let resolved = load::resolve(&args.results, &args.runs).map_err(anyhow::Error::msg)?;
    for note in &resolved.notes {
        eprintln!("note: {note}");
    }
    let mut runs = resolved
        .runs
        .iter()
        .map(|dir| load::load_run(dir))
        .collect::<Result<Vec<_>, String>>()
        .map_err(anyhow::Error::msg)?;
    if let Some(name) = args.reference.as_deref() {
        let Some(i) = runs.iter().position(|r| r.target == name) else {
            let names: Vec<&str> = runs.iter().map(|r| r.target.as_str()).collect();
            anyhow::bail!(
                "--reference {name}: no run of that target among {}",
                names.join(", ")
            );
        };
        let first = runs.remove(i);
        runs.insert(0, first);
    }
    if let Err(why) = compare::check_comparable(&runs) {
        if !args.force {
            anyhow::bail!(why);
        }
        eprintln!("note: {why}");
    }
    Ok(runs)
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
    let (name, _) = recover::manifest_names(dir).map_err(anyhow::Error::msg)?;
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
    let r = recover::recover(dir, exp, &cli.baselines, force).map_err(anyhow::Error::msg)?;
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let (requests, scrapes, cut) = r.summary.recovered.as_ref().map_or((0, 0, None), |x| {
        (x.requests, x.scrapes, x.partial_last_line)
    });
    println!(
        "{}::{} recovered from {requests} request{} and {scrapes} scrape{}{}",
        r.summary.experiment,
        r.summary.target,
        plural(requests),
        plural(scrapes),
        cut.map_or(String::new(), |l| format!(
            "; line {l} of requests.jsonl was cut short when the run died and is skipped"
        )),
    );
    print!("{}", report::phase_table(&r.summary));
    if !r.verdicts.is_empty() {
        // Informational: the run did not finish, so its verdicts do not decide anything.
        println!("assertions over the requests that completed:");
        print!("{}", report::verdict_lines(&r.verdicts));
    }
    println!("written: {}", dir.join("summary.json").display());
    Ok(Exit::Success)
}

/// What watches a run: the progress thread and the Prometheus endpoint (each when asked for),
/// stopped when dropped.
struct Watching {
    watch: Option<std::sync::Arc<Watch>>,
    _progress: Option<ProgressThread>,
    exporter: Option<Exporter>,
    linger: std::time::Duration,
}

impl Watching {
    fn start(args: &args::WatchArgs) -> anyhow::Result<Self> {
        if args.no_progress && args.prometheus.is_none() {
            return Ok(Self {
                watch: None,
                _progress: None,
                exporter: None,
                linger: args.prometheus_linger,
            });
        }
        let watch = Watch::new();
        let exporter = args
            .prometheus
            .map(|addr| Exporter::start(addr, watch.clone()))
            .transpose()?;
        if let Some(e) = &exporter {
            eprintln!(
                "serving the run's figures for Prometheus at http://{}/metrics",
                e.addr
            );
        }
        let progress = (!args.no_progress)
            .then(|| ProgressThread::start(watch.clone(), ProgressStyle::for_stderr()))
            .transpose()
            .context("starting the progress thread")?;
        Ok(Self {
            watch: Some(watch),
            _progress: progress,
            exporter,
            linger: args.prometheus_linger,
        })
    }

    /// The run is over: the endpoint, if something scrapes it, waits for one more scrape (at
    /// most the linger; Ctrl-C ends the wait).
    async fn finish(&self) {
        let Some(e) = &self.exporter else { return };
        if e.scrapes() == 0 || self.linger.is_zero() {
            return;
        }
        eprintln!(
            "the run is over: http://{}/metrics serves its final figures until the next scrape \
             (at most {:?}; --prometheus-linger 0s to skip)",
            e.addr, self.linger
        );
        tokio::select! {
            _ = e.last_scrape(self.linger) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
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
    for t in harness::trials(&exps, &Selection::default(), &env, &cli.fixtures) {
        let mode = match t.plan {
            Ok(Plan::Ignored { reason }) => format!("ignored: {reason}"),
            Ok(p) => p.mode().map_or("", |m| m.as_str()).to_string(),
            Err(err) => format!("error: {err}"),
        };
        println!("{}  [{mode}]", t.name);
    }
    for t in harness::across::entries(&exps, &Selection::default(), &env, &cli.fixtures) {
        let mode = match t.plan {
            Ok(mode) => mode.as_str().to_string(),
            Err(reason) => format!("ignored: {reason}"),
        };
        println!("{}  [{mode}]", t.name);
    }
    Ok(Exit::Success)
}

fn validate(cli: &Cli, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let files = if files.is_empty() {
        spec_io::discover(&cli.experiments)
            .with_context(|| format!("reading {}", cli.experiments.display()))?
    } else {
        files.to_vec()
    };
    let mut bad = 0;
    for f in &files {
        match spec_io::load(f) {
            Ok(e) => println!(
                "ok  {} ({} phases, {} targets, {} assertions)",
                f.display(),
                e.phases.len(),
                e.targets.len(),
                e.assertions.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                bad += 1;
            }
        }
    }
    Ok(if bad > 0 {
        Exit::BadInput
    } else {
        Exit::Success
    })
}

/// A flag that turns true on the first Ctrl-C (a second one exits at once, as usual).
fn interrupt_on_ctrl_c() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ninterrupted: finishing the results of what completed (Ctrl-C again to quit)"
            );
            let _ = tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(Exit::Interrupted.code().into());
            }
        }
    });
    rx
}

/// Where the library's words go: stdout, stderr, and each trial's progress.
pub const CONSOLE: Console = Console {
    out: |s| println!("{s}"),
    err: |s| eprintln!("{s}"),
    event: print_event,
};

fn print_event(event: Event<'_>) {
    match event {
        Event::Invalid(e) => eprintln!("{e}"),
        Event::Skipped { name, reason } => println!("== {name}: skipped: {reason}\n"),
        Event::BadTarget { name, error } => eprintln!("== {name}: {error}\n"),
        Event::Started { name, mode } => println!("== {name} [{}]", mode.as_str()),
        Event::Finished { outcome, .. } => print_outcome(outcome),
        Event::AcrossFinished { outcome, .. } => {
            print!("{}", report::verdict_lines(&outcome.verdicts));
            for (target, dir) in &outcome.runs {
                println!("{target}: {}", dir.display());
            }
            println!();
        }
        Event::Broken { name, error } => eprintln!("{name}: {error}\n"),
        Event::NoneSelected { filters } => eprintln!("no trial matches {filters:?}"),
    }
}

fn print_outcome(out: &TrialOutcome) {
    print!("{}", report::phase_table(&out.summary));
    if !out.verdicts.is_empty() {
        println!();
        print!("{}", report::verdict_lines(&out.verdicts));
    }
    for u in &out.replay_unmatched {
        println!("replay mismatch: {u}");
    }
    for w in &out.write_errors {
        eprintln!("warning: writing requests.jsonl: {w}");
    }
    if let Some(f) = &out.fixture_written {
        println!("fixture written: {}", f.display());
    }
    println!("results: {}\n", out.dir.display());
    if out.summary.interrupted {
        println!("interrupted: the results above cover what completed; later trials were not run");
    }
}
