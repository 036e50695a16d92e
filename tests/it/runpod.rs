//! The RunPod lifecycle against a fake API (wiremock, v2 shapes) and a local stand-in for the
//! pod's server. In every scenario the fake counts creates and deletes: no pod is left.

use inferlab::client::Secret;
use inferlab::runpod::api::{Retry, RunPod};
use inferlab::runpod::deploy::{self, Deployment};
use inferlab::runpod::lifecycle::{self, Ended, Ledger, LedgerEntry, Polling};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "rp-test-key-4f9a1c";

/// What the fake does; counters of what it saw.
#[derive(Default)]
struct FakeState {
    /// Statuses a pod reports on successive GETs (the last repeats).
    statuses: Vec<&'static str>,
    /// The first N calls of any kind answer 429 with `Retry-After: 0`.
    rate_limited: u32,
    /// The first N GETs of a pod answer 503.
    get_errors: u32,
    /// This pod reports ERROR whatever `statuses` says.
    failing_pod: Option<&'static str>,
    creates: u32,
    deletes: u32,
    gets: u32,
    calls: u32,
    live: HashMap<String, usize>,
    bodies: Vec<String>,
    auth_ok: bool,
}

struct Fake {
    server: MockServer,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    async fn start(statuses: Vec<&'static str>) -> Fake {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(FakeState {
            statuses,
            auth_ok: true,
            ..FakeState::default()
        }));
        let st = state.clone();
        Mock::given(path_regex(r"^/v2/.*"))
            .respond_with(move |req: &Request| respond(&st, req))
            .mount(&server)
            .await;
        Fake { server, state }
    }

    fn api_url(&self) -> String {
        format!("{}/v2", self.server.uri())
    }

    fn api(&self) -> RunPod {
        RunPod::new(
            &self.api_url(),
            Secret::new(KEY),
            Retry {
                attempts: 8,
                backoff: Duration::from_millis(5),
                max_wait: Duration::from_millis(50),
            },
        )
        .unwrap()
    }

    fn counts(&self) -> (u32, u32) {
        let s = self.state.lock().unwrap();
        (s.creates, s.deletes)
    }

    fn live(&self) -> usize {
        self.state.lock().unwrap().live.len()
    }
}

fn respond(st: &Mutex<FakeState>, req: &Request) -> ResponseTemplate {
    let mut s = st.lock().unwrap();
    s.calls += 1;
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {KEY}") {
        s.auth_ok = false;
        return ResponseTemplate::new(401)
            .set_body_string(r#"{"title":"Unauthorized","status":401,"detail":"bad key"}"#);
    }
    if s.rate_limited > 0 {
        s.rate_limited -= 1;
        return ResponseTemplate::new(429)
            .insert_header("retry-after", "0")
            .set_body_string(r#"{"title":"Too Many Requests","status":429}"#);
    }
    let path = req.url.path().to_string();
    let m = req.method.as_str();
    if m == "POST" && path == "/v2/pods" {
        s.creates += 1;
        let id = format!("pod{}", s.creates);
        s.live.insert(id.clone(), 0);
        s.bodies
            .push(String::from_utf8_lossy(&req.body).into_owned());
        return ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "id": id, "status": "PROVISIONING", "cost": 2.99, "dataCenterId": "EU-RO-1"
        }));
    }
    if let Some(rest) = path.strip_prefix("/v2/pods/") {
        let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
        if m == "DELETE" && sub.is_empty() {
            return if s.live.remove(id).is_some() {
                s.deletes += 1;
                ResponseTemplate::new(204)
            } else {
                ResponseTemplate::new(404)
                    .set_body_string(r#"{"title":"Not Found","status":404,"detail":"no such pod"}"#)
            };
        }
        if m == "GET" && sub == "logs" {
            return ResponseTemplate::new(200).set_body_string("engine: CUDA out of memory\n");
        }
        if m == "GET" && sub.is_empty() {
            s.gets += 1;
            if s.get_errors > 0 {
                s.get_errors -= 1;
                return ResponseTemplate::new(503).set_body_string("upstream busy");
            }
            let Some(n) = s.live.get(id).copied() else {
                return ResponseTemplate::new(404).set_body_string(
                    r#"{"title":"Not Found","status":404,"detail":"no such pod"}"#,
                );
            };
            let status = if s.failing_pod == Some(id) {
                "ERROR"
            } else {
                s.statuses[n.min(s.statuses.len() - 1)]
            };
            s.live.insert(id.to_string(), n + 1);
            return ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": id, "status": status, "cost": 2.99, "dataCenterId": "EU-RO-1",
                "runtime": if status == "RUNNING" { serde_json::json!({"gpus": [{"id": "g0", "util": 50, "memoryUtil": 40}]}) } else { serde_json::Value::Null }
            }));
        }
    }
    ResponseTemplate::new(404).set_body_string(r#"{"title":"Not Found","status":404}"#)
}

