//! Executes a `Schedule` against an endpoint: phases in order; in each, warmup requests one at a
//! time, then the measured requests as the phase's pacing says — closed loop (N workers), batches
//! (released together, next when all finished), or open loop (each at its intended time, from
//! absolute deadlines so delays never accumulate, under an optional concurrency cap).
//!
//! Each request runs in its own task so a slow stream never delays another's timestamps;
//! finished records flow through a channel to the caller's sink (which appends them to disk as
//! they complete), so a crash loses only what was in flight.

use crate::client::{self, Capture, Endpoint};
use crate::core::record::RequestRecord;
use crate::spec::Timeouts;
use crate::watch::Watch;
use crate::workload::{Message, Pacing, PhasePlan, PlannedRequest, Schedule, SessionPlan};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, timeout_at};

/// One finished request, with its request body and (when recording) what the server sent.
#[derive(Debug)]
pub struct Completed {
    pub record: RequestRecord,
    /// The API path the request went to.
    pub path: &'static str,
    pub body: Value,
    pub capture: Option<Capture>,
}

/// Worker threads of the client runtime when nothing says otherwise. Measured with
/// `inferlab calibrate` on a 2-CPU machine: one worker halves the TTFT error at low
/// concurrency (median 0.11–0.13 ms against 0.37 ms at C = 1: no wake-ups across threads
/// between hyper's connection task and the request's task) and matches two workers up to
/// C = 512 at 50 k chunks/s, on a quarter of a core.
pub const DEFAULT_CLIENT_WORKERS: usize = 1;

/// The runtime requests run on: `workers` threads, or `INFERLAB_CLIENT_WORKERS`, or
/// [`DEFAULT_CLIENT_WORKERS`].
pub fn client_runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers
        .filter(|&w| w > 0)
        .or_else(crate::env::client_workers)
        .unwrap_or(DEFAULT_CLIENT_WORKERS);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("inferlab-client")
        .enable_all()
        .build()
}

/// What a phase's requests keep besides their records.
#[derive(Clone, Default)]
pub struct Keep {
    /// What the server sent, for a recording.
    pub capture: bool,
    /// Counts every send for a [`Watch`] (requests in flight = sent − finished).
    pub watch: Option<Arc<Watch>>,
}

impl Keep {
    pub fn capture(capture: bool) -> Self {
        Self {
            capture,
            watch: None,
        }
    }
}

/// Runs every phase of `schedule`, calling `sink` for each request as it completes. Returns
/// the run's origin instant.
pub async fn run_schedule(
    http: &reqwest::Client,
    ep: &Endpoint,
    schedule: &Schedule,
    timeouts: &Timeouts,
    capture: bool,
    sink: &mut (dyn FnMut(Completed) + Send),
) -> Instant {
    let origin = Instant::now();
    let keep = Keep::capture(capture);
    for phase in &schedule.phases {
        run_phase(http, ep, phase, timeouts, origin, &keep, sink).await;
    }
    origin
}

