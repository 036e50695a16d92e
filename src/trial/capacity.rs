//! A capacity search as a trial runs it: each probe is a phase of its own, named after its
//! search and load (`<search>_c<N>`, `<search>_r<rate>`), planned and run like any other phase,
//! its figures judged by the search's SLO. This module owns the probes — making them, reading
//! them back from a run's records, putting them into the experiment after their search — and
//! the loop that asks the pure [`Search`] for the next load. The trial hands it a
//! [`ProbeRunner`] that runs one phase.
//!
//! In replay the search follows the recording: where a probe's replayed figures would send it
//! to a load that was never recorded (a loaded machine delays the stream) and the recording's
//! verdict would not, the recording's verdict stands ([`Search::verdict_on_record`]), and the
//! probe keeps what its figures said (`figures_passed`).

use super::tally::Tally;
use crate::core::assert::Assertion;
use crate::core::record::RequestRecord;
use crate::report;
use crate::spec::{CapacityOver, Experiment, Phase, Workload};
use crate::workload::capacity::{Bounds, Found, Search};
use std::collections::{BTreeMap, BTreeSet};

/// One probe of a capacity search: the phase it ran as, after the search's own phase.
pub(super) struct Probe {
    pub search: String,
    pub phase: Phase,
    pub load: f64,
    pub passed: bool,
    /// In replay, where the probe's own figures decided otherwise than its recording (the
    /// search followed the recording): what they decided.
    pub figures_passed: Option<bool>,
}

/// What a search needs from the trial running it.
pub(super) trait ProbeRunner {
    /// Runs the probe's phase; `true` when the run was interrupted.
    async fn run_probe(&mut self, probe: &Phase) -> bool;
    /// Whether the probe's figures (in the tally) meet `slo`.
    fn meets(&self, probe: &str, slo: &[Assertion]) -> bool;
    /// In replay, whether the recording has a phase of this name (`None`: live).
    fn recorded(&self, phase: &str) -> Option<bool>;
}

/// The probe of `search` at `load`: its phase, with the search's warmup when it is the first.
fn probe_at(search: &Phase, load: f64, first: bool) -> Option<Phase> {
    let (name, workload) = search.workload.probe(&search.name, load)?;
    Some(Phase {
        name,
        workload,
        warmup: if first { search.warmup } else { 0 },
        warmup_duration: if first { search.warmup_duration } else { None },
        ..search.clone()
    })
}

/// The probe phase `name` of capacity search `search`, if it is one (the inverse of
/// [`probe_at`], for a run read back from its records).
fn parse_probe(search: &Phase, name: &str) -> Option<Phase> {
    if !matches!(search.workload, Workload::Capacity { .. }) {
        return None;
    }
    let rest = name.strip_prefix(search.name.as_str())?.strip_prefix('_')?;
    let load: f64 = rest.get(1..)?.parse().ok()?;
    let (probe, workload) = search.workload.probe(&search.name, load)?;
    (probe == name).then(|| Phase {
        name: probe,
        workload,
        ..search.clone()
    })
}

/// Runs capacity search `search` through `runner`: probes chosen one after another, each a
/// phase whose figures decide the next, pushed onto `probes`. `None` when the run was
/// interrupted.
pub(super) async fn search(
    runner: &mut impl ProbeRunner,
    search: &Phase,
    bounds: Bounds,
    probes: &mut Vec<Probe>,
) -> Option<Found> {
    let mut s = Search::new(bounds);
    let Workload::Capacity { slo, .. } = &search.workload else {
        return Some(s.found());
    };
    while let Some(load) = s.next() {
        let first = probes.iter().all(|p| p.search != search.name);
        let Some(phase) = probe_at(search, load, first) else {
            break;
        };
        if runner.run_probe(&phase).await {
            return None;
        }
        let measured = runner.meets(&phase.name, slo);
        let passed = match runner.recorded(&phase.name) {
            None => measured,
            Some(_) => {
                let recorded = |l: f64| {
                    search
                        .workload
                        .probe(&search.name, l)
                        .is_some_and(|(n, _)| runner.recorded(&n) == Some(true))
                };
                s.verdict_on_record(load, measured, recorded)
            }
        };
        s.report(load, passed);
        probes.push(Probe {
            search: search.name.clone(),
            phase,
            load,
            passed,
            figures_passed: (passed != measured).then_some(measured),
        });
    }
    Some(s.found())
}

