//! The `/metrics` scraper: one scrape right before and right after each phase, and periodic
//! scrapes in between on a task of its own (its own connection, never the measurement pool).
//! A failed scrape is recorded with its reason and never stops the run.
//!
//! Every scrape carries an `x-inferlab-scrape: <phase>;<point>;<offset ms>` header: a replay
//! server answers with the recorded exposition for that moment (also when a live run is pointed
//! at one), and a real server's access log can be matched to the run.

use crate::client::Secret;
use crate::core::engine::TargetKind;
use crate::core::prom::parse_filtered;
use crate::core::record::{Point, ScrapeRecord, ScrapeSource};
use crate::core::server::{Canonical, canonical, is_used_family};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Scrapes one target.
pub struct Scraper {
    http: reqwest::Client,
    url: String,
    api_key: Option<Secret>,
    kind: TargetKind,
    keep_raw: bool,
}

impl Scraper {
    pub fn new(
        base_url: &str,
        api_key: Option<Secret>,
        kind: TargetKind,
        keep_raw: bool,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(1)
            .build()?;
        Ok(Self {
            http,
            url: format!("{base_url}/metrics"),
            api_key,
            kind,
            keep_raw,
        })
    }

    pub async fn scrape(
        &self,
        phase: &str,
        point: Point,
        phase_start: Instant,
        origin: Instant,
    ) -> ScrapeRecord {
        let started = Instant::now();
        let in_phase = started.saturating_duration_since(phase_start);
        let mut req = self.http.get(&self.url);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose());
        }
        // Phase names are identifiers: always a valid header value.
        req = req.header(
            "x-inferlab-scrape",
            format!("{phase};{};{}", point.as_str(), in_phase.as_millis()),
        );
        let mut rec = ScrapeRecord {
            phase: phase.to_string(),
            point,
            at: started.saturating_duration_since(origin),
            in_phase,
            error: None,
            issues: 0,
            values: Canonical::new(),
            raw: None,
            status: None,
            source: ScrapeSource::Metrics,
        };
        let redact = |s: String| match &self.api_key {
            Some(k) => k.redact(&s),
            None => s,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                rec.error = Some(redact(format!("scrape failed: {e}")));
                return rec;
            }
        };
        let status = resp.status();
        rec.status = Some(status.as_u16());
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                rec.error = Some(redact(format!("reading /metrics: {e}")));
                return rec;
            }
        };
        if !status.is_success() {
            rec.error = Some(format!("/metrics answered HTTP {}", status.as_u16()));
            return rec;
        }
        let exposition = parse_filtered(&text, &is_used_family);
        rec.issues = exposition.issues.len();
        rec.values = canonical(self.kind, &exposition);
        if exposition.samples.is_empty() {
            rec.error = Some(if rec.issues > 0 {
                format!(
                    "not a Prometheus exposition ({} malformed lines)",
                    rec.issues
                )
            } else {
                "no engine metrics in /metrics".to_string()
            });
        }
        if self.keep_raw {
            rec.raw = Some(
                text.lines()
                    .filter(|l| {
                        let name = l.split(['{', ' ']).next().unwrap_or("");
                        is_used_family(name) || l.starts_with("# TYPE")
                    })
                    .map(|l| format!("{l}\n"))
                    .collect(),
            );
        }
        rec
    }
}

/// The phase now running and when it started, for the periodic task.
pub type CurrentPhase = Option<(String, Instant)>;

/// Scrapes every `interval` while a phase runs, until `current` is closed. Stops early when
/// the server has no `/metrics` (HTTP 404): boundary scrapes still report it.
pub fn spawn_periodic(
    scraper: Arc<Scraper>,
    interval: Duration,
    mut current: watch::Receiver<CurrentPhase>,
    origin: Instant,
    tx: mpsc::UnboundedSender<ScrapeRecord>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = current.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new phase: restart the period from its start.
                    ticker.reset();
                    continue;
                }
            }
            let Some((phase, start)) = current.borrow().clone() else {
                continue;
            };
            // The boundary scrapes cover the first instant of a phase.
            if start.elapsed() < interval / 2 {
                continue;
            }
            let rec = scraper.scrape(&phase, Point::Periodic, start, origin).await;
            let missing = rec.status == Some(404);
            if tx.send(rec).is_err() || missing {
                return;
            }
        }
    })
}
