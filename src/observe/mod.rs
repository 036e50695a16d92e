//! Server-side observation: `/metrics` scrapes and GPU samples, reduced to canonical series and
//! per-phase figures (`core::prom` parses, `core::server` adapts and summarises, `scrape` and
//! `gpu` do the IO). An [`Observer`] runs them around a trial's phases: a scrape right before
//! and right after each phase, periodic scrapes and GPU samples in between, a serverless
//! endpoint's `/health` before and after, and a recording's GPU samples put back in place.

pub mod gpu;
pub mod scrape;

use crate::client::Endpoint;
use crate::core::record::{Point, ScrapeRecord};
use gpu::GpuSource;
use scrape::{CurrentPhase, Scraper};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What to observe.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub interval: Duration,
    /// Scrape the target's `/metrics`.
    pub metrics: bool,
    /// Keep each scrape's raw text (a recording stores it).
    pub keep_raw: bool,
    pub gpu: Option<GpuSource>,
    /// Read a serverless endpoint's `/health` (worker and job counts) around each phase.
    pub serverless_health: bool,
    /// GPU samples of a recording (`in_phase` set; `at` is placed when their phase runs).
    pub recorded_gpu: Vec<ScrapeRecord>,
}

pub use crate::core::record::Health;

/// Everything observed over a trial.
#[derive(Debug, Default)]
pub struct Observed {
    /// In phase order, each phase's sorted by time.
    pub scrapes: Vec<ScrapeRecord>,
    pub health: BTreeMap<String, Health>,
}

/// The observation of one trial; phases are started and ended in turn.
pub struct Observer {
    http: reqwest::Client,
    ep: Endpoint,
    origin: Instant,
    scraper: Option<Arc<Scraper>>,
    health_url: Option<String>,
    current: watch::Sender<CurrentPhase>,
    samples: mpsc::UnboundedReceiver<ScrapeRecord>,
    tasks: Vec<JoinHandle<()>>,
    gpu_task: Option<JoinHandle<()>>,
    recorded_gpu: Vec<ScrapeRecord>,
    /// The phase in progress: name, start, and where its records begin.
    phase: Option<(String, Instant, usize)>,
    observed: Observed,
}

impl Observer {
    /// Starts the background samplers; times are offsets from `origin`.
    pub fn start(http: &reqwest::Client, ep: &Endpoint, setup: Setup, origin: Instant) -> Self {
        let scraper = setup
            .metrics
            .then(|| Scraper::new(&ep.base_url, ep.api_key.clone(), ep.kind, setup.keep_raw).ok())
            .flatten()
            .map(Arc::new);
        let (current, _) = watch::channel(None);
        let (tx, samples) = mpsc::unbounded_channel();
        let interval = setup.interval;
        let tasks = scraper
            .iter()
            .map(|s| {
                scrape::spawn_periodic(s.clone(), interval, current.subscribe(), origin, tx.clone())
            })
            .collect();
        let gpu_task = setup
            .gpu
            .map(|src| gpu::spawn(src, interval, current.subscribe(), origin, tx.clone()));
        let health_url = setup
            .serverless_health
            .then(|| format!("{}/health", ep.base_url.trim_end_matches("/openai")));
        Self {
            http: http.clone(),
            ep: ep.clone(),
            origin,
            scraper,
            health_url,
            current,
            samples,
            tasks,
            gpu_task,
            recorded_gpu: setup.recorded_gpu,
            phase: None,
            observed: Observed::default(),
        }
    }

    /// Observes the start of phase `name`; returns its start instant.
    pub async fn phase_started(&mut self, name: &str) -> Instant {
        if let Some(url) = &self.health_url {
            let before = crate::probe::get_json_url(&self.http, &self.ep, url).await;
            self.observed.health.insert(
                name.to_string(),
                Health {
                    before,
                    after: None,
                },
            );
        }
        let first = self.observed.scrapes.len();
        let start = Instant::now();
        if let Some(s) = &self.scraper {
            let r = s.scrape(name, Point::Start, start, self.origin).await;
            self.observed.scrapes.push(r);
        }
        let _ = self.current.send(Some((name.to_string(), start)));
        self.phase = Some((name.to_string(), start, first));
        start
    }

