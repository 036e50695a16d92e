//! Records → per-phase `Summary`. Pure: no clock, no IO.
//!
//! Definitions follow `shared/reference/metrics.md`: latency statistics include successful,
//! non-warmup requests only; errors are counted by kind; percentiles come from HDR histograms
//! (µs resolution, 3 significant digits) which are kept so results can be merged later, while
//! min, max, mean and standard deviation are computed exactly from the samples.

use crate::core::catalog::{Dim, LatencyMetric, SCALAR_METRICS, Stat, Value, check_metric};
use crate::core::interval::Interval;
use crate::core::record::{ErrorKind, RequestRecord, TokenCounting};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Service-level objectives for goodput: a request is good when it succeeded and meets every
/// configured bound (inclusive). An undefined TPOT (one output token) meets a TPOT bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Slo {
    #[serde(with = "opt_ms", rename = "ttft_ms")]
    pub ttft: Option<Duration>,
    #[serde(with = "opt_ms", rename = "tpot_ms")]
    pub tpot: Option<Duration>,
    #[serde(with = "opt_ms", rename = "e2e_ms")]
    pub e2e: Option<Duration>,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        self.ttft.is_none() && self.tpot.is_none() && self.e2e.is_none()
    }

    fn met_by(&self, r: &RequestRecord) -> bool {
        fn within(bound: Option<Duration>, value: Option<Duration>, undefined_ok: bool) -> bool {
            match (bound, value) {
                (None, _) => true,
                (Some(b), Some(v)) => v <= b,
                (Some(_), None) => undefined_ok,
            }
        }
        r.ok()
            && within(self.ttft, r.ttft(), false)
            && within(self.tpot, r.tpot(), true)
            && within(self.e2e, r.e2e(), false)
    }
}

mod opt_ms {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_f64(d.as_secs_f64() * 1e3),
            None => s.serialize_none(),
        }
    }
}

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

impl LatencyStats {
    /// Statistics of `count` samples known by their median and tail (the rest set to them):
    /// what a hand-made summary needs.
    pub fn of(count: u64, p50_ms: f64, p90_ms: f64, p99_ms: f64) -> Self {
        Self {
            count,
            min_ms: p50_ms.min(p90_ms),
            max_ms: p99_ms,
            mean_ms: p50_ms,
            stddev_ms: 0.0,
            p50_ms,
            p90_ms,
            p95_ms: p90_ms,
            p99_ms,
            p999_ms: p99_ms,
        }
    }

    /// A statistic in milliseconds (`Count` as a number).
    pub fn stat(&self, stat: Stat) -> f64 {
        match stat {
            Stat::P50 => self.p50_ms,
            Stat::P90 => self.p90_ms,
            Stat::P95 => self.p95_ms,
            Stat::P99 => self.p99_ms,
            Stat::P999 => self.p999_ms,
            Stat::Mean => self.mean_ms,
            Stat::Min => self.min_ms,
            Stat::Max => self.max_ms,
            Stat::Stddev => self.stddev_ms,
            Stat::Count => self.count as f64,
        }
    }
}

/// One phase's (or the whole run's) figures; the default is a phase with no requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    /// Measured requests (warmup excluded).
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Failures by kind (`http_503`, `stream_error`, `timeout_idle`, …).
    pub errors: BTreeMap<String, u64>,
    pub error_rate: f64,
    pub warmup_requests: u64,
    pub duration_s: f64,
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Prompt plus output tokens per second.
    pub total_throughput: f64,
    /// Requests per second meeting every SLO; `None` without an `[slo]`.
    pub goodput: Option<f64>,
    pub concurrency_achieved: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    /// cached ÷ prompt tokens, from server usage.
    pub cached_token_ratio: Option<f64>,
    /// The fewest and most cached prompt tokens of one request, where the server reports cached
    /// tokens (a request it reports none for had none: SGLang leaves `prompt_tokens_details`
    /// out when nothing was cached).
    pub cached_tokens_min: Option<u64>,
    pub cached_tokens_max: Option<u64>,
    /// Output chunks received by the client (a chunk can hold several tokens).
    pub output_chunks: u64,
    /// Successful requests whose stream carried no usage (their token counts are the client's).
    pub usage_missing: u64,
    /// Successful requests whose tokens per chunk were unknown (token_itl excludes them).
    pub tokens_per_chunk_unknown: u64,
    /// Open loop: arrivals never sent because the duration limit passed while they waited
    /// for a concurrency slot. Not in `requests`.
    pub dropped: u64,
    /// Open loop: requests in flight when the duration limit passed. Not in `requests`.
    pub cancelled: u64,
    /// Requests sent more than 1 ms after their intended time (client-side queueing).
    pub late_sends: u64,
    pub ttft: Option<LatencyStats>,
    pub ttft_scheduled: Option<LatencyStats>,
    pub client_queue: Option<LatencyStats>,
    pub e2e: Option<LatencyStats>,
    pub tpot: Option<LatencyStats>,
    pub ntpot: Option<LatencyStats>,
    pub chunk_itl: Option<LatencyStats>,
    pub token_itl: Option<LatencyStats>,
}

