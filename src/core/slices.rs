//! A run's figures per time slice (`[observe] slice = "5s"`): what happened in each window of
//! the run's clock, for runs whose load changes over time (ramps, capacity searches, KV
//! pressure), where a phase's figures average the change away.
//!
//! Each event counts in the slice it happened in: a request's send in the slice of its send,
//! its outcome and E2E in the slice it ended in, its TTFT in the slice of its first output
//! chunk, each inter-token gap and each chunk's tokens in the slice the chunk arrived in; the
//! mean concurrency is the time requests spent in flight within the slice over its width;
//! server gauges are the mean and max of the scrapes taken in it; a server counter's increase
//! from one scrape to the next counts in the slice of the later scrape (a slice without a
//! scrape has none: its share goes to the next one that has). Warmup requests are left
//! out, as they are from every statistic. Slices are contiguous from the run's origin to its
//! last event (empty ones included, so a stall shows). Pure.

use crate::core::record::RequestRecord;
use crate::core::server::{self, COUNTERS, Canonical, GAUGES};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Percentiles of one latency within a slice, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceLatency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// A server gauge within a slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceGauge {
    pub mean: f64,
    pub max: f64,
    pub scrapes: usize,
}

/// One time slice's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    pub index: u64,
    /// From the run's origin.
    pub start_s: f64,
    pub end_s: f64,
    /// The phases with an event in the slice, in the run's order.
    pub phases: Vec<String>,
    pub requests_sent: u64,
    /// Requests that ended in the slice, and of those the ones that failed (server or transport
    /// faults; the harness' own limits are in `errors` only).
    pub requests_ended: u64,
    pub requests_failed: u64,
    /// Failed, cancelled and dropped requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// Tokens in the chunks that arrived in the slice (a chunk's share of its request's count
    /// where the stream did not say per chunk).
    pub output_tokens: f64,
    pub output_throughput: f64,
    /// Successful requests that ended in the slice, per second.
    pub request_throughput: f64,
    pub concurrency_mean: f64,
    pub ttft: Option<SliceLatency>,
    pub itl: Option<SliceLatency>,
    pub e2e: Option<SliceLatency>,
    /// Server gauges scraped in the slice (`kv_cache_usage`, `requests_running`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server: BTreeMap<String, SliceGauge>,
    /// Server counters' increase up to the scrapes taken in the slice, each from the scrape
    /// before it (`preemptions`, `prefix_cache_hits`, `generation_tokens`, …); a counter that
    /// went down (a restart) counts its new value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_increase: BTreeMap<String, f64>,
    /// Δ`prefix_cache_hits` ÷ Δ`prefix_cache_queries` of the slice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hit_rate: Option<f64>,
}

/// Each counter's increase, by the slice of the scrape it was seen at (`scrapes` in time order).
/// A counter the first scrape lacks appeared later, counting from zero (engines create some
/// series at their first event).
fn increases(
    scrapes: &[(Duration, &Canonical)],
    width: Duration,
) -> BTreeMap<u64, BTreeMap<&'static str, f64>> {
    let mut out: BTreeMap<u64, BTreeMap<&'static str, f64>> = BTreeMap::new();
    let mut last: BTreeMap<&'static str, f64> = BTreeMap::new();
    for (k, (at, values)) in scrapes.iter().enumerate() {
        let i = (at.as_nanos() / width.as_nanos()) as u64;
        for &c in COUNTERS {
            let Some(&v) = values.get(c).filter(|v| v.is_finite()) else {
                continue;
            };
            let before = match last.insert(c, v) {
                Some(p) => Some(p),
                None if k > 0 => Some(0.0),
                None => None,
            };
            if let Some(p) = before {
                *out.entry(i).or_default().entry(c).or_default() += server::increase(p, v);
            }
        }
    }
    out
}

#[derive(Default)]
struct Acc {
    phases: Vec<String>,
    sent: u64,
    ended: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    tokens: f64,
    ok_ended: u64,
    busy: Duration,
    ttft: Option<Histogram<u64>>,
    itl: Option<Histogram<u64>>,
    e2e: Option<Histogram<u64>>,
}

fn record_us(h: &mut Option<Histogram<u64>>, d: Duration) {
    let h = h.get_or_insert_with(|| {
        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
    });
    h.saturating_record((d.as_secs_f64() * 1e6).round().max(1.0) as u64);
}

fn latency(h: &Option<Histogram<u64>>) -> Option<SliceLatency> {
    let h = h.as_ref().filter(|h| !h.is_empty())?;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1e3;
    Some(SliceLatency {
        count: h.len(),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
    })
}

/// Cuts records into slices of `width`, one record at a time.
pub struct Slicer {
    width: Duration,
    slices: BTreeMap<u64, Acc>,
}

impl Slicer {
    /// `width` must not be zero (the experiment's spec holds it to 100 ms at least).
    pub fn new(width: Duration) -> Self {
        Self {
            width: width.max(Duration::from_millis(1)),
            slices: BTreeMap::new(),
        }
    }

