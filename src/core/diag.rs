//! Where a user's mistake is: byte offsets in a TOML file as `file:line:column`, serde paths
//! as field paths (`phase[1].workload.groups`), durations written with units, and the one
//! parse step (TOML → raw struct) that every input file shares. A leaf: experiment and
//! deployment parsing both use it, neither uses the other.

use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// A problem with an input file (an experiment or a deployment).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// Field path, e.g. `phase[1].workload.groups`; `(syntax)` for TOML syntax errors.
        field: String,
        message: String,
    },
}

/// Locates byte offsets in the source as 1-based line and column (in characters).
pub struct Locator<'a> {
    pub file: &'a str,
    pub src: &'a str,
}

impl Locator<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.src.len());
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub fn error(
        &self,
        span: Option<Range<usize>>,
        field: impl fmt::Display,
        message: impl Into<String>,
    ) -> SpecError {
        let (line, column) = span.map_or((1, 1), |s| self.line_col(s.start));
        SpecError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// An error inside a basic string value whose span is `span`, at a 1-based character
    /// column of the string's contents.
    pub fn error_in_string(
        &self,
        span: Range<usize>,
        column: usize,
        field: impl fmt::Display,
        message: impl Into<String>,
    ) -> SpecError {
        let (line, col) = self.line_col(span.start);
        SpecError::Invalid {
            file: self.file.to_string(),
            line,
            // +1 for the opening quote.
            column: col + column,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Parses `loc.src` into the raw (serde) form of a file; syntax errors and unknown or mistyped
/// fields come back located, with their field path.
pub fn parse_toml<T: DeserializeOwned>(loc: &Locator<'_>) -> Result<T, SpecError> {
    let de = toml::Deserializer::parse(loc.src)
        .map_err(|e| loc.error(e.span(), "(syntax)", e.message().trim()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = field_path(e.path());
        let inner = e.into_inner();
        loc.error(inner.span(), field, inner.message().trim())
    })
}

/// `phase[1].workload.groups`, without the markers `Spanned` leaves in serde paths.
pub fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        "(top level)".to_string()
    } else {
        out
    }
}

/// Parses `250ms`, `1.5s`, `2m`, `800us`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (expected e.g. `250ms`, `1.5s`, `2m`)"))?;
    let secs = match unit.trim() {
        "us" | "µs" => value * 1e-6,
        "ms" => value * 1e-3,
        "s" => value,
        "m" | "min" => value * 60.0,
        "" => return Err(format!("`{s}` needs a unit (us, ms, s, m)")),
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}` (expected us, ms, s, m)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))
}
