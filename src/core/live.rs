//! A run's client-side figures while it runs: counters per phase, fed one finished request at a
//! time, rendered as a Prometheus text exposition (for a scraper) and as a progress line (for
//! a terminal). Pure: the caller owns the clock and passes elapsed times in.
//!
//! The exposition follows Prometheus' conventions: base units (seconds), `_total` counters,
//! cumulative `_bucket{le=...}` histograms with `_sum` and `_count`, one `# HELP` and `# TYPE`
//! per family, and the labels `experiment`, `target` and `phase` on every series.

use crate::core::record::{ErrorKind, RequestRecord};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Bucket bounds in seconds. Time to first token spans a warm decode step to a long queue.
pub const TTFT_BUCKETS_S: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Per-token times: TPOT and inter-token latency.
pub const TOKEN_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Whole requests.
pub const E2E_BUCKETS_S: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A Prometheus histogram: counts per bucket (not cumulative; summed when rendered).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum_s: f64,
    count: u64,
}

impl Buckets {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum_s: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, seconds: f64) {
        self.observe_n(seconds, 1);
    }

    /// `n` observations of the same value.
    pub fn observe_n(&mut self, seconds: f64, n: u64) {
        // The first bound at or above the value (`le`), found by bisection.
        let i = self.bounds.partition_point(|&b| b < seconds);
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
        self.sum_s += seconds * n as f64;
        self.count += n;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// What one phase of one trial has done so far.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseCounters {
    /// Requests the phase plans to send (warmups included); a phase with a duration limit may
    /// send fewer.
    pub planned: u64,
    /// Finished requests of every sort, warmups included.
    pub done: u64,
    /// Finished warmup requests (excluded from the latency histograms and the rate).
    pub warmups: u64,
    /// By outcome: `ok`, `error`, `cancelled` (in flight at a duration limit), `dropped`
    /// (never sent).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Failed requests by error kind (`http_503`, `timeout_idle`, …).
    pub errors: BTreeMap<String, u64>,
    pub output_tokens: u64,
    pub ttft: Buckets,
    pub tpot: Buckets,
    /// Gaps between output chunks, divided among the tokens a chunk carried when that is known.
    pub itl: Buckets,
    pub e2e: Buckets,
    /// Whether the latency histograms are kept (a progress line needs only the counts).
    latencies: bool,
}

impl PhaseCounters {
    /// Counts and latency histograms.
    pub fn new(planned: u64) -> Self {
        Self {
            latencies: true,
            planned,
            done: 0,
            warmups: 0,
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
            output_tokens: 0,
            ttft: Buckets::new(TTFT_BUCKETS_S),
            tpot: Buckets::new(TOKEN_BUCKETS_S),
            itl: Buckets::new(TOKEN_BUCKETS_S),
            e2e: Buckets::new(E2E_BUCKETS_S),
        }
    }

    /// Counts only, no latency histograms (less work per request).
    pub fn counts_only(planned: u64) -> Self {
        Self {
            latencies: false,
            ..Self::new(planned)
        }
    }

    /// Counts one finished request.
    pub fn add(&mut self, r: &RequestRecord) {
        self.done += 1;
        let outcome = match r.failure.as_ref().map(|f| f.kind) {
            None => "ok",
            Some(ErrorKind::Cancelled) => "cancelled",
            Some(ErrorKind::Dropped) => "dropped",
            Some(_) => "error",
        };
        *self.outcomes.entry(outcome).or_default() += 1;
        if let Some(f) = &r.failure
            && outcome == "error"
        {
            *self.errors.entry(f.kind.to_string()).or_default() += 1;
        }
        self.output_tokens += r.output_tokens();
        if r.warmup {
            self.warmups += 1;
            return;
        }
        if !r.ok() || !self.latencies {
            return;
        }
        let secs = |d: std::time::Duration| d.as_secs_f64();
        if let Some(d) = r.ttft() {
            self.ttft.observe(secs(d));
        }
        if let Some(d) = r.tpot() {
            self.tpot.observe(secs(d));
        }
        if let Some(d) = r.e2e() {
            self.e2e.observe(secs(d));
        }
        for pair in r.chunks.windows(2) {
            let gap = secs(pair[1].at.saturating_sub(pair[0].at));
            let tokens = pair[1].tokens.unwrap_or(1).max(1);
            self.itl
                .observe_n(gap / f64::from(tokens), u64::from(tokens));
        }
    }

