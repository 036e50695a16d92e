//! Watching a run while it runs: one [`Watch`] shared by the executor (which counts each send
//! and each finished request), a progress thread that draws it on stderr, and a Prometheus
//! endpoint that serves it.
//!
//! The executor's cost is one relaxed atomic increment per send and one short lock per finished
//! request (taken where the record is already being tallied, off the request's own task).
//! Readers take the same lock at most ten times a second (progress) or once per scrape, on
//! threads of their own, so nothing they do runs on the client's runtime.

use crate::core::live::{self, PhaseCounters, Series};
use crate::core::record::RequestRecord;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The shared live state of a run (several trials, one after another).
#[derive(Default)]
pub struct Watch {
    sent: AtomicU64,
    state: Mutex<State>,
    /// The progress line on the terminal now (empty: none); held while drawing.
    shown: Mutex<String>,
    /// How progress is drawn, once a progress thread draws it.
    style: Mutex<Option<ProgressStyle>>,
}

#[derive(Default)]
struct State {
    experiment: String,
    target: String,
    /// The running phase (or the last one, once it ended).
    current: Option<Running>,
    running: bool,
    /// Every (experiment, target, phase) seen, in order, its repeats counted together.
    series: Vec<Totals>,
    /// Lines of phases that ended and were not yet printed.
    ended: Vec<String>,
}

/// One run of a phase (one repeat), as progress shows it.
struct Running {
    /// `exp::target`.
    trial: String,
    /// The phase's name, with its repeat when the experiment has several.
    label: String,
    counters: PhaseCounters,
    started: Instant,
    /// Set when the phase ended.
    elapsed: Option<Duration>,
    limit: Option<Duration>,
    /// `sent` when the phase started.
    sent_base: u64,
    /// Index into `series`.
    series: usize,
}

impl Running {
    fn elapsed(&self) -> Duration {
        self.elapsed.unwrap_or_else(|| self.started.elapsed())
    }

    fn progress(&self, in_flight: u64) -> live::Progress<'_> {
        live::Progress {
            trial: &self.trial,
            phase: &self.label,
            counters: &self.counters,
            in_flight,
            elapsed_s: self.elapsed().as_secs_f64(),
            limit_s: self.limit.map(|l| l.as_secs_f64()),
        }
    }
}

/// A phase's counters over all its repeats, as Prometheus sees them (counters only grow).
struct Totals {
    experiment: String,
    target: String,
    phase: String,
    counters: PhaseCounters,
    /// Time spent in the phase's finished runs.
    elapsed: Duration,
}

