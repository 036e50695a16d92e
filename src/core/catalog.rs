//! The vocabulary assertions are written in: which metric names exist in each scope (client
//! phase, fidelity, server, GPU), which statistics follow them, and whether a value is a
//! duration. A leaf: the parser checks paths against it and the producers of the numbers
//! (`metrics`, `fidelity`, `observe`) name their figures from it, so validating an experiment
//! needs none of them.

use serde::{Deserialize, Serialize};

/// How a trial runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Live,
    /// Live, and the exchanges are written as the target's fixture.
    Record,
    Replay,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Record => "record",
            Mode::Replay => "replay",
        }
    }

    /// Assertions checked `live` are checked when recording too (a recording is a live run).
    pub fn as_checked(self) -> Self {
        match self {
            Mode::Record => Mode::Live,
            m => m,
        }
    }
}

/// Where a metric of an assertion path lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client's figures of the phase (`warm.ttft.p50`).
    Client,
    /// One turn (or agent step) of a conversation phase (`chat.turn2.ttft.p50`).
    Turn(u32),
    /// The server's `/metrics` over the phase (`warm.server.prefix_cache_hit_rate`).
    Server,
    /// GPU telemetry over the phase (`load.gpu.util.mean`).
    Gpu,
    /// How faithfully the phase's load was offered (`load.fidelity.achieved_rate`).
    Fidelity,
}

impl Scope {
    /// The scope a path part names; `None` for a part that is not a scope (a metric).
    pub fn parse(part: &str) -> Option<Self> {
        match part {
            "server" => Some(Self::Server),
            "gpu" => Some(Self::Gpu),
            "fidelity" => Some(Self::Fidelity),
            _ => part.strip_prefix("turn")?.parse().ok().map(Self::Turn),
        }
    }

    /// The path part, `None` for the client's (which has none).
    pub fn name(self) -> Option<String> {
        match self {
            Self::Client => None,
            Self::Turn(n) => Some(format!("turn{n}")),
            Self::Server => Some("server".into()),
            Self::Gpu => Some("gpu".into()),
            Self::Fidelity => Some("fidelity".into()),
        }
    }
}

/// A value an assertion can read: seconds for `Dim::Time`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    pub value: f64,
    pub dim: Dim,
}

/// A latency distribution a summary holds (milliseconds on disk, seconds in assertions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LatencyMetric {
    Ttft,
    TtftScheduled,
    ClientQueue,
    E2e,
    Tpot,
    Ntpot,
    ChunkItl,
    TokenItl,
}

impl LatencyMetric {
    /// Every latency metric, in the summary's order.
    pub const ALL: [Self; 8] = [
        Self::Ttft,
        Self::TtftScheduled,
        Self::ClientQueue,
        Self::E2e,
        Self::Tpot,
        Self::Ntpot,
        Self::ChunkItl,
        Self::TokenItl,
    ];

    /// The name in assertion paths, summary fields and histogram files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ttft => "ttft",
            Self::TtftScheduled => "ttft_scheduled",
            Self::ClientQueue => "client_queue",
            Self::E2e => "e2e",
            Self::Tpot => "tpot",
            Self::Ntpot => "ntpot",
            Self::ChunkItl => "chunk_itl",
            Self::TokenItl => "token_itl",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// A statistic that follows a distribution or a gauge in an assertion (`warm.ttft.p50`,
/// `load.server.kv_cache_usage.max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    P50,
    P90,
    P95,
    P99,
    P999,
    Mean,
    Min,
    Max,
    Stddev,
    Count,
}

impl Stat {
    pub const ALL: [Stat; 10] = [
        Stat::P50,
        Stat::P90,
        Stat::P95,
        Stat::P99,
        Stat::P999,
        Stat::Mean,
        Stat::Min,
        Stat::Max,
        Stat::Stddev,
        Stat::Count,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::P999 => "p999",
            Stat::Mean => "mean",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Stddev => "stddev",
            Stat::Count => "count",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Every statistic's name, for messages.
    pub fn names() -> String {
        Self::ALL.map(Stat::name).join(", ")
    }
}

/// Scalar metrics and whether they are durations.
pub const SCALAR_METRICS: &[(&str, Dim)] = &[
    ("requests", Dim::Plain),
    ("succeeded", Dim::Plain),
    ("failed", Dim::Plain),
    ("error_rate", Dim::Plain),
    ("duration", Dim::Time),
    ("request_throughput", Dim::Plain),
    ("output_throughput", Dim::Plain),
    ("total_throughput", Dim::Plain),
    ("goodput", Dim::Plain),
    ("concurrency_achieved", Dim::Plain),
    ("prompt_tokens", Dim::Plain),
    ("output_tokens", Dim::Plain),
    ("cached_tokens", Dim::Plain),
    ("cached_token_ratio", Dim::Plain),
    ("cached_tokens_min", Dim::Plain),
    ("cached_tokens_max", Dim::Plain),
    ("dropped", Dim::Plain),
    ("cancelled", Dim::Plain),
    ("late_sends", Dim::Plain),
    // A capacity search's phase: the highest load that met its SLO (0: none), the lowest that
    // did not, and how many probes ran.
    ("max_passing", Dim::Plain),
    ("first_failing", Dim::Plain),
    ("probes", Dim::Plain),
];

/// Dimension of a value in assertions: durations must be compared with durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dim {
    Time,
    Plain,
}

