//! Watching a run from outside, with the real binary replaying a committed fixture: the
//! progress line in a real terminal (tmux), plain lines when stderr is a pipe, the Prometheus
//! endpoint read with the project's parser while the run goes on, time slices that add up to
//! the run, and a run killed with SIGKILL summarised from what it left on disk (a capacity
//! search's answer included).

use inferlab::core::prom;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory holding the trace_replay experiment (about 8 s of replay).
fn scratch(name: &str) -> PathBuf {
    let dir = crate::common::scratch(&format!("watch-{name}"));
    for f in ["trace_replay.toml", "traces/bursty.jsonl"] {
        let to = dir.join("experiments").join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join("experiments").join(f), to).unwrap();
    }
    dir
}

/// The binary, replaying (no live endpoint configured), in `dir`.
fn inferlab(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferlab"));
    cmd.current_dir(dir).args([
        "--fixtures",
        repo().join("wiremock-fixtures").to_str().unwrap(),
    ]);
    for (k, _) in std::env::vars() {
        if k.starts_with("INFERLAB_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

const RUN: &[&str] = &[
    "run",
    "trace_replay",
    "--target",
    "llamacpp",
    "--results",
    "out",
];

/// Polls `f` every 50 ms until it gives something, for at most `secs`.
fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn run_dir(dir: &Path) -> Option<PathBuf> {
    Some(
        std::fs::read_dir(dir.join("out/trace_replay"))
            .ok()?
            .next()?
            .ok()?
            .path(),
    )
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count()
}

/// `x/42 done` in a progress line (41 requests and a warmup): x.
fn done_in(line: &str) -> Option<u32> {
    let at = line.find("/42 done")?;
    line[..at].rsplit(' ').next()?.parse().ok()
}

struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn pane(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "watch"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

#[test]
fn the_progress_line_redraws_in_a_real_terminal() {
    let available = Command::new("tmux").arg("-V").output().is_ok();
    assert!(
        available,
        "tmux is needed for this test (Debian: apt-get install tmux; .ci/run installs it)"
    );
    let dir = scratch("tmux");
    let tmux = Tmux {
        socket: format!("inferlab-test-{}", std::process::id()),
    };
    // The pane runs the binary in a private tmux server whose environment is this test's,
    // without INFERLAB_ variables; the pane stays open after the run so it can be read.
    let binary = inferlab(&dir);
    let mut line = format!("'{}'", env!("CARGO_BIN_EXE_inferlab"));
    for a in binary.get_args() {
        line.push_str(&format!(" '{}'", a.to_str().unwrap()));
    }
    for a in RUN {
        line.push_str(&format!(" {a}"));
    }
    let mut start = tmux.cmd();
    start
        .current_dir(&dir)
        .env("TERM", "xterm-256color")
        .args(["new-session", "-d", "-s", "watch", "-x", "200", "-y", "50"])
        .arg(format!("{line}; echo exit=$?; sleep 60"));
    for (k, _) in std::env::vars() {
        if k.starts_with("INFERLAB_") {
            start.env_remove(k);
        }
    }
    let started = start.status().unwrap();
    assert!(started.success(), "tmux new-session");

    // The line is redrawn in place: the same screen shows a growing count.
    let mut seen: Vec<u32> = Vec::new();
    let finished = poll(60, || {
        let pane = tmux.pane();
        let progress: Vec<&str> = pane.lines().filter(|l| l.contains(" in flight")).collect();
        assert!(progress.len() <= 1, "one progress line at a time:\n{pane}");
        if let Some(n) = progress.first().and_then(|l| done_in(l))
            && seen.last() != Some(&n)
        {
            seen.push(n);
        }
        pane.contains("exit=").then_some(pane)
    })
    .expect("the run ended within 60 s");
    assert!(
        seen.len() >= 2,
        "the progress line showed counts {seen:?}; the pane at the end:\n{finished}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let line = finished
        .lines()
        .find(|l| l.contains("trace_replay::llamacpp replay"))
        .unwrap_or_default();
    assert!(
        line.contains("finished: 42/42 requests, 0 errors"),
        "the finished phase leaves its line:\n{finished}"
    );
    assert!(
        !finished.contains(" in flight"),
        "no progress line is left behind:\n{finished}"
    );
    assert!(finished.contains("exit=0"), "{finished}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_terminal_each_phase_leaves_one_plain_line() {
    let dir = scratch("lines");
    let out = inferlab(&dir).args(RUN).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("finished:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("trace_replay::llamacpp replay finished: 42/42 requests, 0 errors"),
        "{err}"
    );
    // And none with --no-progress.
    let quiet = inferlab(&dir)
        .args(RUN)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("finished:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET path` over HTTP/1.0; the body.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

fn spawn_with_stderr(cmd: &mut Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

// One scenario read top to bottom: its steps share the runs it makes.
#[allow(clippy::too_many_lines)]
#[test]
fn prometheus_reads_the_clients_series_while_the_run_goes_on() {
    let dir = scratch("prometheus");
    let (mut child, lines) = spawn_with_stderr(
        inferlab(&dir)
            .args(RUN)
            .args(["--prometheus", "127.0.0.1:0"]),
    );
    let addr = lines
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .and_then(|l| {
            l.split("http://")
                .nth(1)
                .and_then(|r| r.strip_suffix("/metrics"))
                .map(str::to_string)
        })
        .expect("the endpoint's address on stderr");
    // Mid-run: some requests done, not all (the run is ~8 s long).
    let e = poll(30, || {
        let body = http_get(&addr, "/metrics")?;
        let e = prom::parse_filtered(&body, &|_| true);
        let ok = e
            .series("inferlab_requests_total")
            .find(|s| s.label("outcome") == Some("ok"))?
            .value;
        (ok >= 5.0).then_some(e)
    })
    .expect("a scrape with requests done");
    assert!(e.issues.is_empty(), "{:?}", e.issues);
    let still_running = child.try_wait().unwrap().is_none();
    assert!(still_running, "scraped while the run goes on");
    let labelled = |s: &prom::Sample| {
        s.label("experiment") == Some("trace_replay")
            && s.label("target") == Some("llamacpp")
            && s.label("phase") == Some("replay")
    };
    for family in [
        "inferlab_requests_total",
        "inferlab_requests_in_flight",
        "inferlab_requests_planned",
        "inferlab_output_tokens_total",
        "inferlab_achieved_requests_per_second",
        "inferlab_time_to_first_token_seconds_count",
        "inferlab_time_per_output_token_seconds_sum",
        "inferlab_inter_token_latency_seconds_bucket",
        "inferlab_request_duration_seconds_bucket",
    ] {
        assert!(e.series(family).any(labelled), "{family}");
    }
    assert_eq!(
        e.series("inferlab_requests_planned").next().unwrap().value,
        42.0,
        "41 requests and a warmup"
    );
    // Buckets are cumulative, and +Inf holds the count.
    let buckets: Vec<f64> = e
        .series("inferlab_time_to_first_token_seconds_bucket")
        .map(|s| s.value)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let count = e
        .series("inferlab_time_to_first_token_seconds_count")
        .next()
        .unwrap()
        .value;
    assert_eq!(buckets.last(), Some(&count));
    assert!(count >= 4.0);
    assert_eq!(
        e.types.get("inferlab_requests_total"),
        Some(&prom::MetricType::Counter)
    );
    // The run ends; having been scraped, the endpoint stays up for one more scrape, which
    // reads every request of the run, and then inferlab exits (well before its 30 s bound).
    let over = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(60)).ok())
        .find(|l| l.starts_with("the run is over"))
        .expect("the endpoint announces it waits for a last scrape");
    assert!(over.contains("at most 30s"), "{over}");
    let last = prom::parse_filtered(&http_get(&addr, "/metrics").unwrap(), &|_| true);
    let requests: f64 = last
        .series("inferlab_requests_total")
        .filter(|s| s.label("phase") == Some("replay"))
        .map(|s| s.value)
        .sum();
    assert_eq!(requests, 42.0, "every request of the phase, its warmup too");
    assert!(
        last.series("inferlab_requests_in_flight")
            .all(|s| s.value == 0.0)
    );
    let waited = Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        waited.elapsed() < Duration::from_secs(20),
        "exits after the last scrape, not at the bound"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_killed_with_sigkill_is_summarised_from_what_it_left() {
    let dir = scratch("sigkill");
    let mut child = inferlab(&dir)
        .args(RUN)
        .arg("--no-progress")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let requests = poll(30, || {
        let p = run_dir(&dir)?.join("requests.jsonl");
        (complete_lines(&p) >= 10).then_some(p)
    })
    .expect("requests on disk within 30 s");
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = child.wait();
    let run = requests.parent().unwrap().to_path_buf();
    assert!(
        !run.join("summary.json").exists(),
        "killed before its summary"
    );
    let on_disk = complete_lines(&requests);
    assert!(on_disk < 42, "killed mid-run: {on_disk} of 42 lines");

    let out = inferlab(&dir)
        .args(["summarize", run.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("recovered from"), "{text}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        s["recovered"]["requests"], on_disk,
        "every completed request counted"
    );
    assert_eq!(s["interrupted"], true);
    let all = &s["all"];
    let counted = ["requests", "warmup_requests", "dropped", "cancelled"]
        .iter()
        .map(|k| all[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(counted, on_disk as u64, "{all}");
    assert_eq!(s["phases"][0]["name"], "replay");
    assert!(run.join("histograms/replay/ttft.hdr").is_file());
    // A second summarize would overwrite it: refused without --force.
    let again = inferlab(&dir)
        .args(["summarize", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `capacity` block of a summary's search phase.
fn capacity_block(run: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    s["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "capacity")
        .expect("the search's phase")["capacity"]
        .clone()
}

fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("histograms")).unwrap();
    for f in ["manifest.json", "requests.jsonl", "server_metrics.jsonl"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn summarize(dir: &Path, run: &Path) -> String {
    let out = inferlab(dir)
        .args(["summarize", run.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A capacity search's summary rebuilt from its records finds what the search found; one cut
/// short mid-probe (its requests.jsonl ending inside the last probe, as a run killed there
/// leaves it) keeps the probes that ended and says its answer is a lower bound.
#[test]
fn a_killed_capacity_search_is_summarised_with_what_it_had_found() {
    let dir = crate::common::scratch("watch-capacity");
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    std::fs::copy(
        repo().join("experiments/capacity.toml"),
        dir.join("experiments/capacity.toml"),
    )
    .unwrap();
    let out = inferlab(&dir)
        .args([
            "run",
            "capacity",
            "--target",
            "llamacpp",
            "--results",
            "out",
        ])
        .arg("--no-progress")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::fs::read_dir(dir.join("out/capacity"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let found = capacity_block(&run);
    let probes = found["probes"].as_array().unwrap().clone();
    assert!(probes.len() >= 3, "{found}");

    // Every probe on disk: the same answer, probe for probe.
    let whole = dir.join("whole");
    copy_run(&run, &whole);
    summarize(&dir, &whole);
    assert_eq!(capacity_block(&whole), found);

    // Cut inside the last probe: that probe is left out, the rest judged again.
    let last = probes.last().unwrap()["phase"].as_str().unwrap();
    let cut = dir.join("cut");
    copy_run(&run, &cut);
    let text = std::fs::read_to_string(run.join("requests.jsonl")).unwrap();
    let mut kept = String::new();
    let mut in_last = 0;
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["phase"] == last {
            in_last += 1;
            if in_last > 10 {
                break;
            }
        }
        kept.push_str(line);
        kept.push('\n');
    }
    std::fs::write(cut.join("requests.jsonl"), kept).unwrap();
    let printed = summarize(&dir, &cut);
    let c = capacity_block(&cut);
    let ended = &probes[..probes.len() - 1];
    assert_eq!(c["probes"].as_array().unwrap(), ended, "{c}");
    let highest_met = ended
        .iter()
        .filter(|p| p["passed"] == true)
        .map(|p| p["load"].as_f64().unwrap())
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    assert_eq!(c["max_passing"].as_f64(), highest_met, "{c}");
    assert_eq!(c["converged"], false, "{c}");
    assert_eq!(c["cut_short"], true, "{c}");
    assert!(
        printed.contains("at least (the run died mid-search)"),
        "{printed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_slices_add_up_to_the_run() {
    let server = crate::common::start().await;
    let exp = inferlab::spec_io::parse(
        "sliced.toml",
        "sliced",
        r#"schema_version = 1
description = "sliced"
seed = 3
[targets.box]
kind = "openai"
[model]
name = "m"
[observe]
slice = "100ms"
[[phase]]
name = "steady"
warmup = 1
workload = { kind = "concurrent", concurrency = 2, requests = 12, input_tokens = 8 }
request = { api = "completions", output_tokens = 5 }
"#,
    )
    .unwrap();
    let trial = crate::common::TrialBuilder::new("watch-slices").url(&server.url);
    let out = trial.run(&exp).await;
    let slices = &out.summary.slices.as_ref().expect("slices").slices;
    assert!(!slices.is_empty());
    let all = &out.summary.all;
    let sum = |f: fn(&inferlab::core::slices::Slice) -> f64| slices.iter().map(f).sum::<f64>();
    assert_eq!(sum(|s| s.requests_sent as f64), all.requests as f64);
    assert_eq!(sum(|s| s.requests_ended as f64), all.requests as f64);
    assert!((sum(|s| s.output_tokens) - all.output_tokens as f64).abs() < 1e-6);
    let ttfts: u64 = slices
        .iter()
        .filter_map(|s| s.ttft.as_ref())
        .map(|l| l.count)
        .sum();
    assert_eq!(ttfts, all.ttft.as_ref().unwrap().count);
    // Contiguous from the origin.
    for (i, s) in slices.iter().enumerate() {
        assert_eq!(s.index, i as u64);
        assert!((s.start_s - 0.1 * i as f64).abs() < 1e-9);
    }
    let rows = std::fs::read_to_string(out.dir.join("slices.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), slices.len());
    assert!(rows.lines().next().unwrap().contains("\"ttft_p50_ms\""));
    let _ = std::fs::remove_dir_all(trial.root());
}

#[test]
fn the_grafana_dashboard_reads_only_series_the_endpoint_serves() {
    use inferlab::core::live::{PhaseCounters, Series, exposition};
    let text = std::fs::read_to_string(repo().join("dashboards/grafana-inferlab.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let counters = PhaseCounters::new(1);
    let served = exposition(&[Series {
        experiment: "e",
        target: "t",
        phase: "p",
        counters: &counters,
        in_flight: 0,
        elapsed_s: 1.0,
    }]);
    let mut names = std::collections::BTreeSet::new();
    for e in &exprs {
        for (i, _) in e.match_indices("inferlab_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    for name in &names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            served.contains(&format!("# TYPE {family} ")),
            "the dashboard reads {name}, which the endpoint does not serve"
        );
    }
    // Every family served is on the dashboard.
    for line in served.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split(' ').nth(2).unwrap();
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "{family} is served but not drawn"
        );
    }
}
