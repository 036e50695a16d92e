//! Recorded exchanges: the fixture format, writing it from a live run, and a replay server that
//! streams each recorded SSE record at its recorded offset.
//!
//! A fixture lives in `wiremock-fixtures/<experiment>/<target>/`: `meta.json` (where it came
//! from: `recorded` from which engine and version, or `synthetic`) and `exchanges.jsonl` (one
//! request/response per line). The replay server is an axum server on `127.0.0.1:0` with
//! TCP_NODELAY (wiremock cannot pace a body). It matches each incoming request to a recorded
//! exchange by its exact JSON body; an unmatched request gets a 404 and is remembered, so the
//! trial fails with a message that says the experiment no longer matches its recording.

use crate::client::Capture;
use crate::observe::scrape::Point;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub const FIXTURE_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Captured from a real server.
    Recorded,
    /// Produced by a program (timings are invented, not measured).
    Synthetic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureMeta {
    pub schema_version: u32,
    pub source: Source,
    /// `llama.cpp`, `vLLM`, `SGLang`, …, or the program that made a synthetic fixture.
    pub engine: String,
    pub engine_version: Option<String>,
    /// The server's cache and parallelism configuration, as it reported it.
    #[serde(default)]
    pub server_config: Option<Value>,
    /// Whether the recorded prompts had exactly their declared token lengths.
    #[serde(default)]
    pub prompt_lengths: Option<String>,
    /// The model name the requests carried.
    pub model: String,
    /// What the model is (parameters, quantisation, how it was made), free-form.
    #[serde(default)]
    pub model_details: Option<Value>,
    /// UTC, RFC 3339.
    pub recorded_at: String,
    pub experiment: String,
    pub target: String,
    pub seed: u64,
    /// The prompt salt of the recorded run; replay uses it to regenerate identical requests.
    pub salt: u64,
    pub inferlab_version: String,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEvent {
    /// Offset from the request's send, µs.
    pub offset_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub phase: String,
    pub index: u32,
    pub path: String,
    pub body: Value,
    pub status: u16,
    pub content_type: Option<String>,
    /// Response headers' offset from the request's send, µs.
    pub headers_offset_us: u64,
    #[serde(default)]
    pub events: Vec<FixtureEvent>,
    /// A non-stream body (error statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
    pub end_offset_us: u64,
    /// The connection broke (reset or stall) instead of ending cleanly.
    #[serde(default)]
    pub broken: bool,
}

impl Exchange {
    /// Turns a client capture into an exchange; `None` when no response ever came (connect
    /// failure, no headers), which cannot be replayed.
    pub fn from_capture(
        phase: &str,
        index: u32,
        path: &str,
        body: Value,
        c: &Capture,
    ) -> Option<Self> {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Some(Self {
            phase: phase.to_string(),
            index,
            path: path.to_string(),
            body,
            status: c.status?,
            content_type: c.content_type.clone(),
            headers_offset_us: us(c.headers?),
            events: c
                .events
                .iter()
                .map(|e| FixtureEvent {
                    offset_us: us(e.offset),
                    event: e.event.clone(),
                    data: e.data.clone(),
                })
                .collect(),
            body_text: c.body_text.clone(),
            end_offset_us: us(c.end),
            broken: c.broken,
        })
    }
}

/// A recorded `/metrics` answer, for replaying the server side of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedScrape {
    pub phase: String,
    pub point: Point,
    /// Offset from the phase's start, ms.
    pub in_phase_ms: u64,
    pub status: u16,
    /// The exposition, reduced to the families inferlab reads.
    pub text: String,
}

