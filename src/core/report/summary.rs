//! `summary.json`: the run's figures per phase and over the run, its verdicts and its
//! conditions, written once at the end of a run and read back typed (by assertions through
//! [`Lookup`], and by compare, the report, baselines and `summarize`).

use crate::core::assert::{Lookup, Path as MetricPath, Verdict};
use crate::core::catalog::Mode;
use crate::core::catalog::{Dim, Scope, Value, server_metric_is_time};
use crate::core::fidelity::Fidelity;
use crate::core::interval::{Interval, Repeated};
use crate::core::metrics::{PhaseSummary, interval_key};
use crate::core::report::{PromptLengths, ServerMetrics};
use crate::core::server::ServerSummary;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Version of every results file's layout: 2 names units in the experiment's fields
/// (`duration_s`, `think_time_s`, `rate_per_s`, timeouts in `*_s`) and gives `calibration.json`
/// and `matrix.json` a `schema_version` of their own.
pub const RESULTS_SCHEMA_VERSION: u32 = 2;

/// A phase's summary with its name, in schedule order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedSummary {
    pub name: String,
    #[serde(flatten)]
    pub summary: PhaseSummary,
    /// Server-side figures from `/metrics`, when scraped.
    pub server: Option<ServerSummary>,
    /// Declared versus achieved load.
    pub fidelity: Fidelity,
    /// Multi-turn and agentic phases: the same figures by turn (or step) index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_turn: BTreeMap<u32, PhaseSummary>,
    /// With repeats: each client statistic's mean over them and its 95 % interval, keyed by
    /// the summary's field names (`ttft.p50_ms`, `error_rate`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub intervals: BTreeMap<String, Interval>,
    /// A capacity search: what it found (its probes are the phases after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

impl NamedSummary {
    /// A phase's client figures with nothing beside them: no server view, nothing to hold its
    /// load to, no turns, repeats or search.
    pub fn of(name: &str, summary: PhaseSummary) -> Self {
        Self {
            name: name.to_string(),
            summary,
            server: None,
            fidelity: Fidelity::default(),
            by_turn: BTreeMap::new(),
            intervals: BTreeMap::new(),
            capacity: None,
        }
    }
}

/// What a capacity search varied: requests in flight, or requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchedOver {
    Concurrency,
    Rate,
}

impl SearchedOver {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Concurrency => "concurrency",
            Self::Rate => "rate",
        }
    }
}

/// What a capacity search found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capacity {
    pub over: SearchedOver,
    /// The highest load whose probe met the SLO (`None`: not even the lowest).
    pub max_passing: Option<f64>,
    /// The lowest load whose probe missed it (`None`: the highest passed).
    pub first_failing: Option<f64>,
    /// Found to within one step (false: the probes ran out, or the run died mid-search;
    /// `max_passing` is a lower bound).
    pub converged: bool,
    /// The search was stopped before its end (a killed run's search, recovered).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_short: bool,
    pub probes: Vec<CapacityProbe>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityProbe {
    pub phase: String,
    pub load: f64,
    /// Whether the search took the probe as meeting the SLO.
    pub passed: bool,
    /// Set only in replay, where the probe's replayed figures decided otherwise than its
    /// recording did (a loaded machine delays replayed streams): the search follows the
    /// recorded probes, so it never asks for a load that has no recorded exchanges, and this
    /// says what the figures alone decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures_passed: Option<bool>,
}

impl Capacity {
    /// `max_passing` (0 when nothing passed), `first_failing`, `probes` (how many ran).
    pub fn value(&self, metric: &str) -> Option<f64> {
        match metric {
            "max_passing" => Some(self.max_passing.unwrap_or(0.0)),
            "first_failing" => self.first_failing,
            "probes" => Some(self.probes.len() as f64),
            _ => None,
        }
    }
}

/// How a run's intervals were made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Repeats {
    pub repeats: u32,
    pub method: Cow<'static, str>,
    pub confidence: f64,
    /// Which repeats these are: runs with the same pairing (replays of one recording) have
    /// corresponding repeats, compared repeat by repeat; others are compared as independent.
    pub pairing: String,
    pub note: Cow<'static, str>,
}

