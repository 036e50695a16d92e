//! [`run_trial`] as its stages: resolve the target (live endpoint, or the replay server over a
//! fixture) → preflight → observe and execute the phases → tally → summary and verdicts →
//! persist → record the fixture → snapshot.

use super::capacity::{self, Probe, ProbeRunner, capacity_found, with_probes};
use super::manifest::{self, Manifest};
use super::summary::{self, Parts};
use super::tally::Tally;
use super::{Plan, TrialError, TrialOptions, TrialOutcome};
use crate::client::{self, Endpoint};
use crate::core::record::ScrapeRecord;
use crate::observe::gpu::GpuSource;
use crate::observe::{self, Observed, Observer};
use crate::preflight::{self, Recorded};
use crate::probe::ServerInfo;
use crate::replay::{Fixture, FixtureMeta, Recorder, ReplayServer, Source, fixture_dir};
use crate::report::{self, ResultsDir};
use crate::report::{Mode, PromptLengths};
use crate::run::{self, Completed};
use crate::spec::{Experiment, Phase, TargetSpec};
use crate::workload::capacity::{Bounds, Found};
use crate::workload::{self, PhasePlan, Schedule};
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio::time::Instant;

/// Runs one trial. Requests are appended to `requests.jsonl` as they complete.
pub async fn run_trial(
    exp: &Experiment,
    target: &TargetSpec,
    plan: Plan,
    opts: &TrialOptions,
) -> Result<TrialOutcome, TrialError> {
    let started = SystemTime::now();
    let (resolved, replay) = Resolved::new(exp, target, plan, opts.salt).await?;
    let schedule = resolved.schedule(exp);
    let http = client::http_client(&exp.timeouts, schedule.max_concurrency())
        .map_err(|e| TrialError::Client(e.to_string()))?;
    let recorded = resolved.recorded();
    let pre = preflight::run(&http, &resolved.endpoint, exp, &schedule, recorded).await?;

    let mut results = ResultsDir::create(&opts.results_root, &exp.name, &target.name, started)
        .map_err(TrialError::Results)?;
    let mut manifest = Manifest::new(exp, target, &pre, resolved.manifest_run(started, &schedule));
    persist(&results, "manifest.json", &manifest)?;

    let executed = execute(exp, target, &resolved, &http, &schedule, &mut results, opts).await?;
    // The replay server stops here; requests it had no recorded exchange for fail the trial.
    let replay_unmatched = replay.map(|r| r.unmatched()).unwrap_or_default();
    let Executed {
        tally,
        observed,
        recorder,
        interrupted,
        write_errors,
        probes,
        found,
    } = executed;
    // With a capacity search, the run's phases are its probes too, each after its search. The
    // snapshot keeps to the declared phases: which loads a live search probes is a measurement.
    let declared = exp;
    let searched = with_probes(exp, &probes);
    let exp = &searched;
    let tallied = tally.finish(exp, &observed.scrapes);
    for (phase, hists) in &tallied.histograms {
        results
            .write_histograms(phase, hists)
            .map_err(TrialError::Results)?;
    }
    if !probes.is_empty() {
        // The manifest describes the phases that ran, probes included.
        manifest = Manifest::new(exp, target, &pre, resolved.manifest_run(started, &schedule));
    }
    manifest.finished(tallied.completed, interrupted);
    let parts = Parts {
        capacity: capacity_found(exp, &probes, &found),
        mode: resolved.mode,
        prompt_lengths: pre.prompt_lengths.clone(),
        scrapes: &observed.scrapes,
        health: observed.health,
        interrupted,
        cost_per_hour: opts.cost_per_hour,
        noise_floor: pre.noise_floor(),
        pairing: resolved.pairing(started),
        baseline: crate::baseline::BaselineState::for_run(
            &opts.baselines.root,
            exp,
            &target.name,
            resolved.mode,
            opts.baselines.required,
        ),
    };
    let (summary, verdicts) = summary::summarize(exp, target, tallied, parts);
    if let Some(s) = &summary.slices {
        results
            .write_slices(&s.slices)
            .map_err(TrialError::Results)?;
    }
    persist(&results, "summary.json", &summary)?;
    persist(&results, "manifest.json", &manifest)?;

    let fixture_written = recorder
        .map(|rec| {
            let meta = resolved.fixture_meta(exp, target, &pre, started);
            write_fixture(exp, target, rec, meta, &observed.scrapes, opts)
        })
        .transpose()?;
    Ok(TrialOutcome {
        mode: resolved.mode,
        dir: results.path.clone(),
        snapshot: report::snapshot_view(declared, &target.name, &resolved.endpoint.model, &summary),
        summary,
        verdicts,
        replay_unmatched,
        fixture_written,
        write_errors,
    })
}

