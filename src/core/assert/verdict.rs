//! What an assertion decided, with the numbers that decided it, explained for people.

use super::Cmp;
use crate::core::catalog::{Dim, Value};
use crate::core::interval::{Repeated, Spread};
use std::fmt;

/// One metric value an assertion read.
#[derive(Debug, Clone, PartialEq)]
pub struct Operand {
    pub path: String,
    pub value: Option<Value>,
    /// Over repeats: the value is their mean, with this standard error.
    pub spread: Option<Spread>,
    /// Over repeats: the per-repeat values.
    pub repeated: Option<Repeated>,
}

/// How the interval of `left − right` was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntervalMethod {
    /// Every operand from the same repeats: per-repeat differences, Student t.
    Paired,
    /// Operands from different runs: standard errors combined (delta method), Welch–Satterthwaite
    /// degrees of freedom.
    Welch,
}

impl IntervalMethod {
    pub fn name(self) -> &'static str {
        match self {
            IntervalMethod::Paired => "paired",
            IntervalMethod::Welch => "welch",
        }
    }
}

/// What an assertion decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// The interval of `left − right` straddles the threshold: the repeats cannot tell.
    Inconclusive,
    /// Not checked (its baseline is missing where none is required); the reason says why.
    Skipped,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Inconclusive => "inconclusive",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The outcome of one assertion, with the numbers that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub source: String,
    /// Whether the check passes: passed, or inconclusive and not strict.
    pub passed: bool,
    pub outcome: Outcome,
    pub lhs: Option<f64>,
    pub rhs: Option<f64>,
    /// Over repeats: the 95 % interval of `left − right`, and how it was made.
    pub interval: Option<(f64, f64)>,
    pub interval_method: Option<IntervalMethod>,
    pub dim: Dim,
    pub operands: Vec<Operand>,
    pub reason: Option<String>,
    pub cmp: Cmp,
    /// The client's own timing error (seconds, TTFT error p99 from a calibration), when the
    /// experiment measured it.
    pub noise_floor: Option<f64>,
}

/// Formats a value for people: durations in ms, other numbers with four significant digits.
pub fn format_value(value: f64, dim: Dim) -> String {
    match dim {
        Dim::Time => format!("{:.3} ms", value * 1e3),
        Dim::Plain => {
            if value != 0.0 && (value.abs() >= 1e6 || value.abs() < 1e-3) {
                format!("{value:.4e}")
            } else {
                let s = format!("{value:.4}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                s.to_string()
            }
        }
    }
}

impl Verdict {
    /// The verdict of an experiment that is `strict`: inconclusive fails.
    pub fn strict(mut self, strict: bool) -> Self {
        self.passed = match self.outcome {
            Outcome::Passed => self.reason.is_none(),
            Outcome::Failed => false,
            Outcome::Inconclusive => !strict,
            Outcome::Skipped => true,
        };
        self
    }

    /// Whether the two sides of a time comparison differ by no more than the client's own
    /// error: `None` without a calibration or for plain numbers.
    pub fn within_noise_floor(&self) -> Option<bool> {
        let floor = self.noise_floor?;
        if self.dim != Dim::Time {
            return None;
        }
        Some((self.lhs? - self.rhs?).abs() <= floor)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.passed, self.outcome) {
            (true, Outcome::Inconclusive) => "ok?   ",
            (_, Outcome::Skipped) => "skip  ",
            (true, _) => "ok    ",
            (false, Outcome::Inconclusive) => "UNSURE",
            (false, _) => "FAILED",
        };
        write!(f, "{status} {}", self.source)?;
        for o in &self.operands {
            write_operand(f, o)?;
        }
        if let (Some(l), Some(r)) = (self.lhs, self.rhs) {
            // The margin is the slack in the direction the comparison wants: positive passes.
            let (label, margin) = match self.cmp {
                Cmp::Le | Cmp::Lt => ("margin (right − left)", r - l),
                Cmp::Ge | Cmp::Gt => ("margin (left − right)", l - r),
                Cmp::Eq | Cmp::Ne => ("difference (left − right)", l - r),
            };
            write!(
                f,
                "\n         left {} {} right {}; {label} = {}",
                format_value(l, self.dim),
                self.cmp.symbol(),
                format_value(r, self.dim),
                format_value(margin, self.dim),
            )?;
        }
        if let Some((lo, hi)) = self.interval {
            write!(
                f,
                "\n         left − right: 95 % CI {} … {} ({})",
                format_value(lo, self.dim),
                format_value(hi, self.dim),
                match self.interval_method {
                    Some(IntervalMethod::Paired) => "paired by repeat",
                    _ => "Welch, runs apart",
                }
            )?;
            if self.outcome == Outcome::Inconclusive {
                write!(
                    f,
                    "\n         inconclusive: the interval straddles the threshold ({})",
                    if self.passed {
                        "passes: the experiment is not strict"
                    } else {
                        "fails: the experiment is strict"
                    }
                )?;
            }
        }
        if let Some(reason) = &self.reason {
            write!(f, "\n         {reason}")?;
        }
        if self.within_noise_floor() == Some(true) {
            write!(
                f,
                "\n         note: the sides differ by no more than this machine's client error \
                 (TTFT error p99 {}, from calibration): not a measured difference",
                format_value(self.noise_floor.unwrap_or_default(), Dim::Time)
            )?;
        }
        Ok(())
    }
}

/// One operand's line: its path and value (with the repeats' interval when there are some).
fn write_operand(f: &mut fmt::Formatter<'_>, o: &Operand) -> fmt::Result {
    match (o.value, o.spread) {
        (Some(v), Some(s)) => {
            let (lo, hi) = s.interval(v.value);
            write!(
                f,
                "\n         {} = {} (mean of {} repeats, 95 % CI {} … {})",
                o.path,
                format_value(v.value, v.dim),
                o.repeated.as_ref().map_or(0, |r| r.values.len()),
                format_value(lo, v.dim),
                format_value(hi, v.dim)
            )
        }
        (Some(v), None) => write!(
            f,
            "\n         {} = {}",
            o.path,
            format_value(v.value, v.dim)
        ),
        (None, _) => write!(f, "\n         {} = (no data)", o.path),
    }
}