impl PhaseSummary {
    pub fn latency(&self, metric: LatencyMetric) -> Option<&LatencyStats> {
        self.latency_slot_ref(metric).as_ref()
    }

    fn latency_slot_ref(&self, metric: LatencyMetric) -> &Option<LatencyStats> {
        match metric {
            LatencyMetric::Ttft => &self.ttft,
            LatencyMetric::TtftScheduled => &self.ttft_scheduled,
            LatencyMetric::ClientQueue => &self.client_queue,
            LatencyMetric::E2e => &self.e2e,
            LatencyMetric::Tpot => &self.tpot,
            LatencyMetric::Ntpot => &self.ntpot,
            LatencyMetric::ChunkItl => &self.chunk_itl,
            LatencyMetric::TokenItl => &self.token_itl,
        }
    }

    fn latency_slot(&mut self, metric: LatencyMetric) -> &mut Option<LatencyStats> {
        match metric {
            LatencyMetric::Ttft => &mut self.ttft,
            LatencyMetric::TtftScheduled => &mut self.ttft_scheduled,
            LatencyMetric::ClientQueue => &mut self.client_queue,
            LatencyMetric::E2e => &mut self.e2e,
            LatencyMetric::Tpot => &mut self.tpot,
            LatencyMetric::Ntpot => &mut self.ntpot,
            LatencyMetric::ChunkItl => &mut self.chunk_itl,
            LatencyMetric::TokenItl => &mut self.token_itl,
        }
    }

    /// Reads `metric[.stat]`. `Err` names a bad path; `Ok(None)` means no samples.
    pub fn value(&self, metric: &str, stat: Option<Stat>) -> Result<Option<Value>, String> {
        let dim = check_metric(metric, stat)?;
        if let Some(stat) = stat {
            let Some(s) = LatencyMetric::parse(metric).and_then(|m| self.latency(m)) else {
                return Ok(if stat == Stat::Count {
                    Some(Value {
                        value: 0.0,
                        dim: Dim::Plain,
                    })
                } else {
                    None
                });
            };
            let value = match stat {
                Stat::Count => s.stat(stat),
                _ => s.stat(stat) / 1e3,
            };
            return Ok(Some(Value { value, dim }));
        }
        let value = match metric {
            "requests" => Some(self.requests as f64),
            "succeeded" => Some(self.succeeded as f64),
            "failed" => Some(self.failed as f64),
            "error_rate" => Some(self.error_rate),
            "duration" => Some(self.duration_s),
            "request_throughput" => Some(self.request_throughput),
            "output_throughput" => Some(self.output_throughput),
            "total_throughput" => Some(self.total_throughput),
            "goodput" => self.goodput,
            "concurrency_achieved" => Some(self.concurrency_achieved),
            "prompt_tokens" => Some(self.prompt_tokens as f64),
            "output_tokens" => Some(self.output_tokens as f64),
            "cached_tokens" => Some(self.cached_tokens as f64),
            "cached_token_ratio" => self.cached_token_ratio,
            "cached_tokens_min" => self.cached_tokens_min.map(|v| v as f64),
            "cached_tokens_max" => self.cached_tokens_max.map(|v| v as f64),
            "dropped" => Some(self.dropped as f64),
            "cancelled" => Some(self.cancelled as f64),
            "late_sends" => Some(self.late_sends as f64),
            _ => None,
        };
        Ok(value.map(|value| Value { value, dim }))
    }
}

/// Statistics of a phase that describe each request or each second (latencies, rates, ratios),
/// as opposed to totals (requests, tokens, duration, counts), which add up over repeats.
const RATES: &[&str] = &[
    "error_rate",
    "request_throughput",
    "output_throughput",
    "total_throughput",
    "goodput",
    "concurrency_achieved",
    "cached_token_ratio",
];

/// The key of `metric[.stat]` in a summary's `intervals`: the summary's own field names, with
/// their units (`ttft.p50_ms`, `error_rate`), and the factor from an assertion's value (seconds
/// for durations) to it. Totals have none: over repeats they are the pooled run's.
pub fn interval_key(metric: &str, stat: Option<Stat>) -> Option<(String, f64)> {
    check_metric(metric, stat).ok()?;
    match stat {
        Some(Stat::Count) => None,
        Some(st) => Some((format!("{metric}.{}_ms", st.name()), 1e3)),
        None => RATES.contains(&metric).then(|| (metric.to_string(), 1.0)),
    }
}

