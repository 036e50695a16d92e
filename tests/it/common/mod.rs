//! A scripted token-stream server for tests: 127.0.0.1:0, TCP_NODELAY, and a behaviour chosen
//! by the request's prompt (`ok`, `reset`, `stall`, …) so one schedule can exercise every fault.
#![allow(dead_code)]

mod builders;

// The benches include this module for its server and use neither.
#[allow(unused_imports)]
pub use builders::{TrialBuilder, env_with, scratch};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use inferlab::spec::{Api, Timeouts};
use inferlab::workload::{Pacing, PhasePlan, PlannedRequest, Schedule};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tokens per scripted stream.
pub const TOKENS: u32 = 5;
/// Gap between scripted tokens.
pub const ITL: Duration = Duration::from_millis(4);

pub struct Scripted {
    pub url: String,
    /// `/metrics` answers, served in order; the last one repeats. Empty: 404.
    pub metrics: Arc<Mutex<Vec<(u16, String)>>>,
    /// Authorization headers the server received.
    pub auth_seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start() -> Scripted {
    let metrics: Arc<Mutex<Vec<(u16, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let served = metrics.clone();
    let metrics_handler = move || {
        let served = served.clone();
        async move {
            let mut q = served.lock().unwrap();
            let answer = match q.len() {
                0 => None,
                1 => q.first().cloned(),
                _ => Some(q.remove(0)),
            };
            match answer {
                Some((status, body)) => {
                    (StatusCode::from_u16(status).unwrap(), body).into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    let auth_seen = Arc::new(Mutex::new(Vec::new()));
    let seen = auth_seen.clone();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let seen = seen.clone();
        async move {
            if let Some(a) = headers.get(header::AUTHORIZATION) {
                seen.lock()
                    .unwrap()
                    .push(a.to_str().unwrap_or("").to_string());
            }
            respond(body).await
        }
    };
    let app = Router::new()
        .route("/v1/completions", post(handler.clone()))
        .route("/v1/chat/completions", post(handler))
        .route("/metrics", axum::routing::get(metrics_handler))
        // vLLM's shape: a 64-token context, small enough for tests to exceed.
        .route(
            "/v1/models",
            axum::routing::get(|| async {
                axum::Json(
                    json!({ "object": "list", "data": [{ "id": "m", "max_model_len": 64 }] }),
                )
            }),
        )
        // llama.cpp's shape; one token per whitespace-separated word, like the Llama-2
        // vocabulary with inferlab's word list.
        .route(
            "/tokenize",
            post(|body: Bytes| async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let n = v["content"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .count();
                axum::Json(json!({ "tokens": vec![1; n] }))
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = listener.tap_io(|t| {
        let _ = t.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Scripted {
        url,
        metrics,
        auth_seen,
        task,
    }
}

fn chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices":[{"text": text, "index": 0, "finish_reason": null}]})
    )
}

fn finish(usage: bool) -> String {
    let mut v = json!({"choices":[{"text":"","index":0,"finish_reason":"length"}]});
    if usage {
        v["usage"] = json!({"prompt_tokens": 3, "completion_tokens": TOKENS, "prompt_tokens_details": {"cached_tokens": 1}});
    }
    format!("data: {v}\n\n")
}

const SCRIPTS: &[&str] = &[
    "slow",
    "ok",
    "no_usage",
    "in_stream_error",
    "reset",
    "stall",
    "malformed",
    "no_done",
];

enum Step {
    Send(String),
    Fail,
    Sleep(Duration),
}

async fn respond(body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = v["prompt"].as_str().unwrap_or("ok").to_string();
    let mut steps = vec![Step::Sleep(Duration::from_millis(10))];
    let tokens = |steps: &mut Vec<Step>, n: u32| {
        for i in 0..n {
            steps.push(Step::Send(chunk(&format!(" t{i}"))));
            steps.push(Step::Sleep(ITL));
        }
    };
    match prompt.as_str() {
        // Anything else (generated prompts) streams normally.
        _ if !SCRIPTS.contains(&prompt.as_str()) => {
            tokens(&mut steps, TOKENS);
            steps.push(Step::Send(finish(true)));
            steps.push(Step::Send("data: [DONE]\n\n".into()));
        }
        // 20 tokens 10 ms apart: long enough to keep hundreds in flight at high rates.
        "slow" => {
            for i in 0..20 {
                steps.push(Step::Send(chunk(&format!(" s{i}"))));
                steps.push(Step::Sleep(Duration::from_millis(10)));
            }
            steps.push(Step::Send(finish(true)));
            steps.push(Step::Send("data: [DONE]\n\n".into()));
        }
        "ok" => {
            tokens(&mut steps, TOKENS);
            steps.push(Step::Send(finish(true)));
            steps.push(Step::Send("data: [DONE]\n\n".into()));
        }
        "no_usage" => {
            tokens(&mut steps, TOKENS);
            steps.push(Step::Send(finish(false)));
            steps.push(Step::Send("data: [DONE]\n\n".into()));
        }
        "in_stream_error" => {
            tokens(&mut steps, 2);
            steps.push(Step::Send(
                "data: {\"error\":{\"message\":\"KV cache exhausted\",\"code\":500}}\n\n".into(),
            ));
            steps.push(Step::Send("data: [DONE]\n\n".into()));
        }
        "reset" => {
            tokens(&mut steps, 2);
            steps.push(Step::Fail);
        }
        "stall" => {
            tokens(&mut steps, 2);
            steps.push(Step::Sleep(Duration::from_secs(5)));
            steps.push(Step::Send(finish(true)));
        }
        "malformed" => {
            tokens(&mut steps, 1);
            steps.push(Step::Send("data: {\"choices\":[{\"text\":\n\n".into()));
            steps.push(Step::Send("data: [DONE]\n\n".into()));
        }
        "no_done" => {
            tokens(&mut steps, 2);
        }
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "script table out of date",
            )
                .into_response();
        }
    }
    let stream = futures_util::stream::unfold(steps.into_iter(), |mut it| async move {
        loop {
            match it.next()? {
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Send(s) => return Some((Ok::<_, std::io::Error>(Bytes::from(s)), it)),
                Step::Fail => return Some((Err(std::io::Error::other("scripted reset")), it)),
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// A one-phase schedule with one request per prompt, sent one at a time.
pub fn schedule(prompts: &[&str], concurrency: u32) -> Schedule {
    Schedule {
        seed: 0,
        salt: 0,
        phases: vec![PhasePlan {
            name: "p".into(),
            repeat: 0,
            pacing: Pacing::Closed {
                concurrency,
                limit: None,
            },
            warmup_limit: None,
            sessions: Vec::new(),
            requests: prompts
                .iter()
                .enumerate()
                .map(|(i, p)| PlannedRequest {
                    index: i as u32,
                    warmup: false,
                    group: None,
                    api: Api::Completions,
                    prompt: p.to_string(),
                    max_tokens: TOKENS,
                    ignore_eos: true,
                    temperature: 0.0,
                    ..PlannedRequest::default()
                })
                .collect(),
        }],
    }
}

/// Runs `exp`'s target `box` live against `url`, results under a scratch directory named by
/// `tag`.
pub async fn run_live(
    exp: &inferlab::spec::Experiment,
    url: &str,
    tag: &str,
) -> inferlab::trial::TrialOutcome {
    TrialBuilder::new(tag).url(url).run(exp).await
}

/// Short timeouts so stalls fail fast.
pub fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(2),
        idle: Duration::from_millis(300),
        total: Duration::from_secs(10),
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
