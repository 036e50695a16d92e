//! Parsing and lowering experiment files: what is accepted, and every error located.

use super::*;
use crate::core::catalog::Mode;
use crate::core::diag::parse_duration;
use crate::spec_io::parse;
use rstest::rstest;

const GOOD: &str = r#"schema_version = 1
description = "prefix cache"
seed = 7

[targets.llamacpp]
[targets.mine]
kind = "openai"

[model]
name = "tiny"

[[phase]]
name = "cold"
workload = { kind = "shared_prefix", groups = 4, prefix_tokens = 100, suffixes = 1, suffix_tokens = 8 }
request = { api = "completions", output_tokens = 4, ignore_eos = true }

[[phase]]
name = "warm"
workload = { kind = "shared_prefix", reuse = "cold", suffixes = 2, suffix_tokens = 8 }
request = { api = "chat", output_tokens = 4 }

[slo]
ttft = "200ms"

[[assert]]
expr = "warm.ttft.p50 <= 0.5 * cold.ttft.p50"
"#;

#[test]
fn repeats_strict_modes_and_baselines_lower() {
    let src = GOOD
        .replace("seed = 7\n", "seed = 7\nrepeats = 3\nstrict = true\n")
        .replace(
            "expr = \"warm.ttft.p50 <= 0.5 * cold.ttft.p50\"",
            "expr = \"warm.ttft.p50 <= 1.1 * baseline.warm.ttft.p50\"\nmodes = [\"replay\"]",
        );
    let e = parse("x.toml", "x", &src).unwrap();
    assert_eq!((e.repeats, e.strict), (3, true));
    let a = &e.assertions[0];
    assert!(a.reads_baseline());
    assert!(a.applies_in(Mode::Replay) && !a.applies_in(Mode::Live) && !a.applies_in(Mode::Record));
    let plain = parse("x.toml", "x", GOOD).unwrap();
    assert_eq!((plain.repeats, plain.strict), (1, false));
    assert!(plain.assertions[0].applies_in(Mode::Record));
    // Three repeats: the phases three times over, each repeat's prompts apart.
    let s = crate::workload::schedule(&e, 1);
    let order: Vec<(u32, &str)> = s
        .phases
        .iter()
        .map(|p| (p.repeat, p.name.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (0, "cold"),
            (0, "warm"),
            (1, "cold"),
            (1, "warm"),
            (2, "cold"),
            (2, "warm")
        ]
    );
    assert_ne!(
        s.phases[0].requests[0].prompt,
        s.phases[2].requests[0].prompt
    );
    assert_eq!(
        s.phases[0].requests[0].input_tokens,
        s.phases[2].requests[0].input_tokens
    );
    // Repeat 0 is the schedule without repeats.
    assert_eq!(
        crate::workload::schedule(&plain, 1).phases[0].requests,
        s.phases[0].requests
    );
}

#[test]
fn parses_a_complete_file() {
    let e = parse("x.toml", "x", GOOD).unwrap();
    assert_eq!(e.targets.len(), 2);
    assert_eq!(e.target("llamacpp").unwrap().kind, TargetKind::Llamacpp);
    assert_eq!(e.target("mine").unwrap().kind, TargetKind::Openai);
    assert_eq!(e.phases.len(), 2);
    assert_eq!(
        e.phases[1].workload,
        Workload::SharedPrefix {
            groups: 4,
            prefix_tokens: 100,
            suffixes: 2,
            suffix_tokens: 8,
            concurrency: 1,
            prefix_from: "cold".into()
        }
    );
    match &e.phases[0].workload {
        Workload::SharedPrefix { prefix_from, .. } => assert_eq!(prefix_from, "cold"),
        w => panic!("{w:?}"),
    }
    assert_eq!(e.slo.ttft, Some(Duration::from_millis(200)));
    assert_eq!(e.assertions.len(), 1);
    assert!(
        e.assertions[0].applies_to("mine"),
        "no `targets`: every target"
    );
    let only = GOOD.replace(
        "0.5 * cold.ttft.p50\"\n",
        "0.5 * cold.ttft.p50\"\ntargets = [\"llamacpp\"]\n",
    );
    let e = parse("x.toml", "x", &only).unwrap();
    assert!(e.assertions[0].applies_to("llamacpp"));
    assert!(!e.assertions[0].applies_to("mine"));
    assert!(e.snapshot.enabled);
}