fn persist(
    results: &ResultsDir,
    name: &str,
    value: &impl serde::Serialize,
) -> Result<(), TrialError> {
    results.write_json(name, value).map_err(TrialError::Results)
}

/// The target as the trial talks to it.
struct Resolved {
    mode: Mode,
    endpoint: Endpoint,
    salt: u64,
    gpu: Option<GpuSource>,
    model_details: Option<serde_json::Value>,
    /// Replay: the fixture's description, GPU samples and exchanges.
    fixture: Option<FixtureMeta>,
    recorded_gpu: Vec<ScrapeRecord>,
    recorded_requests: Vec<(String, u32, u32)>,
    /// Replay: `INFERLAB_REPLAY_SLOWDOWN`, when not 1.
    slowdown: Option<f64>,
}

impl Resolved {
    async fn new(
        exp: &Experiment,
        target: &TargetSpec,
        plan: Plan,
        salt: Option<u64>,
    ) -> Result<(Self, Option<ReplayServer>), TrialError> {
        let mode = plan.mode();
        match plan {
            Plan::Live {
                endpoint,
                gpu,
                model_details,
                ..
            } => Ok((
                Self {
                    mode: mode.unwrap_or(Mode::Live),
                    endpoint,
                    salt: salt.unwrap_or_else(fresh_salt),
                    gpu,
                    model_details,
                    fixture: None,
                    recorded_gpu: Vec::new(),
                    recorded_requests: Vec::new(),
                    slowdown: None,
                },
                None,
            )),
            Plan::Replay { dir, slowdown } => Self::replay(exp, target, &dir, slowdown).await,
            Plan::Ignored { reason } => Err(TrialError::NotRunnable(reason)),
        }
    }

    async fn replay(
        exp: &Experiment,
        target: &TargetSpec,
        dir: &std::path::Path,
        slowdown: f64,
    ) -> Result<(Self, Option<ReplayServer>), TrialError> {
        let fixture = Fixture::load(dir)?;
        let m = &fixture.meta;
        let mismatch = |why: String| TrialError::FixtureMismatch {
            dir: dir.display().to_string(),
            why,
        };
        if m.experiment != exp.name || m.target != target.name {
            return Err(mismatch(format!(
                "it was recorded for {}::{}",
                m.experiment, m.target
            )));
        }
        if m.seed != exp.seed {
            return Err(mismatch(format!(
                "it was recorded with seed {}, the experiment has {}",
                m.seed, exp.seed
            )));
        }
        let server = ReplayServer::start_slowed(&fixture, slowdown)
            .await
            .map_err(TrialError::Replay)?;
        let resolved = Self {
            mode: Mode::Replay,
            endpoint: Endpoint {
                base_url: server.base_url(),
                api_key: None,
                model: m.model.clone(),
                kind: target.kind,
                continuous_usage: target.continuous_usage_stats,
            },
            salt: m.salt,
            gpu: None,
            model_details: None,
            recorded_gpu: fixture.gpu.iter().map(|g| g.to_record()).collect(),
            recorded_requests: fixture
                .exchanges
                .iter()
                .map(|e| (e.phase.clone(), e.repeat, e.index))
                .collect(),
            fixture: Some(fixture.meta),
            slowdown: (slowdown != 1.0).then_some(slowdown),
        };
        Ok((resolved, Some(server)))
    }

    /// The experiment's schedule; a replay keeps exactly the warmups its recording sent.
    fn schedule(&self, exp: &Experiment) -> Schedule {
        let mut schedule = workload::schedule(exp, self.salt);
        if self.fixture.is_some() {
            schedule.keep_recorded_warmups(
                self.recorded_requests
                    .iter()
                    .map(|(p, k, i)| (p.as_str(), *k, *i)),
            );
        }
        schedule
    }

    /// Which repeats a run's are: a replay's are its recording's (replays of one recording
    /// correspond repeat by repeat); a live run's are its own.
    fn pairing(&self, started: SystemTime) -> String {
        match &self.fixture {
            Some(m) => format!(
                "replay of {}::{} recorded {} (salt {})",
                m.experiment, m.target, m.recorded_at, m.salt
            ),
            None => format!(
                "live run started {} (salt {})",
                crate::clock::utc_rfc3339(started),
                self.salt
            ),
        }
    }

