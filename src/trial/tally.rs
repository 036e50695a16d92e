//! Running summaries of a trial's records, fed one record at a time as requests complete (only
//! a few dozen bytes of each, fidelity's row, stay in memory, so a run's memory does not grow
//! with its length), then finished per phase with the server's view of the same phase.

use crate::core::fidelity::{self, Row};
use crate::core::interval::Interval;
use crate::core::metrics::{self, Histograms, PhaseSummary, Slo, Summarizer};
use crate::core::record::RequestRecord;
use crate::core::record::ScrapeRecord;
use crate::core::server::{self, Canonical, ServerSummary};
use crate::core::slices::{Slice, Slicer};
use crate::report::NamedSummary;
use crate::spec::Experiment;
use std::collections::{BTreeMap, HashMap};

pub struct Tally {
    slo: Slo,
    phases: HashMap<String, PhaseTally>,
    all: Summarizer,
    /// With repeats: the whole run's figures per repeat.
    all_by_repeat: BTreeMap<u32, Summarizer>,
    repeats: bool,
    completed: usize,
    /// With `[observe] slice`: the run cut into time slices.
    slicer: Option<Slicer>,
}

/// One phase's share of a [`Tally`].
struct PhaseTally {
    summary: Summarizer,
    turns: BTreeMap<u32, Summarizer>,
    rows: Vec<Row>,
    /// The phase's first warmup request, whole (a serverless cold start).
    first_warmup: Option<RequestRecord>,
    /// With repeats: the phase's figures per repeat.
    by_repeat: BTreeMap<u32, Summarizer>,
}

impl PhaseTally {
    fn new(slo: Slo) -> Self {
        Self {
            summary: Summarizer::new(slo),
            by_repeat: BTreeMap::new(),
            turns: BTreeMap::new(),
            rows: Vec::new(),
            first_warmup: None,
        }
    }
}

/// A finished tally.
pub struct Tallied {
    /// In the experiment's phase order; a phase that sent nothing has an empty summary.
    pub phases: Vec<NamedSummary>,
    pub all: PhaseSummary,
    /// With repeats: the whole run's intervals over them.
    pub all_intervals: BTreeMap<String, Interval>,
    pub all_server: Option<ServerSummary>,
    /// Per phase (`all` last), to be written beside the summary.
    pub histograms: Vec<(String, Histograms)>,
    /// Each phase's first warmup request.
    pub first_warmup: HashMap<String, RequestRecord>,
    pub completed: usize,
    /// With `[observe] slice`: the run's figures per time slice.
    pub slices: Option<Vec<Slice>>,
}

impl Tally {
    /// A tally; with `repeats` above one it also keeps each repeat's figures apart.
    pub fn new(slo: Slo, repeats: u32) -> Self {
        Self {
            slo,
            phases: HashMap::new(),
            all: Summarizer::new(slo),
            all_by_repeat: BTreeMap::new(),
            repeats: repeats > 1,
            completed: 0,
            slicer: None,
        }
    }

    /// Also cuts the run into slices of `width`, when there is one.
    pub fn sliced(mut self, width: Option<std::time::Duration>) -> Self {
        self.slicer = width.map(Slicer::new);
        self
    }

    pub fn add(&mut self, r: &RequestRecord) {
        self.completed += 1;
        self.all.add(r);
        if let Some(s) = self.slicer.as_mut() {
            s.add(r);
        }
        if self.repeats {
            let slo = self.slo;
            self.all_by_repeat
                .entry(r.repeat)
                .or_insert_with(|| Summarizer::new(slo))
                .add(r);
        }
        // The phase's name is copied once per phase, not per record.
        if !self.phases.contains_key(&r.phase) {
            self.phases
                .insert(r.phase.clone(), PhaseTally::new(self.slo));
        }
        let Some(p) = self.phases.get_mut(&r.phase) else {
            return;
        };
        p.summary.add(r);
        if self.repeats {
            p.by_repeat
                .entry(r.repeat)
                .or_insert_with(|| Summarizer::new(self.slo))
                .add(r);
        }
        if let Some(t) = r.turn {
            p.turns
                .entry(t)
                .or_insert_with(|| Summarizer::new(self.slo))
                .add(r);
        }
        p.rows.push(Row::from(r));
        if r.warmup && p.first_warmup.as_ref().is_none_or(|w| r.index < w.index) {
            p.first_warmup = Some(r.clone());
        }
    }

    /// One phase's figures so far (a capacity probe's, as soon as it has run).
    pub fn phase_summary(&self, phase: &str) -> Option<PhaseSummary> {
        Some(self.phases.get(phase)?.summary.clone().finish().0)
    }

    /// Whether `phase` (a capacity probe) met every assertion of `slo`. A phase without
    /// figures (no request sent) misses.
    pub fn meets(&self, phase: &str, slo: &[crate::core::assert::Assertion]) -> bool {
        let figures = self.phase_summary(phase);
        let lookup = |p: &crate::core::assert::Path| {
            figures.as_ref()?.value(&p.metric, p.stat).ok().flatten()
        };
        slo.iter().all(|a| a.evaluate(&lookup).passed)
    }

