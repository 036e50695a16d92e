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
//! path      := phase "." metric ("." stat)?      e.g. warm.ttft.p50, all.error_rate
//! ```
//!
//! Values carry a dimension: durations compare with durations (`cold.ttft.p99 < 2s`), a bare
//! number against a duration is an error that asks for a unit. Parsing and checking are pure;
//! evaluation takes a lookup function so it never depends on how summaries are stored.

use crate::core::catalog::{
    Dim, Value, check_fidelity_metric, check_metric, check_server_metric, server_metric_is_time,
};
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

/// A metric reference: `phase.metric[.stat]`, with its 1-based column in the expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub phase: String,
    /// `server` or `gpu` for server-side metrics, `fidelity` for the workload's, `turnN` for
    /// one turn of a multi-turn or agentic phase; `None` for the client's.
    pub scope: Option<String>,
    pub metric: String,
    pub stat: Option<String>,
    pub column: usize,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.phase)?;
        if let Some(scope) = &self.scope {
            write!(f, "{scope}.")?;
        }
        write!(f, "{}", self.metric)?;
        if let Some(s) = &self.stat {
            write!(f, ".{s}")?;
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

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        column,
        message: message.into(),
    })
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    _src: &'a str,
}

impl Parser<'_> {
    fn col(&self) -> usize {
        self.pos + 1
    }

    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        let n = s.chars().count();
        if self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .copied()
                .eq(s.chars())
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    fn cmp(&mut self) -> Result<Cmp, ExprError> {
        for (s, c) in [
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ] {
            if self.eat(s) {
                return Ok(c);
            }
        }
        match self.peek() {
            Some(c) => err(
                self.col(),
                format!("expected a comparison (<=, <, >=, >, ==, !=), found `{c}`"),
            ),
            None => err(
                self.col(),
                "expected a comparison (<=, <, >=, >, ==, !=) and a right-hand side",
            ),
        }
    }

    fn sum(&mut self) -> Result<Node, ExprError> {
        let mut node = self.product()?;
        loop {
            self.skip_ws();
            let col = self.col();
            let op = match self.peek() {
                Some(c @ ('+' | '-')) => c,
                _ => return Ok(node),
            };
            self.pos += 1;
            let rhs = self.product()?;
            node = Node::Bin(op, Box::new(node), Box::new(rhs), col);
        }
    }

    fn product(&mut self) -> Result<Node, ExprError> {
        let mut node = self.unary()?;
        loop {
            self.skip_ws();
            let col = self.col();
            let op = match self.peek() {
                Some(c @ ('*' | '/')) => c,
                _ => return Ok(node),
            };
            self.pos += 1;
            let rhs = self.unary()?;
            node = Node::Bin(op, Box::new(node), Box::new(rhs), col);
        }
    }

    fn unary(&mut self) -> Result<Node, ExprError> {
        if self.peek() == Some('-') {
            self.pos += 1;
            return Ok(Node::Neg(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Node, ExprError> {
        let col = self.col();
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                let inner = self.sum()?;
                if !self.eat(")") {
                    return err(self.col(), "expected `)`");
                }
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.path(),
            Some(c) => err(
                col,
                format!("expected a number, a metric path or `(`, found `{c}`"),
            ),
            None => err(col, "expression ends too early"),
        }
    }

    fn number(&mut self) -> Result<Node, ExprError> {
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_digit() || *c == '.' || *c == '_')
        {
            self.pos += 1;
        }
        // Exponent, e.g. 1e3 (but not the `e` of a unit — there is none starting with e).
        if self.chars.get(self.pos) == Some(&'e') {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.chars.get(self.pos), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.chars.get(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                while self.chars.get(self.pos).is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            } else {
                self.pos = save;
            }
        }
        let text: String = self.chars[start..self.pos]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        let value: f64 = text.parse().map_err(|_| ExprError {
            column: start + 1,
            message: format!("`{text}` is not a number"),
        })?;
        // A unit may follow after spaces (`2 s`); nothing else in the grammar starts with a
        // letter right after a number.
        let save = self.pos;
        self.skip_ws();
        if !self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_alphabetic() || *c == '%')
        {
            self.pos = save;
        }
        let unit_start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_alphabetic() || *c == '%')
        {
            self.pos += 1;
        }
        let unit: String = self.chars[unit_start..self.pos].iter().collect();
        let (factor, dim) = match unit.as_str() {
            "" => (1.0, Dim::Plain),
            "%" => (0.01, Dim::Plain),
            "us" | "µs" => (1e-6, Dim::Time),
            "ms" => (1e-3, Dim::Time),
            "s" => (1.0, Dim::Time),
            "m" | "min" => (60.0, Dim::Time),
            other => {
                return err(
                    unit_start + 1,
                    format!("unknown unit `{other}` (expected us, ms, s, m or %)"),
                );
            }
        };
        Ok(Node::Num(value * factor, dim))
    }

    fn path(&mut self) -> Result<Node, ExprError> {
        let column = self.col();
        let mut parts = Vec::new();
        loop {
            let start = self.pos;
            while self
                .chars
                .get(self.pos)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
            {
                self.pos += 1;
            }
            if start == self.pos {
                return err(self.col(), "expected a name after `.`");
            }
            let part: String = self.chars[start..self.pos].iter().collect();
            // A part that starts with a digit continues the previous one: sweep phases are
            // named like `r2.5`, and no metric or statistic starts with a digit.
            match parts.last_mut() {
                Some(prev) if part.starts_with(|c: char| c.is_ascii_digit()) => {
                    *prev = format!("{prev}.{part}");
                }
                _ => parts.push(part),
            }
            if self.chars.get(self.pos) == Some(&'.') {
                self.pos += 1;
            } else {
                break;
            }
        }
        let mut it = parts.into_iter().peekable();
        let phase = it.next();
        let scope =
            it.next_if(|p| p == "server" || p == "gpu" || p == "fidelity" || turn_of(p).is_some());
        let (Some(phase), Some(metric)) = (phase, it.next()) else {
            return err(
                column,
                "a metric path is `phase.metric[.stat]` or `phase.server.metric[.stat]`, e.g. `warm.ttft.p50`, `all.error_rate`, `warm.server.prefix_cache_hit_rate`",
            );
        };
        let stat = it.next();
        if let Some(extra) = it.next() {
            return err(column, format!("too many parts in the path (`.{extra}`)"));
        }
        Ok(Node::Path(Path {
            phase,
            scope,
            metric,
            stat,
            column,
        }))
    }
}

