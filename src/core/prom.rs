//! Prometheus text exposition parser (and the OpenMetrics subset servers emit). Pure, linear,
//! and forgiving: a malformed line is reported with its number and skipped, never fatal.
//!
//! Accepts metric names with `:` (every vLLM and SGLang metric), labels with escaped quotes,
//! backslashes and newlines, commas inside label values, a trailing comma in the label set,
//! `NaN`, `+Inf`, `-Inf`, optional timestamps, `# TYPE` / `# HELP` lines and `# EOF`.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIssue {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` declarations by family name.
    pub types: HashMap<String, MetricType>,
    pub issues: Vec<ParseIssue>,
}

impl Exposition {
    /// Samples of one series name.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

/// Parses a whole exposition, keeping the samples whose name `keep` accepts (the others are
/// still checked for well-formedness cheaply: only their name is read).
pub fn parse_filtered(text: &str, keep: &dyn Fn(&str) -> bool) -> Exposition {
    let mut out = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim_start();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("TYPE") => {
                    if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                        let t = match kind {
                            "counter" => MetricType::Counter,
                            "gauge" => MetricType::Gauge,
                            "histogram" | "gaugehistogram" => MetricType::Histogram,
                            "summary" => MetricType::Summary,
                            _ => MetricType::Untyped,
                        };
                        out.types.insert(name.to_string(), t);
                    }
                }
                Some("EOF") => break,
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            out.issues.push(ParseIssue {
                line: i + 1,
                message: format!("no metric name at the start of `{}`", snippet(line)),
            });
            continue;
        }
        if !keep(name) {
            continue;
        }
        match parse_rest(&line[name_end..]) {
            Ok((labels, value, timestamp_ms)) => out.samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
                timestamp_ms,
            }),
            Err(message) => out.issues.push(ParseIssue {
                line: i + 1,
                message: format!("{message} in `{}`", snippet(line)),
            }),
        }
    }
    out
}

/// Parses everything.
pub fn parse(text: &str) -> Exposition {
    parse_filtered(text, &|_| true)
}

fn snippet(line: &str) -> String {
    let mut end = line.len().min(80);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

type Labels = Vec<(String, String)>;

/// Labels, value and timestamp after the name.
fn parse_rest(rest: &str) -> Result<(Labels, f64, Option<i64>), String> {
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(after) = rest.strip_prefix('{') {
        let (l, remaining) = parse_labels(after)?;
        labels = l;
        rest = remaining;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = parse_value(value).ok_or_else(|| format!("bad value `{value}`"))?;
    let timestamp_ms = match fields.next() {
        None => None,
        Some(t) => Some(
            t.parse::<i64>()
                .or_else(|_| t.parse::<f64>().map(|f| (f * 1000.0) as i64))
                .map_err(|_| format!("bad timestamp `{t}`"))?,
        ),
    };
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".to_string());
    }
    Ok((labels, value, timestamp_ms))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// `key="value",…}` → labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name `{key}`"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value without quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".to_string()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated escape".to_string()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn names_with_colons_labels_and_special_values() {
        let text = "# HELP vllm:x A help line, with \"quotes\"\n# TYPE vllm:x gauge\n\
            vllm:x{engine=\"0\",model_name=\"a,b\\\"c\\\\d\\ne\",} 0.25 1700000000000\n\
            vllm:y_bucket{le=\"+Inf\"} +Inf\nvllm:z NaN\nplain -Inf\n# EOF\nafter_eof 1\n";
        let e = parse(text);
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        assert_eq!(e.samples.len(), 4);
        let x = &e.samples[0];
        assert_eq!(x.name, "vllm:x");
        assert_eq!(x.label("engine"), Some("0"));
        assert_eq!(x.label("model_name"), Some("a,b\"c\\d\ne"));
        assert_eq!(x.value, 0.25);
        assert_eq!(x.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(e.types.get("vllm:x"), Some(&MetricType::Gauge));
        assert_eq!(e.samples[1].value, f64::INFINITY);
        assert!(e.samples[2].value.is_nan());
        assert_eq!(e.samples[3].value, f64::NEG_INFINITY);
    }

    #[rstest]
    #[case("x{a=\"1\" 2", "expected `,` or `}`")]
    #[case("x{a=1} 2", "without quotes")]
    #[case("x{a=\"1} 2", "unterminated")]
    #[case("x 1 2 3", "unexpected text")]
    #[case("x", "missing value")]
    #[case("x abc", "bad value")]
    #[case("{a=\"1\"} 2", "no metric name")]
    #[case("x{=\"1\"} 2", "bad label name")]
    fn malformed_lines_are_reported_and_skipped(#[case] line: &str, #[case] needle: &str) {
        let e = parse(&format!("good 1\n{line}\nalso_good 2\n"));
        assert_eq!(e.samples.len(), 2, "{:?}", e.samples);
        assert_eq!(e.issues.len(), 1);
        assert_eq!(e.issues[0].line, 2);
        assert!(e.issues[0].message.contains(needle), "{:?}", e.issues[0]);
    }

    #[test]
    fn html_and_truncated_text_do_not_panic() {
        let e = parse("<html><body>Not Found</body></html>\n");
        assert!(e.samples.is_empty());
        assert_eq!(e.issues.len(), 1);
        let full = "vllm:a{x=\"1\"} 1\nvllm:b{x=\"2\"} 2\n";
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
    }

    #[test]
    fn filter_keeps_only_wanted_families() {
        let e = parse_filtered("a 1\nb 2\nc{x=\"broken 3\n", &|n| n == "a");
        assert_eq!(e.samples.len(), 1);
        assert!(
            e.issues.is_empty(),
            "filtered-out lines are not parsed further"
        );
    }

    #[test]
    fn gigantic_label_sets() {
        let labels: Vec<String> = (0..5_000)
            .map(|i| format!("l{i}=\"v{i},{{}}\\\"\""))
            .collect();
        let e = parse(&format!("vllm:x{{{}}} 1\n", labels.join(",")));
        assert!(e.issues.is_empty(), "{:?}", e.issues);
        assert_eq!(e.samples[0].labels.len(), 5_000);
        assert_eq!(e.samples[0].label("l4999"), Some("v4999,{}\""));
    }

    #[test]
    fn linear_in_input_size() {
        // 200k series with big label sets parse in well under a second even in debug builds;
        // the check here is only that it completes and counts right (timings are in benches).
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!(
                "vllm:m{{a=\"{i}\",b=\"{}\"}} {i}\n",
                "x".repeat(50)
            ));
        }
        assert_eq!(parse(&text).samples.len(), 20_000);
    }
}