#[test]
fn sglang_targets_may_use_the_native_api() {
    let only_sglang = GOOD
        .replace(
            "[targets.llamacpp]\n[targets.mine]\nkind = \"openai\"",
            "[targets.sglang]",
        )
        .replace("api = \"chat\"", "api = \"generate\"");
    let e = parse("x.toml", "x", &only_sglang).unwrap();
    assert_eq!(e.phases[1].request.api, Api::Generate);
    assert_eq!(Api::Generate.path(), "/generate");
}

/// (replacement applied to GOOD, expected `line:column: field: message` fragment)
#[rstest]
#[case::syntax("seed = 7\n", "seed = = 7\n", "x.toml:3:8: (syntax):")]
#[case::unknown_top(
    "seed = 7\n",
    "seed = 7\nsed = 1\n",
    "x.toml:4:1: sed: unknown field `sed`"
)]
#[case::wrong_type(
    "seed = 7\n",
    "seed = \"seven\"\n",
    "x.toml:3:8: seed: invalid type: string \"seven\", expected u64"
)]
#[case::unknown_kind(
    "kind = \"openai\"",
    "kind = \"tgi\"",
    "x.toml:7:8: targets.mine.kind: unknown variant `tgi`"
)]
#[case::kind_needed(
    "kind = \"openai\"",
    "",
    "targets.mine.kind: target `mine` needs a kind"
)]
#[case::unknown_workload_field(
    "groups = 4,",
    "grups = 4,",
    "x.toml:14:38: phase[0].workload.grups: unknown field `grups`"
)]
#[case::missing_field(
    "groups = 4, ",
    "",
    "x.toml:14:12: phase[0].workload.groups: workload kind `shared_prefix` needs `groups`"
)]
#[case::zero(
    "suffixes = 1,",
    "suffixes = 0,",
    "phase[0].workload.suffixes: must be at least 1"
)]
#[case::negative(
    "suffixes = 1,",
    "suffixes = -1,",
    "x.toml:14:82: phase[0].workload.suffixes: invalid value: integer `-1`, expected u32"
)]
#[case::bad_reuse(
    "reuse = \"cold\"",
    "reuse = \"hot\"",
    "phase[1].workload.reuse: `reuse = \"hot\"` must name an earlier phase"
)]
#[case::bad_api(
    "api = \"chat\"",
    "api = \"generated\"",
    "x.toml:20:19: phase[1].request.api: unknown variant `generated`"
)]
#[case::generate_on_another_engine(
    "api = \"chat\"",
    "api = \"generate\"",
    "phase[1].request.api: api = \"generate\" is SGLang's native API, but target `llamacpp` is llamacpp"
)]
#[case::dup_phase(
    "name = \"warm\"",
    "name = \"cold\"",
    "x.toml:18:8: phase[1].name: duplicate phase name `cold`"
)]
#[case::bad_assert_syntax(
    "0.5 * cold",
    "0.5 ** cold",
    "x.toml:26:31: assert[0].expr: expected a number"
)]
#[case::assert_unknown_target(
    "0.5 * cold.ttft.p50\"\n",
    "0.5 * cold.ttft.p50\"\ntargets = [\"llamacpp\", \"nope\"]\n",
    "x.toml:27:11: assert[0].targets: unknown target `nope` (the experiment's targets: llamacpp, mine)"
)]
#[case::assert_no_target(
    "0.5 * cold.ttft.p50\"\n",
    "0.5 * cold.ttft.p50\"\ntargets = []\n",
    "x.toml:27:11: assert[0].targets: name at least one target"
)]
#[case::across_with_targets(
    "warm.ttft.p50 <= 0.5 * cold.ttft.p50\"\n",
    "llamacpp.warm.ttft.p50 <= 0.5 * mine.cold.ttft.p50\"\ntargets = [\"llamacpp\"]\n",
    "x.toml:27:11: assert[0].targets: an assertion whose paths name targets is checked across them"
)]
#[case::across_unqualified(
    "warm.ttft.p50 <= 0.5 * cold",
    "warm.ttft.p50 <= 0.5 * mine.cold",
    "x.toml:26:9: assert[0].expr: this assertion compares targets: name the target of `warm.ttft.p50`"
)]
#[case::across_unknown_target(
    "warm.ttft.p50 <= 0.5 * cold",
    "llamacpp.warm.ttft.p50 <= 0.5 * theirs.cold",
    "x.toml:26:41: assert[0].expr: unknown target `theirs` (the experiment's targets: llamacpp, mine)"
)]
#[case::assert_unknown_phase(
    "0.5 * cold",
    "0.5 * hot",
    "x.toml:26:32: assert[0].expr: unknown phase `hot`"
)]
#[case::assert_unknown_metric(
    "warm.ttft.p50",
    "warm.tfft.p50",
    "x.toml:26:9: assert[0].expr: unknown metric `tfft`"
)]
#[case::repeats_zero(
    "seed = 7\n",
    "seed = 7\nrepeats = 0\n",
    "x.toml:4:11: repeats: repeats must be 1 to 100"
)]
#[case::strict_without_repeats(
    "seed = 7\n",
    "seed = 7\nstrict = true\n",
    "strict: `strict` decides inconclusive verdicts, which need intervals"
)]
#[case::bad_mode(
    "cold.ttft.p50\"\n",
    "cold.ttft.p50\"\nmodes = [\"recorded\"]\n",
    "x.toml:27:9: assert[0].modes: modes are `live` (recording included) and `replay`"
)]
#[case::baseline_server(
    "0.5 * cold.ttft.p50",
    "baseline.warm.server.prefix_cache_hit_rate",
    "assert[0].expr: a baseline keeps the client's figures"
)]
#[case::target_named_baseline(
    "[targets.mine]",
    "[targets.baseline]",
    "targets.baseline: `baseline` is reserved"
)]
#[case::capacity_without_slo(
    "{ kind = \"shared_prefix\", reuse = \"cold\", suffixes = 2, suffix_tokens = 8 }",
    "{ kind = \"capacity\", over = \"concurrency\", min = 1, max = 8, step = 1, max_probes = 4, requests = 8, input_tokens = 8 }",
    "phase[1].workload.slo: workload kind `capacity` needs `slo`"
)]
#[case::capacity_slo_reads_the_server(
    "{ kind = \"shared_prefix\", reuse = \"cold\", suffixes = 2, suffix_tokens = 8 }",
    "{ kind = \"capacity\", over = \"concurrency\", min = 1, max = 8, step = 1, max_probes = 4, requests = 8, input_tokens = 8, slo = [\"probe.server.ttft_mean < 1s\"] }",
    "phase[1].workload.slo[0]: `probe.server.ttft_mean < 1s`: `probe.server.ttft_mean`: an SLO reads the probe's own client figures"
)]
#[case::capacity_fractional_concurrency(
    "{ kind = \"shared_prefix\", reuse = \"cold\", suffixes = 2, suffix_tokens = 8 }",
    "{ kind = \"capacity\", over = \"concurrency\", min = 1, max = 8, step = 0.5, max_probes = 4, requests = 8, input_tokens = 8, slo = [\"probe.ttft.p50 < 1s\"] }",
    "phase[1].workload.step: a search over concurrency takes whole numbers"
)]
#[case::bad_duration("\"200ms\"", "\"200\"", "x.toml:23:8: slo.ttft: `200` needs a unit")]
#[case::schema(
    "schema_version = 1",
    "schema_version = 2",
    "x.toml:1:18: schema_version: unsupported schema version 2"
)]
#[case::interval(
    "[slo]",
    "[observe]\ninterval = \"10ms\"\n[slo]",
    "x.toml:23:12: observe.interval: must be at least 50ms"
)]
#[case::slice(
    "[slo]",
    "[observe]\nslice = \"20ms\"\n[slo]",
    "x.toml:23:9: observe.slice: must be at least 100ms"
)]
#[case::warmup_duration(
    "name = \"cold\"",
    "name = \"cold\"\nwarmup_duration = \"5\"",
    "x.toml:14:19: phase[0].warmup_duration: `5` needs a unit"
)]
#[case::unknown_request_field(
    "ignore_eos = true",
    "ignore_eos = true, top_k = 3",
    "phase[0].request.top_k: unknown field `top_k`"
)]
fn errors_name_file_line_column_and_field(
    #[case] from: &str,
    #[case] to: &str,
    #[case] expected: &str,
) {
    assert!(GOOD.contains(from), "fixture lacks {from:?}");
    let src = GOOD.replacen(from, to, 1);
    let e = parse("x.toml", "x", &src).unwrap_err().to_string();
    assert!(e.contains(expected), "got: {e}\nexpected: {expected}");
    assert!(e.starts_with("x.toml:"), "{e}");
}