/// Runs one phase; times are offsets from `origin`.
pub async fn run_phase(
    http: &reqwest::Client,
    ep: &Endpoint,
    phase: &PhasePlan,
    timeouts: &Timeouts,
    origin: Instant,
    keep: &Keep,
    sink: &mut (dyn FnMut(Completed) + Send),
) {
    let (warmups, measured): (Vec<&PlannedRequest>, Vec<&PlannedRequest>) =
        phase.requests.iter().partition(|r| r.warmup);
    let ctx = Arc::new(Ctx {
        http: http.clone(),
        ep: ep.clone(),
        phase: phase.name.clone(),
        timeouts: *timeouts,
        origin,
        capture: keep.capture,
        watch: keep.watch.clone(),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Warmups one at a time, until they run out or the warmup duration passes (the request
    // in flight then finishes); all of them before the measured requests start.
    let warm_deadline = phase.warmup_limit.map(|l| Instant::now() + l);
    let n_warm = warmups.len();
    for req in warmups {
        if warm_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        sink(execute(&ctx, req, Instant::now(), None).await);
    }
    let measured: Vec<PlannedRequest> = measured.into_iter().cloned().collect();
    let n = measured.len();
    match phase.pacing {
        Pacing::Closed { concurrency, limit } => {
            let deadline = limit.map(|l| Instant::now() + l);
            spawn_closed_loop(&ctx, measured, concurrency as usize, deadline, tx);
            // With a deadline, fewer than `n` may be sent: drain until every worker is done.
            drain_until_closed(&mut rx, sink).await;
        }
        Pacing::Sessions { concurrency } => {
            let total = spawn_sessions(&ctx, phase, concurrency, n_warm as u32, tx);
            drain(&mut rx, total, sink).await;
        }
        Pacing::Batches { size } => {
            for batch in measured.chunks(size.max(1) as usize) {
                let released = Instant::now();
                for req in batch {
                    spawn_one(&ctx, req.clone(), released, None, None, tx.clone());
                }
                drain(&mut rx, batch.len(), sink).await;
            }
        }
        Pacing::Open {
            max_concurrency,
            limit,
        } => {
            let start = Instant::now();
            let rt = tokio::runtime::Handle::current();
            let ctx = ctx.clone();
            let dispatcher = tokio::task::spawn_blocking(move || {
                dispatch_open(ctx, measured, start, max_concurrency, limit, tx, rt)
            });
            drain(&mut rx, n, sink).await;
            let _ = dispatcher.await;
        }
    }
}

/// Runs the phase's conversations on `concurrency` tasks, each taking the next session when
/// its last one ends; the number of requests they will send. Requests are numbered from
/// `base` (after the warmups).
fn spawn_sessions(
    ctx: &Arc<Ctx>,
    phase: &PhasePlan,
    concurrency: u32,
    base: u32,
    tx: mpsc::UnboundedSender<Completed>,
) -> usize {
    let sessions = Arc::new(phase.sessions.clone());
    let total: usize = sessions
        .iter()
        .map(|s| s.steps.iter().map(|st| st.parallel as usize).sum::<usize>())
        .sum();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..(concurrency as usize).clamp(1, sessions.len().max(1)) {
        let (ctx, sessions, next, tx) = (ctx.clone(), sessions.clone(), next.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(session) = sessions.get(i) else {
                    break;
                };
                run_session(&ctx, session, base, &tx).await;
            }
        });
    }
    total
}

/// Sleeps the calling OS thread until `deadline`: a coarse sleep to just before it, then a
/// short spin. tokio's timer has 1 ms granularity, which would make every open-loop send up to
/// a millisecond late; this keeps the lateness in the tens of microseconds.
fn precise_sleep_until(deadline: std::time::Instant) {
    const SPIN: std::time::Duration = std::time::Duration::from_micros(200);
    let now = std::time::Instant::now();
    if deadline > now + SPIN {
        std::thread::sleep(deadline - now - SPIN);
    }
    while std::time::Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// Sends each request at `start + at`, from a blocking-pool thread so the timing does not
/// depend on the async timer. With a cap, an arrival waits for a slot (its wait is client
/// queueing, measured from the intended time); past `limit`, waiting arrivals are dropped and
/// requests in flight are cancelled.
fn dispatch_open(
    ctx: Arc<Ctx>,
    requests: Vec<PlannedRequest>,
    start: Instant,
    max_concurrency: Option<u32>,
    limit: Option<std::time::Duration>,
    tx: mpsc::UnboundedSender<Completed>,
    rt: tokio::runtime::Handle,
) {
    let slots = max_concurrency.map(|c| Arc::new(Semaphore::new(c as usize)));
    let deadline = limit.map(|l| start + l);
    for req in requests {
        let intended = start + req.at.unwrap_or_default();
        precise_sleep_until(intended.into_std());
        let permit = match &slots {
            None => None,
            Some(s) => {
                // A free slot is taken without a trip through the runtime; otherwise wait for
                // one, at most until the limit.
                match s.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => rt.block_on(async {
                        let acquire = s.clone().acquire_owned();
                        match deadline {
                            Some(d) => timeout_at(d, acquire).await.ok().and_then(Result::ok),
                            None => acquire.await.ok(),
                        }
                    }),
                }
            }
        };
        // A slot that frees exactly at the limit (or a dispatcher that woke late) must not
        // start a request that would be cancelled at once: past the limit, it is dropped.
        let too_late = deadline.is_some_and(|d| Instant::now() >= d);
        if too_late || (slots.is_some() && permit.is_none()) {
            let now = Instant::now();
            let record = RequestRecord::dropped(
                &ctx.phase,
                req.index,
                req.group,
                intended.saturating_duration_since(ctx.origin),
                now.saturating_duration_since(ctx.origin),
            );
            let body = client::request_body(&ctx.ep, &req);
            let _ = tx.send(Completed {
                record,
                path: req.api.path(),
                body,
                capture: None,
            });
            continue;
        }
        let _guard = rt.enter();
        spawn_one(&ctx, req, intended, deadline, permit, tx.clone());
    }
}

/// Runs one conversation: each step appends its user message, makes its calls with the whole
/// conversation so far, appends the first successful answer, then waits the think time.
async fn run_session(
    ctx: &Arc<Ctx>,
    session: &SessionPlan,
    base: u32,
    tx: &mpsc::UnboundedSender<Completed>,
) {
    let mut history: Vec<Message> = Vec::new();
    if let Some(system) = &session.system {
        history.push(Message {
            role: "system".into(),
            content: system.clone(),
        });
    }
    let steps = session.steps.len() as u32;
    for (t, step) in session.steps.iter().enumerate() {
        history.push(Message {
            role: "user".into(),
            content: step.message.clone(),
        });
        let messages = Arc::new(history.clone());
        let calls = (0..step.parallel).map(|k| {
            let req = PlannedRequest {
                index: base + (session.id * steps + t as u32) * step.parallel + k,
                api: session.api,
                max_tokens: session.max_tokens,
                ignore_eos: session.ignore_eos,
                temperature: session.temperature,
                messages: Some(messages.clone()),
                session: Some(session.id),
                turn: Some(t as u32),
                ..PlannedRequest::default()
            };
            let ctx = ctx.clone();
            async move { execute(&ctx, &req, Instant::now(), None).await }
        });
        let done = futures_util::future::join_all(calls).await;
        let answer = done
            .iter()
            .find(|c| c.record.ok())
            .and_then(|c| c.record.output_text.clone())
            .unwrap_or_default();
        for c in done {
            let _ = tx.send(c);
        }
        history.push(Message {
            role: "assistant".into(),
            content: answer,
        });
        if !step.think.is_zero() && t + 1 < session.steps.len() {
            tokio::time::sleep(step.think).await;
        }
    }
}

/// Drains until every sender is gone.
async fn drain_until_closed(
    rx: &mut mpsc::UnboundedReceiver<Completed>,
    sink: &mut (dyn FnMut(Completed) + Send),
) {
    while let Some(c) = rx.recv().await {
        sink(c);
    }
}

async fn drain(
    rx: &mut mpsc::UnboundedReceiver<Completed>,
    n: usize,
    sink: &mut (dyn FnMut(Completed) + Send),
) {
    for _ in 0..n {
        match rx.recv().await {
            Some(c) => sink(c),
            // Every sender dropped: a task panicked. Nothing more will come.
            None => return,
        }
    }
}

struct Ctx {
    http: reqwest::Client,
    ep: Endpoint,
    phase: String,
    timeouts: Timeouts,
    origin: Instant,
    capture: bool,
    watch: Option<Arc<Watch>>,
}

async fn execute(
    ctx: &Ctx,
    req: &PlannedRequest,
    intended: Instant,
    cancel_at: Option<Instant>,
) -> Completed {
    let body = client::request_body(&ctx.ep, req);
    if let Some(w) = &ctx.watch {
        w.sent();
    }
    let request = client::RequestCtx {
        http: &ctx.http,
        ep: &ctx.ep,
        phase: &ctx.phase,
        timeouts: &ctx.timeouts,
        origin: ctx.origin,
        capture: ctx.capture,
    };
    let (record, capture) = client::execute(&request, req, &body, intended, cancel_at).await;
    Completed {
        record,
        path: req.api.path(),
        body,
        capture,
    }
}

/// One request in its own task; the permit (if any) is held until it finishes.
fn spawn_one(
    ctx: &Arc<Ctx>,
    req: PlannedRequest,
    intended: Instant,
    cancel_at: Option<Instant>,
    permit: Option<OwnedSemaphorePermit>,
    tx: mpsc::UnboundedSender<Completed>,
) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let done = execute(&ctx, &req, intended, cancel_at).await;
        drop(permit);
        let _ = tx.send(done);
    });
}

/// `workers` tasks, each taking the next request as soon as its previous one finished, until
/// the requests run out or `deadline` passes (requests in flight then are cancelled).
fn spawn_closed_loop(
    ctx: &Arc<Ctx>,
    requests: Vec<PlannedRequest>,
    workers: usize,
    deadline: Option<Instant>,
    tx: mpsc::UnboundedSender<Completed>,
) {
    if requests.is_empty() {
        return;
    }
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..workers.clamp(1, requests.len()) {
        let (ctx, requests, next, tx) = (ctx.clone(), requests.clone(), next.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                let done = execute(&ctx, req, Instant::now(), deadline).await;
                if tx.send(done).is_err() {
                    break;
                }
            }
        });
    }
}