/// A pod's server stand-in: `/health` answers `health_status`.
async fn stand_in(health_status: u16) -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/health$"))
        .respond_with(ResponseTemplate::new(health_status))
        .mount(&s)
        .await;
    s
}

fn deployment(provision: &str, ready: &str) -> Deployment {
    let src = format!(
        "engine = \"vllm\"\nserves = \"llamacpp\"\n[model]\nname = \"meta-llama/Llama-3.1-8B-Instruct\"\ncontext = 4096\n[gpu]\nid = \"NVIDIA H100 80GB HBM3\"\n[pod]\nenv = {{ HF_TOKEN = \"$HF_TOKEN\" }}\n[timeouts]\nprovision = \"{provision}\"\nready = \"{ready}\"\n"
    );
    deploy::parse("t.toml", "t", &src).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    crate::common::scratch(&format!("runpod-{name}"))
}

/// A fake API with pods reporting `statuses`, and an empty ledger in a scratch directory.
async fn setup(statuses: Vec<&'static str>, name: &str) -> (Fake, Ledger) {
    let fake = Fake::start(statuses).await;
    (fake, Ledger::new(scratch(name).join("pods.json")))
}

const FAST: Polling = Polling {
    first: Duration::from_millis(10),
    max: Duration::from_millis(40),
};

/// Runs `with_pod` with `run` against the fake and a stand-in whose `/health` answers
/// `health`; the shutdown future fires when `stop` is sent to, if given.
async fn lifecycle_run<F, Fut, T>(
    fake: &Fake,
    dep: &Deployment,
    health: u16,
    ledger: &Ledger,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
    run: F,
) -> (Ended<T>, lifecycle::PodReport, Vec<String>)
where
    F: FnOnce(lifecycle::ReadyPod) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let pod = stand_in(health).await;
    let proxy = pod.uri();
    let env = move |k: &str| match k {
        "INFERLAB_RUNPOD_PROXY" => Some(proxy.clone()),
        "HF_TOKEN" => Some("hf_token_value".to_string()),
        _ => None,
    };
    let mut log = Vec::new();
    let shutdown = async move {
        match stop {
            Some(rx) => {
                let _ = rx.await;
                "SIGTERM"
            }
            None => std::future::pending().await,
        }
    };
    let api = fake.api();
    let pods = lifecycle::Landlord {
        api: &api,
        ledger,
        env: &env,
        polling: FAST,
    };
    let (ended, report) = lifecycle::with_pod(
        pods,
        dep,
        false,
        shutdown,
        &mut |m| log.push(m.to_string()),
        run,
    )
    .await
    .unwrap();
    (ended, report, log)
}