    fn index(&self, at: Duration) -> u64 {
        (at.as_nanos() / self.width.as_nanos()) as u64
    }

    fn at(&mut self, at: Duration, phase: &str) -> &mut Acc {
        let i = self.index(at);
        let acc = self.slices.entry(i).or_default();
        if !acc.phases.iter().any(|p| p == phase) {
            acc.phases.push(phase.to_string());
        }
        acc
    }

    pub fn add(&mut self, r: &RequestRecord) {
        if r.warmup {
            return;
        }
        let phase = r.phase.as_str();
        self.at(r.sent, phase).sent += 1;
        let end = r.end.max(r.chunks.last().map_or(r.end, |c| c.at));
        let ended = self.at(end, phase);
        ended.ended += 1;
        match &r.failure {
            Some(f) => {
                if !f.kind.is_harness_limit() {
                    ended.failed += 1;
                }
                *ended.errors.entry(f.kind.to_string()).or_default() += 1;
            }
            None => {
                ended.ok_ended += 1;
                if let Some(d) = r.e2e() {
                    record_us(&mut ended.e2e, d);
                }
            }
        }
        // Time in flight, cut at slice bounds.
        let mut t = r.sent;
        while t < end {
            let i = self.index(t);
            let bound = self.width * u32::try_from(i + 1).unwrap_or(u32::MAX);
            let until = bound.min(end);
            self.at(t, phase).busy += until - t;
            if until <= t {
                break;
            }
            t = until;
        }
        if let (Some(first), Some(d)) = (r.chunks.first(), r.ttft())
            && r.ok()
        {
            record_us(&mut self.at(first.at, phase).ttft, d);
        }
        // Where a chunk's count is unknown, each carries its share of the request's.
        let share = if r.chunks.is_empty() {
            0.0
        } else {
            r.output_tokens() as f64 / r.chunks.len() as f64
        };
        let mut prev: Option<Duration> = None;
        for c in &r.chunks {
            let acc = self.at(c.at, phase);
            let tokens = c.tokens.map_or(share, f64::from);
            acc.tokens += tokens;
            if let Some(p) = prev
                && r.ok()
            {
                let n = c.tokens.unwrap_or(1).max(1);
                let gap = c.at.saturating_sub(p) / n;
                for _ in 0..n {
                    record_us(&mut acc.itl, gap);
                }
            }
            prev = Some(c.at);
        }
    }