/// The experiment with each capacity search's probes as phases after it.
pub(super) fn with_probes(exp: &Experiment, probes: &[Probe]) -> Experiment {
    let mut out = exp.clone();
    if probes.is_empty() {
        return out;
    }
    out.phases = exp
        .phases
        .iter()
        .flat_map(|p| {
            std::iter::once(p.clone()).chain(
                probes
                    .iter()
                    .filter(|x| x.search == p.name)
                    .map(|x| x.phase.clone()),
            )
        })
        .collect();
    out
}

/// The experiment with the phases the records name that it does not declare: a capacity
/// search's probes, each after its search.
pub(super) fn with_recorded_probes(exp: &Experiment, records: &[RequestRecord]) -> Experiment {
    let declared: BTreeSet<&str> = exp.phases.iter().map(|p| p.name.as_str()).collect();
    let mut seen = phases_in_order(records);
    seen.retain(|p| !declared.contains(p));
    let mut out = exp.clone();
    out.phases = exp
        .phases
        .iter()
        .flat_map(|search| {
            let probes = seen.iter().filter_map(|name| parse_probe(search, name));
            std::iter::once(search.clone()).chain(probes.collect::<Vec<_>>())
        })
        .collect();
    out
}

/// What each capacity search found, with its probes' phases, by the search's phase name.
pub(super) fn capacity_found(
    exp: &Experiment,
    probes: &[Probe],
    found: &BTreeMap<String, Found>,
) -> BTreeMap<String, report::Capacity> {
    exp.phases
        .iter()
        .filter_map(|p| {
            let Workload::Capacity { over, .. } = &p.workload else {
                return None;
            };
            let f = found.get(&p.name)?;
            Some((
                p.name.clone(),
                report::Capacity {
                    over: match over {
                        CapacityOver::Concurrency => report::SearchedOver::Concurrency,
                        CapacityOver::Rate(_) => report::SearchedOver::Rate,
                    },
                    max_passing: f.max_passing,
                    first_failing: f.first_failing,
                    converged: f.converged,
                    cut_short: f.cut_short,
                    probes: probes
                        .iter()
                        .filter(|x| x.search == p.name)
                        .map(|x| report::CapacityProbe {
                            phase: x.phase.name.clone(),
                            load: x.load,
                            passed: x.passed,
                            figures_passed: x.figures_passed,
                        })
                        .collect(),
                },
            ))
        })
        .collect()
}

/// What the run's capacity searches had found when it died. The probes whose measured requests
/// are all on disk are judged by their search's SLO again and told to the search in the order
/// they ran, as the run told it; the probe the kill cut short is left out. A search the kill
/// interrupted is therefore not converged, and its `max_passing` is a lower bound.
pub(super) fn recovered(
    declared: &Experiment,
    records: &[RequestRecord],
    tally: &Tally,
) -> BTreeMap<String, report::Capacity> {
    let ran = phases_in_order(records);
    let mut probes = Vec::new();
    let mut found = BTreeMap::new();
    for search in &declared.phases {
        let (Some(bounds), Workload::Capacity { slo, requests, .. }) =
            (Bounds::of(&search.workload), &search.workload)
        else {
            continue;
        };
        let mut s = Search::new(bounds);
        for name in &ran {
            let Some(phase) = parse_probe(search, name) else {
                continue;
            };
            let measured = records
                .iter()
                .filter(|r| r.phase == *name && !r.warmup)
                .count();
            // Cut short by the kill; nothing after it ran.
            if measured < *requests as usize {
                break;
            }
            // The probe the search would have chosen next, or the records are not its.
            let Some(load) = s.next().filter(|&l| {
                search.workload.probe(&search.name, l).map(|(n, _)| n) == Some(phase.name.clone())
            }) else {
                break;
            };
            let passed = tally.meets(name, slo);
            s.report(load, passed);
            probes.push(Probe {
                search: search.name.clone(),
                phase,
                load,
                passed,
                figures_passed: None,
            });
        }
        let f = s.found();
        if !f.probes.is_empty() {
            found.insert(search.name.clone(), f);
        }
    }
    capacity_found(declared, &probes, &found)
}