    /// What a recording says about its server, so a replay asks nothing.
    fn recorded(&self) -> Option<Recorded> {
        self.fixture.as_ref().map(|m| Recorded {
            server: ServerInfo {
                version: m.engine_version.clone(),
                config: m.server_config.clone(),
            },
            prompt_lengths: m.prompt_lengths.as_deref().map(PromptLengths::parse),
        })
    }

    fn manifest_run(&self, started: SystemTime, schedule: &Schedule) -> manifest::Run<'_> {
        manifest::Run {
            mode: self.mode,
            url: client::display_url(&self.endpoint.base_url),
            model: &self.endpoint.model,
            salt: self.salt,
            fixture: self.fixture.as_ref(),
            gpu_telemetry: self.gpu.as_ref().map(GpuSource::describe),
            started,
            requests_planned: schedule.planned(),
            replay_slowdown: self.slowdown,
        }
    }

    fn observe_setup(&self, exp: &Experiment, target: &TargetSpec) -> observe::Setup {
        observe::Setup {
            interval: exp.observe.interval,
            metrics: exp.observe.metrics && target.kind.serves_metrics(),
            keep_raw: self.mode == Mode::Record,
            gpu: self.gpu.clone(),
            // Live only; `/health` does not wake a worker.
            serverless_health: target.kind.is_serverless() && self.fixture.is_none(),
            recorded_gpu: self.recorded_gpu.clone(),
        }
    }

    /// The description of a recording made now.
    fn fixture_meta(
        &self,
        exp: &Experiment,
        target: &TargetSpec,
        pre: &preflight::Preflight,
        started: SystemTime,
    ) -> FixtureMeta {
        FixtureMeta {
            schema_version: crate::replay::FIXTURE_SCHEMA_VERSION,
            source: Source::Recorded,
            engine: target.kind.engine_name().to_string(),
            engine_version: pre.server.version.clone(),
            server_config: pre.server.config.clone(),
            prompt_lengths: Some(pre.prompt_lengths.to_string()),
            model: self.endpoint.model.clone(),
            model_details: self.model_details.clone(),
            recorded_at: crate::clock::utc_rfc3339(started),
            experiment: exp.name.clone(),
            target: target.name.clone(),
            seed: exp.seed,
            salt: self.salt,
            inferlab_version: env!("CARGO_PKG_VERSION").to_string(),
            notes: None,
        }
    }
}

fn fresh_salt() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// What executing the phases produced.
struct Executed {
    tally: Tally,
    observed: Observed,
    recorder: Option<Recorder>,
    interrupted: bool,
    write_errors: Vec<String>,
    /// Capacity searches: each probe (a phase of its own), and what each search found.
    probes: Vec<Probe>,
    found: BTreeMap<String, Found>,
}

/// Problems writing results are kept (the first few) and the run goes on.
const WRITE_ERRORS_KEPT: usize = 5;

/// The state phases run in: each record goes to `requests.jsonl` as it completes, into the
/// tally and into the recording.
struct Runner<'a> {
    exp: &'a Experiment,
    resolved: &'a Resolved,
    http: &'a reqwest::Client,
    results: &'a mut ResultsDir,
    opts: &'a TrialOptions,
    tally: Tally,
    recorder: Option<Recorder>,
    writer: crate::report::RequestWriter,
    observer: Observer,
    origin: Instant,
    write_errors: Vec<String>,
    /// The schedule's salt: a capacity search's probes are planned with it.
    salt: u64,
}

impl Runner<'_> {
    /// Runs one phase; `true` when the run was interrupted.
    async fn run(&mut self, plan: &PhasePlan) -> bool {
        if self.opts.interrupt.as_ref().is_some_and(|i| *i.borrow()) {
            return true;
        }
        let keep = run::Keep {
            capture: self.resolved.mode == Mode::Record,
            watch: self.opts.watch.clone(),
        };
        self.observer.phase_started(&plan.name).await;
        if let Some(w) = &keep.watch {
            let repeat = crate::watch::Repeat {
                index: plan.repeat,
                of: self.exp.repeats,
            };
            w.phase_started(
                &plan.name,
                Some(repeat),
                plan.planned() as u64,
                plan.limit(),
            );
        }
        let (recorder, tally, writer) = (&mut self.recorder, &mut self.tally, &self.writer);
        let watch = keep.watch.as_deref();
        let mut sink = |mut c: Completed| {
            c.record.repeat = plan.repeat;
            if let (Some(rec), Some(cap)) = (recorder.as_mut(), &c.capture) {
                rec.add(&c.record, c.path, c.body, cap);
            }
            tally.add(&c.record);
            if let Some(w) = watch {
                w.completed(&c.record);
            }
            writer.send(c.record);
        };
        let phase = run::run_phase(
            self.http,
            &self.resolved.endpoint,
            plan,
            &self.exp.timeouts,
            self.origin,
            &keep,
            &mut sink,
        );
        let mut interrupted = false;
        match self.opts.interrupt.clone() {
            None => phase.await,
            Some(mut stop) => {
                tokio::select! {
                    () = phase => {}
                    _ = stop.wait_for(|s| *s) => interrupted = true,
                }
            }
        }
        if let Some(w) = &keep.watch {
            w.phase_ended();
        }
        for r in self.observer.phase_ended().await {
            if let Err(e) = self.results.append_scrape(r)
                && self.write_errors.len() < WRITE_ERRORS_KEPT
            {
                self.write_errors.push(e.to_string());
            }
        }
        interrupted
    }
}

