//! Exact prompt lengths with a local tokenizer.json: prompts are drawn from its vocabulary and
//! every planned prompt is counted with it; a bad tokenizer file is a clear error.

use crate::common;

use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    common::scratch(&format!("tok-{name}"))
}

/// A word-level tokenizer over `n` made-up words (`ba`, `bb`, … `zz` style), whitespace
/// pre-tokenized, with an unknown token.
fn write_tokenizer(path: &Path, n: usize) -> Vec<String> {
    let letters: Vec<char> = ('a'..='z').collect();
    let words: Vec<String> = (0..n)
        .map(|i| format!("w{}{}", letters[i / 26 % 26], letters[i % 26]))
        .collect();
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), 0.into());
    for (i, w) in words.iter().enumerate() {
        vocab.insert(w.clone(), (i + 1).into());
    }
    let t = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": null,
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]" }
    });
    std::fs::write(path, t.to_string()).unwrap();
    words
}

fn experiment(dir: &Path, tokenizer: &str) -> PathBuf {
    let p = dir.join("tok.toml");
    std::fs::write(
        &p,
        format!(
            r#"schema_version = 1
description = "tokenizer"
seed = 3
[targets.box]
kind = "openai"
[model]
name = "truth"
tokenizer = "{tokenizer}"
[observe]
metrics = false
[[phase]]
name = "load"
workload = {{ kind = "concurrent", concurrency = 2, requests = 6, input_tokens = 40 }}
request = {{ api = "completions", output_tokens = 3 }}
[[assert]]
expr = "all.error_rate == 0"
"#
        ),
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn prompts_come_from_the_tokenizer_and_are_counted_exactly() {
    let dir = scratch("exact");
    let words = write_tokenizer(&dir.join("tokenizer.json"), 300);
    let exp = inferlab::spec_io::load(&experiment(&dir, "tokenizer.json")).unwrap();
    let schedule = inferlab::workload::schedule(&exp, 1);
    for r in &schedule.phases[0].requests {
        let n = r.prompt.split(' ').count();
        assert_eq!(n as u32, r.input_tokens, "{}", r.prompt);
        assert!(r.prompt.split(' ').all(|w| words.contains(&w.to_string())));
    }
    let truth = inferlab::truth::TruthServer::start(
        inferlab::truth::TruthConfig {
            ttft: std::time::Duration::from_millis(2),
            itl: std::time::Duration::from_millis(1),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let out = common::run_live(&exp, &truth.url(), "tok").await;
    assert!(out.passed(), "{:?}", out.verdicts);
    assert!(
        out.summary.prompt_lengths.to_string().starts_with(
            "exact: 6 prompts have their declared lengths, counted with tokenizer tokenizer.json"
        ),
        "{}",
        out.summary.prompt_lengths
    );
}

#[test]
fn a_missing_or_unusable_tokenizer_is_named_where_it_is_written() {
    let dir = scratch("bad");
    let e = inferlab::spec_io::load(&experiment(&dir, "nope.json"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tok.toml:8:13: model.tokenizer: tokenizer file"),
        "{e}"
    );
    assert!(e.contains("does not exist"), "{e}");
    std::fs::write(dir.join("garbage.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    let e = inferlab::spec_io::load(&experiment(&dir, "garbage.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a tokenizer.json"), "{e}");
    write_tokenizer(&dir.join("tiny.json"), 10);
    let e = inferlab::spec_io::load(&experiment(&dir, "tiny.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("too few plain words"), "{e}");
}