/// Every client statistic's interval over `repeats` (one summary of the phase per repeat),
/// keyed by [`interval_key`]; a statistic missing from a repeat (no samples) gets none.
pub fn intervals(repeats: &[PhaseSummary]) -> BTreeMap<String, Interval> {
    let mut out = BTreeMap::new();
    if repeats.len() < 2 {
        return out;
    }
    let latency = LatencyMetric::ALL
        .into_iter()
        .flat_map(|m| Stat::ALL.into_iter().map(move |s| (m.name(), Some(s))));
    let scalar = SCALAR_METRICS.iter().map(|(m, _)| (*m, None));
    for (metric, stat) in latency.chain(scalar) {
        let Some((key, scale)) = interval_key(metric, stat) else {
            continue;
        };
        let values: Option<Vec<f64>> = repeats
            .iter()
            .map(|r| {
                r.value(metric, stat)
                    .ok()
                    .flatten()
                    .map(|v| v.value * scale)
            })
            .collect();
        if let Some(i) = values.as_deref().and_then(Interval::of) {
            out.insert(key, i);
        }
    }
    out
}

/// Histograms behind a summary's percentiles, in µs, by metric name.
pub type Histograms = BTreeMap<&'static str, Histogram<u64>>;

/// Samples of one latency metric.
#[derive(Clone)]
struct Samples {
    hist: Histogram<u64>,
    sum_us: f64,
    sum_sq_us: f64,
    min_us: f64,
    max_us: f64,
}

impl Samples {
    fn new() -> Self {
        Self {
            // 1 µs .. 1 h, 3 significant digits; cannot fail for these constants.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            sum_us: 0.0,
            sum_sq_us: 0.0,
            min_us: f64::INFINITY,
            max_us: 0.0,
        }
    }

    fn add(&mut self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        self.hist.saturating_record(us.round() as u64);
        self.sum_us += us;
        self.sum_sq_us += us * us;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
    }

    fn stats(&self) -> Option<LatencyStats> {
        let n = self.hist.len();
        if n == 0 {
            return None;
        }
        let nf = n as f64;
        let mean = self.sum_us / nf;
        let var = (self.sum_sq_us / nf - mean * mean).max(0.0);
        let q = |p: f64| self.hist.value_at_quantile(p) as f64 / 1e3;
        Some(LatencyStats {
            count: n,
            min_ms: self.min_us / 1e3,
            max_ms: self.max_us / 1e3,
            mean_ms: mean / 1e3,
            stddev_ms: var.sqrt() / 1e3,
            p50_ms: q(0.50),
            p90_ms: q(0.90),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
        })
    }
}

/// Summarises the records of one phase (or of the whole run). Warmup records are counted in
/// `warmup_requests` and otherwise ignored.
pub fn summarize<'a>(
    records: impl IntoIterator<Item = &'a RequestRecord>,
    slo: &Slo,
) -> (PhaseSummary, Histograms) {
    let mut acc = Summarizer::new(*slo);
    for r in records {
        acc.add(r);
    }
    acc.finish()
}

/// [`summarize`], one record at a time: a run feeds each record as it completes and keeps
/// nothing of it but these sums and histograms, so its memory does not grow with its length.
#[derive(Clone)]
pub struct Summarizer {
    slo: Slo,
    samples: BTreeMap<LatencyMetric, Samples>,
    s: PhaseSummary,
    window: Option<(Duration, Duration)>,
    good: u64,
    e2e_sum: Duration,
    cached_reported: bool,
    /// The fewest and most cached tokens of a request with usage (none reported = 0).
    cached_range: Option<(u64, u64)>,
}

impl Summarizer {
    pub fn new(slo: Slo) -> Self {
        Self {
            slo,
            samples: LatencyMetric::ALL
                .into_iter()
                .map(|m| (m, Samples::new()))
                .collect(),
            s: PhaseSummary {
                requests: 0,
                succeeded: 0,
                failed: 0,
                errors: BTreeMap::new(),
                error_rate: 0.0,
                warmup_requests: 0,
                duration_s: 0.0,
                request_throughput: 0.0,
                output_throughput: 0.0,
                total_throughput: 0.0,
                goodput: None,
                concurrency_achieved: 0.0,
                prompt_tokens: 0,
                output_tokens: 0,
                cached_tokens: 0,
                cached_token_ratio: None,
                cached_tokens_min: None,
                cached_tokens_max: None,
                output_chunks: 0,
                usage_missing: 0,
                tokens_per_chunk_unknown: 0,
                dropped: 0,
                cancelled: 0,
                late_sends: 0,
                ttft: None,
                ttft_scheduled: None,
                client_queue: None,
                e2e: None,
                tpot: None,
                ntpot: None,
                chunk_itl: None,
                token_itl: None,
            },
            window: None,
            good: 0,
            e2e_sum: Duration::ZERO,
            cached_reported: false,
            cached_range: None,
        }
    }