#[tokio::test]
async fn a_normal_run_uses_the_pod_and_terminates_it() {
    let (fake, ledger) = setup(vec!["PROVISIONING", "STARTING", "RUNNING"], "normal").await;
    let (ended, report, _) = lifecycle_run(
        &fake,
        &deployment("5s", "5s"),
        200,
        &ledger,
        None,
        |pod| async move { pod.pod.id },
    )
    .await;
    assert!(
        matches!(ended, Ended::Finished(ref id) if id == "pod1"),
        "{ended:?}"
    );
    assert_eq!(fake.counts(), (1, 1));
    assert_eq!(fake.live(), 0);
    assert!(report.terminated);
    assert_eq!(report.cost_per_hour, Some(2.99));
    assert_eq!(report.data_center.as_deref(), Some("EU-RO-1"));
    assert!(report.cost_usd.unwrap() > 0.0);
    assert!(ledger.entries().unwrap().is_empty());
    // The token reached the create body, and nothing else this side keeps it.
    let s = fake.state.lock().unwrap();
    assert!(s.bodies[0].contains("hf_token_value"));
    assert!(s.bodies[0].contains("--enable-prompt-tokens-details"));
    assert!(s.auth_ok);
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("hf_token_value") && !text.contains(KEY));
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_waited_out() {
    let fake = Fake::start(vec!["RUNNING"]).await;
    fake.state.lock().unwrap().rate_limited = 5;
    fake.state.lock().unwrap().get_errors = 3;
    let dir = scratch("storm");
    let ledger = Ledger::new(dir.join("pods.json"));
    let (ended, _, _) = lifecycle_run(
        &fake,
        &deployment("5s", "5s"),
        200,
        &ledger,
        None,
        |_| async {},
    )
    .await;
    assert!(matches!(ended, Ended::Finished(())), "{ended:?}");
    assert_eq!(fake.counts(), (1, 1));
}

#[tokio::test]
async fn a_storm_longer_than_the_bound_is_an_error_that_names_it() {
    let fake = Fake::start(vec!["RUNNING"]).await;
    fake.state.lock().unwrap().rate_limited = 100;
    let e = fake.api().get_pod("x").await.unwrap_err().to_string();
    assert!(
        e.contains("still rate-limited (429) after 8 attempts"),
        "{e}"
    );
    assert!(!e.contains(KEY));
    // A non-idempotent call is not retried on 5xx; a problem body reads well.
    let fake = Fake::start(vec!["RUNNING"]).await;
    let e = fake.api().get_pod("missing").await.unwrap_err().to_string();
    assert_eq!(
        e,
        "RunPod API GET /pods/missing: HTTP 404: Not Found: no such pod"
    );
}

/// A pod that never gets ready, or whose run panics, is released and leaves the ledger; the
/// report says why (`why`), and where there is more to say, the pod's logs or the lifecycle's
/// log say it (`detail`).
#[rstest::rstest]
#[case::stuck_provisioning(vec!["PROVISIONING"], "300ms", "5s", 200, false, "not RUNNING after", None)]
#[case::pod_in_error(vec!["PROVISIONING", "ERROR"], "5s", "5s", 200, false, "pod pod1 is ERROR", Some("CUDA out of memory"))]
#[case::never_healthy(vec!["RUNNING"], "5s", "300ms", 503, false, "did not answer", Some("HTTP 503"))]
#[case::run_panics(vec!["RUNNING"], "5s", "5s", 200, true, "", None)]
#[tokio::test]
async fn a_pod_that_fails_is_released(
    #[case] statuses: Vec<&'static str>,
    #[case] provision: &str,
    #[case] ready: &str,
    #[case] health: u16,
    #[case] panics: bool,
    #[case] why: &str,
    #[case] detail: Option<&str>,
) {
    let (fake, ledger) = setup(statuses, &format!("fails-{why}-{panics}")).await;
    let (ended, report, log) = lifecycle_run(
        &fake,
        &deployment(provision, ready),
        health,
        &ledger,
        None,
        move |_| async move {
            if panics {
                panic!("the experiment code broke");
            }
        },
    )
    .await;
    assert_eq!(fake.counts(), (1, 1), "created once, deleted once");
    assert!(ledger.entries().unwrap().is_empty());
    if panics {
        assert!(matches!(ended, Ended::Panicked(_)), "{ended:?}");
        return;
    }
    assert!(matches!(ended, Ended::NotReady), "{ended:?}");
    let error = report.error.unwrap_or_default();
    assert!(error.contains(why), "{error}");
    if let Some(detail) = detail {
        let said = format!("{}\n{}", report.logs.unwrap_or_default(), log.join("\n"));
        assert!(said.contains(detail), "{said}");
    }
}