    /// Failed requests (server or transport faults; not the harness' own limits).
    pub fn failed(&self) -> u64 {
        self.outcomes.get("error").copied().unwrap_or(0)
    }

    /// Measured requests finished, per second of `elapsed_s`.
    pub fn rate(&self, elapsed_s: f64) -> f64 {
        if elapsed_s <= 0.0 {
            return 0.0;
        }
        (self.done - self.warmups) as f64 / elapsed_s
    }
}

/// One phase of one trial as the exposition shows it.
pub struct Series<'a> {
    pub experiment: &'a str,
    pub target: &'a str,
    pub phase: &'a str,
    pub counters: &'a PhaseCounters,
    /// Requests sent and not finished (the running phase only; 0 for finished ones).
    pub in_flight: u64,
    /// Seconds since the phase started (up to its end for finished ones).
    pub elapsed_s: f64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(s: &Series, extra: &[(&str, &str)]) -> String {
    let mut out = format!(
        "experiment=\"{}\",target=\"{}\",phase=\"{}\"",
        escape(s.experiment),
        escape(s.target),
        escape(s.phase)
    );
    for (k, v) in extra {
        let _ = write!(out, ",{k}=\"{}\"", escape(v));
    }
    out
}

/// Formats a sample value: integers without a fraction, `+Inf` for infinity.
fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(
    out: &mut String,
    name: &str,
    series: &[Series],
    pick: fn(&PhaseCounters) -> &Buckets,
) {
    for s in series {
        let b = pick(s.counters);
        let mut cumulative = 0;
        for (bound, n) in b.bounds.iter().zip(&b.counts) {
            cumulative += n;
            let le = number(*bound);
            let _ = writeln!(
                out,
                "{name}_bucket{{{}}} {cumulative}",
                labels(s, &[("le", &le)])
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{}}} {}",
            labels(s, &[("le", "+Inf")]),
            b.count
        );
        let _ = writeln!(out, "{name}_sum{{{}}} {}", labels(s, &[]), number(b.sum_s));
        let _ = writeln!(out, "{name}_count{{{}}} {}", labels(s, &[]), b.count);
    }
}

/// A counter's samples, one per value of `label` in each series.
fn counter_by(
    out: &mut String,
    name: &str,
    label: &str,
    series: &[Series],
    values: fn(&PhaseCounters) -> Vec<(&str, u64)>,
) {
    for s in series {
        for (v, n) in values(s.counters) {
            let _ = writeln!(out, "{name}{{{}}} {n}", labels(s, &[(label, v)]));
        }
    }
}

/// The exposition of every phase seen so far (Prometheus text format 0.0.4).
pub fn exposition(series: &[Series]) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "inferlab_requests_total",
        "counter",
        "Requests finished, by outcome: ok, error (a server or transport fault), cancelled (in flight at the phase's duration limit), dropped (never sent).",
    );
    counter_by(
        &mut out,
        "inferlab_requests_total",
        "outcome",
        series,
        |c| c.outcomes.iter().map(|(k, n)| (*k, *n)).collect(),
    );
    family(
        &mut out,
        "inferlab_request_errors_total",
        "counter",
        "Failed requests by error kind (http_503, timeout_idle, disconnect, ...).",
    );
    counter_by(
        &mut out,
        "inferlab_request_errors_total",
        "kind",
        series,
        |c| c.errors.iter().map(|(k, n)| (k.as_str(), *n)).collect(),
    );
    gauges(&mut out, series);
    family(
        &mut out,
        "inferlab_output_tokens_total",
        "counter",
        "Output tokens received (the server's usage count when it sent one).",
    );
    for s in series {
        let _ = writeln!(
            out,
            "inferlab_output_tokens_total{{{}}} {}",
            labels(s, &[]),
            s.counters.output_tokens
        );
    }
    for (name, help, pick) in [
        (
            "inferlab_time_to_first_token_seconds",
            "Send to first output chunk, successful measured requests.",
            (|c: &PhaseCounters| &c.ttft) as fn(&PhaseCounters) -> &Buckets,
        ),
        (
            "inferlab_time_per_output_token_seconds",
            "(E2E - TTFT) / (output tokens - 1), successful measured requests.",
            |c: &PhaseCounters| &c.tpot,
        ),
        (
            "inferlab_inter_token_latency_seconds",
            "Gaps between output chunks, divided among the chunk's tokens when known.",
            |c: &PhaseCounters| &c.itl,
        ),
        (
            "inferlab_request_duration_seconds",
            "Send to last output chunk (E2E), successful measured requests.",
            |c: &PhaseCounters| &c.e2e,
        ),
    ] {
        family(&mut out, name, "histogram", help);
        histogram(&mut out, name, series, pick);
    }
    out
}

