use super::*;
use crate::core::record::{ChunkTime, Failure, Usage};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A request sent at `sent` ms with output chunks at the given offsets (ms from send).
fn rec(sent: u64, chunks: &[u64], tokens: u64) -> RequestRecord {
    RequestRecord {
        phase: "p".into(),
        repeat: 0,
        index: 0,
        warmup: false,
        group: None,
        intended: ms(sent),
        sent: ms(sent),
        headers: Some(ms(sent + 1)),
        status: Some(200),
        chunks: chunks
            .iter()
            .map(|&c| ChunkTime {
                at: ms(sent + c),
                tokens: None,
            })
            .collect(),
        end: ms(sent + chunks.last().copied().unwrap_or(0) + 1),
        usage: Some(Usage {
            prompt_tokens: 100,
            completion_tokens: tokens,
            cached_tokens: Some(40),
        }),
        token_counting: if tokens == chunks.len() as u64 {
            TokenCounting::OnePerChunk
        } else {
            TokenCounting::Unknown
        },
        output_chars: 0,
        events: 0,
        server_timings: None,
        failure: None,
        session: None,
        turn: None,
        output_text: None,
        send_attempts: 1,
        declared_input_tokens: None,
        max_tokens: None,
    }
}

#[test]
fn per_request_definitions() {
    let r = rec(10, &[100, 110, 130], 3);
    assert_eq!(r.ttft(), Some(ms(100)));
    assert_eq!(r.e2e(), Some(ms(130)));
    assert_eq!(r.tpot(), Some(ms(15)));
    assert_eq!(r.ntpot(), Some(Duration::from_nanos(43_333_333)));
    let one = rec(0, &[50], 1);
    assert_eq!(one.tpot(), None, "TPOT is undefined for one token");
}

#[test]
fn cached_tokens_per_request_range() {
    let mut none = rec(0, &[10, 20], 2);
    none.usage.as_mut().unwrap().cached_tokens = None;
    let mut more = rec(0, &[10, 20], 2);
    more.usage.as_mut().unwrap().cached_tokens = Some(96);
    // A request the server reported no cached tokens for (SGLang: none cached) counts as 0.
    let (s, _) = summarize(&[rec(0, &[10, 20], 2), none.clone(), more], &Slo::default());
    assert_eq!(
        (s.cached_tokens_min, s.cached_tokens_max),
        (Some(0), Some(96))
    );
    assert_eq!(s.cached_tokens, 136);
    // A server that never reports cached tokens has no range.
    let (s, _) = summarize(&[none], &Slo::default());
    assert_eq!((s.cached_tokens_min, s.cached_tokens_max), (None, None));
}

#[test]
fn summary_counts_throughput_and_itl() {
    let records = [rec(0, &[100, 110, 130], 3), rec(0, &[200, 210, 230], 3)];
    let (s, h) = summarize(&records, &Slo::default());
    assert_eq!((s.requests, s.succeeded, s.failed), (2, 2, 0));
    assert_eq!(s.output_tokens, 6);
    assert_eq!(s.prompt_tokens, 200);
    assert_eq!(s.cached_token_ratio, Some(0.4));
    // Window: 0 → 231 ms (end of the later request).
    assert!((s.duration_s - 0.231).abs() < 1e-9);
    assert!((s.output_throughput - 6.0 / 0.231).abs() < 1e-6);
    let ttft = s.ttft.unwrap();
    assert_eq!(ttft.count, 2);
    assert_eq!(
        (ttft.min_ms, ttft.max_ms, ttft.mean_ms),
        (100.0, 200.0, 150.0)
    );
    let itl = s.chunk_itl.unwrap();
    assert_eq!(itl.count, 4);
    assert_eq!((itl.min_ms, itl.max_ms), (10.0, 20.0));
    assert_eq!(s.token_itl.unwrap().count, 4);
    assert_eq!(h["ttft"].len(), 2);
    assert!(s.goodput.is_none());
    // Little's law: (130 + 230) / 231.
    assert!((s.concurrency_achieved - 360.0 / 231.0).abs() < 1e-9);
}

#[test]
fn token_itl_splits_multi_token_chunks() {
    let mut r = rec(0, &[100, 120], 5);
    r.token_counting = TokenCounting::Exact;
    r.chunks[0].tokens = Some(1);
    r.chunks[1].tokens = Some(4);
    let (s, _) = summarize([&r], &Slo::default());
    let t = s.token_itl.unwrap();
    assert_eq!(t.count, 4);
    assert_eq!(t.max_ms, 5.0);
    // Unknown tokens per chunk: token_itl has no samples, chunk_itl still does.
    let r = rec(0, &[100, 120], 5);
    let (s, _) = summarize([&r], &Slo::default());
    assert!(s.token_itl.is_none());
    assert_eq!(s.tokens_per_chunk_unknown, 1);
    assert_eq!(s.chunk_itl.unwrap().count, 1);
}

#[test]
fn failures_are_counted_by_kind_and_excluded_from_latency() {
    let mut bad = rec(0, &[5], 1);
    bad.failure = Some(Failure {
        kind: ErrorKind::Http(503),
        detail: "busy".into(),
    });
    let mut warm = rec(0, &[1], 1);
    warm.warmup = true;
    let records = [rec(0, &[100, 110], 2), bad, warm];
    let (s, _) = summarize(&records, &Slo::default());
    assert_eq!(
        (s.requests, s.succeeded, s.failed, s.warmup_requests),
        (2, 1, 1, 1)
    );
    assert_eq!(s.errors.get("http_503"), Some(&1));
    assert_eq!(s.error_rate, 0.5);
    assert_eq!(s.ttft.unwrap().count, 1);
}

#[test]
fn goodput_is_inclusive_and_ignores_errors() {
    let slo = Slo {
        ttft: Some(ms(100)),
        ..Slo::default()
    };
    let records = [rec(0, &[100, 150], 2), rec(0, &[101, 150], 2)];
    let (s, _) = summarize(&records, &slo);
    assert!((s.goodput.unwrap() - 1.0 / 0.151).abs() < 1e-9);
}

#[test]
fn metric_paths_are_checked() {
    assert_eq!(check_metric("ttft", Some(Stat::P50)), Ok(Dim::Time));
    assert_eq!(check_metric("ttft", Some(Stat::Count)), Ok(Dim::Plain));
    assert_eq!(check_metric("error_rate", None), Ok(Dim::Plain));
    assert!(
        check_metric("ttft", None)
            .unwrap_err()
            .contains("add a statistic")
    );
    assert_eq!(
        Stat::parse("p42"),
        None,
        "the parser refuses it, with its column"
    );
    assert!(
        check_metric("tfft", Some(Stat::P50))
            .unwrap_err()
            .contains("unknown metric")
    );
    assert!(check_metric("error_rate", Some(Stat::P50)).is_err());
}

#[test]
fn empty_input_has_no_statistics() {
    let (s, _) = summarize(std::iter::empty(), &Slo::default());
    assert_eq!(s.requests, 0);
    assert!(s.ttft.is_none());
    assert_eq!(s.value("ttft", Some(Stat::P50)), Ok(None));
    assert_eq!(
        s.value("ttft", Some(Stat::Count)).unwrap().unwrap().value,
        0.0
    );
}
