//! The capacity search: the highest load (concurrency or request rate) at which a server meets
//! an SLO, found by probing. Pure: it proposes the next load, is told whether the probe passed,
//! and says what it found.
//!
//! Method: bracket, then bisect. Latency grows with load (queueing), so whether a load passes
//! is taken as monotone: every load below a passing one passes. The search probes `min` first
//! (failing there, nothing passes), then doubles the load until a probe fails or `max` passes
//! — O(log(max/min)) probes to a bracket [last pass, first fail] — and then bisects the bracket
//! on the grid `min + k·step` until the two are one step apart, O(log(bracket/step)) probes
//! more. Doubling first spends few probes where loads are light (and quick to probe) and finds
//! the knee however far above `min` it is; an even grid search would need (max − min)/step
//! probes. With `max_probes` spent before the bracket closes, the answer is a lower bound and
//! says so. A probe near the threshold can come out either way; the result reports every
//! probe's figures so the margin is visible.

use crate::spec::Workload;
use serde::Serialize;

/// The search's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: f64,
    pub max: f64,
    /// The grid: loads are `min + k·step`, and the answer is found to within one step.
    pub step: f64,
    pub max_probes: u32,
}

impl Bounds {
    /// A capacity workload's bounds (`None` for any other workload).
    pub fn of(w: &Workload) -> Option<Self> {
        match *w {
            Workload::Capacity {
                min,
                max,
                step,
                max_probes,
                ..
            } => Some(Self {
                min,
                max,
                step,
                max_probes,
            }),
            _ => None,
        }
    }
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Found {
    /// The highest load that passed (`None`: not even `min`).
    pub max_passing: Option<f64>,
    /// The lowest load that failed (`None`: `max` passed).
    pub first_failing: Option<f64>,
    /// The answer is exact to within `step` (false: the probes ran out first, or the search
    /// was stopped, and `max_passing` is a lower bound).
    pub converged: bool,
    /// The search would have probed again: it was stopped before its end (a killed run's
    /// search, as recovered from what the run left).
    pub cut_short: bool,
    /// The loads probed, in order, and whether each passed.
    pub probes: Vec<(f64, bool)>,
}

#[derive(Debug, Clone)]
pub struct Search {
    b: Bounds,
    pass: Option<f64>,
    fail: Option<f64>,
    probes: Vec<(f64, bool)>,
}

impl Search {
    pub fn new(b: Bounds) -> Self {
        Self {
            b,
            pass: None,
            fail: None,
            probes: Vec::new(),
        }
    }

    /// The grid point at or below `v` (never below `min`, never above `max`).
    fn snap(&self, v: f64) -> f64 {
        let k = ((v - self.b.min) / self.b.step + 1e-9).floor().max(0.0);
        let on_grid = self.b.min + k * self.b.step;
        // Round away binary noise (0.1 steps), then keep within the bounds.
        let rounded = (on_grid * 1e6).round() / 1e6;
        rounded.min(self.b.max)
    }

    /// The next load to probe, or `None` when the search is over.
    pub fn next(&self) -> Option<f64> {
        if self.probes.len() >= self.b.max_probes as usize {
            return None;
        }
        let v = match (self.pass, self.fail) {
            (None, None) => self.b.min,
            // `min` failed: nothing passes.
            (None, Some(_)) => return None,
            (Some(p), None) => {
                if p >= self.b.max {
                    return None;
                }
                let doubled = self.snap(2.0 * p);
                if doubled > p {
                    doubled
                } else {
                    self.snap(p + self.b.step)
                }
            }
            (Some(p), Some(f)) => {
                if f - p <= self.b.step * (1.0 + 1e-9) {
                    return None;
                }
                let mid = self.snap((p + f) / 2.0);
                if mid > p {
                    mid
                } else {
                    self.snap(p + self.b.step)
                }
            }
        };
        Some(v)
    }