/// Which repeat a phase run is, when there are several.
#[derive(Debug, Clone, Copy)]
pub struct Repeat {
    /// From 0.
    pub index: u32,
    pub of: u32,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("sent", &self.sent.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Watch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still worth showing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn trial_started(&self, experiment: &str, target: &str) {
        let mut s = self.lock();
        s.experiment = experiment.to_string();
        s.target = target.to_string();
    }

    /// A phase starts: `planned` requests (warmups included), under an optional duration limit.
    pub fn phase_started(
        &self,
        phase: &str,
        repeat: Option<Repeat>,
        planned: u64,
        limit: Option<Duration>,
    ) {
        let sent_base = self.sent.load(Ordering::Relaxed);
        let mut s = self.lock();
        let st = &mut *s;
        let series = match st.series.iter().position(|t| {
            t.experiment == st.experiment && t.target == st.target && t.phase == phase
        }) {
            Some(i) => i,
            None => {
                st.series.push(Totals {
                    experiment: st.experiment.clone(),
                    target: st.target.clone(),
                    phase: phase.to_string(),
                    counters: PhaseCounters::new(0),
                    elapsed: Duration::ZERO,
                });
                st.series.len() - 1
            }
        };
        st.series[series].counters.planned += planned;
        let label = match repeat {
            Some(r) if r.of > 1 => format!("{phase} (repeat {}/{})", r.index + 1, r.of),
            _ => phase.to_string(),
        };
        st.current = Some(Running {
            trial: format!("{}::{}", st.experiment, st.target),
            label,
            counters: PhaseCounters::counts_only(planned),
            started: Instant::now(),
            elapsed: None,
            limit,
            sent_base,
            series,
        });
        st.running = true;
    }

    /// A request is being sent.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished (of the running phase).
    pub fn completed(&self, r: &RequestRecord) {
        let mut s = self.lock();
        let st = &mut *s;
        if let Some(p) = st.current.as_mut() {
            p.counters.add(r);
            if let Some(t) = st.series.get_mut(p.series) {
                t.counters.add(r);
            }
        }
    }

    pub fn phase_ended(&self) {
        let mut s = self.lock();
        let st = &mut *s;
        if !st.running {
            return;
        }
        st.running = false;
        let Some(p) = st.current.as_mut() else {
            return;
        };
        let elapsed = p.started.elapsed();
        p.elapsed = Some(elapsed);
        if let Some(t) = st.series.get_mut(p.series) {
            t.elapsed += elapsed;
        }
        let line = p.progress(0).finished_line();
        st.ended.push(line);
    }

    fn in_flight(&self, s: &State) -> u64 {
        let Some(p) = s.current.as_ref().filter(|_| s.running) else {
            return 0;
        };
        let sent = self
            .sent
            .load(Ordering::Relaxed)
            .saturating_sub(p.sent_base);
        // Dropped arrivals finish without being sent.
        let dropped = p.counters.outcomes.get("dropped").copied().unwrap_or(0);
        sent.saturating_sub(p.counters.done - dropped)
    }

    /// The running phase's progress line, if a phase is running.
    pub fn progress_line(&self) -> Option<String> {
        let s = self.lock();
        let p = s.current.as_ref().filter(|_| s.running)?;
        Some(p.progress(self.in_flight(&s)).line())
    }

    /// Lines of phases that ended since the last call.
    pub fn take_ended(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().ended)
    }

    /// The Prometheus exposition of every phase seen.
    pub fn exposition(&self) -> String {
        let s = self.lock();
        let running = s.current.as_ref().filter(|_| s.running);
        let in_flight = self.in_flight(&s);
        let series: Vec<Series> = s
            .series
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let now = running.filter(|p| p.series == i);
                Series {
                    experiment: &t.experiment,
                    target: &t.target,
                    phase: &t.phase,
                    counters: &t.counters,
                    in_flight: if now.is_some() { in_flight } else { 0 },
                    elapsed_s: (t.elapsed + now.map_or(Duration::ZERO, |p| p.elapsed()))
                        .as_secs_f64(),
                }
            })
            .collect();
        live::exposition(&series)
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A line redrawn in place, ten times a second at most (stderr is a terminal).
    Terminal,
    /// One plain line per finished phase (stderr is a file or a pipe).
    Lines,
}

impl ProgressStyle {
    /// Redrawn in place on a terminal, plain lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Terminal
        } else {
            Self::Lines
        }
    }
}

/// The thread drawing a [`Watch`] on stderr; stops (after printing what is left) when dropped.
pub struct ProgressThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// Time between redraws.
const REDRAW: Duration = Duration::from_millis(100);

impl ProgressThread {
    pub fn start(watch: Arc<Watch>, style: ProgressStyle) -> std::io::Result<Self> {
        *watch.style.lock().unwrap_or_else(|e| e.into_inner()) = Some(style);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("inferlab-progress".into())
            .spawn(move || draw(&watch, style, &stopping))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for ProgressThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn draw(watch: &Watch, style: ProgressStyle, stop: &AtomicBool) {
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        watch.redraw(style, stopping);
        if stopping {
            return;
        }
        std::thread::sleep(REDRAW);
    }
}

impl Watch {
    /// One step of drawing: the lines of phases that ended, then the running phase's line (or
    /// none, when `settled`). Serialised by the drawing lock, so the progress thread and
    /// [`Watch::settle`] never interleave.
    fn redraw(&self, style: ProgressStyle, settled: bool) {
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        for line in self.take_ended() {
            // The finished phase's line replaces its progress line and stays.
            if style == ProgressStyle::Terminal && !shown.is_empty() {
                let _ = write!(err, "\r\x1b[2K");
                shown.clear();
            }
            let _ = writeln!(err, "{line}");
        }
        if style == ProgressStyle::Terminal {
            match self.progress_line() {
                Some(line) if !settled && line != *shown => {
                    let _ = write!(err, "\r\x1b[2K{line}");
                    *shown = line;
                }
                Some(_) if !settled => {}
                _ if !shown.is_empty() => {
                    let _ = write!(err, "\r\x1b[2K");
                    shown.clear();
                }
                _ => {}
            }
        }
        let _ = err.flush();
    }