    pub fn add(&mut self, r: &RequestRecord) {
        let samples = &mut self.samples;
        let mut add = |m: LatencyMetric, d: Option<Duration>| {
            if let (Some(d), Some(s)) = (d, samples.get_mut(&m)) {
                s.add(d);
            }
        };
        let s = &mut self.s;
        if r.warmup {
            s.warmup_requests += 1;
            return;
        }
        match r.failure.as_ref().map(|f| f.kind) {
            Some(ErrorKind::Dropped) => {
                s.dropped += 1;
                return;
            }
            Some(ErrorKind::Cancelled) => {
                s.cancelled += 1;
                return;
            }
            _ => {}
        }
        s.requests += 1;
        if r.client_queue() > Duration::from_millis(1) {
            s.late_sends += 1;
        }
        let end = r.end.max(r.chunks.last().map_or(r.end, |c| c.at));
        self.window = Some(match self.window {
            None => (r.intended, end),
            Some((a, b)) => (a.min(r.intended), b.max(end)),
        });
        if let Some(f) = &r.failure {
            s.failed += 1;
            *s.errors.entry(f.kind.to_string()).or_default() += 1;
            return;
        }
        s.succeeded += 1;
        if self.slo.met_by(r) {
            self.good += 1;
        }
        s.output_tokens += r.output_tokens();
        s.output_chunks += r.chunks.len() as u64;
        match r.usage {
            Some(u) => {
                s.prompt_tokens += u.prompt_tokens;
                if let Some(c) = u.cached_tokens {
                    s.cached_tokens += c;
                    self.cached_reported = true;
                }
                let c = u.cached_tokens.unwrap_or(0);
                self.cached_range = Some(
                    self.cached_range
                        .map_or((c, c), |(a, b)| (a.min(c), b.max(c))),
                );
            }
            None => s.usage_missing += 1,
        }
        self.e2e_sum += r.e2e().unwrap_or_default();
        add(LatencyMetric::Ttft, r.ttft());
        add(LatencyMetric::TtftScheduled, r.ttft_scheduled());
        add(LatencyMetric::ClientQueue, Some(r.client_queue()));
        add(LatencyMetric::E2e, r.e2e());
        add(LatencyMetric::Tpot, r.tpot());
        add(LatencyMetric::Ntpot, r.ntpot());
        let known = r.token_counting != TokenCounting::Unknown;
        if !known {
            s.tokens_per_chunk_unknown += 1;
        }
        for pair in r.chunks.windows(2) {
            let gap = pair[1].at.saturating_sub(pair[0].at);
            add(LatencyMetric::ChunkItl, Some(gap));
            if known {
                let tokens = pair[1].tokens.unwrap_or(1);
                // A chunk that carried no token (possible with continuous usage) adds no sample.
                for _ in 0..tokens {
                    add(LatencyMetric::TokenItl, Some(gap / tokens));
                }
            }
        }
    }

    pub fn finish(self) -> (PhaseSummary, Histograms) {
        let Summarizer {
            slo,
            samples,
            mut s,
            window,
            good,
            e2e_sum,
            cached_reported,
            cached_range,
        } = self;
        if s.requests > 0 {
            s.error_rate = s.failed as f64 / s.requests as f64;
        }
        if let Some((start, end)) = window {
            let d = end.saturating_sub(start).as_secs_f64();
            s.duration_s = d;
            if d > 0.0 {
                s.request_throughput = s.succeeded as f64 / d;
                s.output_throughput = s.output_tokens as f64 / d;
                s.total_throughput = (s.prompt_tokens + s.output_tokens) as f64 / d;
                s.concurrency_achieved = e2e_sum.as_secs_f64() / d;
                if !slo.is_empty() {
                    s.goodput = Some(good as f64 / d);
                }
            }
        }
        if cached_reported && s.prompt_tokens > 0 {
            s.cached_token_ratio = Some(s.cached_tokens as f64 / s.prompt_tokens as f64);
        }
        if cached_reported {
            s.cached_tokens_min = cached_range.map(|r| r.0);
            s.cached_tokens_max = cached_range.map(|r| r.1);
        }
        let mut hists = Histograms::new();
        for (m, v) in samples {
            *s.latency_slot(m) = v.stats();
            hists.insert(m.name(), v.hist);
        }
        (s, hists)
    }
}

#[cfg(test)]
mod tests;
