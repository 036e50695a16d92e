//! What the CLI says: each event of a run, a trial's outcome, the trial list and the checks of
//! `validate`, on stdout (results) and stderr (problems).

use super::{Event, Selection, across, trials};
use crate::report;
use crate::spec::Experiment;
use crate::spec_io;
use crate::trial::{Plan, TrialOutcome};
use std::path::{Path, PathBuf};

/// Prints one event of a run.
pub fn print_event(event: Event<'_>) {
    match event {
        Event::Invalid(e) => eprintln!("{e}"),
        Event::Skipped { name, reason } => println!("== {name}: skipped: {reason}\n"),
        Event::BadTarget { name, error } => eprintln!("== {name}: {error}\n"),
        Event::Started { name, mode } => println!("== {name} [{}]", mode.as_str()),
        Event::Finished { outcome, .. } => print_outcome(outcome),
        Event::AcrossFinished { outcome, .. } => {
            print!("{}", report::verdict_lines(&outcome.verdicts));
            for (target, dir) in &outcome.runs {
                println!("{target}: {}", dir.display());
            }
            println!();
        }
        Event::Broken { name, error } => eprintln!("{name}: {error}\n"),
        Event::NoneSelected { filters } => eprintln!("no trial matches {filters:?}"),
    }
}

/// A trial's phase table, verdicts, replay mismatches, write problems and where its results
/// are.
pub fn print_outcome(out: &TrialOutcome) {
    print!("{}", report::phase_table(&out.summary));
    if !out.verdicts.is_empty() {
        println!();
        print!("{}", report::verdict_lines(&out.verdicts));
    }
    for u in &out.replay_unmatched {
        println!("replay mismatch: {u}");
    }
    for w in &out.write_errors {
        eprintln!("warning: writing requests.jsonl: {w}");
    }
    if let Some(f) = &out.fixture_written {
        println!("fixture written: {}", f.display());
    }
    println!("results: {}\n", out.dir.display());
    if out.summary.interrupted {
        println!("interrupted: the results above cover what completed; later trials were not run");
    }
}

/// `list`: every trial (across targets too) and its mode, or why it is ignored, one a line.
pub fn listing(
    exps: &[Experiment],
    env: &dyn Fn(&str) -> Option<String>,
    fixtures: &Path,
) -> Vec<String> {
    let all = Selection::default();
    let mut out = Vec::new();
    for t in trials(exps, &all, env, fixtures) {
        let mode = match t.plan {
            Ok(Plan::Ignored { reason }) => format!("ignored: {reason}"),
            Ok(p) => p.mode().map_or("", |m| m.as_str()).to_string(),
            Err(err) => format!("error: {err}"),
        };
        out.push(format!("{}  [{mode}]", t.name));
    }
    for t in across::entries(exps, &all, env, fixtures) {
        let mode = match t.plan {
            Ok(mode) => mode.as_str().to_string(),
            Err(reason) => format!("ignored: {reason}"),
        };
        out.push(format!("{}  [{mode}]", t.name));
    }
    out
}

/// `validate`: checks each file (every experiment in `dir` when none is named), printing one
/// line per good file and each error; whether all were good.
pub fn validate(dir: &Path, files: &[PathBuf]) -> std::io::Result<bool> {
    let files = if files.is_empty() {
        spec_io::discover(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", dir.display())))?
    } else {
        files.to_vec()
    };
    let mut good = true;
    for f in &files {
        match spec_io::load(f) {
            Ok(e) => println!(
                "ok  {} ({} phases, {} targets, {} assertions)",
                f.display(),
                e.phases.len(),
                e.targets.len(),
                e.assertions.len()
            ),
            Err(e) => {
                eprintln!("{e}");
                good = false;
            }
        }
    }
    Ok(good)
}
