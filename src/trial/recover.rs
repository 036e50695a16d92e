//! A summary for a run that died before writing one (`kill -9`, a lost machine): the records in
//! its `requests.jsonl` (written as each request completed) and the scrapes in
//! `server_metrics.jsonl` go through the same tally and summary as a finished run, the
//! experiment's assertions are evaluated, and `summary.json` says it was recovered and from
//! how many requests. A capacity search's answer is rebuilt from the probes that ended.

use super::capacity;
use super::summary::{self, Parts};
use super::tally::Tally;
use crate::core::assert::Verdict;
use crate::report::rows::{read_requests, read_scrapes};
use crate::report::{self, PromptLengths, ResultsDir, RunSummary};
use crate::results::{ResultsError, RunDir};
use crate::spec::Experiment;
use std::path::{Path, PathBuf};

/// Why a run's summary cannot be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{}: target `{target}` is not in experiment `{experiment}`", manifest.display())]
    OtherTarget {
        manifest: PathBuf,
        target: String,
        experiment: String,
    },
    #[error(
        "{}: the run used seed {ran}, experiment `{experiment}` now has {now}: not the experiment it ran",
        manifest.display()
    )]
    OtherSeed {
        manifest: PathBuf,
        ran: u64,
        now: u64,
        experiment: String,
    },
    #[error("{}: the run finished and has its summary; --force rebuilds it anyway", summary.display())]
    Finished { summary: PathBuf },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A rebuilt summary, written to the run's directory.
pub struct RecoveredRun {
    pub summary: RunSummary,
    pub verdicts: Vec<Verdict>,
}

impl RecoveredRun {
    /// What `summarize` prints: how much was recovered, the phase table, the assertions over
    /// what completed, and where the summary went.
    pub fn describe(&self, dir: &Path) -> String {
        use std::fmt::Write;
        let s = &self.summary;
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let (requests, scrapes, cut) = s.recovered.as_ref().map_or((0, 0, None), |x| {
            (x.requests, x.scrapes, x.partial_last_line)
        });
        let mut out = format!(
            "{}::{} recovered from {requests} request{} and {scrapes} scrape{}",
            s.experiment,
            s.target,
            plural(requests),
            plural(scrapes),
        );
        if let Some(l) = cut {
            let _ = write!(
                out,
                "; line {l} of requests.jsonl was cut short when the run died and is skipped"
            );
        }
        out.push('\n');
        out += &report::phase_table(s);
        if !self.verdicts.is_empty() {
            // Informational: the run did not finish, so its verdicts do not decide anything.
            out += "assertions over the requests that completed:\n";
            out += &report::verdict_lines(&self.verdicts);
        }
        let _ = writeln!(out, "written: {}", dir.join("summary.json").display());
        out
    }
}

/// The experiment and target a run directory's manifest names.
pub fn manifest_names(dir: &Path) -> Result<(String, String), ResultsError> {
    let m = RunDir::open_partial(dir)?.manifest;
    Ok((m.experiment.name, m.target.name))
}

/// Rebuilds `summary.json` of the run in `dir` with `exp` (the experiment it ran). A run with
/// a summary is refused unless `force`.
pub fn recover(
    dir: &Path,
    exp: &Experiment,
    baselines: &Path,
    force: bool,
) -> Result<RecoveredRun, RecoverError> {
    let run = RunDir::open_partial(dir)?;
    let manifest_path = dir.join("manifest.json");
    let manifest = &run.manifest;
    let target_name = &manifest.target.name;
    let target = exp
        .target(target_name)
        .ok_or_else(|| RecoverError::OtherTarget {
            manifest: manifest_path.clone(),
            target: target_name.clone(),
            experiment: exp.name.clone(),
        })?;
    if manifest.seed != exp.seed {
        return Err(RecoverError::OtherSeed {
            manifest: manifest_path,
            ran: manifest.seed,
            now: exp.seed,
            experiment: exp.name.clone(),
        });
    }
    if run.has_summary() && !force {
        return Err(RecoverError::Finished {
            summary: dir.join("summary.json"),
        });
    }
    let mode = manifest.mode;
    let requests = read_requests(&run.requests_path())?;
    let scrapes = read_scrapes(&run.scrapes_path())?;
    let declared = exp;
    let exp = capacity::with_recorded_probes(exp, &requests.items);
    let mut tally = Tally::new(exp.slo, exp.repeats).sliced(exp.observe.slice);
    for r in &requests.items {
        tally.add(r);
    }
    let capacity = capacity::recovered(declared, &requests.items, &tally);
    let tallied = tally.finish(&exp, &scrapes.items);
    let results = ResultsDir::existing(dir);
    for (phase, hists) in &tallied.histograms {
        results
            .write_histograms(phase, hists)
            .map_err(write_error(dir.join("histograms")))?;
    }
    let parts = Parts {
        mode,
        prompt_lengths: PromptLengths::Approximate(
            "not known: the summary was recovered from a killed run".into(),
        ),
        scrapes: &scrapes.items,
        health: Default::default(),
        interrupted: true,
        cost_per_hour: None,
        noise_floor: None,
        baseline: crate::baseline::BaselineState::for_run(
            baselines,
            &exp,
            &target.name,
            mode,
            false,
        ),
        pairing: format!("recovered run {} (salt {})", dir.display(), manifest.salt),
        capacity,
    };
    let (mut summary, verdicts) = summary::summarize(&exp, target, tallied, parts);
    summary.recovered = Some(report::Recovered {
        requests: requests.items.len(),
        partial_last_line: requests.partial_last_line,
        scrapes: scrapes.items.len(),
        note: report::RECOVERED_NOTE.into(),
    });
    if let Some(s) = &summary.slices {
        results
            .write_slices(&s.slices)
            .map_err(write_error(dir.join("slices.jsonl")))?;
    }
    results
        .write_json("summary.json", &summary)
        .map_err(write_error(dir.join("summary.json")))?;
    Ok(RecoveredRun { summary, verdicts })
}

fn write_error(path: PathBuf) -> impl FnOnce(std::io::Error) -> RecoverError {
    move |source| RecoverError::Write { path, source }
}