#[tokio::test]
async fn a_stop_signal_during_the_run_releases_the_pod() {
    let (fake, ledger) = setup(vec!["RUNNING"], "signal").await;
    let (started, stop) = tokio::sync::oneshot::channel();
    let (ended, report, _) = lifecycle_run(
        &fake,
        &deployment("5s", "5s"),
        200,
        &ledger,
        Some(stop),
        // A run that never ends by itself: the stop signal comes once it has begun.
        move |_| async move {
            let _ = started.send(());
            std::future::pending::<()>().await
        },
    )
    .await;
    assert!(matches!(ended, Ended::Stopped("SIGTERM")));
    assert!(report.terminated);
    assert_eq!(fake.counts(), (1, 1));
}

#[tokio::test]
async fn leftovers_of_a_dead_process_are_reaped_by_the_next_run() {
    let (fake, ledger) = setup(vec!["RUNNING"], "reap").await;
    // A pod created by a process that no longer exists.
    let api = fake.api();
    let dep = deployment("5s", "5s");
    let env = |k: &str| (k == "HF_TOKEN").then(|| "t".to_string());
    let orphan = api
        .create_pod(&dep.create_request(&env).unwrap())
        .await
        .unwrap();
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    ledger
        .add(LedgerEntry {
            pod_id: orphan.id.clone(),
            deployment: "t".into(),
            gpu: "g".into(),
            created_at: "then".into(),
            pid: dead_pid,
        })
        .unwrap();
    let (_, _, log) = lifecycle_run(&fake, &dep, 200, &ledger, None, |_| async {}).await;
    assert!(
        log.iter()
            .any(|l| l.contains("terminated leftover pod pod1")),
        "{log:?}"
    );
    assert_eq!(fake.counts(), (2, 2));
    assert!(ledger.entries().unwrap().is_empty());
}

// ---- the binary ----------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn inferlab(dir: &Path, fake: &Fake, proxy: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferlab"));
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("INFERLAB_") || k.starts_with("RUNPOD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUNPOD_API_KEY", KEY)
        .env("INFERLAB_RUNPOD_API", fake.api_url())
        .env("INFERLAB_RUNPOD_PROXY", proxy)
        .env("INFERLAB_RUNPOD_POLL_MS", "20")
        .env("INFERLAB_LEDGER", dir.join("pods.json"))
        .env("HF_TOKEN", "hf_token_value")
        .env("INFERLAB_EXPERIMENTS_DIR", repo().join("experiments"))
        .env("INFERLAB_FIXTURES_DIR", repo().join("wiremock-fixtures"));
    cmd
}

fn write_deployment(dir: &Path, ready: &str) -> PathBuf {
    let p = dir.join("dep.toml");
    std::fs::write(
        &p,
        format!(
            "engine = \"vllm\"\nserves = \"llamacpp\"\n[model]\nname = \"meta-llama/Llama-3.1-8B-Instruct\"\ncontext = 4096\n[gpu]\nid = \"NVIDIA H100 80GB HBM3\"\n[pod]\nenv = {{ HF_TOKEN = \"$HF_TOKEN\" }}\n[timeouts]\nready = \"{ready}\"\n"
        ),
    )
    .unwrap();
    p
}

/// Runs `cmd` to its end off the test's runtime: its exit code and everything it printed.
async fn finish(mut cmd: Command) -> (Option<i32>, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Every file under `dir`, read as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else if let Ok(t) = std::fs::read_to_string(&p) {
            out.push_str(&t);
        }
    }
    out
}