/// A recorded GPU sample (replayed as data: GPU telemetry has no endpoint to pace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedGpu {
    pub phase: String,
    pub in_phase_ms: u64,
    pub values: crate::core::server::Canonical,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fixture {
    pub meta: FixtureMeta,
    pub exchanges: Vec<Exchange>,
    /// `scrapes.jsonl`; empty when the recording had no server metrics.
    pub scrapes: Vec<RecordedScrape>,
    /// `gpu_samples.jsonl`; empty when the recording had no GPU telemetry.
    pub gpu: Vec<RecordedGpu>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// `wiremock-fixtures/<experiment>/<target>`.
pub fn fixture_dir(root: &Path, experiment: &str, target: &str) -> PathBuf {
    root.join(experiment).join(target)
}

impl Fixture {
    pub fn exists(dir: &Path) -> bool {
        dir.join("meta.json").is_file() && dir.join("exchanges.jsonl").is_file()
    }

    pub fn load(dir: &Path) -> Result<Self, FixtureError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FixtureError::Io { path, source }
        };
        let meta_path = dir.join("meta.json");
        let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
        let meta: FixtureMeta = serde_json::from_str(&text).map_err(|e| FixtureError::Invalid {
            path: meta_path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if meta.schema_version != FIXTURE_SCHEMA_VERSION {
            return Err(FixtureError::Invalid {
                path: meta_path,
                line: 1,
                message: format!("unsupported fixture schema version {}", meta.schema_version),
            });
        }
        let exchanges = read_jsonl(&dir.join("exchanges.jsonl"))?;
        let scrapes_path = dir.join("scrapes.jsonl");
        let scrapes = if scrapes_path.is_file() {
            read_jsonl(&scrapes_path)?
        } else {
            Vec::new()
        };
        let gpu_path = dir.join("gpu_samples.jsonl");
        let gpu = if gpu_path.is_file() {
            read_jsonl(&gpu_path)?
        } else {
            Vec::new()
        };
        Ok(Self {
            meta,
            exchanges,
            scrapes,
            gpu,
        })
    }

    /// Writes the fixture, replacing any previous one in `dir` (written to temporary files first
    /// so a failure never leaves half a fixture).
    pub fn write(&self, dir: &Path) -> Result<(), FixtureError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FixtureError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let meta_tmp = dir.join("meta.json.tmp");
        let mut meta = serde_json::to_string_pretty(&self.meta).expect("fixture meta serialises");
        meta.push('\n');
        std::fs::write(&meta_tmp, meta).map_err(io(&meta_tmp))?;
        let ex_tmp = dir.join("exchanges.jsonl.tmp");
        write_jsonl(&ex_tmp, &self.exchanges)?;
        let scrapes_tmp = dir.join("scrapes.jsonl.tmp");
        if !self.scrapes.is_empty() {
            write_jsonl(&scrapes_tmp, &self.scrapes)?;
        }
        std::fs::rename(&meta_tmp, dir.join("meta.json")).map_err(io(dir))?;
        std::fs::rename(&ex_tmp, dir.join("exchanges.jsonl")).map_err(io(dir))?;
        if self.scrapes.is_empty() {
            let _ = std::fs::remove_file(dir.join("scrapes.jsonl"));
        } else {
            std::fs::rename(&scrapes_tmp, dir.join("scrapes.jsonl")).map_err(io(dir))?;
        }
        if self.gpu.is_empty() {
            let _ = std::fs::remove_file(dir.join("gpu_samples.jsonl"));
        } else {
            write_jsonl(&dir.join("gpu_samples.jsonl"), &self.gpu)?;
        }
        Ok(())
    }
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, FixtureError> {
    let io = |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| FixtureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| FixtureError::Invalid {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<(), FixtureError> {
    let io = |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for item in items {
        let line = serde_json::to_string(item).expect("fixture records serialise");
        writeln!(f, "{line}").map_err(|source| FixtureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    f.flush().map_err(|source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The key an incoming request is matched on.
fn match_key(path: &str, body: &Value) -> String {
    format!("{path} {body}")
}

struct ReplayState {
    queues: Mutex<HashMap<String, VecDeque<Arc<Exchange>>>>,
    unmatched: Mutex<Vec<String>>,
    model: String,
    scrapes: Vec<RecordedScrape>,
}

/// A running replay server; stops when dropped.
pub struct ReplayServer {
    addr: SocketAddr,
    state: Arc<ReplayState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReplayServer {
    /// Binds 127.0.0.1:0 and serves `fixture`.
    pub async fn start(fixture: &Fixture) -> std::io::Result<Self> {
        let mut queues: HashMap<String, VecDeque<Arc<Exchange>>> = HashMap::new();
        for e in &fixture.exchanges {
            queues
                .entry(match_key(&e.path, &e.body))
                .or_default()
                .push_back(Arc::new(e.clone()));
        }
        let state = Arc::new(ReplayState {
            queues: Mutex::new(queues),
            unmatched: Mutex::new(Vec::new()),
            model: fixture.meta.model.clone(),
            scrapes: fixture.scrapes.clone(),
        });
        let app = Router::new()
            .route("/v1/completions", post(stream_handler))
            .route("/v1/chat/completions", post(stream_handler))
            .route("/v1/models", get(models))
            .route("/metrics", get(metrics))
            .route("/health", get(|| async { "{\"status\":\"ok\"}" }))
            .with_state(state.clone());
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        // Its own thread and runtime: replayed gaps do not wait for the client's tasks, and the
        // client's runtime can have a single worker.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("replay-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let listener = listener.tap_io(|tcp| {
                        // Nagle would hold the first small SSE write back by ~40 ms.
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends every connection still open.
            })?;
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that matched no recorded exchange, described for people.
    pub fn unmatched(&self) -> Vec<String> {
        self.state
            .unmatched
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn models(State(state): State<Arc<ReplayState>>) -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{ "id": state.model, "object": "model" }]
    }))
    .into_response()
}

/// The recorded exposition for the moment a scrape names (`x-inferlab-scrape:
/// <phase>;<point>;<ms into the phase>`): boundary scrapes exactly, periodic ones the latest
/// recorded at or before that offset.
async fn metrics(
    State(state): State<Arc<ReplayState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let tag = headers
        .get("x-inferlab-scrape")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = tag.split(';');
    let (phase, point, at) = (
        parts.next().unwrap_or(""),
        parts.next().and_then(Point::parse),
        parts.next().and_then(|s| s.parse::<u64>().ok()),
    );
    let in_phase = state.scrapes.iter().filter(|s| s.phase == phase);
    let found = match point {
        Some(Point::Periodic) => in_phase
            .clone()
            .rfind(|s| s.point == Point::Periodic && Some(s.in_phase_ms) <= at)
            .or_else(|| in_phase.clone().find(|s| s.point == Point::Start)),
        Some(p) => in_phase.clone().find(|s| s.point == p),
        None => None,
    };
    match found {
        Some(s) => (
            StatusCode::from_u16(s.status).unwrap_or(StatusCode::OK),
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            s.text.clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no recorded /metrics for this moment",
        )
            .into_response(),
    }
}

async fn stream_handler(
    State(state): State<Arc<ReplayState>>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let arrival = Instant::now();
    let path = uri.path().to_string();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let exchange = parsed.as_ref().and_then(|b| {
        let mut q = state.queues.lock().ok()?;
        q.get_mut(&match_key(&path, b))?.pop_front()
    });
    let Some(ex) = exchange else {
        let what = describe(&path, parsed.as_ref());
        if let Ok(mut u) = state.unmatched.lock() {
            u.push(what.clone());
        }
        let mut resp = (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": { "message": format!("inferlab replay: no recorded exchange for {what}") } })),
        )
            .into_response();
        resp.headers_mut()
            .insert("x-inferlab-replay", HeaderValue::from_static("unmatched"));
        return resp;
    };
    tokio::time::sleep_until(arrival + Duration::from_micros(ex.headers_offset_us)).await;
    let status = StatusCode::from_u16(ex.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    if let Some(ct) = &ex.content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder = builder.header(header::CACHE_CONTROL, "no-cache");
    let body = if let Some(text) = &ex.body_text {
        Body::from(text.clone())
    } else {
        Body::from_stream(paced(ex, arrival))
    };
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The recorded events, each sent at `arrival + offset`; a broken exchange ends with an error,
/// which aborts the connection as the original did.
/// One record in SSE framing.
fn render(e: &FixtureEvent, out: &mut String) {
    match e.event.as_deref() {
        Some("error") => {
            out.push_str("error: ");
            out.push_str(&e.data);
            out.push_str("\n\n");
        }
        other => {
            if let Some(name) = other {
                out.push_str("event: ");
                out.push_str(name);
                out.push('\n');
            }
            for line in e.data.split('\n') {
                out.push_str("data: ");
                out.push_str(line);
                out.push('\n');
            }
            out.push('\n');
        }
    }
}

fn paced(
    ex: Arc<Exchange>,
    arrival: Instant,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(0usize, move |i| {
        let ex = ex.clone();
        async move {
            if let Some(first) = ex.events.get(i) {
                tokio::time::sleep_until(arrival + Duration::from_micros(first.offset_us)).await;
                // Records captured from one read share an offset: send them in one write, as
                // they arrived.
                let mut out = String::new();
                let mut next = i;
                while let Some(e) = ex
                    .events
                    .get(next)
                    .filter(|e| e.offset_us == first.offset_us)
                {
                    render(e, &mut out);
                    next += 1;
                }
                return Some((Ok(Bytes::from(out)), next));
            }
            if i == ex.events.len() && ex.broken {
                tokio::time::sleep_until(arrival + Duration::from_micros(ex.end_offset_us)).await;
                return Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "recorded connection break",
                    )),
                    i + 1,
                ));
            }
            None
        }
    })
}

fn describe(path: &str, body: Option<&Value>) -> String {
    let Some(b) = body else {
        return format!("POST {path} with a body that is not JSON");
    };
    let prompt = b
        .get("prompt")
        .and_then(Value::as_str)
        .or_else(|| b.pointer("/messages/0/content").and_then(Value::as_str))
        .unwrap_or("");
    let head: String = prompt.split(' ').take(6).collect::<Vec<_>>().join(" ");
    format!(
        "POST {path} (model {}, max_tokens {}, prompt \"{head} …\")",
        b.get("model").unwrap_or(&Value::Null),
        b.get("max_tokens").unwrap_or(&Value::Null)
    )
}
