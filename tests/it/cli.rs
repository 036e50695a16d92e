//! The `inferlab` binary: exit codes and what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory with an `experiments/` folder.
fn scratch(name: &str) -> PathBuf {
    let dir = crate::common::scratch(&format!("cli-{name}"));
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    dir
}

/// Runs the binary with no live endpoint configured.
fn inferlab(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferlab"));
    cmd.current_dir(dir)
        .args([
            "--fixtures",
            repo().join("wiremock-fixtures").to_str().unwrap(),
        ])
        .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("INFERLAB_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn validate_reports_file_line_column_and_field_with_exit_2() {
    let dir = scratch("validate");
    let good = std::fs::read_to_string(repo().join("experiments/prefix_cache.toml")).unwrap();
    std::fs::write(dir.join("experiments/good.toml"), &good).unwrap();
    std::fs::write(
        dir.join("experiments/bad.toml"),
        good.replace("groups = 4", "groups = \"four\""),
    )
    .unwrap();
    let out = inferlab(&dir, &["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("ok  experiments/good.toml"), "{t}");
    assert!(
        t.contains("experiments/bad.toml:17:47: phase[0].workload.groups: invalid type: string \"four\", expected u32"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_assertion_exits_1_and_shows_the_numbers() {
    let dir = scratch("assert");
    let src = std::fs::read_to_string(repo().join("experiments/prefix_cache.toml")).unwrap();
    let strict = src.replace(
        "warm.ttft.p50 <= 0.5 * cold.ttft.p50",
        "warm.ttft.p50 <= 0.01 * cold.ttft.p50",
    );
    assert_ne!(src, strict);
    std::fs::write(dir.join("experiments/prefix_cache.toml"), strict).unwrap();

    let out = inferlab(&dir, &["list"]);
    assert!(
        text(&out).contains("prefix_cache::llamacpp  [replay]"),
        "{}",
        text(&out)
    );

    let out = inferlab(
        &dir,
        &[
            "run",
            "prefix_cache",
            "--target",
            "llamacpp",
            "--results",
            "out",
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("== prefix_cache::llamacpp [replay]"), "{t}");
    assert!(
        t.contains("FAILED warm.ttft.p50 <= 0.01 * cold.ttft.p50"),
        "{t}"
    );
    assert!(t.contains("cold.ttft.p50 = "), "{t}");
    assert!(t.contains("margin (right − left) = -"), "{t}");
    assert!(t.contains("ok     all.error_rate == 0"), "{t}");
    // The phase table and a results directory with the summary.
    assert!(
        t.contains("phase") && t.contains("cold") && t.contains("warm"),
        "{t}"
    );
    let runs: Vec<_> = std::fs::read_dir(dir.join("out/prefix_cache"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
    let run = runs[0].as_ref().unwrap().path();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["assertions"][0]["passed"], false);
    assert_eq!(summary["phases"][1]["name"], "warm");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_matching_trial_exits_2() {
    let dir = scratch("nomatch");
    std::fs::copy(
        repo().join("experiments/single_request.toml"),
        dir.join("experiments/single_request.toml"),
    )
    .unwrap();
    let out = inferlab(&dir, &["run", "no_such_experiment"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no trial matches"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_keeps_what_completed_and_exits_130() {
    let dir = scratch("interrupt");
    for f in ["trace_replay.toml", "traces/bursty.jsonl"] {
        let to = dir.join("experiments").join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join("experiments").join(f), to).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferlab"));
    cmd.current_dir(&dir)
        .args([
            "--fixtures",
            repo().join("wiremock-fixtures").to_str().unwrap(),
        ])
        .args(["run", "trace_replay", "--results", "out"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("INFERLAB_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd.spawn().unwrap();
    // The trace takes ~8 s to replay; interrupt it once a few requests are on disk (polled, so
    // a slow start on a loaded machine does not matter).
    let started = std::time::Instant::now();
    loop {
        let written = std::fs::read_dir(dir.join("out/trace_replay"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path().join("requests.jsonl")).ok())
            .map_or(0, |t| t.lines().count());
        if written >= 4 || started.elapsed() > std::time::Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(130), "{t}");
    assert!(t.contains("interrupted"), "{t}");
    let run = std::fs::read_dir(dir.join("out/trace_replay"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    let done = summary["phases"][0]["requests"].as_u64().unwrap();
    assert!(
        done > 0 && done < 41,
        "{done} of 41 requests completed before the interrupt"
    );
    let lines = std::fs::read_to_string(run.join("requests.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(lines as u64 >= done, "every completed request is on disk");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn calibrate_prints_the_table_and_writes_calibration_json() {
    let dir = scratch("calibrate");
    let o = inferlab(
        &dir,
        &[
            "calibrate",
            "--concurrency",
            "1,4",
            "--rounds",
            "3",
            "--ttft-ms",
            "2",
            "--itl-ms",
            "1",
            "--tokens",
            "6",
            "--ceiling-itl-ms",
            "1",
            "--ceiling-concurrency",
            "4",
            "--results",
            "out",
        ],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("ttft-e50") && t.contains("ceiling"), "{t}");
    let cal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/calibration.json")).unwrap())
            .unwrap();
    assert_eq!(
        cal["schema_version"], 2,
        "calibration.json carries its layout version"
    );
    let levels = cal["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    assert_eq!(levels[1]["concurrency"], 4);
    assert_eq!(levels[1]["failed"], 0);
    assert_eq!(cal["ceiling_grid"].as_array().unwrap().len(), 1);

    let o = inferlab(&dir, &["calibrate", "--itl-ms=-3"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--itl-ms"), "{}", text(&o));
}

// One scenario read top to bottom: its steps share the runs it makes.
#[allow(clippy::too_many_lines)]
#[test]
fn compare_sets_the_latest_runs_of_each_target_side_by_side() {
    let dir = scratch("compare");
    let src = std::fs::read_to_string(repo().join("experiments/single_request.toml")).unwrap();
    std::fs::write(dir.join("experiments/single_request.toml"), src).unwrap();
    let out = inferlab(&dir, &["run", "single_request"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A later run that was killed before its summary: passed over with a note.
    let runs = dir.join("results/single_request");
    let finished: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let vllm_run = finished
        .iter()
        .find(|p| p.to_string_lossy().ends_with("-vllm"))
        .unwrap();
    let killed = runs.join("29991231T000000Z-vllm");
    std::fs::create_dir(&killed).unwrap();
    std::fs::copy(vllm_run.join("manifest.json"), killed.join("manifest.json")).unwrap();

    let out = inferlab(&dir, &["compare", "single_request", "--reference", "vllm"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("# `single_request`: vllm vs llamacpp vs sglang"),
        "{t}"
    );
    assert!(t.contains("| vllm | vllm | 0.32.0 | replay |"), "{t}");
    assert!(t.contains("| sglang | sglang | 0.5.21 | replay |"), "{t}");
    assert!(t.contains("## phase `baseline`"), "{t}");
    let ttft = t
        .lines()
        .find(|l| l.starts_with("| TTFT p50 (ms) |"))
        .unwrap();
    assert_eq!(ttft.matches("× [").count(), 2, "{ttft}");
    assert!(t.contains("| server: TTFT mean (ms) |"), "{t}");
    assert!(
        t.contains("passed over") && t.contains("29991231T000000Z-vllm: no summary.json"),
        "{t}"
    );

    let out = inferlab(&dir, &["compare", "single_request", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["reference"], "llamacpp");
    assert_eq!(c["targets"].as_array().unwrap().len(), 3);
    let row = c["phases"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == "ttft.p50")
        .unwrap();
    let cells = row["cells"].as_array().unwrap();
    assert!(cells[0]["ratio"].is_null() && cells[0]["value"].as_f64().unwrap() > 0.0);
    for cell in &cells[1..] {
        let (lo, hi) = (
            cell["ci_low"].as_f64().unwrap(),
            cell["ci_high"].as_f64().unwrap(),
        );
        let r = cell["ratio"].as_f64().unwrap();
        assert!(lo <= hi && cell["significant"].is_boolean(), "{cell}");
        assert!(
            lo < r * 1.05 && r < hi * 1.05,
            "the ratio sits in its interval: {cell}"
        );
    }

    // Named directly, the killed run is refused, naming what is missing.
    let out = inferlab(&dir, &["compare", killed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no summary.json: the run did not finish"));

    // Another seed means other prompts: refused unless forced.
    let other = runs.join("29991231T000001Z-other");
    std::fs::create_dir(&other).unwrap();
    for f in ["manifest.json", "summary.json"] {
        std::fs::copy(vllm_run.join(f), other.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(other.join("manifest.json")).unwrap();
    std::fs::write(
        other.join("manifest.json"),
        manifest.replace("\"seed\": 1,", "\"seed\": 2,"),
    )
    .unwrap();
    let pair = [vllm_run.to_str().unwrap(), other.to_str().unwrap()];
    let out = inferlab(&dir, &["compare", pair[0], pair[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("different seeds"), "{}", text(&out));
    let out = inferlab(&dir, &["compare", "--force", pair[0], pair[1]]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("vllm@29991231T000001Z-other"),
        "{}",
        text(&out)
    );

    let out = inferlab(&dir, &["compare", "no_such_experiment"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("`no_such_experiment` is neither a run directory"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn assertions_across_targets_run_in_a_trial_of_their_own_with_every_number() {
    let dir = scratch("across");
    let src = std::fs::read_to_string(repo().join("experiments/prefix_granularity.toml")).unwrap();
    let across = format!(
        "{src}\n[[assert]]\nexpr = \"sglang.warm.cached_tokens_min > vllm.warm.cached_tokens_max\"\n\n[[assert]]\nexpr = \"sglang.warm.ttft.p50 < 0.001 * vllm.warm.ttft.p50\"\n"
    );
    std::fs::write(dir.join("experiments/prefix_granularity.toml"), across).unwrap();

    let out = inferlab(&dir, &["list"]);
    let t = text(&out);
    assert!(t.contains("prefix_granularity::(targets)  [replay]"), "{t}");

    // Named alone, it runs the trials of the targets it reads itself (vllm and sglang only).
    let out = inferlab(&dir, &["run", "prefix_granularity::(targets)"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("== prefix_granularity::(targets) [replay]"),
        "{t}"
    );
    assert!(
        t.contains("ok     sglang.warm.cached_tokens_min > vllm.warm.cached_tokens_max"),
        "{t}"
    );
    assert!(t.contains("sglang.warm.cached_tokens_min = 1000"), "{t}");
    assert!(t.contains("vllm.warm.cached_tokens_max = 896"), "{t}");
    assert!(
        t.contains("FAILED sglang.warm.ttft.p50 < 0.001 * vllm.warm.ttft.p50"),
        "{t}"
    );
    assert!(t.contains("vllm.warm.ttft.p50 = "), "{t}");
    let runs: Vec<String> = std::fs::read_dir(dir.join("results/prefix_granularity"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| !r.ends_with("-llamacpp")), "{runs:?}");

    // One target's run has nothing to compare with: no trial across targets.
    let out = inferlab(&dir, &["run", "prefix_granularity", "--target", "vllm"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains("(targets)"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_writes_one_self_contained_page_of_an_experiments_runs() {
    let dir = scratch("report");
    let src = std::fs::read_to_string(repo().join("experiments/single_request.toml")).unwrap();
    std::fs::write(dir.join("experiments/single_request.toml"), src).unwrap();
    let out = inferlab(&dir, &["run", "single_request"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = inferlab(&dir, &["report", "single_request", "-o", "r.html"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let page = std::fs::read_to_string(dir.join("r.html")).unwrap();
    for external in ["http://", "https://", "<script", "<link", "url("] {
        assert!(!page.contains(external), "{external}");
    }
    for part in [
        "<h2>Runs</h2>",
        "Phase <code>baseline</code>",
        "TTFT, phase baseline",
        "KV-cache usage over the run",
        "0.32.0",
        "0.5.21",
    ] {
        assert!(page.contains(part), "{part}");
    }
    // Every chart has a drawn line per target (TTFT and ITL CDFs of three targets).
    let series = page.matches("<path class=\"series\"").count();
    assert!(series >= 6, "{series} series");
    let out = inferlab(&dir, &["report", "no_such_experiment"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
