//! The command line: what `inferlab` accepts, parsed by clap.

use clap::{Args, Parser, Subcommand};
use inferlab::calibrate::CalibrateOptions;
use inferlab::truth::TruthConfig;
use inferlab::watch::WatchConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "inferlab",
    version,
    about = "Latency and throughput experiments against LLM inference servers"
)]
pub struct Cli {
    /// Directory of experiment files.
    #[arg(
        long,
        global = true,
        default_value = "experiments",
        env = "INFERLAB_EXPERIMENTS_DIR"
    )]
    pub experiments: PathBuf,
    /// Directory of recorded fixtures.
    #[arg(
        long,
        global = true,
        default_value = "wiremock-fixtures",
        env = "INFERLAB_FIXTURES_DIR"
    )]
    pub fixtures: PathBuf,
    /// Directory of baselines (`<experiment>__<target>.json`).
    #[arg(
        long,
        global = true,
        default_value = "baselines",
        env = "INFERLAB_BASELINES_DIR"
    )]
    pub baselines: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List every trial (`<experiment>::<target>`) and the mode it would run in.
    List,
    /// Check experiment files (all of them when none are given).
    Validate { files: Vec<PathBuf> },
    /// Run the trials whose name contains any FILTER (all when none is given).
    Run(RunCmd),
    /// Compare runs of one experiment side by side, per phase, with ratios to the first and
    /// intervals for medians. Each RUN is a run directory or an experiment's name (the latest
    /// finished run of each of its targets).
    Compare {
        #[command(flatten)]
        runs: RunsArgs,
        /// JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Write one self-contained HTML page (inline SVG and CSS, nothing fetched) of runs of one
    /// experiment: provenance, per-phase tables, TTFT and ITL distributions, server timelines.
    /// Each RUN is a run directory or an experiment's name, as for `compare`.
    Report {
        #[command(flatten)]
        runs: RunsArgs,
        /// The file to write.
        #[arg(short, long, default_value = "report.html")]
        output: PathBuf,
    },
    /// Baselines that assertions compare runs with (`baseline.warm.ttft.p99`).
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Rebuild summary.json of a run that died before writing it (kill -9, a lost machine)
    /// from its requests.jsonl and server_metrics.jsonl, with the experiment it ran (from
    /// --experiments); the summary says it was recovered.
    Summarize {
        /// The run's directory (results/<experiment>/<time>-<target>).
        run_dir: PathBuf,
        /// Rebuild even when the run has its summary.
        #[arg(long)]
        force: bool,
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
    TruthServer(TruthArgs),
    /// Measure this machine's client against the built-in truth server: TTFT and ITL errors,
    /// achieved request rate, connections, client CPU, and the chunk-rate ceiling.
    Calibrate(CalibrateArgs),
}

// `run`'s arguments (its help is the `Run` variant's).
#[derive(Args)]
pub struct RunCmd {
    pub filters: Vec<String>,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Where results go.
    #[arg(long, default_value = "results", env = "INFERLAB_RESULTS_DIR")]
    pub results: PathBuf,
    /// Rent a RunPod pod for this deployment file, run the trials of the target it serves
    /// against it, then terminate it.
    #[arg(long)]
    pub deploy: Option<PathBuf>,
    /// With --deploy: leave the pod running afterwards.
    #[arg(long, requires = "deploy")]
    pub keep: bool,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Subcommand)]
pub enum BaselineCommand {
    /// Save a finished run as `<baselines>/<experiment>__<target>.json` (to be committed). TRIAL
    /// is `experiment::target`, or an experiment for each of its targets; without RUN_DIR, the
    /// latest finished run of each under --results.
    Save {
        trial: String,
        run_dir: Option<PathBuf>,
        /// Where experiments' runs are.
        #[arg(long, default_value = "results", env = "INFERLAB_RESULTS_DIR")]
        results: PathBuf,
    },
}

/// Watching a run: progress on stderr, and the client's own figures for Prometheus.
#[derive(Args, Clone)]
pub struct WatchArgs {
    /// Serve the run's client-side figures (requests by outcome and error kind, in flight,
    /// output tokens, TTFT/TPOT/ITL/E2E histograms, achieved rate) for Prometheus at
    /// http://ADDR/metrics while it runs, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR", env = "INFERLAB_PROMETHEUS")]
    pub prometheus: Option<std::net::SocketAddr>,
    /// Once the run is over, keep the endpoint up until the next scrape, which reads the run's
    /// final figures (otherwise a scraper misses what happened after its last scrape); at most
    /// this long, and only if something scraped during the run. `0s`: stop at once.
    #[arg(
        long,
        value_name = "DURATION",
        env = "INFERLAB_PROMETHEUS_LINGER",
        default_value = "30s",
        value_parser = inferlab::core::diag::parse_duration
    )]
    pub prometheus_linger: Duration,
    /// No progress on stderr (by default a line redrawn in place on a terminal, one line per
    /// finished phase otherwise).
    #[arg(long)]
    pub no_progress: bool,
}

