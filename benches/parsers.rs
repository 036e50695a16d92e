//! Parser throughput. SSE decoding: one large buffer versus 1-byte reads (the decoder must be
//! linear in both), and decode + JSON per chunk on a realistic stream. Prometheus text: a 1 MB
//! vLLM-like exposition (many histograms, several engines and models), whole and filtered to the
//! families the adapters read.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use inferlab::core::engine::TargetKind;
use inferlab::core::prom;
use inferlab::core::server::{canonical, is_used_family};
use inferlab::core::sse::SseDecoder;
use std::hint::black_box;

fn stream(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..events {
        out.extend_from_slice(
            format!(
                "data: {{\"choices\":[{{\"text\":\" word{i}\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}}],\"created\":1795866340,\"model\":\"tiny\",\"object\":\"text_completion\",\"id\":\"cmpl-{i}\"}}\r\n\r\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"data: [DONE]\r\n\r\n");
    out
}

fn decode(input: &[u8], read: usize) -> usize {
    let mut d = SseDecoder::new();
    let mut n = 0;
    for piece in input.chunks(read) {
        d.feed(piece, &mut |e| n += e.data.len());
    }
    d.finish(&mut |e| n += e.data.len());
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse_decode");
    for events in [1_000usize, 40_000] {
        let input = stream(events);
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("{events}_events_one_read"), |b| {
            b.iter(|| decode(black_box(&input), input.len()))
        });
        g.bench_function(format!("{events}_events_1_byte_reads"), |b| {
            b.iter(|| decode(black_box(&input), 1))
        });
        g.bench_function(format!("{events}_events_1500_byte_reads"), |b| {
            b.iter(|| decode(black_box(&input), 1500))
        });
    }
    g.finish();

    // Decode plus the JSON parse the client does per event.
    let input = stream(1_000);
    let mut g = c.benchmark_group("client_per_chunk");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("decode_and_parse_1000_chunks", |b| {
        b.iter(|| {
            let mut d = SseDecoder::new();
            let mut chars = 0usize;
            d.feed(black_box(&input), &mut |e| {
                if !e.is_done()
                    && let Ok(v) = serde_json::from_slice::<serde_json::Value>(e.data)
                {
                    chars += v["choices"][0]["text"].as_str().map_or(0, str::len);
                }
            });
            chars
        })
    });
    g.finish();
}

/// About 1 MB of exposition: 6 latency histograms × 21 buckets × 66 label sets, plus gauges
/// and counters, and unrelated Python process metrics.
fn exposition() -> String {
    let mut t = String::new();
    for i in 0..2_000 {
        t.push_str(&format!(
            "python_gc_objects_collected_total{{generation=\"{i}\"}} {i}.0\n"
        ));
    }
    for engine in 0..6 {
        for model in 0..11 {
            let labels = format!("engine=\"{engine}\",model_name=\"org/model-{model}-Instruct\"");
            t.push_str(&format!("vllm:num_requests_running{{{labels}}} 7.0\nvllm:kv_cache_usage_perc{{{labels}}} 0.42\n"));
            t.push_str(&format!("vllm:prefix_cache_queries_total{{{labels}}} 184320.0\nvllm:prefix_cache_hits_total{{{labels}}} 147456.0\n"));
            for h in [
                "time_to_first_token_seconds",
                "inter_token_latency_seconds",
                "e2e_request_latency_seconds",
                "request_queue_time_seconds",
                "request_prefill_time_seconds",
                "request_decode_time_seconds",
            ] {
                for b in 0..20 {
                    t.push_str(&format!(
                        "vllm:{h}_bucket{{{labels},le=\"{}\"}} {}.0\n",
                        0.001 * f64::from(1u32 << b.min(16)),
                        b * 10
                    ));
                }
                t.push_str(&format!("vllm:{h}_bucket{{{labels},le=\"+Inf\"}} 200.0\nvllm:{h}_sum{{{labels}}} 12.5\nvllm:{h}_count{{{labels}}} 200.0\n"));
            }
        }
    }
    t
}

fn bench_prom(c: &mut Criterion) {
    let text = exposition();
    let mut g = c.benchmark_group("prometheus_text");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function(format!("parse_all_{}_kb", text.len() / 1024), |b| {
        b.iter(|| prom::parse(black_box(&text)).samples.len())
    });
    g.bench_function("parse_used_families_and_canonicalise", |b| {
        b.iter(|| {
            canonical(
                TargetKind::Vllm,
                &prom::parse_filtered(black_box(&text), &is_used_family),
            )
            .len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_prom);
criterion_main!(benches);