pub const REPEATS_NOTE: &str = "Each phase ran once per repeat, in order, with fresh prompts. The pooled figures cover every repeat; `intervals` give each client statistic's per-repeat values, their mean and a two-sided Student-t interval for that mean. Assertions read the mean and decide on the interval of left minus right.";

/// An assertion verdict as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerdictRow {
    pub expr: String,
    pub passed: bool,
    /// `passed`, `failed` or `inconclusive` (an interval that straddles the threshold; it
    /// passes unless the experiment is strict).
    pub outcome: Cow<'static, str>,
    /// With repeats: the 95 % interval of left − right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference_ci: Option<[f64; 2]>,
    pub lhs: Option<f64>,
    pub rhs: Option<f64>,
    /// `s` for durations (values in seconds), empty for plain numbers.
    pub unit: Cow<'static, str>,
    pub operands: BTreeMap<String, Option<f64>>,
    pub reason: Option<String>,
    /// With a calibration: the sides differ by no more than the client's own error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_noise_floor: Option<bool>,
}

impl From<&Verdict> for VerdictRow {
    fn from(v: &Verdict) -> Self {
        Self {
            expr: v.source.clone(),
            passed: v.passed,
            outcome: v.outcome.name().into(),
            difference_ci: v.interval.map(|(lo, hi)| [lo, hi]),
            lhs: v.lhs,
            rhs: v.rhs,
            unit: match v.dim {
                Dim::Time => "s",
                Dim::Plain => "",
            }
            .into(),
            operands: v
                .operands
                .iter()
                .map(|o| (o.path.clone(), o.value.map(|x| x.value)))
                .collect(),
            reason: v.reason.clone(),
            within_noise_floor: v.within_noise_floor(),
        }
    }
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub schema_version: u32,
    pub experiment: String,
    pub target: String,
    pub mode: Mode,
    /// Whether prompts have exactly their declared token lengths: checked against the server's
    /// tokenizer (`/tokenize`) on a sample of prompts when the engine has one.
    pub prompt_lengths: PromptLengths,
    pub phases: Vec<NamedSummary>,
    pub all: PhaseSummary,
    /// With repeats: the whole run's intervals (as a phase's `intervals`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub all_intervals: BTreeMap<String, Interval>,
    /// With repeats: how many, and how the intervals were made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<Repeats>,
    pub all_server: Option<ServerSummary>,
    /// `scraped (…)`, `unavailable: <why>`, `none: …` or `off`.
    pub server_metrics: ServerMetrics,
    /// The run was stopped (Ctrl-C) before its schedule ended: figures cover what completed.
    pub interrupted: bool,
    pub assertions: Vec<VerdictRow>,
    /// On a rented pod: the trial's share of its cost (the measured duration at its hourly
    /// price; provisioning and loading are in the deployment report, not here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// Serverless targets: cold starts and worker counts per phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serverless: Option<Serverless>,
    /// With `[observe] slice`: the run's figures per time slice (also in `slices.jsonl`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices: Option<Slices>,
    /// Rebuilt by `inferlab summarize` from a run that died before writing its summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovered>,
}

/// The run cut into time slices.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slices {
    pub width_s: f64,
    pub note: Cow<'static, str>,
    pub slices: Vec<crate::core::slices::Slice>,
}

pub const SLICES_NOTE: &str = "Each event counts in the slice it happened in: a send where it was sent, an outcome and E2E where the request ended, TTFT where the first chunk arrived, each gap and each chunk's tokens where the chunk arrived; concurrency_mean is the time requests spent in flight in the slice over its width; server gauges are the scrapes taken in it. Warmup requests are left out.";

/// How a killed run's summary was rebuilt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovered {
    /// Records read from `requests.jsonl` (every request that completed).
    pub requests: usize,
    /// The last line of `requests.jsonl`, cut short when the run died (skipped).
    pub partial_last_line: Option<usize>,
    /// Scrapes read from `server_metrics.jsonl`.
    pub scrapes: usize,
    pub note: Cow<'static, str>,
}

pub const RECOVERED_NOTE: &str = "Recovered from requests.jsonl and server_metrics.jsonl after the run died: figures cover the requests that completed; requests in flight when it died are not in them; the last scrapes of the phase it died in are missing, so its server figures cover less of it.";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cost {
    pub per_hour_usd: f64,
    pub trial_usd: f64,
    pub per_million_output_tokens_usd: Option<f64>,
}

