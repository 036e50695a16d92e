use super::*;
use crate::core::engine::TargetKind;

fn state() -> StreamState {
    StreamState::new()
}

fn feed(s: &mut StreamState, data: &str, at_ms: u64) {
    s.on_event(
        SseEvent {
            event: b"",
            data: data.as_bytes(),
        },
        Duration::from_millis(at_ms),
    );
}

#[test]
fn role_only_and_empty_chunks_do_not_count() {
    let mut s = state();
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
        5,
    );
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#,
        6,
    );
    feed(&mut s, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#, 10);
    feed(&mut s, r#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#, 12);
    feed(
        &mut s,
        r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
        13,
    );
    feed(
        &mut s,
        r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3}}}"#,
        14,
    );
    feed(&mut s, "[DONE]", 15);
    assert_eq!(s.chunks.len(), 2);
    assert_eq!(s.chunks[0].at, Duration::from_millis(10));
    assert_eq!(s.output_chars, 5);
    assert!(s.done && s.finished);
    assert_eq!(s.usage.unwrap().cached_tokens, Some(3));
    assert_eq!(s.token_counting(true), TokenCounting::OnePerChunk);
    assert_eq!(s.chunks[1].tokens, Some(1));
}

#[test]
fn tool_calls_and_escaped_text_count_as_output() {
    let mut s = state();
    s.text = Some(String::new());
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"content":null,"tool_calls":null}}]}"#,
        1,
    );
    assert!(s.chunks.is_empty(), "a null tool_calls is not output");
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}"#,
        2,
    );
    assert_eq!(s.chunks.len(), 1);
    // Escapes force an owned string; the count is of the decoded characters.
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"content":"a\"b\n\u00e9"}}]}"#,
        3,
    );
    assert!(s.failure.is_none(), "{:?}", s.failure);
    assert_eq!(s.chunks.len(), 2);
    assert_eq!(s.output_chars, 5);
    assert_eq!(s.text.as_deref(), Some("a\"b\né"));
}

#[test]
fn continuous_usage_gives_exact_tokens_per_chunk() {
    let mut s = state();
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":5,"completion_tokens":0}}"#,
        1,
    );
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
        2,
    );
    feed(
        &mut s,
        r#"{"choices":[{"delta":{"content":"bcd"}}],"usage":{"prompt_tokens":5,"completion_tokens":4}}"#,
        3,
    );
    feed(
        &mut s,
        r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4}}"#,
        4,
    );
    assert_eq!(s.token_counting(true), TokenCounting::Exact);
    let t: Vec<_> = s.chunks.iter().map(|c| c.tokens).collect();
    assert_eq!(t, [Some(1), Some(3)]);
}

/// Every OpenAI-API stream of the fixtures recorded from one engine, as (its event data, in
/// order).
fn recorded_streams(engine: &str) -> Vec<Vec<String>> {
    recorded_streams_at(engine, |path| path.starts_with("/v1/"))
}

/// The streams of `engine`'s recorded exchanges whose path `keep` accepts.
fn recorded_streams_at(engine: &str, keep: impl Fn(&str) -> bool) -> Vec<Vec<String>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wiremock-fixtures");
    let mut streams = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path().join(engine);
        if crate::replay::Fixture::exists(&dir) {
            let fixture = crate::replay::Fixture::load(&dir).unwrap();
            streams.extend(
                fixture
                    .exchanges
                    .into_iter()
                    .filter(|x| keep(&x.path))
                    .map(|x| x.events.into_iter().map(|e| e.data).collect::<Vec<_>>()),
            );
        }
    }
    let n = streams.len();
    assert!(n >= 10, "{engine}: {n} recorded streams");
    streams
}

fn read_all(events: &[String], events_are_tokens: bool) -> (StreamState, TokenCounting) {
    let mut s = state();
    for (i, data) in events.iter().enumerate() {
        feed(&mut s, data, i as u64);
    }
    assert!(s.failure.is_none(), "{:?}", s.failure);
    let counting = s.token_counting(events_are_tokens);
    (s, counting)
}