/// The phases' gauges: in flight, planned, achieved rate, elapsed.
fn gauges(out: &mut String, series: &[Series]) {
    let gauge = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&Series) -> f64| {
        family(out, name, "gauge", help);
        for s in series {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(s, &[]), number(value(s)));
        }
    };
    gauge(
        out,
        "inferlab_requests_in_flight",
        "Requests sent and not yet finished.",
        &|s| s.in_flight as f64,
    );
    gauge(
        out,
        "inferlab_requests_planned",
        "Requests the phase plans to send, warmups included.",
        &|s| s.counters.planned as f64,
    );
    gauge(
        out,
        "inferlab_achieved_requests_per_second",
        "Measured requests finished per second since the phase started.",
        &|s| s.counters.rate(s.elapsed_s),
    );
    gauge(
        out,
        "inferlab_phase_elapsed_seconds",
        "Seconds since the phase started (to its end once finished).",
        &|s| s.elapsed_s,
    );
}

/// What a progress line shows about the running phase.
pub struct Progress<'a> {
    pub trial: &'a str,
    pub phase: &'a str,
    pub counters: &'a PhaseCounters,
    pub in_flight: u64,
    pub elapsed_s: f64,
    /// The phase's duration limit, when it has one.
    pub limit_s: Option<f64>,
}

/// `12.3 s`, `4 min 05 s`, `1 h 02 min`.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {:02} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