    /// The slices from the origin to the last event, with the server's gauges from `scrapes`
    /// (each at its offset from the run's origin).
    pub fn finish(self, scrapes: &[(Duration, &Canonical)]) -> Vec<Slice> {
        let Some(&last) = self.slices.keys().next_back() else {
            return Vec::new();
        };
        let width = self.width;
        let w = width.as_secs_f64();
        let mut gauges: BTreeMap<u64, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
        for (at, values) in scrapes {
            let i = (at.as_nanos() / width.as_nanos()) as u64;
            for g in GAUGES {
                if let Some(v) = values.get(*g).filter(|v| v.is_finite()) {
                    gauges.entry(i).or_default().entry(g).or_default().push(*v);
                }
            }
        }
        let mut in_order = scrapes.to_vec();
        in_order.sort_by_key(|(at, _)| *at);
        let mut increase = increases(&in_order, width);
        let mut slices = self.slices;
        (0..=last)
            .map(|i| {
                let a = slices.remove(&i).unwrap_or_default();
                let increase: BTreeMap<String, f64> = increase
                    .remove(&i)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                let hit_rate = server::prefix_cache_hit_rate(&increase);
                let start = w * i as f64;
                Slice {
                    index: i,
                    start_s: start,
                    end_s: start + w,
                    phases: a.phases,
                    requests_sent: a.sent,
                    requests_ended: a.ended,
                    requests_failed: a.failed,
                    errors: a.errors,
                    output_tokens: a.tokens,
                    output_throughput: a.tokens / w,
                    request_throughput: a.ok_ended as f64 / w,
                    concurrency_mean: a.busy.as_secs_f64() / w,
                    ttft: latency(&a.ttft),
                    itl: latency(&a.itl),
                    e2e: latency(&a.e2e),
                    server: gauges
                        .remove(&i)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| {
                            let mean = v.iter().sum::<f64>() / v.len() as f64;
                            let max = v.iter().copied().fold(f64::MIN, f64::max);
                            (
                                k.to_string(),
                                SliceGauge {
                                    mean,
                                    max,
                                    scrapes: v.len(),
                                },
                            )
                        })
                        .collect(),
                    server_increase: increase,
                    prefix_cache_hit_rate: hit_rate,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{ChunkTime, ErrorKind, Failure, TokenCounting};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A request sent at `sent` with one-token chunks at the given offsets from the origin.
    fn req(sent: u64, chunks: &[u64]) -> RequestRecord {
        let mut r = RequestRecord::dropped("ramp", 0, None, ms(sent), ms(sent));
        r.failure = None;
        r.token_counting = TokenCounting::OnePerChunk;
        r.chunks = chunks
            .iter()
            .map(|&c| ChunkTime {
                at: ms(c),
                tokens: Some(1),
            })
            .collect();
        r.end = ms(*chunks.last().unwrap_or(&sent));
        r
    }

    #[test]
    fn events_count_in_the_slice_they_happened_in() {
        let mut s = Slicer::new(ms(1000));
        // Sent in slice 0, first token in 0, ends in slice 1.
        s.add(&req(100, &[300, 900, 1200]));
        // Entirely in slice 2; a failure.
        let mut f = req(2100, &[]);
        f.end = ms(2500);
        f.failure = Some(Failure {
            kind: ErrorKind::Http(503),
            detail: String::new(),
        });
        s.add(&f);
        let mut warm = req(0, &[50]);
        warm.warmup = true;
        s.add(&warm);
        let kv = Canonical::from([("kv_cache_usage".to_string(), 0.5)]);
        let kv2 = Canonical::from([("kv_cache_usage".to_string(), 0.7)]);
        let slices = s.finish(&[(ms(1500), &kv), (ms(1900), &kv2)]);
        assert_eq!(slices.len(), 3);
        let (a, b, c) = (&slices[0], &slices[1], &slices[2]);
        assert_eq!((a.requests_sent, a.requests_ended), (1, 0));
        assert_eq!(a.ttft.as_ref().unwrap().count, 1);
        assert!((a.ttft.as_ref().unwrap().p50_ms - 200.0).abs() < 1.0);
        assert_eq!(a.output_tokens, 2.0);
        // In flight from 0.1 s to 1.2 s: 0.9 s of slice 0, 0.2 s of slice 1.
        assert!((a.concurrency_mean - 0.9).abs() < 1e-9);
        assert!((b.concurrency_mean - 0.2).abs() < 1e-9);
        assert_eq!((b.requests_ended, b.request_throughput), (1, 1.0));
        assert_eq!(b.e2e.as_ref().unwrap().count, 1);
        // The gap ending at 1.2 s (300 ms) is slice 1's; the one at 0.9 s (600 ms) slice 0's.
        assert!((b.itl.as_ref().unwrap().p50_ms - 300.0).abs() < 1.0);
        assert!((a.itl.as_ref().unwrap().p50_ms - 600.0).abs() < 1.0);
        let kv = &b.server["kv_cache_usage"];
        assert_eq!((kv.scrapes, kv.max), (2, 0.7));
        assert!((kv.mean - 0.6).abs() < 1e-9);
        assert_eq!((c.requests_failed, c.errors["http_503"]), (1, 1));
        assert!(c.ttft.is_none() && c.e2e.is_none());
        assert_eq!(c.phases, ["ramp"]);
    }

    #[test]
    fn counters_increase_in_the_slice_of_the_scrape_that_saw_it() {
        let mut s = Slicer::new(ms(1000));
        s.add(&req(0, &[3500]));
        let c = |pairs: &[(&str, f64)]| -> Canonical {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let scrapes = [
            // The baseline: no increase yet; hits appear only at the third scrape.
            c(&[("preemptions", 2.0), ("prefix_cache_queries", 100.0)]),
            c(&[("preemptions", 5.0), ("prefix_cache_queries", 140.0)]),
            c(&[
                ("preemptions", 6.0),
                ("prefix_cache_queries", 180.0),
                ("prefix_cache_hits", 10.0),
            ]),
            // A restart: counted from its new value.
            c(&[
                ("preemptions", 1.0),
                ("prefix_cache_queries", 190.0),
                ("prefix_cache_hits", 15.0),
            ]),
        ];
        // Given out of order: taken in time order. Slice 2 has no scrape.
        let slices = s.finish(&[
            (ms(3200), &scrapes[3]),
            (ms(100), &scrapes[0]),
            (ms(1300), &scrapes[1]),
            (ms(1700), &scrapes[2]),
        ]);
        assert_eq!(slices.len(), 4);
        assert!(slices[0].server_increase.is_empty());
        let b = &slices[1];
        assert_eq!(b.server_increase["preemptions"], 4.0);
        assert_eq!(b.server_increase["prefix_cache_queries"], 80.0);
        assert_eq!(b.server_increase["prefix_cache_hits"], 10.0);
        assert_eq!(b.prefix_cache_hit_rate, Some(10.0 / 80.0));
        assert!(slices[2].server_increase.is_empty());
        assert_eq!(slices[2].prefix_cache_hit_rate, None);
        let d = &slices[3];
        assert_eq!(d.server_increase["preemptions"], 1.0);
        assert_eq!(d.prefix_cache_hit_rate, Some(0.5));
    }

    #[test]
    fn a_stall_leaves_empty_slices_and_no_records_no_slices() {
        let mut s = Slicer::new(ms(100));
        s.add(&req(0, &[10]));
        s.add(&req(450, &[460]));
        let slices = s.finish(&[]);
        assert_eq!(slices.len(), 5);
        assert_eq!(slices[2].requests_sent, 0);
        assert!(slices[2].phases.is_empty());
        assert!(Slicer::new(ms(100)).finish(&[]).is_empty());
    }
}
