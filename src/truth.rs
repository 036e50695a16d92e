//! A ground-truth streaming server: OpenAI-compatible completions and chat, one token per chunk
//! written at absolute deadlines (`arrival + ttft + i·itl`), that records when each request
//! arrived and when each chunk's bytes were handed to the kernel. Measuring a client against
//! it separates what the client adds from what a server does.
//!
//! The truth is the write instant, not the deadline: the timer may wake late, and whatever it
//! does is what the client should have seen. It is a plain HTTP/1.1 implementation over tokio
//! sockets (keep-alive, chunked transfer encoding, Nagle off), so nothing stands between the
//! `write` and the recorded instant. Requests are matched to the client's records by the
//! `x-inferlab-request-id` header. Per request, `x-truth-ttft-us` and `x-truth-itl-us` override
//! the server's TTFT and ITL; the body's `max_tokens` sets the number of tokens.
//!
//! It runs on its own OS threads (named `truth-server`), so a client in the same process can be
//! measured without sharing a scheduler with it, and the threads' CPU time is accounted apart.

use serde::Deserialize;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::client::REQUEST_ID_HEADER;
use crate::cpu::{current_tid, thread_cpu};

/// How the server answers when a request does not say otherwise.
#[derive(Debug, Clone, Copy)]
pub struct TruthConfig {
    pub ttft: Duration,
    pub itl: Duration,
    /// Tokens when the body has no `max_tokens`.
    pub tokens: u32,
    /// Runtime worker threads (1: a current-thread runtime).
    pub workers: usize,
    /// Keep a record per request (off for long load runs whose memory is being measured).
    pub record: bool,
}

impl Default for TruthConfig {
    fn default() -> Self {
        Self {
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(10),
            tokens: 64,
            workers: 1,
            record: true,
        }
    }
}

/// What the server did for one streamed request.
#[derive(Debug, Clone)]
pub struct TruthRecord {
    /// The `x-inferlab-request-id` header, when sent.
    pub id: Option<String>,
    /// The connection it came on (numbered from 0 in accept order).
    pub connection: u64,
    /// When the request's last body byte had been read.
    pub arrived: Instant,
    /// When each token chunk's bytes had been written to the socket.
    pub writes: Vec<Instant>,
    /// The TTFT and ITL it was asked to produce.
    pub ttft: Duration,
    pub itl: Duration,
    /// False when the client went away before the stream ended.
    pub complete: bool,
}

/// How long a reader of the records waits for streams still being written. A client that saw
/// a stream's last byte reads its record within microseconds on a quiet machine; the bound only
/// keeps a reader from hanging on a stream whose client never reads.
const SETTLE: Duration = Duration::from_secs(10);

/// Finished streams' records, and how many streams are still being written.
#[derive(Default)]
struct Records {
    done: Vec<TruthRecord>,
    in_flight: usize,
}

struct Shared {
    records: Mutex<Records>,
    /// Signalled whenever a stream ends (synchronous readers).
    settled: Condvar,
    /// Signalled whenever a stream ends (readers on the server's own runtime).
    settled_async: tokio::sync::Notify,
    connections: AtomicU64,
    /// Linux thread ids of the server's threads, for CPU accounting.
    tids: Mutex<Vec<u32>>,
    started: Instant,
}

/// A running truth server; stops when dropped.
pub struct TruthServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TruthServer {
    /// Binds `bind` (port 0 for any free port) and serves on a dedicated thread.
    pub fn start(cfg: TruthConfig, bind: SocketAddr) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            records: Mutex::new(Records::default()),
            settled: Condvar::new(),
            settled_async: tokio::sync::Notify::new(),
            connections: AtomicU64::new(0),
            tids: Mutex::new(Vec::new()),
            started: Instant::now(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<SocketAddr>>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("truth-server".into())
            .spawn(move || {
                let rt = build_runtime(cfg.workers, sh.clone());
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                note_thread(&sh);
                rt.block_on(async move {
                    let listener = match listen(bind) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(listener.local_addr());
                    tokio::select! {
                        _ = accept_loop(listener, cfg, sh) => {}
                        _ = rx => {}
                    }
                });
            })?;
        let addr = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the truth server's thread exited at start"))??;
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes every record so far, once no stream is being written (waiting at most 10 s).
    ///
    /// A stream's record is stored after its last byte is written, so a client that has just
    /// read `[DONE]` may get here first: waiting for the streams in flight makes "the client saw
    /// the end" imply "its record is here". Blocks the calling thread; the server runs on its
    /// own threads, so this cannot hold up the streams it waits for.
    pub fn take_records(&self) -> Vec<TruthRecord> {
        let records = self.shared.lock_records();
        let (mut records, _) = self
            .shared
            .settled
            .wait_timeout_while(records, SETTLE, |r| r.in_flight > 0)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut records.done)
    }

