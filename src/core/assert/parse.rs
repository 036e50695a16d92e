//! The expression parser: recursive descent over characters, every error at its column.

use super::{Cmp, ExprError, Node, Path};
use crate::core::catalog::{Dim, LatencyMetric, SCALAR_METRICS, Scope, Stat};

pub(super) fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        column,
        message: message.into(),
    })
}

pub(super) struct Parser<'a> {
    pub(super) chars: Vec<char>,
    pub(super) pos: usize,
    /// Names that, first in a path, are a target rather than a phase.
    pub(super) targets: &'a [&'a str],
}

impl Parser<'_> {
    pub(super) fn col(&self) -> usize {
        self.pos + 1
    }

    pub(super) fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    pub(super) fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).copied()
    }

    pub(super) fn eat(&mut self, s: &str) -> bool {
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

    pub(super) fn cmp(&mut self) -> Result<Cmp, ExprError> {
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

    pub(super) fn sum(&mut self) -> Result<Node, ExprError> {
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

    pub(super) fn product(&mut self) -> Result<Node, ExprError> {
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

    pub(super) fn unary(&mut self) -> Result<Node, ExprError> {
        if self.peek() == Some('-') {
            self.pos += 1;
            return Ok(Node::Neg(Box::new(self.unary()?)));
        }
        self.atom()
    }

    pub(super) fn atom(&mut self) -> Result<Node, ExprError> {
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

    pub(super) fn number(&mut self) -> Result<Node, ExprError> {
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

    /// The dotted names of a path, a name that starts with a digit joined to the one before.
    fn dotted_parts(&mut self) -> Result<Vec<String>, ExprError> {
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
                return Ok(parts);
            }
        }
    }

    pub(super) fn path(&mut self) -> Result<Node, ExprError> {
        let column = self.col();
        let mut parts = self.dotted_parts()?;
        // `baseline.` reads the committed baseline of the run's experiment and target, unless
        // a metric or a scope follows it: then `baseline` is a phase (`baseline.ttft.p50`).
        let is_metric = |m: &str| {
            LatencyMetric::parse(m).is_some() || SCALAR_METRICS.iter().any(|(n, _)| *n == m)
        };
        let baseline = parts.len() > 2
            && parts[0] == "baseline"
            && Scope::parse(&parts[1]).is_none()
            && !is_metric(&parts[1]);
        if baseline {
            parts.remove(0);
        }
        let target =
            (parts.len() > 2 && self.targets.contains(&parts[0].as_str())).then(|| parts.remove(0));
        // Four parts without a scope second: `target.phase.metric.stat` with a target unknown.
        if target.is_none()
            && !self.targets.is_empty()
            && parts.len() == 4
            && Scope::parse(&parts[1]).is_none()
        {
            return err(
                column,
                format!(
                    "unknown target `{}` (the experiment's targets: {})",
                    parts[0],
                    self.targets.join(", ")
                ),
            );
        }
        let mut it = parts.into_iter().peekable();
        let phase = it.next();
        let scope = match it.peek().and_then(|p| Scope::parse(p)) {
            Some(scope) => {
                it.next();
                scope
            }
            None => Scope::Client,
        };
        let (Some(phase), Some(metric)) = (phase, it.next()) else {
            return err(
                column,
                "a metric path is `phase.metric[.stat]` or `phase.server.metric[.stat]`, e.g. `warm.ttft.p50`, `all.error_rate`, `warm.server.prefix_cache_hit_rate`",
            );
        };
        let stat = match it.next() {
            None => None,
            Some(s) => Some(Stat::parse(&s).ok_or_else(|| ExprError {
                column,
                message: format!(
                    "unknown statistic `{s}` (expected one of {})",
                    Stat::names()
                ),
            })?),
        };
        if let Some(extra) = it.next() {
            return err(column, format!("too many parts in the path (`.{extra}`)"));
        }
        if baseline && target.is_some() {
            return err(
                column,
                "a baseline belongs to one target: `baseline.phase.metric` reads the run's own target's",
            );
        }
        Ok(Node::Path(Path {
            baseline,
            target,
            phase,
            scope,
            metric,
            stat,
            column,
        }))
    }
}