fn with_workload(w: &str) -> Result<Experiment, SpecError> {
    let src = format!(
        "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = {{ {w} }}\nrequest = {{ api = \"completions\", output_tokens = 4 }}\n"
    );
    parse("w.toml", "w", &src)
}

#[rstest]
#[case::zero_rate(
    "kind = \"rate\", process = \"poisson\", rate = 0.0, requests = 5, input_tokens = 4",
    "phase[0].workload.rate: must be a positive number, not 0"
)]
#[case::negative_rate(
    "kind = \"rate\", process = \"poisson\", rate = -2.0, requests = 5, input_tokens = 4",
    "must be a positive number, not -2"
)]
#[case::no_end(
    "kind = \"rate\", process = \"poisson\", rate = 2.0, input_tokens = 4",
    "needs `requests`, `duration` or both"
)]
#[case::no_process(
    "kind = \"rate\", rate = 2.0, requests = 3, input_tokens = 4",
    "needs `process`"
)]
#[case::gamma_needs_b(
    "kind = \"rate\", process = \"gamma\", rate = 2.0, requests = 3, input_tokens = 4",
    "process `gamma` needs `burstiness`"
)]
#[case::b_only_gamma(
    "kind = \"rate\", process = \"poisson\", burstiness = 2.0, rate = 2.0, requests = 3, input_tokens = 4",
    "applies to process `gamma` only"
)]
#[case::bad_duration(
    "kind = \"rate\", process = \"constant\", rate = 2.0, duration = \"10\", input_tokens = 4",
    "phase[0].workload.duration: `10` needs a unit"
)]
#[case::empty_sweep(
    "kind = \"sweep\", rates = [], process = \"poisson\", requests = 3, input_tokens = 4",
    "an empty sweep"
)]
#[case::both_sweeps(
    "kind = \"sweep\", rates = [1.0], concurrencies = [1], requests = 3, input_tokens = 4",
    "not both"
)]
#[case::neither_sweep(
    "kind = \"sweep\", requests = 3, input_tokens = 4",
    "needs `concurrencies = [...]` or `rates = [...]`"
)]
#[case::zero_concurrency(
    "kind = \"sweep\", concurrencies = [1, 0], requests = 3, input_tokens = 4",
    "phase[0].workload.concurrencies: must be at least 1"
)]
#[case::not_applicable(
    "kind = \"single\", requests = 3, input_tokens = 4, rate = 2.0",
    "phase[0].workload.rate: `rate` does not apply to workload kind `single`"
)]
#[case::batch_needs(
    "kind = \"batch\", batch_size = 4, input_tokens = 4",
    "workload kind `batch` needs `batches`"
)]
#[case::ramp_needs_duration(
    "kind = \"ramp\", from = 1.0, to = 5.0, input_tokens = 4",
    "workload kind `ramp` needs `duration`"
)]
#[case::unknown_process(
    "kind = \"rate\", process = \"bursty\", rate = 2.0, requests = 3, input_tokens = 4",
    "unknown variant `bursty`"
)]
fn workload_errors(#[case] w: &str, #[case] expected: &str) {
    let e = with_workload(w).unwrap_err().to_string();
    assert!(e.contains(expected), "got: {e}\nexpected: {expected}");
    assert!(e.starts_with("w.toml:9:"), "{e}");
}