/// The phases the records name, in the order they first appear (the order they ran in).
fn phases_in_order(records: &[RequestRecord]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in records {
        if !out.contains(&r.phase.as_str()) {
            out.push(&r.phase);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_phase(over: &str) -> Phase {
        let src = format!(
            "schema_version = 1\ndescription = \"d\"\nseed = 1\n[model]\nname = \"m\"\n[targets.t]\nkind = \"openai\"\n[[phase]]\nname = \"cap\"\nwarmup = 2\nworkload = {{ kind = \"capacity\", over = \"{over}\", min = 1, max = 8, step = 1, max_probes = 6, requests = 4, input_tokens = 8, slo = [\"probe.e2e.p90 <= 1s\"] }}\nrequest = {{ api = \"completions\", output_tokens = 2 }}\n"
        );
        crate::spec_io::parse("t.toml", "t", &src).unwrap().phases[0].clone()
    }

    #[test]
    fn a_probe_is_named_after_its_search_and_load_and_reads_back_from_its_name() {
        let cap = search_phase("concurrency");
        let first = probe_at(&cap, 4.0, true).unwrap();
        assert_eq!(first.name, "cap_c4");
        assert_eq!(
            first.warmup, 2,
            "the search's warmup goes to its first probe"
        );
        let later = probe_at(&cap, 6.0, false).unwrap();
        assert_eq!(later.warmup, 0);
        let back = parse_probe(&cap, "cap_c6").unwrap();
        assert_eq!(
            (back.name.as_str(), &back.workload),
            ("cap_c6", &later.workload)
        );
        for not_a_probe in ["cap", "cap_c", "cap_x4", "other_c4", "cap_c4.5", "cap_c04"] {
            assert!(parse_probe(&cap, not_a_probe).is_none(), "{not_a_probe}");
        }
    }

    /// A runner whose probes pass up to a load; in replay it knows which probes were recorded.
    struct Fake {
        passes_up_to: u32,
        recorded: Option<Vec<String>>,
        ran: Vec<String>,
    }

    impl ProbeRunner for Fake {
        async fn run_probe(&mut self, probe: &Phase) -> bool {
            self.ran.push(probe.name.clone());
            false
        }

        fn meets(&self, probe: &str, _: &[Assertion]) -> bool {
            probe["cap_c".len()..].parse::<u32>().unwrap() <= self.passes_up_to
        }

        fn recorded(&self, phase: &str) -> Option<bool> {
            self.recorded.as_ref().map(|r| r.iter().any(|n| n == phase))
        }
    }

    fn run(fake: &mut Fake) -> (Found, Vec<Probe>) {
        let cap = search_phase("concurrency");
        let bounds = Bounds::of(&cap.workload).unwrap();
        let mut probes = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let found = rt
            .block_on(search(fake, &cap, bounds, &mut probes))
            .unwrap();
        (found, probes)
    }

    #[test]
    fn a_live_search_doubles_then_bisects_on_the_figures() {
        let mut live = Fake {
            passes_up_to: 5,
            recorded: None,
            ran: Vec::new(),
        };
        let (found, probes) = run(&mut live);
        assert_eq!(
            live.ran,
            ["cap_c1", "cap_c2", "cap_c4", "cap_c8", "cap_c6", "cap_c5"]
        );
        assert_eq!(found.max_passing, Some(5.0));
        assert!(probes.iter().all(|p| p.figures_passed.is_none()));
    }

    #[test]
    fn a_replayed_search_keeps_to_the_recorded_probes() {
        // Recorded on a server that passed up to 5; replayed on a machine where 4 fails.
        let recorded = ["cap_c1", "cap_c2", "cap_c4", "cap_c8", "cap_c6", "cap_c5"];
        let mut replay = Fake {
            passes_up_to: 3,
            recorded: Some(recorded.iter().map(|s| s.to_string()).collect()),
            ran: Vec::new(),
        };
        let (found, probes) = run(&mut replay);
        assert_eq!(replay.ran, recorded, "never a probe the recording lacks");
        // c4's failing figures would have sent it to c3: the recorded verdict stands. c5's
        // lead nowhere new either way: its figures decide, and the answer is theirs.
        let c4 = probes.iter().find(|p| p.phase.name == "cap_c4").unwrap();
        assert!(c4.passed);
        assert_eq!(
            c4.figures_passed,
            Some(false),
            "what its figures said is kept"
        );
        let c5 = probes.iter().find(|p| p.phase.name == "cap_c5").unwrap();
        assert_eq!((c5.passed, c5.figures_passed), (false, None));
        assert_eq!(found.max_passing, Some(4.0));
    }
}