/// What a serverless endpoint did around each phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Serverless {
    pub note: Cow<'static, str>,
    pub phases: BTreeMap<String, ServerlessPhase>,
}

pub const SERVERLESS_NOTE: &str = "RunPod serverless re-chunks the engine's stream: chunk gaps (chunk_itl) are the platform's, not the engine's ITL. Each phase's first warmup request is reported as its cold start, apart from TTFT.";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerlessPhase {
    /// The endpoint's `/health` (`jobs`, `workers`) right before and right after the phase.
    pub health_before: Option<serde_json::Value>,
    pub health_after: Option<serde_json::Value>,
    /// Whether a worker was idle or running before the phase (`None`: health unknown).
    pub warm_before: Option<bool>,
    /// The phase's first warmup request: what a user waits after idle.
    pub cold_start_ttft_ms: Option<f64>,
    pub cold_start_e2e_ms: Option<f64>,
    pub cold_start_error: Option<String>,
}

impl RunSummary {
    pub fn server(&self, name: &str) -> Option<&ServerSummary> {
        if name == "all" {
            return self.all_server.as_ref();
        }
        self.phases.iter().find(|p| p.name == name)?.server.as_ref()
    }

    /// A phase's (or `all`'s) intervals over repeats; empty without repeats.
    pub fn intervals(&self, name: &str) -> Option<&BTreeMap<String, Interval>> {
        if name == "all" {
            return Some(&self.all_intervals);
        }
        self.phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.intervals)
    }

    /// A client path's mean over repeats and its per-repeat values, where the run has repeats.
    pub fn repeat_estimate(&self, p: &MetricPath) -> Option<(Value, Repeated)> {
        if p.scope != Scope::Client {
            return None;
        }
        let i = self.intervals(&p.phase)?;
        repeated_value(i, p, &self.repeats.as_ref()?.pairing)
    }

    pub fn phase(&self, name: &str) -> Option<&PhaseSummary> {
        if name == "all" {
            return Some(&self.all);
        }
        self.phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.summary)
    }
}

/// `p`'s interval among `intervals` as an assertion reads it: the mean, and the per-repeat
/// values, in seconds for durations.
pub fn repeated_value(
    intervals: &BTreeMap<String, Interval>,
    p: &MetricPath,
    pairing: &str,
) -> Option<(Value, Repeated)> {
    let (key, scale) = interval_key(&p.metric, p.stat)?;
    let i = intervals.get(&key)?;
    let dim = crate::core::catalog::check_metric(&p.metric, p.stat).ok()?;
    Some((
        Value {
            value: i.mean / scale,
            dim,
        },
        Repeated {
            values: i.values.iter().map(|v| v / scale).collect(),
            pairing: pairing.to_string(),
        },
    ))
}

/// What an assertion can read of a run: client figures of a phase or of `all`, a turn's
/// (`turnN`), the fidelity block, and server or GPU figures (durations in seconds).
impl Lookup for RunSummary {
    /// With repeats, a client statistic is the mean of its per-repeat values, with its spread.
    fn estimate(&self, p: &MetricPath) -> Option<(Value, Option<Repeated>)> {
        match self.repeat_estimate(p) {
            Some((v, r)) => Some((v, Some(r))),
            None => self.value(p).map(|v| (v, None)),
        }
    }

