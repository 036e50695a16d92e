//! The pure core: values in, values out. Nothing under `core/` reads the clock, the
//! environment, files or the network (a test fails the build if one does), so everything here
//! is tested without setting anything up.
//!
//! Leaves first: `diag` (where an input's mistake is), `units` (formatting of units and
//! times), `engine` (per-engine knowledge), `catalog` (the names assertions may use),
//! `interval` (confidence intervals over repeats), `b64`; then
//! `assert` (expressions over them), `record` (what one request did, as offsets), `rng` (seeded
//! randomness), `compare` (runs of one experiment side by side), `svg` and `html` (the report
//! page drawn from them), the wire
//! formats `sse` and `prom`, `server` (an engine's `/metrics` → canonical series and per-phase
//! figures), `metrics` (records → per-phase summaries), `live` (a run's counters while it runs, as a
//! Prometheus exposition and a progress line) and `slices` (figures per time slice); `privacy` (what a recording must not keep);
//! `tokens` (a model's tokenizer as an experiment holds it); `baseline` (a baseline as data).

pub mod assert;
pub mod b64;
pub mod baseline;
pub mod catalog;
pub mod compare;
pub mod diag;
pub mod engine;
pub mod fidelity;
pub mod html;
pub mod interval;
pub mod live;
pub mod metrics;
pub mod privacy;
pub mod prom;
pub mod record;
pub mod report;
pub mod rng;
pub mod server;
pub mod slices;
pub mod sse;
pub mod svg;
pub mod tokens;
pub mod units;
