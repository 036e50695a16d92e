//! Reading a run's `requests.jsonl` and `server_metrics.jsonl` back into records and scrapes,
//! for a run that died before writing its summary. A killed writer may leave its last line
//! half-written: that line is counted and skipped; a malformed line anywhere else is an error
//! naming the file, line, column and field.

use crate::core::record::TokenCounting;
use crate::core::record::{ChunkTime, ErrorKind, Failure, RequestRecord, ServerTimings, Usage};
use crate::core::record::{Point, ScrapeRecord, ScrapeSource};
use crate::core::server::Canonical;
use crate::results::ResultsError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

/// One line of `requests.jsonl` as read back (the fields a summary needs).
#[derive(Debug, Deserialize)]
struct RequestIn {
    phase: String,
    #[serde(default)]
    repeat: u32,
    index: u32,
    warmup: bool,
    group: Option<u32>,
    session: Option<u32>,
    turn: Option<u32>,
    error_kind: Option<String>,
    error_detail: Option<String>,
    http_status: Option<u16>,
    intended_ms: f64,
    sent_ms: f64,
    headers_ms: Option<f64>,
    end_ms: f64,
    prompt_tokens: Option<u64>,
    output_tokens: u64,
    cached_tokens: Option<u64>,
    usage_reported: bool,
    token_counting: TokenCounting,
    output_chars: u64,
    events: u32,
    send_attempts: u32,
    chunk_offsets_ms: Vec<f64>,
    chunk_tokens: Vec<Option<u32>>,
    server_cache_n: Option<u64>,
    server_prompt_n: Option<u64>,
    server_prompt_ms: Option<f64>,
}

/// One line of `server_metrics.jsonl` as read back.
#[derive(Debug, Deserialize)]
pub struct ScrapeIn {
    pub phase: String,
    pub point: String,
    /// Milliseconds from the run's start, as written.
    pub at_ms: f64,
    pub in_phase_ms: f64,
    /// Why the scrape failed (`None`: it succeeded).
    pub error: Option<String>,
    pub http_status: Option<u16>,
    pub malformed_lines: usize,
    pub values: Canonical,
}

/// What a file gave back.
#[derive(Debug)]
pub struct ReadBack<T> {
    pub items: Vec<T>,
    /// The last line, cut short when the run died (`None` when the file ends cleanly).
    pub partial_last_line: Option<usize>,
}

fn ms(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0) / 1e3).unwrap_or_default()
}