    fn value(&self, p: &MetricPath) -> Option<Value> {
        let client = self.phase(&p.phase)?;
        // Turns and fidelity belong to a phase; `all` has neither.
        let named = self.phases.iter().find(|n| n.name == p.phase);
        if let Some(c) = named.and_then(|n| n.capacity.as_ref())
            && p.scope == Scope::Client
            && let Some(v) = c.value(&p.metric)
        {
            return Some(Value {
                value: v,
                dim: Dim::Plain,
            });
        }
        match p.scope {
            Scope::Client => client.value(&p.metric, p.stat).ok().flatten(),
            Scope::Turn(t) => named?
                .by_turn
                .get(&t)?
                .value(&p.metric, p.stat)
                .ok()
                .flatten(),
            Scope::Fidelity => Some(Value {
                value: named?.fidelity.value(&p.metric)?,
                dim: Dim::Plain,
            }),
            Scope::Server | Scope::Gpu => Some(Value {
                value: self
                    .server(&p.phase)?
                    .value(p.scope == Scope::Gpu, &p.metric, p.stat)?,
                dim: if server_metric_is_time(&p.metric) {
                    Dim::Time
                } else {
                    Dim::Plain
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::assert::Assertion;
    use crate::core::metrics::{Slo, summarize};

    fn run_summary() -> RunSummary {
        let (empty, _) = summarize(std::iter::empty(), &Slo::default());
        let server = ServerSummary {
            prefix_cache_hit_rate: Some(0.9),
            server_ttft_mean_ms: Some(40.0),
            deltas: [("preemptions".to_string(), 3.0)].into(),
            ..ServerSummary::default()
        };
        let fidelity = Fidelity {
            declared_rate: None,
            scheduled_rate: None,
            achieved_rate: Some(4.5),
            ks_statistic: None,
            ks_critical: None,
            output_length_ratio: None,
            input_length_ratio: None,
            ok: true,
        };
        RunSummary {
            schema_version: RESULTS_SCHEMA_VERSION,
            experiment: "e".into(),
            target: "t".into(),
            mode: Mode::Replay,
            prompt_lengths: PromptLengths::Approximate(String::new()),
            phases: vec![NamedSummary {
                name: "warm".into(),
                summary: empty.clone(),
                server: Some(server),
                fidelity,
                by_turn: [(1, empty.clone())].into(),
                intervals: BTreeMap::new(),
                capacity: None,
            }],
            all: empty,
            all_intervals: BTreeMap::new(),
            repeats: None,
            all_server: None,
            server_metrics: ServerMetrics::Off,
            interrupted: false,
            assertions: Vec::new(),
            cost: None,
            serverless: None,
            recovered: None,
            slices: None,
        }
    }

    fn value(s: &RunSummary, path: &str) -> Option<Value> {
        let a = Assertion::parse(&format!("{path} >= 0")).unwrap();
        let v = a.evaluate(s);
        v.operands[0].value
    }

    #[test]
    fn a_run_summary_answers_every_scope_of_a_path() {
        let s = run_summary();
        let plain = |x: f64| {
            Some(Value {
                value: x,
                dim: Dim::Plain,
            })
        };
        assert_eq!(value(&s, "warm.requests"), plain(0.0));
        assert_eq!(value(&s, "all.requests"), plain(0.0));
        assert_eq!(value(&s, "warm.turn1.requests"), plain(0.0));
        assert_eq!(value(&s, "warm.fidelity.achieved_rate"), plain(4.5));
        assert_eq!(value(&s, "warm.fidelity.ok"), plain(1.0));
        assert_eq!(value(&s, "warm.server.prefix_cache_hit_rate"), plain(0.9));
        assert_eq!(value(&s, "warm.server.preemptions"), plain(3.0));
        // Server durations are seconds, and say so.
        assert_eq!(
            value(&s, "warm.server.ttft_mean"),
            Some(Value {
                value: 0.04,
                dim: Dim::Time
            })
        );
        // No samples, no turn, no phase, no server view: no value (the verdict says which).
        assert_eq!(value(&s, "warm.ttft.p50"), None);
        assert_eq!(value(&s, "warm.turn2.requests"), None);
        assert_eq!(value(&s, "cold.requests"), None);
        assert_eq!(value(&s, "all.server.preemptions"), None);
        assert_eq!(value(&s, "all.fidelity.ok"), None);
    }

    #[test]
    fn a_run_summary_reads_back_as_it_was_written() {
        let mut s = run_summary();
        s.phases[0].capacity = Some(Capacity {
            over: SearchedOver::Rate,
            max_passing: Some(4.0),
            first_failing: None,
            converged: false,
            cut_short: true,
            probes: vec![CapacityProbe {
                phase: "warm_r4".into(),
                load: 4.0,
                passed: true,
                figures_passed: Some(false),
            }],
        });
        s.recovered = Some(Recovered {
            requests: 3,
            partial_last_line: Some(4),
            scrapes: 2,
            note: RECOVERED_NOTE.into(),
        });
        let text = serde_json::to_string(&s).unwrap();
        let back: RunSummary = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }
}
