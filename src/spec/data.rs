//! The files an experiment names, parsed from their text: prompt datasets (ShareGPT, JSONL)
//! and request traces (JSONL). Reading them is `spec_io`'s; errors here name the file and
//! the line.

use super::{DatasetFormat, TraceEntry};
use serde::Deserialize;

#[derive(Deserialize)]
struct ShareGptEntry {
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlPrompt {
    prompt: String,
}

/// Parses a prompt dataset read from `path`; errors name the file and the line (JSONL) or
/// entry (ShareGPT).
pub(super) fn parse_dataset(
    path: &str,
    text: &str,
    format: DatasetFormat,
) -> Result<Vec<String>, String> {
    let prompts: Vec<String> = match format {
        DatasetFormat::Jsonl => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let p: JsonlPrompt =
                    serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path, i + 1))?;
                out.push(p.prompt);
            }
            out
        }
        DatasetFormat::Sharegpt => {
            let de = &mut serde_json::Deserializer::from_str(text);
            let entries: Vec<ShareGptEntry> = serde_path_to_error::deserialize(de)
                .map_err(|e| format!("{}: {}: {} (expected a ShareGPT array of {{\"conversations\": [{{\"from\", \"value\"}}]}})", path, e.path(), e.inner()))?;
            entries
                .into_iter()
                .filter_map(|e| {
                    e.conversations
                        .into_iter()
                        .find(|t| t.from == "human")
                        .map(|t| t.value)
                })
                .filter(|p| !p.trim().is_empty())
                .collect()
        }
    };
    if prompts.is_empty() {
        return Err(format!("dataset {} has no prompts", path));
    }
    Ok(prompts)
}

/// Parses a JSONL trace read from `path`; errors name the file, the line and the field.
pub(super) fn parse_trace(path: &str, text: &str) -> Result<Vec<TraceEntry>, String> {
    let mut out: Vec<TraceEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| format!("{}:{}: {m}", path, i + 1);
        let e: TraceEntry = serde_json::from_str(line).map_err(|e| at(format!("{e}")))?;
        if !e.timestamp.is_finite() || e.timestamp < 0.0 {
            return Err(at(format!(
                "timestamp: {} is not a non-negative number of seconds",
                e.timestamp
            )));
        }
        if let Some(prev) = out.last()
            && e.timestamp < prev.timestamp
        {
            return Err(at(format!(
                "timestamp: {} comes before the previous line's {} (traces must be sorted)",
                e.timestamp, prev.timestamp
            )));
        }
        if e.input_length == 0 || e.output_length == 0 {
            return Err(at(
                "input_length and output_length must be at least 1".to_string()
            ));
        }
        if e.prefix_length.is_some_and(|p| p > e.input_length) {
            return Err(at("prefix_length: longer than input_length".to_string()));
        }
        out.push(e);
    }
    if out.is_empty() {
        return Err(format!("trace {} has no entries", path));
    }
    Ok(out)
}
