//! Assertion expressions over summaries: parse, check, evaluate, explain.
//!
//! Grammar (whitespace is free):
//!
//! ```text
//! assertion := sum cmp sum            cmp := <= | < | >= | > | == | !=
//! sum       := product (("+" | "-") product)*
//! product   := unary (("*" | "/") unary)*
//! unary     := "-" unary | atom
//! atom      := number unit? | path | "(" sum ")"
//! unit      := us | ms | s | m | %       (durations; % divides by 100)
//! path      := (target ".")? phase "." metric ("." stat)?
//!                                         e.g. warm.ttft.p50, all.error_rate, vllm.warm.ttft.p50
//! ```
//!
//! A path that starts with one of the experiment's target names reads that target's run: an
//! assertion whose paths all name targets compares them (`sglang.warm.ttft.p50 <= 1.2 *
//! vllm.warm.ttft.p50`) and is checked once the targets' trials have run, not on any one.
//!
//! A path that starts with `baseline.` reads the committed baseline of the experiment and the
//! target the assertion is checked on (`warm.ttft.p99 <= 1.1 * baseline.warm.ttft.p99`).
//!
//! Where a run has repeats, a value is the mean of its per-repeat values (see
//! [`crate::core::interval`]), and an assertion over such values is decided on the 95 % interval
//! of `left − right`: it passes when the whole interval is on the passing side, fails when the
//! whole of it is on the failing side, and is *inconclusive* otherwise. Operands from the same
//! repeats (one run, or replays of one recording) give that interval repeat by repeat (paired);
//! others by combining standard errors (delta method, Welch–Satterthwaite).
//!
//! Values carry a dimension: durations compare with durations (`cold.ttft.p99 < 2s`), a bare
//! number against a duration is an error that asks for a unit. Parsing and checking are pure;
//! evaluation takes a lookup function so it never depends on how summaries are stored.

use crate::core::catalog::{
    Dim, Scope, Stat, Value, check_fidelity_metric, check_metric, check_server_metric,
    server_metric_is_time,
};
mod parse;
mod verdict;

pub use verdict::{IntervalMethod, Operand, Outcome, Verdict, format_value};

use crate::core::catalog::Mode;
use crate::core::interval::{self, Interval, Repeated, Spread};
use parse::{Parser, err};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
    Ne,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Le => "<=",
            Cmp::Lt => "<",
            Cmp::Ge => ">=",
            Cmp::Gt => ">",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }

    fn holds(self, l: f64, r: f64) -> bool {
        match self {
            Cmp::Le => l <= r,
            Cmp::Lt => l < r,
            Cmp::Ge => l >= r,
            Cmp::Gt => l > r,
            Cmp::Eq => l == r,
            Cmp::Ne => l != r,
        }
    }
}

/// A metric reference: `[baseline. | target.]phase.metric[.stat]`, with its 1-based column in
/// the expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// It reads the committed baseline rather than the run.
    pub baseline: bool,
    /// The target whose run it reads; `None`: the run the assertion is checked on.
    pub target: Option<String>,
    pub phase: String,
    pub scope: Scope,
    pub metric: String,
    pub stat: Option<Stat>,
    pub column: usize,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.baseline {
            write!(f, "baseline.")?;
        }
        if let Some(t) = &self.target {
            write!(f, "{t}.")?;
        }
        write!(f, "{}.", self.phase)?;
        if let Some(scope) = self.scope.name() {
            write!(f, "{scope}.")?;
        }
        write!(f, "{}", self.metric)?;
        if let Some(s) = self.stat {
            write!(f, ".{}", s.name())?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Num(f64, Dim),
    Path(Path),
    Neg(Box<Node>),
    Bin(char, Box<Node>, Box<Node>, usize),
}

/// A parsed assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    pub source: String,
    /// The targets it is checked on; empty: every target of the experiment (an engine whose
    /// behaviour differs gets an assertion of its own).
    pub targets: Vec<String>,
    /// The modes it is checked in (`live`, which includes recording, and `replay`); empty:
    /// both.
    pub modes: Vec<Mode>,
    lhs: Node,
    cmp: Cmp,
    cmp_column: usize,
    rhs: Node,
}

