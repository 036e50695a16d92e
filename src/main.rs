//! `inferlab`: a thin CLI over the library. Exit codes ([`Exit`]): 0 success, 1 an assertion
//! failed (or a replay did not match its recording), 2 bad input or a trial that could not run,
//! 130 interrupted (Ctrl-C; what completed is summarised and written first), 143 SIGTERM.

use anyhow::Context;
use clap::{Parser, Subcommand};
use inferlab::calibrate::{self, CalibrateOptions};
use inferlab::harness::{self, Selection};
use inferlab::spec::{self, Experiment};
use inferlab::trial::{self, Plan, TrialOptions};
use inferlab::truth::{TruthConfig, TruthServer};
use inferlab::{report, run};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod deployed;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "inferlab",
    version,
    about = "Latency and throughput experiments against LLM inference servers"
)]
struct Cli {
    /// Directory of experiment files.
    #[arg(
        long,
        global = true,
        default_value = "experiments",
        env = "INFERLAB_EXPERIMENTS_DIR"
    )]
    experiments: PathBuf,
    /// Directory of recorded fixtures.
    #[arg(
        long,
        global = true,
        default_value = "wiremock-fixtures",
        env = "INFERLAB_FIXTURES_DIR"
    )]
    fixtures: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every trial (`<experiment>::<target>`) and the mode it would run in.
    List,
    /// Check experiment files (all of them when none are given).
    Validate { files: Vec<PathBuf> },
    /// Run the trials whose name contains any FILTER (all when none is given).
    Run {
        filters: Vec<String>,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Where results go.
        #[arg(long, default_value = "results", env = "INFERLAB_RESULTS_DIR")]
        results: PathBuf,
        /// Rent a RunPod pod for this deployment file, run the trials of the target it serves
        /// against it, then terminate it.
        #[arg(long)]
        deploy: Option<PathBuf>,
        /// With --deploy: leave the pod running afterwards.
        #[arg(long, requires = "deploy")]
        keep: bool,
    },
    /// Print a deployment's memory arithmetic; with RUNPOD_API_KEY, the cheapest GPU that fits.
    Plan { deployment: PathBuf },
    /// Create a deployment's pod, wait until its engine is healthy, and leave it running.
    Up { deployment: PathBuf },
    /// Terminate pods: those named, or every pod in the ledger with --all.
    Down {
        pods: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Serve ground-truth streams: one token per chunk at exact deadlines, every write
    /// recorded (GET /truth/records).
    TruthServer {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:8089")]
        bind: std::net::SocketAddr,
        /// Time to first token, in milliseconds (per request: header x-truth-ttft-us).
        #[arg(long, default_value_t = 20.0)]
        ttft_ms: f64,
        /// Inter-token latency, in milliseconds (per request: header x-truth-itl-us).
        #[arg(long, default_value_t = 10.0)]
        itl_ms: f64,
        /// Tokens when a request has no max_tokens.
        #[arg(long, default_value_t = 64)]
        tokens: u32,
        /// Server threads (1: a single-threaded runtime).
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Measure this machine's client against the built-in truth server: TTFT and ITL errors,
    /// achieved request rate, connections, client CPU, and the chunk-rate ceiling.
    Calibrate {
        /// Concurrent streams, one level each.
        #[arg(long, value_delimiter = ',', default_value = "1,64,256,512")]
        concurrency: Vec<u32>,
        /// Requests per stream at each level (the first, connection-opening wave excluded
        /// from the statistics).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long, default_value_t = 20.0)]
        ttft_ms: f64,
        #[arg(long, default_value_t = 10.0)]
        itl_ms: f64,
        #[arg(long, default_value_t = 64)]
        tokens: u32,
        /// ITLs (ms) tried at --ceiling-concurrency to find the highest faithful chunk rate;
        /// empty to skip.
        #[arg(long, value_delimiter = ',', default_value = "8,4,2,1")]
        ceiling_itl_ms: Vec<f64>,
        #[arg(long, default_value_t = 512)]
        ceiling_concurrency: u32,
        /// Skip the ceiling search.
        #[arg(long)]
        no_ceiling: bool,
        /// Client runtime worker threads (0: INFERLAB_CLIENT_WORKERS, else 1).
        #[arg(long, default_value_t = 0)]
        client_workers: usize,
        /// Truth server threads.
        #[arg(long, default_value_t = 1)]
        server_workers: usize,
        /// Where calibration.json goes.
        #[arg(long, default_value = "results", env = "INFERLAB_RESULTS_DIR")]
        results: PathBuf,
    },
}

/// What a command's outcome means to the shell. Ordered by severity, so the worst of several
/// (a matrix of runs) is their `max`; turned into an `ExitCode` once, in `main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: everything ran and passed.
    Success,
    /// 1: an assertion failed, a replay did not match its recording, a deployment does not
    /// fit, or a pod could not be terminated.
    Failed,
    /// 2: bad input, or a trial that could not run.
    BadInput,
    /// 130: stopped by Ctrl-C (SIGINT); what completed was summarised and written.
    Interrupted,
    /// 143: stopped by SIGTERM.
    Terminated,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed => 1,
            Exit::BadInput => 2,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// The exit for a run stopped by a signal (`SIGTERM`, `SIGINT`, …).
    pub fn stopped_by(signal: &str) -> Exit {
        if signal == "SIGTERM" {
            Exit::Terminated
        } else {
            Exit::Interrupted
        }
    }
}

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
        } => {
            let rt = run::client_runtime(None).context("starting the async runtime")?;
            let args = RunArgs {
                experiments: cli.experiments.clone(),
                fixtures: cli.fixtures.clone(),
                filters: filters.clone(),
                only: target.clone(),
                results: results.clone(),
                overrides: BTreeMap::new(),
                // A deployed run handles its signals itself: it must release the pod.
                interrupt: deploy.is_none(),
                cost_per_hour: None,
            };
            match deploy {
                None => rt.block_on(async { run(args).await.map(|r| r.code) }),
                Some(deployment) => rt.block_on(deployed::run(deployment, args, *keep)),
            }
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
        Command::TruthServer {
            bind,
            ttft_ms,
            itl_ms,
            tokens,
            workers,
        } => {
            let cfg = TruthConfig {
                ttft: millis(*ttft_ms, "--ttft-ms")?,
                itl: millis(*itl_ms, "--itl-ms")?,
                tokens: *tokens,
                workers: *workers,
                record: true,
            };
            let server =
                TruthServer::start(cfg, *bind).with_context(|| format!("binding {bind}"))?;
            println!("truth server on {} (Ctrl-C to stop)", server.url());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(tokio::signal::ctrl_c())?;
            Ok(Exit::Success)
        }
        Command::Calibrate {
            concurrency,
            rounds,
            ttft_ms,
            itl_ms,
            tokens,
            ceiling_itl_ms,
            ceiling_concurrency,
            no_ceiling,
            client_workers,
            server_workers,
            results,
        } => {
            let opts = CalibrateOptions {
                concurrency: concurrency.clone(),
                rounds: *rounds,
                ttft: millis(*ttft_ms, "--ttft-ms")?,
                itl: millis(*itl_ms, "--itl-ms")?,
                tokens: *tokens,
                ceiling_itls: ceiling_itl_ms
                    .iter()
                    .filter(|_| !*no_ceiling)
                    .map(|&m| millis(m, "--ceiling-itl-ms"))
                    .collect::<anyhow::Result<_>>()?,
                ceiling_concurrency: *ceiling_concurrency,
                server_workers: *server_workers,
            };
            let rt = run::client_runtime(Some(*client_workers))?;
            rt.block_on(calibrate_cmd(&opts, results))
        }
    }
}