impl ProbeRunner for Runner<'_> {
    async fn run_probe(&mut self, probe: &Phase) -> bool {
        let mut plan = workload::plan_probe(self.exp, probe, self.salt);
        if self.resolved.fixture.is_some() {
            plan.keep_recorded_warmups(
                self.resolved
                    .recorded_requests
                    .iter()
                    .map(|(p, k, i)| (p.as_str(), *k, *i)),
            );
        }
        self.run(&plan.phases[0]).await
    }

    fn meets(&self, probe: &str, slo: &[crate::core::assert::Assertion]) -> bool {
        self.tally.meets(probe, slo)
    }

    fn recorded(&self, phase: &str) -> Option<bool> {
        self.resolved.fixture.as_ref()?;
        Some(
            self.resolved
                .recorded_requests
                .iter()
                .any(|(p, ..)| p == phase),
        )
    }
}

/// Runs the phases in order under observation (a capacity search's probes as it picks them).
async fn execute(
    exp: &Experiment,
    target: &TargetSpec,
    resolved: &Resolved,
    http: &reqwest::Client,
    schedule: &Schedule,
    results: &mut ResultsDir,
    opts: &TrialOptions,
) -> Result<Executed, TrialError> {
    let capture = resolved.mode == Mode::Record;
    let writer = results.request_writer().map_err(TrialError::Results)?;
    if let Some(w) = &opts.watch {
        w.trial_started(&exp.name, &target.name);
    }
    let origin = Instant::now();
    let setup = resolved.observe_setup(exp, target);
    let observer = Observer::start(http, &resolved.endpoint, setup, origin);
    let mut runner = Runner {
        exp,
        resolved,
        http,
        results,
        opts,
        tally: Tally::new(exp.slo, exp.repeats).sliced(exp.observe.slice),
        recorder: capture.then(Recorder::default),
        writer,
        observer,
        origin,
        write_errors: Vec::new(),
        salt: schedule.salt,
    };
    let mut interrupted = false;
    let mut probes = Vec::new();
    let mut found = BTreeMap::new();
    for plan in &schedule.phases {
        let spec = exp.phases.iter().find(|p| p.name == plan.name);
        let bounds = spec.and_then(|s| Bounds::of(&s.workload));
        interrupted = match (spec, bounds) {
            (Some(spec), Some(bounds)) => {
                match capacity::search(&mut runner, spec, bounds, &mut probes).await {
                    Some(f) => {
                        found.insert(spec.name.clone(), f);
                        false
                    }
                    None => true,
                }
            }
            _ => runner.run(plan).await,
        };
        if interrupted {
            break;
        }
    }
    let Runner {
        tally,
        recorder,
        writer,
        observer,
        mut write_errors,
        ..
    } = runner;
    let observed = observer.finish().await;
    // Every record on disk before the summary is written.
    for e in writer.finish() {
        if write_errors.len() < WRITE_ERRORS_KEPT {
            write_errors.push(e);
        }
    }
    Ok(Executed {
        tally,
        observed,
        recorder,
        interrupted,
        write_errors,
        probes,
        found,
    })
}

/// Writes the recording as the target's fixture; returns its directory.
fn write_fixture(
    exp: &Experiment,
    target: &TargetSpec,
    recorder: Recorder,
    meta: FixtureMeta,
    scrapes: &[ScrapeRecord],
    opts: &TrialOptions,
) -> Result<std::path::PathBuf, TrialError> {
    let phases: Vec<&str> = exp.phases.iter().map(|p| p.name.as_str()).collect();
    let fixture = recorder.finish(meta, &phases, scrapes);
    let dir = fixture_dir(&opts.fixtures_root, &exp.name, &target.name);
    fixture.write(&dir)?;
    Ok(dir)
}