/// `inferlab run --deploy … prefix_cache` end to end: the pod's server is the prefix_cache
/// recording, replayed by a local stand-in (the salt fixed to the recording's, so the live
/// requests match it byte for byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_deploy_runs_prefix_cache_on_the_pod_and_releases_it() {
    let fake = Fake::start(vec!["PROVISIONING", "RUNNING"]).await;
    let fixture =
        inferlab::replay::Fixture::load(&repo().join("wiremock-fixtures/prefix_cache/llamacpp"))
            .unwrap();
    let salt = fixture.meta.salt;
    let pod = inferlab::replay::ReplayServer::start(&fixture)
        .await
        .unwrap();
    let dir = scratch("cli-deploy");
    let dep = write_deployment(&dir, "30s");
    let mut cmd = inferlab(&dir, &fake, &pod.base_url());
    cmd.env("INFERLAB_SALT", salt.to_string()).args([
        "run",
        "--deploy",
        dep.to_str().unwrap(),
        "--results",
        "out",
        "prefix_cache",
    ]);
    let (code, text) = finish(cmd).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("== prefix_cache::llamacpp [live]"), "{text}");
    assert!(text.contains("terminated pod pod1"), "{text}");
    assert!(text.contains("per million output tokens"), "{text}");
    assert_eq!(fake.counts(), (1, 1));
    assert!(pod.unmatched().is_empty(), "{:?}", pod.unmatched());
    // The manifest and the deployment report; no key anywhere on disk.
    let everything = all_text(&dir);
    assert!(
        everything.contains("\"pod_id\": \"pod1\""),
        "no deployment report"
    );
    assert!(
        everything.contains("\"per_million_output_tokens_usd\""),
        "no cost in the trial's summary"
    );
    // GPU telemetry came from the pod's runtime, through the same API.
    assert!(
        everything.contains("\"gpu_util\":0.5"),
        "no GPU sample from the pod's runtime"
    );
    assert!(!everything.contains(KEY), "the API key reached the disk");
    assert!(
        !everything.contains("hf_token_value"),
        "the HF token reached the disk"
    );
    assert!(!text.contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_the_engine_releases_the_pod() {
    let fake = Fake::start(vec!["RUNNING"]).await;
    let pod = stand_in(503).await;
    let dir = scratch("cli-sigterm");
    let dep = write_deployment(&dir, "60s");
    let mut cmd = inferlab(&dir, &fake, &pod.uri());
    cmd.args(["run", "--deploy", dep.to_str().unwrap(), "--results", "out"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Wait until the pod exists and its health is being polled.
    for _ in 0..200 {
        if fake.state.lock().unwrap().gets > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ... and the engine's /health is being polled (not a fixed wait: a loaded machine may take
    // longer to get there).
    for _ in 0..400 {
        if pod.received_requests().await.is_some_and(|r| !r.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(143), "{text}");
    assert!(text.contains("SIGTERM: terminating pod pod1"), "{text}");
    assert_eq!(fake.counts(), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_down_all_terminates_what_the_ledger_holds() {
    let fake = Fake::start(vec!["PROVISIONING"]).await;
    let dir = scratch("cli-kill9");
    let dep = write_deployment(&dir, "60s");
    let mut cmd = inferlab(&dir, &fake, "http://127.0.0.1:9");
    cmd.args(["run", "--deploy", dep.to_str().unwrap(), "--results", "out"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    for _ in 0..200 {
        if fake.state.lock().unwrap().gets > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fake.counts(), (1, 0), "the pod outlived its process");
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pods.json")).unwrap()).unwrap();
    assert_eq!(ledger[0]["pod_id"], "pod1");
    let mut down = inferlab(&dir, &fake, "http://127.0.0.1:9");
    down.args(["down", "--all"]);
    let (code, text) = finish(down).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("terminated pod pod1"), "{text}");
    assert_eq!(fake.counts(), (1, 1));
    assert!(
        !std::fs::read_to_string(dir.join("pods.json"))
            .unwrap()
            .contains(KEY)
    );
}

#[test]
fn plan_refuses_70b_on_24_gb_and_accepts_8b_on_80_gb() {
    let run = |file: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inferlab"));
        cmd.env_remove("RUNPOD_API_KEY").args([
            "plan",
            repo().join("deployments").join(file).to_str().unwrap(),
        ]);
        cmd.output().unwrap()
    };
    let big = run("sglang-llama-70b-4090.toml");
    let text = String::from_utf8_lossy(&big.stdout);
    assert_eq!(big.status.code(), Some(1), "{text}");
    assert!(
        text.contains("141.2 GB") && text.contains("DOES NOT FIT"),
        "{text}"
    );
    let small = run("vllm-llama-8b-h100.toml");
    let text = String::from_utf8_lossy(&small.stdout);
    assert_eq!(small.status.code(), Some(0), "{text}");
    assert!(text.contains("fits,"), "{text}");
}

/// A matrix of two deployments, one of whose pods fails: the other still runs its trial, both
/// pods are released, and the results sit side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_survives_a_failed_pod_and_releases_every_pod() {
    let fake = Fake::start(vec!["PROVISIONING", "RUNNING"]).await;
    fake.state.lock().unwrap().failing_pod = Some("pod2");
    let truth = inferlab::truth::TruthServer::start(
        inferlab::truth::TruthConfig {
            ttft: Duration::from_millis(5),
            itl: Duration::from_millis(1),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let dir = scratch("cli-matrix");
    std::fs::create_dir_all(dir.join("exps")).unwrap();
    std::fs::write(
        dir.join("exps/tiny.toml"),
        r#"schema_version = 1
description = "tiny"
seed = 1
[targets.box]
kind = "openai"
[model]
name = "truth"
[[phase]]
name = "load"
workload = { kind = "concurrent", concurrency = 2, requests = 4, input_tokens = 8 }
request = { api = "completions", output_tokens = 4 }
[[assert]]
expr = "all.error_rate == 0"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("m.toml"),
        "serves = \"box\"\n[model]\ncontext = 4096\n[pod]\nenv = { HF_TOKEN = \"$HF_TOKEN\" }\n[matrix]\nengine = [\"vllm\", \"sglang\"]\nmodel = [\"meta-llama/Llama-3.1-8B-Instruct\"]\ngpu = [\"NVIDIA H100 80GB HBM3\"]\n",
    )
    .unwrap();
    let mut cmd = inferlab(&dir, &fake, &truth.url());
    cmd.env("INFERLAB_EXPERIMENTS_DIR", dir.join("exps")).args([
        "run",
        "--deploy",
        dir.join("m.toml").to_str().unwrap(),
        "--results",
        "out",
    ]);
    let (code, text) = finish(cmd).await;
    assert_eq!(code, Some(2), "{text}");
    assert_eq!(fake.counts(), (2, 2), "{text}");
    assert_eq!(fake.live(), 0);
    let matrix_dir = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("matrix-m-"))
        .expect("a matrix results directory")
        .path();
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(matrix_dir.join("matrix.json")).unwrap())
            .unwrap();
    assert_eq!(rows["schema_version"], 2);
    let rows = rows["deployments"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let ran: Vec<&serde_json::Value> = rows.iter().filter(|r| r["exit_code"] == 0).collect();
    assert_eq!(ran.len(), 1, "{text}");
    assert_eq!(ran[0]["trials"][0]["trial"], "tiny::box");
    assert_eq!(ran[0]["trials"][0]["passed"], true);
    let failed = rows.iter().find(|r| r["exit_code"] == 2).unwrap();
    assert_eq!(failed["pod"]["error"], "pod pod2 is ERROR");
    assert!(text.contains("tiny::box"), "{text}");
}

/// A serverless target: requests go to `/v2/{endpoint}/openai/v1/…` with the RunPod key, the
/// endpoint's `/health` is read around the phase, and the first warmup request is reported as
/// the cold start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serverless_target_reports_its_cold_start_and_worker_counts() {
    use wiremock::matchers::header;
    let mock = MockServer::start().await;
    let sse = "data: {\"choices\":[{\"index\":0,\"text\":\" a\",\"finish_reason\":null}]}\n\n\
               data: {\"choices\":[{\"index\":0,\"text\":\" b\",\"finish_reason\":\"length\"}]}\n\n\
               data: {\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2,\"total_tokens\":10}}\n\n\
               data: [DONE]\n\n";
    Mock::given(method("POST"))
        .and(path_regex("^/v2/ep1/openai/v1/completions$"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"))
        .expect(4)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v2/ep1/health$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "jobs": {"completed": 10, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
            "workers": {"idle": 0, "running": 0, "initializing": 0}
        })))
        .expect(2)
        .mount(&mock)
        .await;
    let src = r#"schema_version = 1
description = "serverless"
seed = 1
[targets.sl]
kind = "runpod_serverless"
[model]
name = "m"
[[phase]]
name = "load"
warmup = 1
workload = { kind = "concurrent", concurrency = 1, requests = 3, input_tokens = 8 }
request = { api = "completions", output_tokens = 2 }
[[assert]]
expr = "all.error_rate == 0"
"#;
    let exp = inferlab::spec_io::parse("serverless.toml", "serverless", src).unwrap();
    let base = format!("{}/v2/{{endpoint}}", mock.uri());
    let trial = crate::common::TrialBuilder::new("runpod-serverless")
        .target("sl")
        .var("INFERLAB_SL_RUNPOD_ENDPOINT", "ep1")
        .var("RUNPOD_API_KEY", KEY)
        .var("INFERLAB_RUNPOD_SERVERLESS", &base);
    let out = trial.run(&exp).await;
    assert!(out.passed(), "{:?}", out.verdicts);
    let sl = out.summary.serverless.as_ref().expect("a serverless block");
    assert!(sl.note.contains("re-chunks"));
    let p = &sl.phases["load"];
    assert_eq!(p.warm_before, Some(false));
    assert!(p.cold_start_ttft_ms.is_some());
    assert_eq!(p.health_after.as_ref().unwrap()["jobs"]["completed"], 10);
    // The cold start is not in the TTFT statistics: three measured requests.
    assert_eq!(out.summary.all.ttft.as_ref().unwrap().count, 3);
    assert!(matches!(
        out.summary.server_metrics,
        inferlab::report::ServerMetrics::NotServed(_)
    ));
    assert!(!all_text(trial.root()).contains(KEY));
    let table = inferlab::report::phase_table(&out.summary);
    assert!(table.contains("serverless: first request"), "{table}");
}

#[test]
fn a_serverless_target_needs_a_warmup_in_every_phase() {
    let src = r#"schema_version = 1
description = "serverless"
seed = 1
[targets.sl]
kind = "runpod_serverless"
[model]
name = "m"
[[phase]]
name = "load"
workload = { kind = "concurrent", concurrency = 1, requests = 3, input_tokens = 8 }
request = { api = "completions", output_tokens = 2 }
"#;
    let e = inferlab::spec_io::parse("s.toml", "s", src)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("s.toml:8:1: phase[0].warmup: target `sl` is serverless"),
        "{e}"
    );
}

/// Against the real API, read-only (creates nothing, spends nothing): the GPU catalog and the
/// pod list parse. Run it with a key: `RUNPOD_API_KEY=… cargo test --test it -- runpod:: --ignored`.
#[tokio::test]
#[ignore = "reaches api.runpod.io: needs RUNPOD_API_KEY and --ignored"]
async fn live_smoke_reads_the_catalog_and_the_pod_list() {
    let env = |k: &str| std::env::var(k).ok();
    let api = RunPod::from_env(&env).expect("RUNPOD_API_KEY must be set for this test");
    let gpus = api.gpu_catalog(1).await.expect("the GPU catalog");
    assert!(!gpus.is_empty(), "an empty GPU catalog");
    assert!(gpus.iter().any(|g| g.memory.is_some()));
    api.list_pods().await.expect("the pod list");
}

/// The experiments fail on the pod (the stand-in has no prefix cache, so warm TTFT is not
/// half of cold): the run exits 1 with the numbers, and the pod is still released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_experiments_still_release_the_pod() {
    let fake = Fake::start(vec!["RUNNING"]).await;
    let truth = inferlab::truth::TruthServer::start(
        inferlab::truth::TruthConfig {
            ttft: Duration::from_millis(3),
            itl: Duration::from_millis(1),
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let dir = scratch("cli-failing");
    let dep = write_deployment(&dir, "30s");
    let mut cmd = inferlab(&dir, &fake, &truth.url());
    cmd.args([
        "run",
        "--deploy",
        dep.to_str().unwrap(),
        "--results",
        "out",
        "prefix_cache",
    ]);
    let (code, text) = finish(cmd).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAILED warm.ttft.p50"), "{text}");
    assert!(text.contains("terminated pod pod1"), "{text}");
    assert_eq!(fake.counts(), (1, 1));
}