    /// Before something else is printed: the lines of phases that ended are written and the
    /// progress line is cleared (it comes back at the next redraw, if a phase is running).
    pub fn settle(&self) {
        let style = *self.style.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(style) = style {
            self.redraw(style, true);
        }
    }
}

/// A Prometheus endpoint (`GET /metrics`) over a [`Watch`], on a thread and runtime of its own;
/// stops when dropped.
pub struct Exporter {
    pub addr: SocketAddr,
    /// Scrapes answered so far.
    scrapes: Arc<AtomicU64>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Binds `addr` now (so a taken port is an error at once) and serves from a thread.
    pub fn start(addr: SocketAddr, watch: Arc<Watch>) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            std::io::Error::new(e.kind(), format!("the Prometheus endpoint {addr}: {e}"))
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let scrapes = Arc::new(AtomicU64::new(0));
        let counted = scrapes.clone();
        let handle = std::thread::Builder::new()
            .name("inferlab-exporter".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = axum::Router::new().route(
                        "/metrics",
                        axum::routing::get(move || {
                            let watch = watch.clone();
                            let counted = counted.clone();
                            async move {
                                // Counted before it reads the figures: a scrape counted
                                // after the run ended read the final ones.
                                counted.fetch_add(1, Ordering::SeqCst);
                                let body = watch.exposition();
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4; charset=utf-8",
                                    )],
                                    body,
                                )
                            }
                        }),
                    );
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            })?;
        Ok(Self {
            addr,
            scrapes,
            shutdown: Some(tx),
            handle: Some(handle),
        })
    }

    /// Scrapes answered so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }

    /// Once the run is over: when something has been scraping, waits for its next scrape (which
    /// reads the run's final figures), for at most `at_most`. Without it a scraper loses what
    /// happened after its last scrape before the end, up to a whole scrape interval. Returns
    /// at once when nothing has scraped. Whether a scrape came.
    pub async fn last_scrape(&self, at_most: Duration) -> bool {
        let before = self.scrapes();
        if before == 0 || at_most.is_zero() {
            return false;
        }
        let deadline = tokio::time::Instant::now() + at_most;
        while tokio::time::Instant::now() < deadline {
            if self.scrapes() > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.scrapes() > before
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_counts_sends_and_finishes_and_leaves_a_line() {
        let w = Watch::new();
        w.trial_started("exp", "t");
        w.phase_started("steady", None, 3, None);
        w.sent();
        w.sent();
        let mut r = RequestRecord::dropped("steady", 0, None, Duration::ZERO, Duration::ZERO);
        r.failure = None;
        w.completed(&r);
        let line = w.progress_line().unwrap();
        assert!(
            line.starts_with("exp::t steady 1/3 done, 1 in flight, 0 errors"),
            "{line}"
        );
        w.phase_ended();
        assert!(w.progress_line().is_none());
        let ended = w.take_ended();
        assert_eq!(ended.len(), 1);
        assert!(
            ended[0].starts_with("exp::t steady finished: 1/3 requests"),
            "{}",
            ended[0]
        );
        assert!(w.exposition().contains(
            "inferlab_requests_in_flight{experiment=\"exp\",target=\"t\",phase=\"steady\"} 0"
        ));
        // A second repeat: its own progress, one series counting both.
        w.phase_started("steady", Some(Repeat { index: 1, of: 2 }), 3, None);
        w.completed(&r);
        let line = w.progress_line().unwrap();
        assert!(
            line.starts_with("exp::t steady (repeat 2/2) 1/3 done"),
            "{line}"
        );
        let text = w.exposition();
        assert_eq!(
            text.matches("inferlab_requests_planned{").count(),
            1,
            "{text}"
        );
        assert!(text.contains(
            "inferlab_requests_planned{experiment=\"exp\",target=\"t\",phase=\"steady\"} 6"
        ));
        assert!(text.contains("outcome=\"ok\"} 2"));
    }

    fn scrape(addr: SocketAddr) -> bool {
        use std::io::Read;
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200")
    }

    #[test]
    fn once_the_run_is_over_the_endpoint_waits_for_a_scraper_to_read_it_again() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let e = Exporter::start("127.0.0.1:0".parse().unwrap(), Watch::new()).unwrap();
        // Nothing ever scraped: nothing to wait for.
        let t = Instant::now();
        assert!(!rt.block_on(e.last_scrape(Duration::from_secs(60))));
        assert!(t.elapsed() < Duration::from_secs(30));

        assert!(scrape(e.addr));
        assert_eq!(e.scrapes(), 1);
        // Scraped during the run, not after: the wait ends at its bound.
        let t = Instant::now();
        assert!(!rt.block_on(e.last_scrape(Duration::from_millis(300))));
        assert!(t.elapsed() >= Duration::from_millis(300));

        // The scraper comes back: the wait ends with its scrape, long before the bound.
        let addr = e.addr;
        let scraper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            scrape(addr)
        });
        let t = Instant::now();
        assert!(rt.block_on(e.last_scrape(Duration::from_secs(60))));
        assert!(t.elapsed() < Duration::from_secs(30));
        assert!(scraper.join().unwrap());
        assert_eq!(e.scrapes(), 2);
    }
}