    /// Summarises each phase of `exp` with its fidelity, its turns and the server's view
    /// from `scrapes`.
    pub fn finish(mut self, exp: &Experiment, scrapes: &[ScrapeRecord]) -> Tallied {
        let mut phases = Vec::new();
        let mut histograms = Vec::new();
        let mut first_warmup = HashMap::new();
        for p in &exp.phases {
            let t = self
                .phases
                .remove(&p.name)
                .unwrap_or_else(|| PhaseTally::new(self.slo));
            if let Some(w) = t.first_warmup {
                first_warmup.insert(p.name.clone(), w);
            }
            let (summary, hists) = t.summary.finish();
            histograms.push((p.name.clone(), hists));
            phases.push(NamedSummary {
                name: p.name.clone(),
                intervals: repeat_intervals(t.by_repeat),
                capacity: None,
                server: server_view(scrapes, Some(&p.name), summary.ttft.map(|t| t.mean_ms)),
                fidelity: fidelity::fidelity(p.workload.offered(), &t.rows),
                by_turn: t
                    .turns
                    .into_iter()
                    .map(|(turn, acc)| (turn, acc.finish().0))
                    .collect(),
                summary,
            });
        }
        let (all, hists) = self.all.finish();
        histograms.push(("all".to_string(), hists));
        let slices = self.slicer.map(|s| {
            let taken: Vec<_> = scrapes
                .iter()
                .filter(|x| x.error.is_none())
                .map(|x| (x.at, &x.values))
                .collect();
            s.finish(&taken)
        });
        Tallied {
            slices,
            all_intervals: repeat_intervals(self.all_by_repeat),
            all_server: server_view(scrapes, None, all.ttft.map(|t| t.mean_ms)),
            phases,
            all,
            histograms,
            first_warmup,
            completed: self.completed,
        }
    }
}

/// Intervals over the repeats' summaries (none without repeats).
fn repeat_intervals(by_repeat: BTreeMap<u32, Summarizer>) -> BTreeMap<String, Interval> {
    let summaries: Vec<PhaseSummary> = by_repeat.into_values().map(|s| s.finish().0).collect();
    metrics::intervals(&summaries)
}

/// The server's figures over one phase's scrapes (`None`: all), when there are any.
fn server_view(
    scrapes: &[ScrapeRecord],
    phase: Option<&str>,
    client_ttft_ms: Option<f64>,
) -> Option<ServerSummary> {
    let rows: Vec<Option<&Canonical>> = scrapes
        .iter()
        .filter(|r| phase.is_none_or(|p| r.phase == p))
        .map(|r| r.error.is_none().then_some(&r.values))
        .collect();
    (!rows.is_empty()).then(|| server::summarize_server(&rows, client_ttft_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SRC: &str = r#"schema_version = 1
description = "t"
seed = 1
[targets.llamacpp]
[model]
name = "m"
[[phase]]
name = "first"
warmup = 2
workload = { kind = "concurrent", concurrency = 1, requests = 2, input_tokens = 8 }
request = { api = "completions", output_tokens = 4 }
[[phase]]
name = "second"
workload = { kind = "concurrent", concurrency = 1, requests = 1, input_tokens = 8 }
request = { api = "completions", output_tokens = 4 }
[[phase]]
name = "never"
workload = { kind = "concurrent", concurrency = 1, requests = 1, input_tokens = 8 }
request = { api = "completions", output_tokens = 4 }
"#;

    fn record(phase: &str, index: u32, warmup: bool) -> RequestRecord {
        let at = Duration::from_millis(u64::from(index));
        RequestRecord {
            warmup,
            ..RequestRecord::dropped(phase, index, None, at, at)
        }
    }

    #[test]
    fn phases_come_out_in_experiment_order_each_with_its_first_warmup() {
        let exp = crate::spec_io::parse("t.toml", "t", SRC).unwrap();
        let mut tally = Tally::new(exp.slo, exp.repeats);
        for r in [
            record("second", 0, false),
            record("first", 1, true),
            record("first", 3, false),
            record("first", 0, true),
            record("first", 2, false),
        ] {
            tally.add(&r);
        }
        let t = tally.finish(&exp, &[]);
        let names: Vec<&str> = t.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["first", "second", "never"]);
        assert_eq!(t.completed, 5);
        assert_eq!(
            t.first_warmup["first"].index, 0,
            "the lowest index, not the first seen"
        );
        assert!(!t.first_warmup.contains_key("second"));
        let hists: Vec<&str> = t.histograms.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(hists, ["first", "second", "never", "all"]);
        assert!(
            t.phases.iter().all(|p| p.server.is_none()),
            "no scrapes, no server view"
        );
    }
}