    /// Connections accepted since start.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// CPU time used by the server's threads so far (Linux; `None` elsewhere).
    pub fn cpu_time(&self) -> Option<Duration> {
        let tids = self.shared.tids.lock().ok()?.clone();
        let mut total = Duration::ZERO;
        for tid in tids {
            total += thread_cpu(tid)?;
        }
        Some(total)
    }
}

impl Drop for TruthServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listener whose accept queue holds a whole wave of connections: with the usual 128, a
/// burst of 512 connects loses SYNs, and each lost one costs the client a 1 s retransmission.
fn listen(bind: SocketAddr) -> io::Result<TcpListener> {
    let socket = if bind.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    socket.listen(4096)
}

fn build_runtime(workers: usize, shared: Arc<Shared>) -> io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("truth-server")
            .on_thread_start(move || note_thread(&shared))
            .enable_all()
            .build()
    }
}

fn note_thread(shared: &Shared) {
    if let Some(tid) = current_tid()
        && let Ok(mut t) = shared.tids.lock()
    {
        t.push(tid);
    }
}

async fn accept_loop(listener: TcpListener, cfg: TruthConfig, shared: Arc<Shared>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Out of descriptors or similar: let the in-flight streams drain, then go on.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = sock.set_nodelay(true);
        let conn = shared.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve_connection(sock, conn, cfg, shared.clone()));
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    id: Option<String>,
    ttft: Option<Duration>,
    itl: Option<Duration>,
    close: bool,
    body: Vec<u8>,
}

#[derive(Deserialize, Default)]
struct Body {
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stream: Option<bool>,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

async fn serve_connection(mut sock: TcpStream, conn: u64, cfg: TruthConfig, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let req = match read_request(&mut sock, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(msg) => {
                let _ = respond(&mut sock, "400 Bad Request", "text/plain", msg.as_bytes()).await;
                return;
            }
        };
        let arrived = Instant::now();
        let ok = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/completions") | ("POST", "/v1/chat/completions") => {
                let chat = req.path == "/v1/chat/completions";
                stream_completion(&mut sock, &req, chat, arrived, conn, cfg, &shared).await
            }
            ("GET", "/health") => respond(&mut sock, "200 OK", "application/json", b"{}")
                .await
                .is_ok(),
            ("GET", "/v1/models") => respond(
                &mut sock,
                "200 OK",
                "application/json",
                br#"{"object":"list","data":[{"id":"truth","object":"model","owned_by":"inferlab"}]}"#,
            )
            .await
            .is_ok(),
            ("GET", "/truth/records") => {
                // Streams that other connections are still writing land first.
                shared.settle().await;
                let body = records_json(&shared);
                respond(&mut sock, "200 OK", "application/json", body.as_bytes())
                    .await
                    .is_ok()
            }
            _ => respond(&mut sock, "404 Not Found", "text/plain", b"no such route")
                .await
                .is_ok(),
        };
        if !ok || req.close {
            return;
        }
    }
}

/// Reads one request (head and `content-length` body) from `sock`, keeping any bytes past it in
/// `buf`. `Ok(None)` when the peer closed between requests.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Request>, String> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large".into());
        }
        match read_more(sock, buf).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err("connection closed inside a request head".into()),
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let version = first.next().unwrap_or("");
    let mut req = Request {
        method,
        path,
        id: None,
        ttft: None,
        itl: None,
        close: version == "HTTP/1.0",
        body: Vec::new(),
    };
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let micros = |v: &str| v.parse::<u64>().ok().map(Duration::from_micros);
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value.parse().map_err(|_| "bad content-length")?;
            }
            "connection" => req.close = value.eq_ignore_ascii_case("close"),
            REQUEST_ID_HEADER => req.id = Some(value.to_string()),
            "x-truth-ttft-us" => req.ttft = micros(value),
            "x-truth-itl-us" => req.itl = micros(value),
            "transfer-encoding" => return Err("chunked request bodies are not supported".into()),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err("request body too large".into());
    }
    let body_start = head_end + 4;
    while buf.len() < body_start + length {
        match read_more(sock, buf).await {
            Ok(0) | Err(_) => return Err("connection closed inside a request body".into()),
            Ok(_) => {}
        }
    }
    req.body = buf[body_start..body_start + length].to_vec();
    buf.drain(..body_start + length);
    Ok(Some(req))
}