    /// Records a probe's outcome.
    pub fn report(&mut self, load: f64, passed: bool) {
        self.probes.push((load, passed));
        if passed {
            self.pass = Some(self.pass.map_or(load, |p| p.max(load)));
        } else {
            self.fail = Some(self.fail.map_or(load, |f| f.min(load)));
        }
    }

    /// In replay, the verdict to report for the probe at `load` whose replayed figures gave
    /// `measured`: the one that keeps the search on the recording's probes (`recorded` says
    /// whether a load was probed when recording). Replayed figures are the recorded ones sent
    /// at their original pace, so they decide as the recording did unless a loaded machine
    /// delays them; then the next probe would be one that was never recorded, and has no
    /// exchanges to replay. So `measured` stands unless it leads to an unrecorded probe and
    /// the other verdict does not (a replay slowed on purpose, `INFERLAB_REPLAY_SLOWDOWN`, can
    /// still end a search early).
    pub fn verdict_on_record(
        &self,
        load: f64,
        measured: bool,
        recorded: impl Fn(f64) -> bool,
    ) -> bool {
        let rank = |passed: bool| {
            let mut s = self.clone();
            s.report(load, passed);
            match s.next() {
                Some(next) if recorded(next) => 2,
                None => 1,
                Some(_) => 0,
            }
        };
        if rank(measured) == 0 && rank(!measured) > 0 {
            !measured
        } else {
            measured
        }
    }