impl Assertion {
    /// Parses `source`; errors point at a 1-based column.
    pub fn parse(source: &str) -> Result<Self, ExprError> {
        let mut p = Parser {
            chars: source.chars().collect(),
            pos: 0,
            _src: source,
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
            lhs,
            cmp,
            cmp_column,
            rhs,
        })
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

    /// Checks phase names (against `phases` plus `all`), metric paths and dimensions.
    pub fn check(&self, phases: &[&str]) -> Result<(), ExprError> {
        for p in self.paths() {
            if p.phase != "all" && !phases.contains(&p.phase.as_str()) {
                let mut known: Vec<&str> = phases.to_vec();
                known.push("all");
                return err(
                    p.column,
                    format!("unknown phase `{}` (phases: {})", p.phase, known.join(", ")),
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

    /// Evaluates against `lookup`, which answers `None` when the metric has no samples.
    pub fn evaluate(&self, lookup: &dyn Lookup) -> Verdict {
        let operands: Vec<Operand> = self
            .paths()
            .into_iter()
            .map(|p| Operand {
                path: p.to_string(),
                value: lookup.value(p),
            })
            .collect();
        let missing: Vec<String> = operands
            .iter()
            .filter(|o| o.value.is_none())
            .map(|o| o.path.clone())
            .collect();
        let dim = dim_of(&self.lhs).unwrap_or(Dim::Plain);
        if !missing.is_empty() {
            return Verdict {
                source: self.source.clone(),
                passed: false,
                lhs: None,
                rhs: None,
                dim,
                operands,
                reason: Some(format!("no data for {}", missing.join(", "))),
                cmp: self.cmp,
                noise_floor: None,
            };
        }
        let l = eval(&self.lhs, lookup);
        let r = eval(&self.rhs, lookup);
        let passed = self.cmp.holds(l, r);
        let reason =
            (!l.is_finite() || !r.is_finite()).then(|| "a side is not a finite number".to_string());
        Verdict {
            source: self.source.clone(),
            passed: passed && reason.is_none(),
            lhs: Some(l),
            rhs: Some(r),
            dim,
            operands,
            reason,
            cmp: self.cmp,
            noise_floor: None,
        }
    }
}

/// `turn3` → 3: the scope of per-turn figures in multi-turn and agentic phases.
pub fn turn_of(scope: &str) -> Option<u32> {
    scope.strip_prefix("turn")?.parse().ok()
}

/// Checks a path and gives its dimension.
fn path_dim(p: &Path) -> Result<Dim, String> {
    match p.scope.as_deref() {
        None => check_metric(&p.metric, p.stat.as_deref()),
        Some(scope) if turn_of(scope).is_some() => check_metric(&p.metric, p.stat.as_deref()),
        Some("fidelity") => {
            check_fidelity_metric(&p.metric, p.stat.as_deref())?;
            Ok(Dim::Plain)
        }
        Some(scope) => {
            check_server_metric(scope, &p.metric, p.stat.as_deref())?;
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
}

/// Any function of a path is a lookup (tests, and callers with figures of their own).
impl<F: Fn(&Path) -> Option<Value>> Lookup for F {
    fn value(&self, path: &Path) -> Option<Value> {
        self(path)
    }
}

fn eval(n: &Node, lookup: &dyn Lookup) -> f64 {
    match n {
        Node::Num(v, _) => *v,
        Node::Path(p) => lookup.value(p).map_or(f64::NAN, |v| v.value),
        Node::Neg(a) => -eval(a, lookup),
        Node::Bin(op, a, b, _) => {
            let (a, b) = (eval(a, lookup), eval(b, lookup));
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ => a / b,
            }
        }
    }
}

/// One metric value an assertion read.
#[derive(Debug, Clone, PartialEq)]
pub struct Operand {
    pub path: String,
    pub value: Option<Value>,
}

/// The outcome of one assertion, with the numbers that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub source: String,
    pub passed: bool,
    pub lhs: Option<f64>,
    pub rhs: Option<f64>,
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
        let status = if self.passed { "ok    " } else { "FAILED" };
        write!(f, "{status} {}", self.source)?;
        for o in &self.operands {
            match o.value {
                Some(v) => write!(
                    f,
                    "\n         {} = {}",
                    o.path,
                    format_value(v.value, v.dim)
                )?,
                None => write!(f, "\n         {} = (no data)", o.path)?,
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn lookup(p: &Path) -> Option<Value> {
        let time = |v| {
            Some(Value {
                value: v,
                dim: Dim::Time,
            })
        };
        match p.to_string().as_str() {
            "warm.ttft.p50" => time(0.020),
            "cold.ttft.p50" => time(0.400),
            "cold.ttft.p99" => time(0.900),
            "all.error_rate" => Some(Value {
                value: 0.0,
                dim: Dim::Plain,
            }),
            "c1.output_throughput" => Some(Value {
                value: 100.0,
                dim: Dim::Plain,
            }),
            "c8.output_throughput" => Some(Value {
                value: 420.0,
                dim: Dim::Plain,
            }),
            "r2.5.ttft.p50" => time(0.3),
            "warm.turn3.ttft.p50" => time(0.05),
            "warm.turn0.ttft.p50" => time(0.5),
            "warm.server.prefix_cache_hit_rate" => Some(Value {
                value: 0.9,
                dim: Dim::Plain,
            }),
            "c8.server.kv_cache_usage.max" => Some(Value {
                value: 0.97,
                dim: Dim::Plain,
            }),
            "warm.server.ttft_mean" => time(0.012),
            _ => None,
        }
    }

    const PHASES: &[&str] = &["cold", "warm", "c1", "c8", "r2.5"];

    #[rstest]
    #[case("warm.ttft.p50 <= 0.5 * cold.ttft.p50", true)]
    #[case("warm.ttft.p50 <= 0.01 * cold.ttft.p50", false)]
    #[case("all.error_rate == 0", true)]
    #[case("c8.output_throughput > 1.5 * c1.output_throughput", true)]
    #[case("cold.ttft.p99 < 2s", true)]
    #[case("cold.ttft.p99 < 500ms", false)]
    #[case("cold.ttft.p99 - warm.ttft.p50 >= 880ms", true)]
    #[case("cold.ttft.p50 / warm.ttft.p50 >= 20", true)]
    #[case("all.error_rate <= 1%", true)]
    #[case("(warm.ttft.p50 + 1ms) * 2 < 50ms", true)]
    #[case("-cold.ttft.p50 < 0s", true)]
    #[case("warm.ttft.p50<1e2ms", true)]
    #[case("warm.server.prefix_cache_hit_rate >= 0.8", true)]
    #[case("r2.5.ttft.p50 < 1s", true)]
    #[case("warm.turn3.ttft.p50 < warm.turn0.ttft.p50", true)]
    #[case("c8.server.kv_cache_usage.max < 0.95", false)]
    #[case("warm.server.ttft_mean < warm.ttft.p50", true)]
    fn evaluates(#[case] src: &str, #[case] passed: bool) {
        let a = Assertion::parse(src).unwrap();
        a.check(PHASES).unwrap();
        let v = a.evaluate(&lookup);
        assert_eq!(v.passed, passed, "{v}");
    }

    #[rstest]
    #[case("warm.ttft.p50 <=", 17, "ends too early")]
    #[case("warm.ttft.p50 0.5", 15, "expected a comparison")]
    #[case("warm.ttft.p50 <= 0.5 ** cold.ttft.p50", 23, "expected a number")]
    #[case("warm.ttft.p50 <= 2 parsecs", 20, "unknown unit")]
    #[case("warm <= 1", 1, "phase.metric")]
    #[case("(warm.ttft.p50 <= 1s", 16, "expected `)`")]
    #[case("warm.ttft.p50 <= 1s 2", 21, "unexpected `2`")]
    fn syntax_errors_point_at_the_column(
        #[case] src: &str,
        #[case] column: usize,
        #[case] needle: &str,
    ) {
        let e = Assertion::parse(src).unwrap_err();
        assert_eq!(e.column, column, "{e}");
        assert!(e.message.contains(needle), "{e}");
    }

    #[rstest]
    #[case("hot.ttft.p50 < 1s", 1, "unknown phase `hot`")]
    #[case("warm.tfft.p50 < 1s", 1, "unknown metric `tfft`")]
    #[case("warm.ttft < 1s", 1, "add a statistic")]
    #[case("warm.ttft.p50 < 2", 15, "needs a unit")]
    #[case("warm.ttft.p50 * cold.ttft.p50 < 1s", 15, "multiplies two durations")]
    #[case("1s < 1s + cold.ttft.p50 + cold.error_rate", 25, "adds a duration")]
    #[case("warm.server.kv_cache_usage < 1", 1, "add mean, min or max")]
    #[case("warm.server.ttft_mean < 1", 23, "needs a unit")]
    #[case("warm.gpu.temp.max < 1", 1, "unknown gpu metric")]
    fn semantic_errors(#[case] src: &str, #[case] column: usize, #[case] needle: &str) {
        let e = Assertion::parse(src).unwrap().check(PHASES).unwrap_err();
        assert_eq!(e.column, column, "{e}");
        assert!(e.message.contains(needle), "{e}");
    }

    #[test]
    fn failure_shows_operands_and_margin() {
        let a = Assertion::parse("warm.ttft.p50 <= 0.01 * cold.ttft.p50").unwrap();
        let text = a.evaluate(&lookup).to_string();
        assert!(
            text.starts_with("FAILED warm.ttft.p50 <= 0.01 * cold.ttft.p50"),
            "{text}"
        );
        assert!(text.contains("warm.ttft.p50 = 20.000 ms"), "{text}");
        assert!(text.contains("cold.ttft.p50 = 400.000 ms"), "{text}");
        assert!(text.contains("left 20.000 ms <= right 4.000 ms"), "{text}");
        assert!(
            text.contains("margin (right − left) = -16.000 ms"),
            "{text}"
        );
    }

    #[test]
    fn missing_data_fails_with_the_reason() {
        let a = Assertion::parse("c1.ttft.p50 < 1s").unwrap();
        let v = a.evaluate(&lookup);
        assert!(!v.passed);
        assert_eq!(v.reason.as_deref(), Some("no data for c1.ttft.p50"));
    }

    #[test]
    fn a_difference_inside_the_noise_floor_is_flagged() {
        // warm 20 ms, cold 400 ms: 0.06 × cold = 24 ms, 4 ms from warm.
        let a = Assertion::parse("warm.ttft.p50 <= 0.06 * cold.ttft.p50").unwrap();
        let mut v = a.evaluate(&lookup);
        assert_eq!(v.within_noise_floor(), None);
        v.noise_floor = Some(0.005);
        assert_eq!(v.within_noise_floor(), Some(true));
        assert!(v.to_string().contains("not a measured difference"), "{v}");
        v.noise_floor = Some(0.003);
        assert_eq!(v.within_noise_floor(), Some(false));
        assert!(!v.to_string().contains("not a measured difference"), "{v}");
    }
}