async fn read_more(sock: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = sock.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn respond(sock: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    sock.write_all(&out).await
}

/// One HTTP chunk holding `payload`.
fn http_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The bytes of one streamed response, built before it starts.
struct Frames {
    head: &'static [u8],
    /// A token chunk, and the last one (with its finish reason).
    middle: Vec<u8>,
    last: Vec<u8>,
    /// The usage record, `[DONE]` and the end of the chunked body.
    tail: Vec<u8>,
}

impl Frames {
    fn new(chat: bool, tokens: u32) -> Self {
        let (object, key) = if chat {
            ("chat.completion.chunk", "delta")
        } else {
            ("text_completion", "text")
        };
        let token = |last: bool| {
            let finish = if last { "\"length\"" } else { "null" };
            let choice = if chat {
                format!("\"{key}\":{{\"content\":\" tok\"}}")
            } else {
                format!("\"{key}\":\" tok\"")
            };
            let data = format!(
                "data: {{\"id\":\"truth\",\"object\":\"{object}\",\"model\":\"truth\",\"choices\":[{{\"index\":0,{choice},\"finish_reason\":{finish}}}]}}\n\n"
            );
            let mut out = Vec::with_capacity(data.len() + 8);
            http_chunk(&mut out, data.as_bytes());
            out
        };
        let mut tail = Vec::new();
        let usage = format!(
            "data: {{\"id\":\"truth\",\"object\":\"{object}\",\"model\":\"truth\",\"choices\":[],\"usage\":{{\"prompt_tokens\":0,\"completion_tokens\":{tokens},\"total_tokens\":{tokens}}}}}\n\ndata: [DONE]\n\n"
        );
        http_chunk(&mut tail, usage.as_bytes());
        tail.extend_from_slice(b"0\r\n\r\n");
        Self {
            head: b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
            middle: token(false),
            last: token(true),
            tail,
        }
    }
}

/// Streams `tokens` chunks at their deadlines and records the write instants. False when the
/// connection cannot carry another request.
async fn stream_completion(
    sock: &mut TcpStream,
    req: &Request,
    chat: bool,
    arrived: Instant,
    conn: u64,
    cfg: TruthConfig,
    shared: &Shared,
) -> bool {
    let body: Body = match serde_json::from_slice(&req.body) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("{{\"error\":{{\"message\":\"invalid JSON body: {e}\"}}}}");
            return respond(sock, "400 Bad Request", "application/json", msg.as_bytes())
                .await
                .is_ok();
        }
    };
    if body.stream == Some(false) {
        let msg = br#"{"error":{"message":"the truth server only streams (set stream: true)"}}"#;
        return respond(sock, "400 Bad Request", "application/json", msg)
            .await
            .is_ok();
    }
    let tokens = body
        .max_tokens
        .or(body.max_completion_tokens)
        .unwrap_or(cfg.tokens);
    let ttft = req.ttft.unwrap_or(cfg.ttft);
    let itl = req.itl.unwrap_or(cfg.itl);

    // Every chunk is built before the first deadline, so a write is the only work between a
    // wake-up and its recorded instant.
    let Frames {
        head,
        middle,
        last,
        tail,
    } = Frames::new(chat, tokens);
    let mut in_flight = shared.stream_started();
    let mut record = TruthRecord {
        id: req.id.clone(),
        connection: conn,
        arrived,
        writes: Vec::with_capacity(tokens as usize),
        ttft,
        itl,
        complete: false,
    };
    let mut alive = sock.write_all(head).await.is_ok();
    for i in 0..tokens {
        if !alive {
            break;
        }
        let deadline = arrived + ttft + itl * i;
        if deadline > Instant::now() {
            tokio::time::sleep_until(deadline.into()).await;
        }
        let bytes = if i + 1 == tokens { &last } else { &middle };
        alive = sock.write_all(bytes).await.is_ok();
        if alive {
            record.writes.push(Instant::now());
        }
    }
    if alive {
        alive = sock.write_all(&tail).await.is_ok();
    }
    record.complete = alive;
    in_flight.record = cfg.record.then_some(record);
    alive
}

impl Shared {
    fn lock_records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a stream as in flight until the returned guard is dropped.
    fn stream_started(&self) -> InFlight<'_> {
        self.lock_records().in_flight += 1;
        InFlight {
            shared: self,
            record: None,
        }
    }

    /// Waits (at most 10 s) on the server's runtime until no stream is being written.
    async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let notified = self.settled_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock_records().in_flight == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// A stream being written. When it drops, its record (if one was kept) is stored and the count
/// lowered in one locked step, so a reader never sees the count at zero without the record; a
/// stream abandoned mid-way (the server shutting down) stops counting the same way.
struct InFlight<'a> {
    shared: &'a Shared,
    record: Option<TruthRecord>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut r = self.shared.lock_records();
        r.done.extend(self.record.take());
        r.in_flight -= 1;
        drop(r);
        self.shared.settled.notify_all();
        self.shared.settled_async.notify_waiters();
    }
}

/// Every finished stream's record as JSON, times in microseconds since the server started.
fn records_json(shared: &Shared) -> String {
    let us = |t: Instant| t.saturating_duration_since(shared.started).as_micros() as u64;
    let records = shared.lock_records().done.clone();
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "connection": r.connection,
                "arrived_us": us(r.arrived),
                "writes_us": r.writes.iter().map(|&w| us(w)).collect::<Vec<_>>(),
                "ttft_us": r.ttft.as_micros() as u64,
                "itl_us": r.itl.as_micros() as u64,
                "complete": r.complete,
            })
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}