impl WatchArgs {
    pub fn config(&self) -> WatchConfig {
        WatchConfig {
            progress: !self.no_progress,
            prometheus: self.prometheus,
            linger: self.prometheus_linger,
        }
    }
}

/// The runs `compare` and `report` read.
#[derive(Args)]
pub struct RunsArgs {
    /// Run directories, or experiments' names (the latest finished run of each target).
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// Take runs of different experiments or seeds anyway.
    #[arg(long)]
    pub force: bool,
    /// The target the ratios are to (default: the first run).
    #[arg(long)]
    pub reference: Option<String>,
    /// Where experiments' runs are.
    #[arg(long, default_value = "results", env = "INFERLAB_RESULTS_DIR")]
    pub results: PathBuf,
}

/// `truth-server`'s flags.
#[derive(Args)]
pub struct TruthArgs {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub bind: std::net::SocketAddr,
    /// Time to first token, in milliseconds (per request: header x-truth-ttft-us).
    #[arg(long, default_value_t = 20.0)]
    pub ttft_ms: f64,
    /// Inter-token latency, in milliseconds (per request: header x-truth-itl-us).
    #[arg(long, default_value_t = 10.0)]
    pub itl_ms: f64,
    /// Tokens when a request has no max_tokens.
    #[arg(long, default_value_t = 64)]
    pub tokens: u32,
    /// Server threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

/// `calibrate`'s flags.
#[derive(Args)]
pub struct CalibrateArgs {
    /// Concurrent streams, one level each.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,512")]
    pub concurrency: Vec<u32>,
    /// Requests per stream at each level (the first, connection-opening wave excluded
    /// from the statistics).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    #[arg(long, default_value_t = 20.0)]
    pub ttft_ms: f64,
    #[arg(long, default_value_t = 10.0)]
    pub itl_ms: f64,
    #[arg(long, default_value_t = 64)]
    pub tokens: u32,
    /// ITLs (ms) tried at --ceiling-concurrency to find the highest faithful chunk rate;
    /// empty to skip.
    #[arg(long, value_delimiter = ',', default_value = "8,4,2,1")]
    pub ceiling_itl_ms: Vec<f64>,
    #[arg(long, default_value_t = 512)]
    pub ceiling_concurrency: u32,
    /// Skip the ceiling search.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Client runtime worker threads (0: INFERLAB_CLIENT_WORKERS, else 1).
    #[arg(long, default_value_t = 0)]
    pub client_workers: usize,
    /// Truth server threads.
    #[arg(long, default_value_t = 1)]
    pub server_workers: usize,
    /// Where calibration.json goes.
    #[arg(long, default_value = "results", env = "INFERLAB_RESULTS_DIR")]
    pub results: PathBuf,
    /// Watch the calibration as a run is watched (the progress line), to measure what
    /// watching costs the client's timing (off by default).
    #[arg(long)]
    pub progress: bool,
    /// Serve its figures for Prometheus at http://ADDR/metrics, to measure what that costs.
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<std::net::SocketAddr>,
}

fn millis(ms: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(ms / 1e3)
        .map_err(|_| anyhow::anyhow!("{flag}: {ms} is not a duration in milliseconds"))
}

impl TruthArgs {
    pub fn config(&self) -> anyhow::Result<TruthConfig> {
        Ok(TruthConfig {
            ttft: millis(self.ttft_ms, "--ttft-ms")?,
            itl: millis(self.itl_ms, "--itl-ms")?,
            tokens: self.tokens,
            workers: self.workers,
            record: true,
        })
    }
}

impl CalibrateArgs {
    /// Watching, only where asked for.
    pub fn watch(&self) -> WatchConfig {
        WatchConfig {
            prometheus: self.prometheus,
            // Nothing reads a calibration's final figures from the endpoint.
            linger: Duration::ZERO,
            progress: self.progress,
        }
    }

    pub fn options(&self) -> anyhow::Result<CalibrateOptions> {
        Ok(CalibrateOptions {
            concurrency: self.concurrency.clone(),
            rounds: self.rounds,
            ttft: millis(self.ttft_ms, "--ttft-ms")?,
            itl: millis(self.itl_ms, "--itl-ms")?,
            tokens: self.tokens,
            ceiling_itls: self
                .ceiling_itl_ms
                .iter()
                .filter(|_| !self.no_ceiling)
                .map(|&m| millis(m, "--ceiling-itl-ms"))
                .collect::<anyhow::Result<_>>()?,
            ceiling_concurrency: self.ceiling_concurrency,
            server_workers: self.server_workers,
            watch: None,
        })
    }
}