impl Progress<'_> {
    /// Seconds left: what the duration limit leaves, or what the achieved pace needs for the
    /// requests not yet finished, whichever is less; `None` before the pace is known.
    pub fn remaining_s(&self) -> Option<f64> {
        let c = self.counters;
        let by_limit = self.limit_s.map(|l| (l - self.elapsed_s).max(0.0));
        let pace = if c.done > 0 && self.elapsed_s > 0.0 {
            Some(c.planned.saturating_sub(c.done) as f64 * self.elapsed_s / c.done as f64)
        } else {
            None
        };
        match (by_limit, pace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Errors, achieved rate and elapsed time, as both lines end.
    fn tail(&self) -> String {
        let failed = self.counters.failed();
        format!(
            "{failed} error{}, {:.1} req/s, {}",
            if failed == 1 { "" } else { "s" },
            self.counters.rate(self.elapsed_s),
            clock(self.elapsed_s)
        )
    }

    /// One line: trial, phase, done of planned, in flight, errors, rate, elapsed, left.
    pub fn line(&self) -> String {
        let c = self.counters;
        let mut out = format!(
            "{} {} {}/{} done, {} in flight, {}",
            self.trial,
            self.phase,
            c.done,
            c.planned,
            self.in_flight,
            self.tail()
        );
        if let Some(left) = self.remaining_s() {
            let _ = write!(out, ", ~{} left", clock(left));
        }
        out
    }

    /// The line a finished phase leaves (no estimate left).
    pub fn finished_line(&self) -> String {
        let c = self.counters;
        let mut out = format!(
            "{} {} finished: {}/{} requests, {}",
            self.trial,
            self.phase,
            c.done,
            c.planned,
            self.tail()
        );
        if !c.errors.is_empty() {
            let kinds: Vec<String> = c.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = write!(out, " ({})", kinds.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::prom;
    use crate::core::record::{ChunkTime, Failure, TokenCounting};
    use std::time::Duration;

    fn record(ok: bool, warmup: bool, chunks_ms: &[u64]) -> RequestRecord {
        let mut r = RequestRecord::dropped("p", 0, None, Duration::ZERO, Duration::ZERO);
        r.warmup = warmup;
        r.failure = (!ok).then(|| Failure {
            kind: ErrorKind::Http(503),
            detail: String::new(),
        });
        r.token_counting = TokenCounting::OnePerChunk;
        r.chunks = chunks_ms
            .iter()
            .map(|&ms| ChunkTime {
                at: Duration::from_millis(ms),
                tokens: Some(1),
            })
            .collect();
        r.end = r.chunks.last().map_or(Duration::ZERO, |c| c.at);
        r
    }

    #[test]
    fn the_exposition_reads_back_with_counts_buckets_and_labels() {
        let mut c = PhaseCounters::new(4);
        c.add(&record(true, true, &[20, 30]));
        c.add(&record(true, false, &[40, 42, 44]));
        c.add(&record(false, false, &[]));
        let series = [Series {
            experiment: "exp",
            target: "a \"b\"",
            phase: "steady",
            counters: &c,
            in_flight: 1,
            elapsed_s: 2.0,
        }];
        let text = exposition(&series);
        let e = prom::parse_filtered(&text, &|_| true);
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        let value = |name: &str, extra: Option<(&str, &str)>| {
            e.series(name)
                .find(|s| extra.is_none_or(|(k, v)| s.label(k) == Some(v)))
                .map(|s| s.value)
        };
        assert_eq!(
            value("inferlab_requests_total", Some(("outcome", "ok"))),
            Some(2.0)
        );
        assert_eq!(
            value("inferlab_requests_total", Some(("outcome", "error"))),
            Some(1.0)
        );
        assert_eq!(
            value("inferlab_request_errors_total", Some(("kind", "http_503"))),
            Some(1.0)
        );
        assert_eq!(value("inferlab_requests_in_flight", None), Some(1.0));
        // One measured success: its TTFT (40 ms) is in the 0.05 bucket, not the 0.025 one.
        let ttft = "inferlab_time_to_first_token_seconds_bucket";
        assert_eq!(value(ttft, Some(("le", "0.025"))), Some(0.0));
        assert_eq!(value(ttft, Some(("le", "0.05"))), Some(1.0));
        assert_eq!(value(ttft, Some(("le", "+Inf"))), Some(1.0));
        assert_eq!(
            value("inferlab_inter_token_latency_seconds_count", None),
            Some(2.0)
        );
        // Two measured requests finished in 2 s.
        assert_eq!(
            value("inferlab_achieved_requests_per_second", None),
            Some(1.0)
        );
        let s = e.series("inferlab_output_tokens_total").next().unwrap();
        assert_eq!(s.label("target"), Some("a \"b\""));
        assert_eq!(s.value, 5.0);
        assert_eq!(
            e.types.get("inferlab_request_duration_seconds"),
            Some(&prom::MetricType::Histogram)
        );
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket_and_beyond_the_last_only_in_the_count() {
        let mut b = Buckets::new(TTFT_BUCKETS_S);
        b.observe(0.05);
        b.observe_n(0.051, 2);
        b.observe(100.0);
        let at = |bound: f64| b.counts[TTFT_BUCKETS_S.iter().position(|&x| x == bound).unwrap()];
        assert_eq!((at(0.05), at(0.1)), (1, 2));
        assert_eq!(b.counts.iter().sum::<u64>(), 3);
        assert_eq!(b.count(), 4);
    }

    #[test]
    fn the_progress_line_estimates_what_is_left() {
        let mut c = PhaseCounters::new(10);
        for _ in 0..4 {
            c.add(&record(true, false, &[10]));
        }
        let p = Progress {
            trial: "exp::t",
            phase: "steady",
            counters: &c,
            in_flight: 2,
            elapsed_s: 2.0,
            limit_s: None,
        };
        assert_eq!(
            p.line(),
            "exp::t steady 4/10 done, 2 in flight, 0 errors, 2.0 req/s, 2.0 s, ~3.0 s left"
        );
        let limited = Progress {
            limit_s: Some(2.5),
            ..p
        };
        assert_eq!(limited.remaining_s(), Some(0.5));
        assert_eq!(clock(125.0), "2 min 05 s");
    }
}
