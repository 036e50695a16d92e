//! SSE decoding throughput: one large buffer versus 1-byte reads (the decoder must be linear
//! in both), and the client's per-chunk work (decode + JSON) on a realistic llama.cpp stream.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use inferlab::client::sse::SseDecoder;
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

criterion_group!(benches, bench);
criterion_main!(benches);