/// How a run is watched: a progress line on stderr, a Prometheus endpoint, both or neither.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    pub progress: bool,
    pub prometheus: Option<SocketAddr>,
    /// How long the endpoint waits, once the run is over, for the scrape that reads its final
    /// figures.
    pub linger: Duration,
}

/// What watches a run: the progress thread and the Prometheus endpoint (each when asked for),
/// stopped when dropped.
pub struct Watching {
    pub watch: Option<Arc<Watch>>,
    _progress: Option<ProgressThread>,
    exporter: Option<Exporter>,
    linger: Duration,
}

impl Watching {
    /// Starts what `config` asks for; the endpoint's address goes to stderr.
    pub fn start(config: WatchConfig) -> std::io::Result<Self> {
        let mut out = Self {
            watch: None,
            _progress: None,
            exporter: None,
            linger: config.linger,
        };
        if !config.progress && config.prometheus.is_none() {
            return Ok(out);
        }
        let watch = Watch::new();
        out.exporter = config
            .prometheus
            .map(|addr| Exporter::start(addr, watch.clone()))
            .transpose()?;
        if let Some(e) = &out.exporter {
            eprintln!(
                "serving the run's figures for Prometheus at http://{}/metrics",
                e.addr
            );
        }
        out._progress = config
            .progress
            .then(|| ProgressThread::start(watch.clone(), ProgressStyle::for_stderr()))
            .transpose()
            .map_err(|e| std::io::Error::new(e.kind(), format!("the progress thread: {e}")))?;
        out.watch = Some(watch);
        Ok(out)
    }

    /// The run is over: the endpoint, if something scrapes it, waits for one more scrape (at
    /// most the linger; Ctrl-C ends the wait).
    pub async fn finish(&self) {
        let Some(e) = &self.exporter else { return };
        if e.scrapes() == 0 || self.linger.is_zero() {
            return;
        }
        eprintln!(
            "the run is over: http://{}/metrics serves its final figures until the next scrape \
             (at most {:?}; --prometheus-linger 0s to skip)",
            e.addr, self.linger
        );
        tokio::select! {
            _ = e.last_scrape(self.linger) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}