    /// Observes the end of the phase in progress; returns that phase's records, by time.
    pub async fn phase_ended(&mut self) -> &[ScrapeRecord] {
        let Some((name, start, first)) = self.phase.take() else {
            return &[];
        };
        let _ = self.current.send(None);
        if let Some(url) = &self.health_url {
            let after = crate::probe::get_json_url(&self.http, &self.ep, url).await;
            if let Some(h) = self.observed.health.get_mut(&name) {
                h.after = after;
            }
        }
        if let Some(s) = &self.scraper {
            let r = s.scrape(&name, Point::End, start, self.origin).await;
            self.observed.scrapes.push(r);
        }
        while let Ok(r) = self.samples.try_recv() {
            self.observed.scrapes.push(r);
        }
        let at_start = start.saturating_duration_since(self.origin);
        for g in self.recorded_gpu.iter().filter(|g| g.phase == name) {
            self.observed.scrapes.push(ScrapeRecord {
                at: at_start + g.in_phase,
                ..g.clone()
            });
        }
        let phase = &mut self.observed.scrapes[first..];
        phase.sort_by_key(|r| r.at);
        phase
    }

    /// Stops the samplers and hands over what was observed.
    pub async fn finish(mut self) -> Observed {
        if self.phase.is_some() {
            self.phase_ended().await;
        }
        drop(self.current);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(g) = self.gpu_task {
            g.abort();
        }
        self.observed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine::TargetKind;
    use crate::core::server::Canonical;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn endpoint(base_url: String, kind: TargetKind) -> Endpoint {
        Endpoint {
            base_url,
            api_key: None,
            model: "m".into(),
            kind,
            continuous_usage: false,
        }
    }

    fn gpu_sample(phase: &str, in_phase_ms: u64) -> ScrapeRecord {
        ScrapeRecord {
            phase: phase.into(),
            point: Point::Periodic,
            at: Duration::ZERO,
            in_phase: Duration::from_millis(in_phase_ms),
            error: None,
            issues: 0,
            values: Canonical::new(),
            raw: None,
            status: None,
            source: crate::core::record::ScrapeSource::Gpu,
        }
    }

    #[tokio::test]
    async fn recorded_gpu_samples_are_placed_in_their_phase_when_it_runs() {
        let origin = Instant::now();
        let setup = Setup {
            interval: Duration::from_secs(1),
            recorded_gpu: vec![
                gpu_sample("b", 30),
                gpu_sample("a", 20),
                gpu_sample("a", 10),
            ],
            ..Setup::default()
        };
        let ep = endpoint("http://127.0.0.1:9".into(), TargetKind::Llamacpp);
        let mut obs = Observer::start(&reqwest::Client::new(), &ep, setup, origin);
        let start = obs.phase_started("a").await;
        let a: Vec<(String, Duration)> = obs
            .phase_ended()
            .await
            .iter()
            .map(|r| (r.phase.clone(), r.in_phase))
            .collect();
        assert_eq!(
            a,
            [
                ("a".to_string(), Duration::from_millis(10)),
                ("a".to_string(), Duration::from_millis(20))
            ],
            "only phase a's samples, in time order"
        );
        obs.phase_started("b").await;
        assert_eq!(obs.phase_ended().await.len(), 1);
        let observed = obs.finish().await;
        let at_start = start.saturating_duration_since(origin);
        assert_eq!(observed.scrapes[0].at, at_start + Duration::from_millis(10));
        assert_eq!(observed.scrapes.len(), 3);
        assert!(observed.health.is_empty(), "not serverless");
    }

    #[tokio::test]
    async fn each_phase_is_scraped_at_start_and_end_and_health_read_around_it() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/openai/metrics"))
            .respond_with(ResponseTemplate::new(200).set_body_string(
                "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n",
            ))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/health"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"workers": {"idle": 1, "running": 0}})),
            )
            .mount(&server)
            .await;
        let setup = Setup {
            interval: Duration::from_secs(60),
            metrics: true,
            serverless_health: true,
            ..Setup::default()
        };
        let ep = endpoint(format!("{}/openai", server.uri()), TargetKind::Llamacpp);
        let mut obs = Observer::start(&reqwest::Client::new(), &ep, setup, Instant::now());
        obs.phase_started("p").await;
        let points: Vec<Point> = obs.phase_ended().await.iter().map(|r| r.point).collect();
        assert_eq!(points, [Point::Start, Point::End]);
        let observed = obs.finish().await;
        let h = &observed.health["p"];
        assert_eq!(h.before, h.after);
        assert_eq!(h.before.as_ref().unwrap()["workers"]["idle"], 1);
        assert!(
            observed.scrapes.iter().all(|r| r.error.is_none()),
            "{:?}",
            observed.scrapes
        );
    }
}