/// Reads a JSON-lines file, each item with its line number (from 1); a line that is not the
/// last must be whole.
fn read_lines<T: DeserializeOwned>(path: &Path) -> Result<ReadBack<(usize, T)>, ResultsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let ends_cleanly = text.ends_with('\n');
    let mut out = ReadBack {
        items: Vec::with_capacity(lines.len()),
        partial_last_line: None,
    };
    for (k, &(i, line)) in lines.iter().enumerate() {
        let de = &mut serde_json::Deserializer::from_str(line);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => out.items.push((i + 1, v)),
            Err(e) if k + 1 == lines.len() && (!ends_cleanly || e.inner().is_eof()) => {
                out.partial_last_line = Some(i + 1);
            }
            Err(e) => {
                let field = e.path().to_string();
                let inner = e.into_inner();
                return Err(ResultsError::Malformed {
                    path: path.to_path_buf(),
                    line: i + 1,
                    column: inner.column(),
                    field,
                    message: inner.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// A value of line `line` that parsed but means nothing here.
fn bad_field(path: &Path, line: usize, field: &str, message: String) -> ResultsError {
    ResultsError::Malformed {
        path: path.to_path_buf(),
        line,
        column: 1,
        field: field.into(),
        message,
    }
}

impl RequestIn {
    fn record(self, path: &Path, line: usize) -> Result<RequestRecord, ResultsError> {
        let failure = match self.error_kind {
            None => None,
            Some(k) => Some(Failure {
                kind: k
                    .parse::<ErrorKind>()
                    .map_err(|e| bad_field(path, line, "error_kind", e))?,
                detail: self.error_detail.unwrap_or_default(),
            }),
        };
        let sent = ms(self.sent_ms);
        let chunks = self
            .chunk_offsets_ms
            .iter()
            .enumerate()
            .map(|(i, &o)| ChunkTime {
                at: sent + ms(o),
                tokens: self.chunk_tokens.get(i).copied().flatten(),
            })
            .collect();
        let server_timings = (self.server_cache_n.is_some()
            || self.server_prompt_n.is_some()
            || self.server_prompt_ms.is_some())
        .then_some(ServerTimings {
            cache_n: self.server_cache_n,
            prompt_n: self.server_prompt_n,
            prompt_ms: self.server_prompt_ms,
            predicted_n: None,
            predicted_ms: None,
        });
        Ok(RequestRecord {
            phase: self.phase,
            repeat: self.repeat,
            index: self.index,
            warmup: self.warmup,
            group: self.group,
            intended: ms(self.intended_ms),
            sent,
            headers: self.headers_ms.map(ms),
            status: self.http_status,
            chunks,
            end: ms(self.end_ms),
            usage: self.usage_reported.then_some(Usage {
                prompt_tokens: self.prompt_tokens.unwrap_or(0),
                completion_tokens: self.output_tokens,
                cached_tokens: self.cached_tokens,
            }),
            token_counting: self.token_counting,
            output_chars: self.output_chars,
            events: self.events,
            server_timings,
            failure,
            session: self.session,
            turn: self.turn,
            output_text: None,
            send_attempts: self.send_attempts,
            declared_input_tokens: None,
            max_tokens: None,
        })
    }
}

/// The records of a run's `requests.jsonl`.
pub fn read_requests(path: &Path) -> Result<ReadBack<RequestRecord>, ResultsError> {
    let raw: ReadBack<(usize, RequestIn)> = read_lines(path)?;
    let items = raw
        .items
        .into_iter()
        .map(|(line, r)| r.record(path, line))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ReadBack {
        items,
        partial_last_line: raw.partial_last_line,
    })
}

/// The lines of a run's `server_metrics.jsonl` as written; an absent file has none.
pub fn read_scrape_lines(path: &Path) -> Result<ReadBack<ScrapeIn>, ResultsError> {
    let raw = numbered_scrapes(path)?;
    Ok(ReadBack {
        items: raw.items.into_iter().map(|(_, s)| s).collect(),
        partial_last_line: raw.partial_last_line,
    })
}

fn numbered_scrapes(path: &Path) -> Result<ReadBack<(usize, ScrapeIn)>, ResultsError> {
    if !path.is_file() {
        return Ok(ReadBack {
            items: Vec::new(),
            partial_last_line: None,
        });
    }
    read_lines(path)
}

/// The scrapes of a run's `server_metrics.jsonl`; an absent file has none.
pub fn read_scrapes(path: &Path) -> Result<ReadBack<ScrapeRecord>, ResultsError> {
    let raw = numbered_scrapes(path)?;
    let items = raw
        .items
        .into_iter()
        .map(|(line, s)| {
            let point = Point::parse(&s.point).ok_or_else(|| {
                let why = format!("`{}` is not start, periodic or end", s.point);
                bad_field(path, line, "point", why)
            })?;
            // GPU samples are written beside the scrapes; their series are all `gpu_*`.
            let source = if !s.values.is_empty() && s.values.keys().all(|k| k.starts_with("gpu_")) {
                ScrapeSource::Gpu
            } else {
                ScrapeSource::Metrics
            };
            Ok(ScrapeRecord {
                phase: s.phase,
                point,
                at: ms(s.at_ms),
                in_phase: ms(s.in_phase_ms),
                error: s.error,
                issues: s.malformed_lines,
                values: s.values,
                raw: None,
                status: s.http_status,
                source,
            })
        })
        .collect::<Result<Vec<_>, ResultsError>>()?;
    Ok(ReadBack {
        items,
        partial_last_line: raw.partial_last_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::RequestRecord;
    use crate::report::RequestRow;

    #[test]
    fn a_written_row_reads_back_as_the_same_figures_and_a_cut_last_line_is_skipped() {
        let mut r = RequestRecord::dropped("steady", 3, Some(1), ms(10.0), ms(10.5));
        r.failure = None;
        r.chunks = vec![
            ChunkTime {
                at: ms(30.0),
                tokens: Some(1),
            },
            ChunkTime {
                at: ms(34.0),
                tokens: Some(2),
            },
        ];
        r.end = ms(35.0);
        r.token_counting = TokenCounting::Exact;
        r.usage = Some(Usage {
            prompt_tokens: 8,
            completion_tokens: 3,
            cached_tokens: Some(4),
        });
        let line = serde_json::to_string(&RequestRow::new(&r)).unwrap();
        let dir = std::env::temp_dir().join(format!("inferlab-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("requests.jsonl");
        let cut = &line[..line.len() / 2];
        std::fs::write(&path, format!("{line}\n{line}\n{cut}")).unwrap();
        let back = read_requests(&path).unwrap();
        assert_eq!(back.items.len(), 2);
        assert_eq!(back.partial_last_line, Some(3));
        let b = &back.items[0];
        let close = |a: Option<Duration>, b: Option<Duration>| {
            (a.unwrap().as_secs_f64() - b.unwrap().as_secs_f64()).abs() < 1e-9
        };
        assert!(close(b.ttft(), r.ttft()));
        assert!(close(b.tpot(), r.tpot()));
        assert_eq!(b.output_tokens(), 3);
        assert_eq!(b.usage, r.usage);
        // A broken line that is not the last is an error with its place.
        std::fs::write(&path, format!("{cut}\n{line}\n")).unwrap();
        let err = read_requests(&path).unwrap_err().to_string();
        assert!(err.contains("requests.jsonl:1:"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
