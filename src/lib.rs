//! inferlab: controlled, repeatable experiments against LLM inference servers.
//!
//! Data flow: `spec_io` reads experiment files (and the datasets, traces and tokenizer they
//! name) → `spec` (TOML → `Experiment`, pure) → `workload` (pure, seeded → `Schedule`) → `run`
//! (executes against a live URL or the `replay` server, through `client`) → `core::record`
//! (`RequestRecord`s, instants as data) → `core::metrics` (pure `PhaseSummary`) →
//! `core::assert` (verdicts) and `report` (the summary, results directory, snapshot view, on-disk
//! shapes in `report::dto`). `trial` ties one experiment × target together for the CLI and
//! the generated tests, so both do exactly the same thing, as named stages: resolve the target
//! → `preflight` (server facts through `probe`, context and prompt-length checks, calibration)
//! → `observe::Observer` around `run`'s phases → tally → summary and verdicts → results →
//! `replay::Recorder` (live runs recorded as fixtures) → snapshot. While it runs, `watch` counts
//! every send and finished request (`core::live` renders them as a progress line and a
//! Prometheus exposition); `core::slices` cuts the run into time slices; `trial::recover`
//! summarises a run that died from what it left on disk. A capacity search
//! (`trial::capacity`) runs its probes as phases of their own, the pure `workload::capacity`
//! choosing each next load. `harness` discovers, selects and runs the trials (for `inferlab
//! run`, `run --deploy` through `runpod::matrix`, and `tests/experiments.rs` through
//! `harness::cases`); the binary only parses, dispatches and prints. Afterwards,
//! `results::RunDir` reads run directories back, typed (the summary as the `RunSummary` that
//! wrote it; `baseline save`, `summarize`, `compare` and the report all read through it),
//! `report::load` picks the runs a comparison names, `core::compare` sets them side by
//! side (`inferlab compare`) and `core::html` draws them on one page (`inferlab report`).
//!
//! Leaves under everything: `core` (pure: `diag` locates input mistakes, `units` formats,
//! `catalog` names what assertions may read), `env` (the only reader of the environment),
//! `clock` (wall-clock labels) and `cpu` (CPU time). `tests/it/layering.rs` keeps `core` pure
//! (and `spec`, `workload`, the tally, the summary and the report's views as pure; an experiment holds its
//! tokenizer as `core::tokens::Tokenizer`, loaded by `tokenize`) and the module graph free of
//! cycles.

pub mod baseline;
pub mod calibrate;
pub mod client;
pub mod clock;
pub mod core;
pub mod cpu;
pub mod env;
pub mod harness;
pub mod observe;
pub mod preflight;
pub mod probe;
pub mod replay;
pub mod report;
pub mod results;
pub mod run;
pub mod runpod;
pub mod spec;
pub mod spec_io;
pub mod tokenize;
pub mod trial;
pub mod truth;
pub mod watch;
pub mod workload;