fn with_lengths(extra: &str) -> Result<Experiment, SpecError> {
    let src = format!(
        "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = {{ kind = \"concurrent\", concurrency = 2, requests = 4 }}\nrequest = {{ api = \"completions\", output_tokens = 4 }}\n{extra}\n"
    );
    parse("l.toml", "l", &src)
}

#[rstest]
#[case(
    "input_lengths = { dist = \"lognormal\", median = 200, sigma = 0.5, min = 16, max = 1024 }",
    None
)]
#[case(
    "input_lengths = { dist = \"uniform\", min = 10, max = 20 }\noutput_lengths = { dist = \"normal\", mean = 32, stddev = 8, min = 4, max = 64 }",
    None
)]
#[case("input_lengths = { dist = \"fixed\", value = 30 }", None)]
#[case("", Some("workload kind `concurrent` needs `input_tokens`"))]
#[case(
    "input_lengths = { dist = \"lognormal\", median = 200 }",
    Some("l.toml:11:17: phase[0].input_lengths: this distribution needs `sigma`")
)]
#[case(
    "input_lengths = { dist = \"uniform\", min = 30, max = 20 }",
    Some("min 30 is above max 20")
)]
#[case(
    "input_lengths = { dist = \"uniform\", min = 10 }",
    Some("`uniform` needs `min` and `max`")
)]
#[case(
    "input_lengths = { dist = \"normal\", mean = -5, stddev = 1 }",
    Some("`mean` must be a positive number, not -5")
)]
#[case(
    "input_lengths = { dist = \"fixed\", value = 3, sigma = 1 }",
    Some("`sigma` does not apply")
)]
#[case(
    "input_lengths = { dist = \"zipf\", min = 1 }",
    Some("unknown variant `zipf`")
)]
fn length_distributions(#[case] extra: &str, #[case] error: Option<&str>) {
    match (with_lengths(extra), error) {
        (Ok(e), None) => assert!(e.phases[0].input_lengths.is_some()),
        (Err(e), Some(needle)) => {
            let e = e.to_string();
            assert!(e.contains(needle), "got: {e}\nexpected: {needle}");
        }
        (r, _) => panic!("{:?}", r.map(|e| e.phases[0].input_lengths)),
    }
}