/// A problem in an expression, at a 1-based character column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl Assertion {
    /// Parses `source`; errors point at a 1-based column.
    pub fn parse(source: &str) -> Result<Self, ExprError> {
        Self::parse_with_targets(source, &[])
    }

    /// Parses `source`, reading a path's first part as a target when it is one of `targets`.
    pub fn parse_with_targets(source: &str, targets: &[&str]) -> Result<Self, ExprError> {
        let mut p = Parser {
            chars: source.chars().collect(),
            pos: 0,
            targets,
        };
        let lhs = p.sum()?;
        p.skip_ws();
        let cmp_column = p.col();
        let cmp = p.cmp()?;
        let rhs = p.sum()?;
        if let Some(c) = p.peek() {
            return err(p.col(), format!("unexpected `{c}` after the expression"));
        }
        Ok(Self {
            source: source.to_string(),
            targets: Vec::new(),
            modes: Vec::new(),
            lhs,
            cmp,
            cmp_column,
            rhs,
        })
    }

    /// Whether it is checked on target `name` (an assertion across targets is checked on none
    /// of them alone).
    pub fn applies_to(&self, name: &str) -> bool {
        !self.is_across_targets()
            && (self.targets.is_empty() || self.targets.iter().any(|t| t == name))
    }

    /// Whether it is checked on a trial running in `mode` (recording counts as `live`).
    pub fn applies_in(&self, mode: Mode) -> bool {
        self.modes.is_empty() || self.modes.contains(&mode.as_checked())
    }

    /// Whether a path reads the baseline.
    pub fn reads_baseline(&self) -> bool {
        self.paths().iter().any(|p| p.baseline)
    }

    /// Whether its paths name targets: it compares them.
    pub fn is_across_targets(&self) -> bool {
        self.paths().iter().any(|p| p.target.is_some())
    }

    /// The targets its paths name, sorted, once each.
    pub fn targets_read(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .paths()
            .iter()
            .filter_map(|p| p.target.as_deref())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every metric path in order of appearance.
    pub fn paths(&self) -> Vec<&Path> {
        fn walk<'a>(n: &'a Node, out: &mut Vec<&'a Path>) {
            match n {
                Node::Num(..) => {}
                Node::Path(p) => out.push(p),
                Node::Neg(a) => walk(a, out),
                Node::Bin(_, a, b, _) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.lhs, &mut out);
        walk(&self.rhs, &mut out);
        out
    }

    /// Checks phase names (against `phases` plus `all`; an unknown one names `targets` too,
    /// which the first part may have been meant as), metric paths and dimensions.
    pub fn check(&self, phases: &[&str], targets: &[&str]) -> Result<(), ExprError> {
        let across = self.is_across_targets();
        for p in self.paths() {
            if p.baseline && p.scope != Scope::Client {
                return err(
                    p.column,
                    "a baseline keeps the client's figures of each phase (e.g. `baseline.warm.ttft.p99`), not the server's, the GPU's, turns' or fidelity",
                );
            }
            if across && p.baseline {
                return err(
                    p.column,
                    "an assertion across targets reads their runs, not a baseline: compare each target with its baseline in an assertion of its own",
                );
            }
            if across && p.target.is_none() {
                return err(
                    p.column,
                    format!(
                        "this assertion compares targets: name the target of `{p}` too (e.g. `{}.{p}`)",
                        self.targets_read().first().copied().unwrap_or("vllm")
                    ),
                );
            }
            if p.phase != "all" && !phases.contains(&p.phase.as_str()) {
                let mut known: Vec<&str> = phases.to_vec();
                known.push("all");
                // Several targets: the first part may have been meant as one of them.
                let or_target = if targets.len() > 1 {
                    format!(" — or a target: {}", targets.join(", "))
                } else {
                    String::new()
                };
                return err(
                    p.column,
                    format!(
                        "unknown phase `{}` (phases: {}){or_target}",
                        p.phase,
                        known.join(", ")
                    ),
                );
            }
            path_dim(p).map_err(|m| ExprError {
                column: p.column,
                message: m,
            })?;
        }
        let l = dim_of(&self.lhs)?;
        let r = dim_of(&self.rhs)?;
        if l != r {
            let side = if l == Dim::Time { "right" } else { "left" };
            return err(
                self.cmp_column,
                format!(
                    "compares a duration with a plain number; the {side}-hand side needs a unit (e.g. `2s`, `200ms`)"
                ),
            );
        }
        Ok(())
    }

    /// Evaluates against `lookup`, which answers `None` when the metric has no samples. An
    /// inconclusive verdict passes here; [`Verdict::strict`] makes it fail.
    pub fn evaluate(&self, lookup: &dyn Lookup) -> Verdict {
        let operands = self.operands(lookup);
        let missing: Vec<String> = operands
            .iter()
            .filter(|o| o.value.is_none())
            .map(|o| o.path.clone())
            .collect();
        let dim = dim_of(&self.lhs).unwrap_or(Dim::Plain);
        let mut verdict = Verdict {
            source: self.source.clone(),
            passed: false,
            outcome: Outcome::Failed,
            lhs: None,
            rhs: None,
            interval: None,
            interval_method: None,
            dim,
            operands,
            reason: None,
            cmp: self.cmp,
            noise_floor: None,
        };
        if !missing.is_empty() {
            verdict.reason = Some(format!("no data for {}", missing.join(", ")));
            return verdict;
        }
        // Every path's value by its text (a path written twice is one quantity).
        let values: std::collections::HashMap<&str, f64> = verdict
            .operands
            .iter()
            .filter_map(|o| Some((o.path.as_str(), o.value?.value)))
            .collect();
        let at = |bumped: Option<(&str, f64)>| {
            let read = |p: &Path| {
                let key = p.to_string();
                match bumped {
                    Some((k, v)) if k == key => v,
                    _ => values.get(key.as_str()).copied().unwrap_or(f64::NAN),
                }
            };
            (eval(&self.lhs, &read), eval(&self.rhs, &read))
        };
        let (l, r) = at(None);
        verdict.lhs = Some(l);
        verdict.rhs = Some(r);
        if !l.is_finite() || !r.is_finite() {
            verdict.reason = Some("a side is not a finite number".to_string());
            return verdict;
        }
        (verdict.interval, verdict.interval_method) =
            match self.paired_interval(&verdict.operands, &values) {
                Some(i) => (Some(i), Some(IntervalMethod::Paired)),
                None => match self.difference_interval(&verdict.operands, l - r, &at) {
                    Some(i) => (Some(i), Some(IntervalMethod::Welch)),
                    None => (None, None),
                },
            };
        verdict.outcome = self.outcome(verdict.interval, l, r);
        verdict.passed = verdict.outcome != Outcome::Failed;
        verdict
    }

    /// Each path's value as `lookup` has it (with its repeats, when there are some).
    fn operands(&self, lookup: &dyn Lookup) -> Vec<Operand> {
        self.paths()
            .into_iter()
            .map(|p| {
                let (value, repeated) = match lookup.estimate(p) {
                    Some((v, r)) => (Some(v), r),
                    None => (None, None),
                };
                Operand {
                    path: p.to_string(),
                    value,
                    spread: repeated.as_ref().and_then(Repeated::spread),
                    repeated,
                }
            })
            .collect()
    }

    /// Sides `l` and `r` judged, by the interval of left − right where there is one.
    fn outcome(&self, interval: Option<(f64, f64)>, l: f64, r: f64) -> Outcome {
        match interval {
            Some((lo, hi)) if !matches!(self.cmp, Cmp::Eq | Cmp::Ne) => {
                // Passes when the whole interval of left − right passes, fails when none of it does.
                if self.cmp.holds(hi, 0.0) && self.cmp.holds(lo, 0.0) {
                    Outcome::Passed
                } else if !self.cmp.holds(hi, 0.0) && !self.cmp.holds(lo, 0.0) {
                    Outcome::Failed
                } else {
                    Outcome::Inconclusive
                }
            }
            _ if self.cmp.holds(l, r) => Outcome::Passed,
            _ => Outcome::Failed,
        }
    }

    /// A verdict reached without evaluating (e.g. its baseline is missing), for `reason`.
    pub fn not_evaluated(&self, outcome: Outcome, reason: String) -> Verdict {
        Verdict {
            source: self.source.clone(),
            passed: outcome != Outcome::Failed,
            outcome,
            lhs: None,
            rhs: None,
            interval: None,
            interval_method: None,
            dim: dim_of(&self.lhs).unwrap_or(Dim::Plain),
            operands: Vec::new(),
            reason: Some(reason),
            cmp: self.cmp,
            noise_floor: None,
        }
    }

    /// Where every operand over repeats comes from the same repeats (one pairing, as many
    /// values each): `left − right` repeat by repeat, and the 95 % Student-t interval of its
    /// mean — the paired comparison, which the repeats' shared conditions do not widen.
    fn paired_interval(
        &self,
        operands: &[Operand],
        points: &std::collections::HashMap<&str, f64>,
    ) -> Option<(f64, f64)> {
        let repeated: Vec<(&str, &Repeated)> = operands
            .iter()
            .filter_map(|o| Some((o.path.as_str(), o.repeated.as_ref()?)))
            .collect();
        let (_, first) = repeated.first()?;
        let n = first.values.len();
        if repeated
            .iter()
            .any(|(_, r)| r.pairing != first.pairing || r.values.len() != n)
        {
            return None;
        }
        let diffs: Vec<f64> = (0..n)
            .map(|k| {
                let read = |p: &Path| {
                    let key = p.to_string();
                    repeated
                        .iter()
                        .find(|(path, _)| *path == key)
                        .map(|(_, r)| r.values[k])
                        .or_else(|| points.get(key.as_str()).copied())
                        .unwrap_or(f64::NAN)
                };
                eval(&self.lhs, &read) - eval(&self.rhs, &read)
            })
            .collect();
        let i = Interval::of(&diffs)?;
        Some((i.ci_low, i.ci_high))
    }

    /// The 95 % interval of `left − right` from the operands' spreads: the delta method
    /// (each operand's weight is the difference's partial derivative, by a central
    /// difference) and Welch–Satterthwaite degrees of freedom. `None` when no operand has a
    /// spread.
    fn difference_interval(
        &self,
        operands: &[Operand],
        diff: f64,
        at: &SidesAt<'_>,
    ) -> Option<(f64, f64)> {
        let mut seen = std::collections::HashSet::new();
        let mut terms = Vec::new();
        for o in operands {
            let (Some(v), Some(s)) = (o.value, o.spread) else {
                continue;
            };
            if !seen.insert(o.path.as_str()) {
                continue;
            }
            let h = (v.value.abs() * 1e-6).max(1e-12);
            let (l1, r1) = at(Some((&o.path, v.value + h)));
            let (l0, r0) = at(Some((&o.path, v.value - h)));
            let weight = ((l1 - r1) - (l0 - r0)) / (2.0 * h);
            if weight.is_finite() {
                terms.push((weight * s.se, s.df));
            }
        }
        let spread: Spread = interval::combine(&terms)?;
        Some(spread.interval(diff))
    }
}