    pub fn found(&self) -> Found {
        let converged = match (self.pass, self.fail) {
            (Some(p), None) => p >= self.b.max,
            (None, Some(_)) => true,
            (Some(p), Some(f)) => f - p <= self.b.step * (1.0 + 1e-9),
            (None, None) => false,
        };
        Found {
            max_passing: self.pass,
            first_failing: self.fail,
            converged,
            cut_short: self.next().is_some(),
            probes: self.probes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against a server whose capacity is `knee` (loads up to it pass).
    fn search(b: Bounds, knee: f64) -> Found {
        let mut s = Search::new(b);
        while let Some(v) = s.next() {
            assert!(v >= b.min && v <= b.max, "{v} out of bounds");
            assert!(!s.probes.iter().any(|(p, _)| *p == v), "{v} probed twice");
            s.report(v, v <= knee);
        }
        s.found()
    }

    fn bounds(min: f64, max: f64, step: f64, max_probes: u32) -> Bounds {
        Bounds {
            min,
            max,
            step,
            max_probes,
        }
    }

    #[test]
    fn it_brackets_by_doubling_then_bisects_to_one_step() {
        let f = search(bounds(1.0, 64.0, 1.0, 20), 11.0);
        assert_eq!(f.max_passing, Some(11.0));
        assert_eq!(f.first_failing, Some(12.0));
        assert!(f.converged);
        let loads: Vec<f64> = f.probes.iter().map(|p| p.0).collect();
        assert_eq!(loads, [1.0, 2.0, 4.0, 8.0, 16.0, 12.0, 10.0, 11.0]);
        // Every knee on the grid is found exactly, in at most 2·log2(64) + 1 probes.
        for knee in 1..64 {
            let f = search(bounds(1.0, 64.0, 1.0, 20), f64::from(knee));
            assert_eq!(f.max_passing, Some(f64::from(knee)), "knee {knee}");
            assert_eq!(f.first_failing, Some(f64::from(knee + 1)));
            assert!(
                f.probes.len() <= 13,
                "knee {knee}: {} probes",
                f.probes.len()
            );
        }
    }

    #[test]
    fn edges_nothing_passes_everything_passes_and_probes_run_out() {
        let none = search(bounds(1.0, 16.0, 1.0, 10), 0.5);
        assert_eq!((none.max_passing, none.first_failing), (None, Some(1.0)));
        assert!(none.converged);
        assert_eq!(none.probes.len(), 1);
        let all = search(bounds(1.0, 20.0, 1.0, 10), 100.0);
        assert_eq!((all.max_passing, all.first_failing), (Some(20.0), None));
        let loads: Vec<f64> = all.probes.iter().map(|p| p.0).collect();
        assert_eq!(
            loads,
            [1.0, 2.0, 4.0, 8.0, 16.0, 20.0],
            "the last doubling clamps to max"
        );
        assert!(all.converged);
        let short = search(bounds(1.0, 64.0, 1.0, 4), 40.0);
        assert_eq!(short.max_passing, Some(8.0));
        assert!(!short.converged, "a lower bound, and it says so");
        assert!(!short.cut_short, "the probes ran out: the search ended");
    }

    #[test]
    fn a_search_stopped_midway_says_it_was_cut_short() {
        let mut s = Search::new(bounds(1.0, 64.0, 1.0, 20));
        for v in [1.0, 2.0, 4.0] {
            assert_eq!(s.next(), Some(v));
            s.report(v, true);
        }
        let f = s.found();
        assert!(f.cut_short && !f.converged);
        assert_eq!(f.max_passing, Some(4.0));
        assert!(!search(bounds(1.0, 64.0, 1.0, 20), 11.0).cut_short);
    }

    #[test]
    fn a_replayed_search_follows_the_recorded_probes() {
        // Recorded: 1, 2, 4, 8 (missed), 6, 5; the knee was 5.
        let recorded = [1.0, 2.0, 4.0, 8.0, 6.0, 5.0];
        let on_record = |l: f64| recorded.contains(&l);
        let b = bounds(1.0, 16.0, 1.0, 10);
        let mut s = Search::new(b);
        for (load, measured) in [(1.0, true), (2.0, true), (4.0, true), (8.0, false)] {
            assert_eq!(s.next(), Some(load));
            assert_eq!(s.verdict_on_record(load, measured, on_record), measured);
            s.report(load, measured);
        }
        // Replayed on a loaded machine, c6 misses: the recording went on to 5 as if c6 missed,
        // and then stopped; had c6 passed, 7 comes next, which was never recorded.
        assert_eq!(s.next(), Some(6.0));
        assert!(!s.verdict_on_record(6.0, false, on_record));
        assert!(
            !s.verdict_on_record(6.0, true, on_record),
            "7 was never recorded"
        );
        s.report(6.0, false);
        // c5 then: passing ends the search (as recorded), and so does missing (4 passed, 5
        // missed: one step apart), so the figures decide.
        assert_eq!(s.next(), Some(5.0));
        assert!(s.verdict_on_record(5.0, true, on_record));
        assert!(!s.verdict_on_record(5.0, false, on_record));
        // Neither verdict leads to a recorded probe (the recording stopped at 4): the figures
        // decide; ending the search beats a probe with nothing to replay.
        let short = |l: f64| [1.0, 2.0, 4.0].contains(&l);
        let mut s = Search::new(b);
        s.report(1.0, true);
        s.report(2.0, true);
        assert!(
            s.verdict_on_record(4.0, true, short),
            "8 and 3 both unrecorded"
        );
        assert!(!s.verdict_on_record(4.0, false, short));
        let fresh = Search::new(b);
        assert!(
            !fresh.verdict_on_record(1.0, true, |_| false),
            "missing at the minimum ends the search"
        );
        // Missing where the recording passed stands when it ends the search (a replay slowed
        // on purpose).
        assert!(!fresh.verdict_on_record(1.0, false, on_record));
    }

    #[test]
    fn rates_stay_on_their_grid() {
        // Rates 0.5, 1.0, 1.5 … 8: the knee 2.6 is found as 2.5 (the grid's last pass).
        let f = search(bounds(0.5, 8.0, 0.5, 20), 2.6);
        assert_eq!(f.max_passing, Some(2.5));
        assert_eq!(f.first_failing, Some(3.0));
        for (v, _) in &f.probes {
            let k = (v - 0.5) / 0.5;
            assert!((k - k.round()).abs() < 1e-9, "{v} off the grid");
        }
        let f = search(bounds(0.1, 1.0, 0.1, 20), 0.7);
        assert_eq!(f.max_passing, Some(0.7));
        assert_eq!(f.first_failing, Some(0.8));
    }
}