#[test]
fn open_loop_kinds_lower() {
    let e = with_workload("kind = \"rate\", process = \"gamma\", burstiness = 0.5, rate = 2.5, duration = \"10s\", max_concurrency = 8, input_tokens = 4").unwrap();
    assert_eq!(
        e.phases[0].workload,
        Workload::Rate {
            process: Arrival::Gamma { burstiness: 0.5 },
            rate: 2.5,
            requests: None,
            duration: Some(Duration::from_secs(10)),
            max_concurrency: Some(8),
            input_tokens: 4
        }
    );
    let e = with_workload("kind = \"sweep\", rates = [1, 2.5], process = \"constant\", requests = 3, input_tokens = 4").unwrap();
    let names: Vec<_> = e.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["r1", "r2.5"]);
}

#[test]
fn trace_files_are_checked_line_by_line() {
    let dir = std::env::temp_dir().join(format!("inferlab-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exp_file = dir.join("t.toml");
    let cases = [
        (
            "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2}\n{\"timestamp\": 1.5, \"input_length\": 8, \"output_length\": 2, \"prefix_id\": 1, \"prefix_length\": 4}\n",
            None,
        ),
        (
            "{\"timestamp\": 2, \"input_length\": 4, \"output_length\": 2}\n{\"timestamp\": 1, \"input_length\": 4, \"output_length\": 2}\n",
            Some("trace.jsonl:2: timestamp: 1 comes before the previous line's 2"),
        ),
        (
            "{\"timestamp\": 0, \"input_length\": 4}\n",
            Some("trace.jsonl:1: missing field `output_length`"),
        ),
        (
            "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2, \"tokens\": 3}\n",
            Some("trace.jsonl:1: unknown field `tokens`"),
        ),
        (
            "{\"timestamp\": 0, \"input_length\": 4, \"output_length\": 2, \"prefix_id\": 1, \"prefix_length\": 9}\n",
            Some("trace.jsonl:1: prefix_length: longer than input_length"),
        ),
        ("not json\n", Some("trace.jsonl:1: expected")),
        ("", Some("has no entries")),
    ];
    let src = "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = { kind = \"trace\", file = \"trace.jsonl\", time_scale = 0.5 }\nrequest = { api = \"completions\", output_tokens = 4 }\n";
    for (trace, expected) in cases {
        std::fs::write(dir.join("trace.jsonl"), trace).unwrap();
        let got = parse(&exp_file.display().to_string(), "t", src);
        match expected {
            None => {
                let e = got.unwrap();
                match &e.phases[0].workload {
                    Workload::Trace {
                        entries,
                        time_scale,
                        ..
                    } => {
                        assert_eq!(entries.len(), 2);
                        assert_eq!(*time_scale, 0.5);
                    }
                    w => panic!("{w:?}"),
                }
            }
            Some(needle) => {
                let e = got.unwrap_err().to_string();
                assert!(e.contains(needle), "got: {e}\nexpected: {needle}");
                assert!(e.contains("t.toml:9:12: phase[0].workload.file:"), "{e}");
            }
        }
    }
    std::fs::remove_file(dir.join("trace.jsonl")).unwrap();
    let e = parse(&exp_file.display().to_string(), "t", src)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read trace"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prompt_datasets_load_and_bad_ones_are_named() {
    let dir = std::env::temp_dir().join(format!("inferlab-dataset-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exp_file = dir.join("d.toml").display().to_string();
    let src = |format: &str, extra: &str| {
        format!(
            "schema_version = 1\ndescription = \"d\"\nseed = 1\n[targets.llamacpp]\n[model]\nname = \"m\"\n[[phase]]\nname = \"p\"\nworkload = {{ kind = \"concurrent\", concurrency = 2, requests = 5{extra} }}\nprompts = {{ file = \"data\", format = \"{format}\" }}\nrequest = {{ api = \"chat\", output_tokens = 4 }}\n"
        )
    };
    std::fs::write(
        dir.join("data"),
        r#"[{"id": "a", "conversations": [{"from": "human", "value": "How do tides work?"}, {"from": "gpt", "value": "The moon."}]},
            {"id": "b", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "Name a prime."}]},
            {"id": "c", "conversations": [{"from": "gpt", "value": "no human turn"}]}]"#,
    )
    .unwrap();
    let e = parse(&exp_file, "d", &src("sharegpt", "")).unwrap();
    let d = e.phases[0].dataset.as_ref().unwrap();
    assert_eq!(d.prompts, ["How do tides work?", "Name a prime."]);
    let s = crate::workload::schedule(&e, 1);
    let prompts: Vec<&str> = s.phases[0]
        .requests
        .iter()
        .map(|r| r.prompt.as_str())
        .collect();
    assert_eq!(
        prompts[2], "How do tides work?",
        "prompts cycle in file order"
    );
    assert_eq!(s.phases[0].requests[0].input_tokens, 4);
    let e = parse(&exp_file, "d", &src("sharegpt", ", input_tokens = 4"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("phase[0].prompts: prompts from a dataset have their own lengths"),
        "{e}"
    );
    std::fs::write(
        dir.join("data"),
        r#"[{"conversations": [{"from": "human"}]}]"#,
    )
    .unwrap();
    let e = parse(&exp_file, "d", &src("sharegpt", ""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[0].conversations[0]: missing field `value`"),
        "{e}"
    );
    std::fs::write(
        dir.join("data"),
        "{\"prompt\": \"one\"}\n{\"text\": \"two\"}\n",
    )
    .unwrap();
    let e = parse(&exp_file, "d", &src("jsonl", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("data:2: unknown field `text`"), "{e}");
    std::fs::write(dir.join("data"), "{\"prompt\": \"one\"}\n").unwrap();
    assert!(parse(&exp_file, "d", &src("jsonl", "")).is_ok());
    std::fs::remove_file(dir.join("data")).unwrap();
    let e = parse(&exp_file, "d", &src("jsonl", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read dataset"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn goodput_needs_an_slo() {
    let src = GOOD
        .replace("[slo]\nttft = \"200ms\"\n", "")
        .replace("warm.ttft.p50 <= 0.5 * cold.ttft.p50", "warm.goodput > 1");
    let e = parse("x.toml", "x", &src).unwrap_err().to_string();
    assert!(e.contains("`goodput` needs an `[slo]`"), "{e}");
}

#[test]
fn bad_file_name() {
    let e = parse("9x.toml", "9x", GOOD).unwrap_err().to_string();
    assert!(e.contains("(file name)"), "{e}");
}

#[rstest]
#[case("250ms", Duration::from_millis(250))]
#[case("1.5s", Duration::from_millis(1500))]
#[case("2m", Duration::from_secs(120))]
#[case("800us", Duration::from_micros(800))]
fn durations(#[case] s: &str, #[case] d: Duration) {
    assert_eq!(parse_duration(s), Ok(d));
}
