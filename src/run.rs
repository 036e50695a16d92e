//! Executes a `Schedule` against an endpoint: phases in order; in each, warmup requests one at a
//! time, then the measured requests under the phase's closed-loop concurrency cap.
//!
//! Each request runs in its own task so a slow stream never delays another's timestamps;
//! finished records flow through a channel to the caller's sink (which appends them to disk as
//! they complete), so a crash loses only what was in flight.

use crate::client::{self, Capture, Endpoint};
use crate::record::RequestRecord;
use crate::spec::Timeouts;
use crate::workload::{PhasePlan, PlannedRequest, Schedule};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One finished request, with its request body and (when recording) what the server sent.
#[derive(Debug)]
pub struct Completed {
    pub record: RequestRecord,
    pub body: Value,
    pub capture: Option<Capture>,
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
    for phase in &schedule.phases {
        run_phase(http, ep, phase, timeouts, origin, capture, sink).await;
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
    capture: bool,
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
        capture,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_closed_loop(&ctx, warmups.into_iter().cloned().collect(), 1, tx.clone());
    // Warmups finish before the measured requests start.
    drain_until(&mut rx, count_warmups(phase), sink).await;
    let measured: Vec<PlannedRequest> = measured.into_iter().cloned().collect();
    let n = measured.len();
    spawn_closed_loop(&ctx, measured, phase.concurrency as usize, tx);
    drain_until(&mut rx, n, sink).await;
}

fn count_warmups(phase: &PhasePlan) -> usize {
    phase.requests.iter().filter(|r| r.warmup).count()
}

async fn drain_until(
    rx: &mut mpsc::UnboundedReceiver<Completed>,
    n: usize,
    sink: &mut (dyn FnMut(Completed) + Send),
) {
    for _ in 0..n {
        match rx.recv().await {
            Some(c) => sink(c),
            // Every worker dropped its sender: a worker task panicked. Nothing more will come.
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
}

/// `workers` tasks, each taking the next request as soon as its previous one finished.
fn spawn_closed_loop(
    ctx: &Arc<Ctx>,
    requests: Vec<PlannedRequest>,
    workers: usize,
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
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                let body = client::request_body(&ctx.ep, req);
                let intended = Instant::now();
                let (record, capture) = client::execute(
                    &ctx.http,
                    &ctx.ep,
                    &ctx.phase,
                    req,
                    &body,
                    &ctx.timeouts,
                    ctx.origin,
                    intended,
                    ctx.capture,
                )
                .await;
                if tx
                    .send(Completed {
                        record,
                        body,
                        capture,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}