/// Where a metric path is wrong, in words for the user.
pub fn check_metric(metric: &str, stat: Option<Stat>) -> Result<Dim, String> {
    if LatencyMetric::parse(metric).is_some() {
        return match stat {
            None => Err(format!(
                "`{metric}` is a distribution: add a statistic ({})",
                Stat::names()
            )),
            Some(Stat::Count) => Ok(Dim::Plain),
            Some(_) => Ok(Dim::Time),
        };
    }
    if let Some((_, dim)) = SCALAR_METRICS.iter().find(|(m, _)| *m == metric) {
        return match stat {
            None => Ok(*dim),
            Some(s) => Err(format!(
                "`{metric}` is a single number; `.{}` does not apply",
                s.name()
            )),
        };
    }
    let known: Vec<&str> = LatencyMetric::ALL
        .into_iter()
        .map(LatencyMetric::name)
        .chain(SCALAR_METRICS.iter().map(|(m, _)| *m))
        .collect();
    Err(format!(
        "unknown metric `{metric}` (expected one of {})",
        known.join(", ")
    ))
}

/// Metrics assertions can read under `<phase>.fidelity.`.
pub const FIDELITY_METRICS: &[&str] = &[
    "ok",
    "declared_rate",
    "scheduled_rate",
    "achieved_rate",
    "ks_statistic",
    "output_length_ratio",
    "input_length_ratio",
];

/// Checks a `fidelity.<metric>` path.
pub fn check_fidelity_metric(metric: &str, stat: Option<Stat>) -> Result<(), String> {
    if !FIDELITY_METRICS.contains(&metric) {
        return Err(format!(
            "unknown fidelity metric `{metric}` (expected one of {})",
            FIDELITY_METRICS.join(", ")
        ));
    }
    match stat {
        None => Ok(()),
        Some(s) => Err(format!(
            "`fidelity.{metric}` is a single number; `.{}` does not apply",
            s.name()
        )),
    }
}

/// Metrics assertions can read under `<phase>.server.` and `<phase>.gpu.`, and whether they
/// take a gauge statistic (`mean`, `min`, `max`).
pub fn check_server_metric(gpu: bool, metric: &str, stat: Option<Stat>) -> Result<(), String> {
    let scope = if gpu { "gpu" } else { "server" };
    let gauge_names: &[&str] = if gpu {
        &["util", "mem_used_mib", "mem_util", "power_w"]
    } else {
        &[
            "kv_cache_usage",
            "kv_cache_evictable",
            "requests_running",
            "requests_waiting",
        ]
    };
    let scalars: &[&str] = if gpu {
        &[]
    } else {
        &[
            "prefix_cache_hit_rate",
            "preemptions",
            "prompt_tokens",
            "generation_tokens",
            "ttft_mean",
            "itl_mean",
            "e2e_mean",
            "queue_time_mean",
            "network_overhead_ttft",
            "scrape_failures",
        ]
    };
    if gauge_names.contains(&metric) {
        return match stat {
            Some(Stat::Mean | Stat::Min | Stat::Max) => Ok(()),
            Some(s) => Err(format!(
                "`{scope}.{metric}` takes mean, min or max, not `{}`",
                s.name()
            )),
            None => Err(format!(
                "`{scope}.{metric}` is a gauge: add mean, min or max"
            )),
        };
    }
    if scalars.contains(&metric) {
        return match stat {
            None => Ok(()),
            Some(s) => Err(format!(
                "`{scope}.{metric}` is a single number; `.{}` does not apply",
                s.name()
            )),
        };
    }
    let all: Vec<&str> = gauge_names.iter().chain(scalars).copied().collect();
    Err(format!(
        "unknown {scope} metric `{metric}` (expected one of {})",
        all.join(", ")
    ))
}

/// Whether a server metric is a duration (its value is then in seconds).
pub fn server_metric_is_time(metric: &str) -> bool {
    metric.ends_with("_mean") || metric == "network_overhead_ttft"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_and_write_their_path_part() {
        for (part, scope) in [
            ("server", Scope::Server),
            ("gpu", Scope::Gpu),
            ("fidelity", Scope::Fidelity),
            ("turn3", Scope::Turn(3)),
        ] {
            assert_eq!(Scope::parse(part), Some(scope));
            assert_eq!(scope.name().as_deref(), Some(part));
        }
        assert_eq!(Scope::parse("ttft"), None, "a metric, not a scope");
        assert_eq!(Scope::parse("turnx"), None);
        assert_eq!(Scope::Client.name(), None);
    }
}
