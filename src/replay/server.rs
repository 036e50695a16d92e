//! The replay server: an axum server on `127.0.0.1:0` with TCP_NODELAY (wiremock cannot pace
//! a body) that matches each incoming request to a recorded exchange by its exact JSON body
//! and streams the recorded SSE records at their recorded offsets; recorded `/metrics` answers
//! are served by the phase and offset each scrape names. An unmatched request gets a 404 and
//! is remembered.

use super::{Exchange, Fixture, FixtureEvent, RecordedScrape};
use crate::core::record::Point;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The key an incoming request is matched on.
fn match_key(path: &str, body: &Value) -> String {
    format!("{path} {body}")
}

struct ReplayState {
    queues: Mutex<HashMap<String, VecDeque<Arc<Exchange>>>>,
    unmatched: Mutex<Vec<String>>,
    model: String,
    scrapes: Vec<RecordedScrape>,
    /// Every recorded offset is multiplied by this (1: the original pace).
    slowdown: f64,
}

/// A running replay server; stops when dropped.
pub struct ReplayServer {
    addr: SocketAddr,
    state: Arc<ReplayState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReplayServer {
    /// Binds 127.0.0.1:0 and serves `fixture` at its recorded pace.
    pub async fn start(fixture: &Fixture) -> std::io::Result<Self> {
        Self::start_slowed(fixture, 1.0).await
    }

    /// Serves `fixture` with every recorded offset (response headers, each event, a broken
    /// stream's end) stretched by `slowdown`: 1.10 is a server 10 % slower in every part of
    /// every response, a known regression for testing gates.
    pub async fn start_slowed(fixture: &Fixture, slowdown: f64) -> std::io::Result<Self> {
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
            slowdown,
        });
        let app = Router::new()
            .route("/v1/completions", post(stream_handler))
            .route("/v1/chat/completions", post(stream_handler))
            .route("/generate", post(stream_handler))
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
    let slowdown = state.slowdown;
    tokio::time::sleep_until(arrival + stretched(ex.headers_offset_us, slowdown)).await;
    let status = StatusCode::from_u16(ex.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    if let Some(ct) = &ex.content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    builder = builder.header(header::CACHE_CONTROL, "no-cache");
    let body = if let Some(text) = &ex.body_text {
        Body::from(text.clone())
    } else {
        Body::from_stream(paced(ex, arrival, slowdown))
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

/// A recorded offset at `slowdown` times its length.
fn stretched(offset_us: u64, slowdown: f64) -> Duration {
    if slowdown == 1.0 {
        return Duration::from_micros(offset_us);
    }
    Duration::from_secs_f64(offset_us as f64 * 1e-6 * slowdown)
}

fn paced(
    ex: Arc<Exchange>,
    arrival: Instant,
    slowdown: f64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(0usize, move |i| {
        let ex = ex.clone();
        async move {
            if let Some(first) = ex.events.get(i) {
                tokio::time::sleep_until(arrival + stretched(first.offset_us, slowdown)).await;
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
                tokio::time::sleep_until(arrival + stretched(ex.end_offset_us, slowdown)).await;
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