fn millis(ms: f64, flag: &str) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(ms / 1e3)
        .map_err(|_| anyhow::anyhow!("{flag}: {ms} is not a duration in milliseconds"))
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

/// Loads every experiment; prints each error; `None` when any file is bad.
pub(crate) fn load_all(dir: &Path) -> anyhow::Result<Option<Vec<Experiment>>> {
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
    Ok(Exit::Success)
}

fn validate(cli: &Cli, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let files = if files.is_empty() {
        spec::discover(&cli.experiments)
            .with_context(|| format!("reading {}", cli.experiments.display()))?
    } else {
        files.to_vec()
    };
    let mut bad = 0;
    for f in &files {
        match spec::load(f) {
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

/// What `run` needs, owned (a deployed run hands it to a task of its own).
pub struct RunArgs {
    pub experiments: PathBuf,
    pub fixtures: PathBuf,
    pub filters: Vec<String>,
    pub only: Option<String>,
    pub results: PathBuf,
    /// Environment values that win over the process's (a deployed pod's id and port).
    pub overrides: BTreeMap<String, String>,
    /// Handle Ctrl-C here (a deployed run handles signals itself).
    pub interrupt: bool,
    /// The rented pod's price, when there is one.
    pub cost_per_hour: Option<f64>,
}

/// One trial's headline figures, for side-by-side tables.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialLine {
    pub trial: String,
    pub passed: bool,
    pub requests: u64,
    pub failed: u64,
    pub ttft_p50_ms: Option<f64>,
    pub tpot_p50_ms: Option<f64>,
    pub output_throughput: f64,
}

/// What the selected trials did.
pub struct RunResult {
    /// What this run means to the shell (success, failed, bad input or interrupted).
    pub code: Exit,
    /// Output tokens summed over every trial.
    pub output_tokens: u64,
    pub trials: Vec<TrialLine>,
}

/// Runs the selected trials.
async fn run(args: RunArgs) -> anyhow::Result<RunResult> {
    let Some(exps) = load_all(&args.experiments)? else {
        return Ok(RunResult {
            code: Exit::BadInput,
            output_tokens: 0,
            trials: Vec::new(),
        });
    };
    let mut lines = Vec::new();
    let overrides = args.overrides.clone();
    let env = move |k: &str| overrides.get(k).cloned().or_else(|| env(k));
    let selection = Selection {
        filters: args.filters.clone(),
        target: args.only.clone(),
    };
    let opts = TrialOptions {
        results_root: args.results.clone(),
        fixtures_root: args.fixtures.clone(),
        salt: env("INFERLAB_SALT").and_then(|s| s.parse().ok()),
        interrupt: args.interrupt.then(interrupt_on_ctrl_c),
        cost_per_hour: args.cost_per_hour,
    };
    let mut output_tokens = 0u64;
    let mut failed = false;
    let mut broken = false;
    let selected = harness::trials(&exps, &selection, &env, &args.fixtures);
    let none_selected = selected.is_empty();
    for entry in selected {
        let (e, t, name) = (entry.experiment, entry.target, &entry.name);
        let plan = match entry.plan {
            Ok(Plan::Ignored { reason }) => {
                println!("== {name}: skipped: {reason}\n");
                continue;
            }
            Ok(p) => p,
            Err(err) => {
                eprintln!("== {name}: {err}\n");
                broken = true;
                continue;
            }
        };
        let mode = plan.mode().map_or("", |m| m.as_str());
        println!("== {name} [{mode}]");
        match trial::run_trial(e, t, plan, &opts).await {
            Ok(out) => {
                output_tokens += out.summary.all.output_tokens;
                let all = &out.summary.all;
                lines.push(TrialLine {
                    trial: name.clone(),
                    passed: out.passed(),
                    requests: all.requests,
                    failed: all.failed,
                    ttft_p50_ms: all.ttft.as_ref().map(|l| l.p50_ms),
                    tpot_p50_ms: all.tpot.as_ref().map(|l| l.p50_ms),
                    output_throughput: all.output_throughput,
                });
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
                failed |= !out.passed();
                if out.summary.interrupted {
                    println!(
                        "interrupted: the results above cover what completed; later trials were not run"
                    );
                    return Ok(RunResult {
                        code: Exit::Interrupted,
                        output_tokens,
                        trials: lines,
                    });
                }
            }
            Err(err) => {
                eprintln!("{name}: {err}\n");
                broken = true;
            }
        }
    }
    if none_selected {
        eprintln!("no trial matches {:?}", selection.filters);
        return Ok(RunResult {
            code: Exit::BadInput,
            output_tokens,
            trials: lines,
        });
    }
    let code = if broken {
        Exit::BadInput
    } else if failed {
        Exit::Failed
    } else {
        Exit::Success
    };
    Ok(RunResult {
        code,
        output_tokens,
        trials: lines,
    })
}