/// Both sides with one path's value replaced (`None`: as read).
type SidesAt<'a> = dyn Fn(Option<(&str, f64)>) -> (f64, f64) + 'a;

/// Checks a path and gives its dimension.
fn path_dim(p: &Path) -> Result<Dim, String> {
    match p.scope {
        Scope::Client | Scope::Turn(_) => check_metric(&p.metric, p.stat),
        Scope::Fidelity => {
            check_fidelity_metric(&p.metric, p.stat)?;
            Ok(Dim::Plain)
        }
        Scope::Server | Scope::Gpu => {
            check_server_metric(p.scope == Scope::Gpu, &p.metric, p.stat)?;
            Ok(if server_metric_is_time(&p.metric) {
                Dim::Time
            } else {
                Dim::Plain
            })
        }
    }
}

fn dim_of(n: &Node) -> Result<Dim, ExprError> {
    Ok(match n {
        Node::Num(_, d) => *d,
        Node::Path(p) => path_dim(p).unwrap_or(Dim::Plain),
        Node::Neg(a) => dim_of(a)?,
        Node::Bin(op, a, b, col) => {
            let (a, b) = (dim_of(a)?, dim_of(b)?);
            match (op, a, b) {
                ('+' | '-', x, y) if x == y => x,
                ('+' | '-', _, _) => return err(*col, "adds a duration and a plain number"),
                ('*', Dim::Time, Dim::Time) => {
                    return err(*col, "multiplies two durations");
                }
                ('*', Dim::Time, _) | ('*', _, Dim::Time) => Dim::Time,
                ('*', _, _) => Dim::Plain,
                ('/', Dim::Time, Dim::Time) => Dim::Plain,
                ('/', Dim::Time, Dim::Plain) => Dim::Time,
                ('/', Dim::Plain, Dim::Time) => {
                    return err(*col, "divides a plain number by a duration");
                }
                _ => Dim::Plain,
            }
        }
    })
}

/// What an assertion reads its numbers from: a run's summaries answer each path (`warm.ttft.p50`,
/// `c8.server.kv_cache_usage.max`, `all.error_rate`) with a value and its dimension, or `None`
/// when the metric has no samples (or the phase does not exist).
pub trait Lookup {
    fn value(&self, path: &Path) -> Option<Value>;

    /// The value with its per-repeat values, where the run has repeats (by default, none):
    /// the value is then their mean.
    fn estimate(&self, path: &Path) -> Option<(Value, Option<Repeated>)> {
        self.value(path).map(|v| (v, None))
    }
}

/// Any function of a path is a lookup (tests, and callers with figures of their own).
impl<F: Fn(&Path) -> Option<Value>> Lookup for F {
    fn value(&self, path: &Path) -> Option<Value> {
        self(path)
    }
}

fn eval(n: &Node, read: &dyn Fn(&Path) -> f64) -> f64 {
    match n {
        Node::Num(v, _) => *v,
        Node::Path(p) => read(p),
        Node::Neg(a) => -eval(a, read),
        Node::Bin(op, a, b, _) => {
            let (a, b) = (eval(a, read), eval(b, read));
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ => a / b,
            }
        }
    }
}

#[cfg(test)]
mod tests;