/// Reads each recorded stream of `engine` with continuous usage: tokens per chunk exact,
/// summing to the final usage, every chunk at least one token. Returns (chunks, tokens,
/// chunks with empty text, chunks of more than one token).
fn exact_from_recordings(engine: &str, kind: TargetKind) -> (u64, u64, u64, u64) {
    let (mut chunks, mut tokens, mut empty, mut grouped) = (0, 0, 0, 0);
    for events in recorded_streams(engine) {
        let (s, counting) = read_all(&events, kind.streams_one_token_per_event());
        let completion = s.usage.unwrap().completion_tokens;
        assert_eq!(counting, TokenCounting::Exact);
        let per: Vec<u64> = s
            .chunks
            .iter()
            .map(|c| u64::from(c.tokens.unwrap()))
            .collect();
        assert_eq!(per.iter().sum::<u64>(), completion);
        assert!(per.iter().all(|&n| n >= 1), "{per:?}");
        chunks += per.len() as u64;
        tokens += completion;
        grouped += per.iter().filter(|&&n| n > 1).count() as u64;
        empty += events
            .iter()
            .filter(|d| d.contains(r#""text":"","#) && !d.contains(r#""choices":[]"#))
            .count() as u64;
    }
    (chunks, tokens, empty, grouped)
}

#[test]
fn vllm_tokens_with_empty_text_are_arrivals() {
    // Recorded from vLLM 0.32.0 with continuous usage: an event per token (two of ~8500
    // carried two), 1-6 % of them with empty text (a token ending inside a UTF-8
    // character): each is a chunk with its token.
    let (chunks, tokens, empty, grouped) = exact_from_recordings("vllm", TargetKind::Vllm);
    assert!(empty > 0, "the recordings hold empty-text token events");
    assert!(
        chunks + grouped >= tokens && grouped * 100 < chunks,
        "{chunks} {tokens}"
    );
}

#[test]
fn sglang_chunks_carry_their_token_counts() {
    // Recorded from SGLang 0.5.21, which honours continuous usage too: its chunks group
    // tokens (up to dozens under load), and a chunk with empty text can carry tokens.
    let (chunks, tokens, _, grouped) = exact_from_recordings("sglang", TargetKind::Sglang);
    assert!(
        grouped > 0 && chunks < tokens,
        "{chunks} chunks, {tokens} tokens"
    );
}

#[test]
fn sglang_without_per_chunk_usage_leaves_tokens_per_chunk_unknown() {
    // The same streams with usage only on the last record (continuous usage off): a chunk
    // count that matches the token count would be chance, so nothing is inferred.
    let mut matched = 0;
    for events in recorded_streams("sglang") {
        let last = events.len().saturating_sub(2);
        let stripped: Vec<String> = events
            .iter()
            .enumerate()
            .map(|(i, d)| match serde_json::from_str::<Value>(d) {
                Ok(mut v) if i < last && v.get("usage").is_some() => {
                    v["usage"] = Value::Null;
                    v.to_string()
                }
                _ => d.clone(),
            })
            .collect();
        let (s, counting) = read_all(&stripped, TargetKind::Sglang.streams_one_token_per_event());
        assert_eq!(counting, TokenCounting::Unknown);
        assert!(s.chunks.iter().all(|c| c.tokens.is_none()));
        matched += u64::from(s.usage.unwrap().completion_tokens == s.chunks.len() as u64);
    }
    assert!(
        matched > 0,
        "some streams match by chance, and are still not inferred"
    );
}

#[test]
fn generate_chunks_give_new_text_and_tokens_from_cumulative_counts() {
    // The shape of SGLang's /generate stream (synthetic values): the whole text so far and
    // cumulative counts on every chunk, `finish_reason` set on the last.
    let mut s = state();
    s.text = Some(String::new());
    let chunk = |text: &str, n: u64, finish: &str| {
        format!(
            r#"{{"text":"{text}","output_ids":[],"meta_info":{{"id":"x","finish_reason":{finish},"prompt_tokens":9,"completion_tokens":{n},"cached_tokens":4}}}}"#
        )
    };
    feed(&mut s, &chunk("ab", 1, "null"), 1);
    feed(&mut s, &chunk("ab\u{e9}", 3, "null"), 2);
    // A token ending inside a character: no new text, one more token.
    feed(&mut s, &chunk("ab\u{e9}", 4, "null"), 3);
    feed(
        &mut s,
        &chunk("ab\u{e9}cd", 6, r#"{"type":"length","length":6}"#),
        4,
    );
    feed(&mut s, "[DONE]", 5);
    assert!(s.failure.is_none(), "{:?}", s.failure);
    assert!(s.finished && s.done);
    assert_eq!(s.token_counting(false), TokenCounting::Exact);
    let t: Vec<_> = s.chunks.iter().map(|c| c.tokens).collect();
    assert_eq!(t, [Some(1), Some(2), Some(1), Some(2)]);
    assert_eq!(s.output_chars, 5);
    assert_eq!(s.text.as_deref(), Some("ab\u{e9}cd"));
    let u = s.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
        (9, 6, Some(4))
    );
}

#[test]
fn sglang_generate_streams_have_exact_tokens_per_chunk() {
    // Recorded from SGLang 0.5.21's /generate (`sglang_native`): every chunk's token count
    // from the growth of `completion_tokens`, summing to the final count.
    let streams = recorded_streams_at("sglang", |path| path == "/generate");
    for events in &streams {
        let (s, counting) = read_all(events, false);
        assert!(s.finished && s.done);
        assert_eq!(counting, TokenCounting::Exact);
        let per: Vec<u32> = s.chunks.iter().map(|c| c.tokens.unwrap()).collect();
        let completion = s.usage.unwrap().completion_tokens;
        assert_eq!(per.iter().map(|&n| u64::from(n)).sum::<u64>(), completion);
        assert!(per.iter().all(|&n| n >= 1), "{per:?}");
        assert!(s.output_chars > 0);
    }
}

#[test]
fn usage_on_the_last_content_chunk_only_is_not_per_chunk() {
    // llama.cpp completions: usage rides on the finish chunk, which also has text.
    let mut s = state();
    feed(&mut s, r#"{"choices":[{"text":"a"}]}"#, 1);
    feed(
        &mut s,
        r#"{"choices":[{"text":"b","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":2},"timings":{"cache_n":3,"prompt_n":2}}"#,
        2,
    );
    assert_eq!(s.token_counting(true), TokenCounting::OnePerChunk);
    assert_eq!(s.timings.unwrap().cache_n, Some(3));
    let mut s = state();
    feed(&mut s, r#"{"choices":[{"text":"ab"}]}"#, 1);
    feed(
        &mut s,
        r#"{"choices":[{"text":"c","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#,
        2,
    );
    assert_eq!(s.token_counting(true), TokenCounting::Unknown);
    assert!(s.chunks.iter().all(|c| c.tokens.is_none()));
}

#[test]
fn in_stream_errors_in_every_shape() {
    for data in [
        r#"{"error":{"message":"out of memory","code":500}}"#,
        r#"{"object":"error","message":"out of memory"}"#,
        r#"{"error":"out of memory"}"#,
    ] {
        let mut s = state();
        feed(&mut s, data, 1);
        let f = s.failure.unwrap();
        assert_eq!(f.kind, ErrorKind::StreamError);
        assert_eq!(f.detail, "out of memory");
    }
    let mut s = state();
    s.on_event(
        SseEvent {
            event: b"error",
            data: b"boom",
        },
        Duration::ZERO,
    );
    assert_eq!(s.failure.unwrap().kind, ErrorKind::StreamError);
    let mut s = state();
    feed(&mut s, "{not json", 1);
    assert_eq!(s.failure.unwrap().kind, ErrorKind::Decode);
}
