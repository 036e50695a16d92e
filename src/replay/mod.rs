//! Recorded exchanges: the fixture format, writing it from a live run, and a replay server that
//! streams each recorded SSE record at its recorded offset.
//!
//! A fixture lives in `wiremock-fixtures/<experiment>/<target>/`: `meta.json` (where it came
//! from: `recorded` from which engine and version, or `synthetic`) and `exchanges.jsonl` (one
//! request/response per line). The replay server is an axum server on `127.0.0.1:0` with
//! TCP_NODELAY (wiremock cannot pace a body). It matches each incoming request to a recorded
//! exchange by its exact JSON body; an unmatched request gets a 404 and is remembered, so the
//! trial fails with a message that says the experiment no longer matches its recording.

mod recorder;
mod server;

pub use recorder::Recorder;
pub use server::ReplayServer;

use crate::client::Capture;
use crate::core::record::Point;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const FIXTURE_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Captured from a real server.
    Recorded,
    /// Produced by a program (timings are invented, not measured).
    Synthetic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureMeta {
    pub schema_version: u32,
    pub source: Source,
    /// `llama.cpp`, `vLLM`, `SGLang`, …, or the program that made a synthetic fixture.
    pub engine: String,
    pub engine_version: Option<String>,
    /// The server's cache and parallelism configuration, as it reported it.
    #[serde(default)]
    pub server_config: Option<Value>,
    /// Whether the recorded prompts had exactly their declared token lengths.
    #[serde(default)]
    pub prompt_lengths: Option<String>,
    /// The model name the requests carried.
    pub model: String,
    /// What the model is (parameters, quantisation, how it was made), free-form.
    #[serde(default)]
    pub model_details: Option<Value>,
    /// UTC, RFC 3339.
    pub recorded_at: String,
    pub experiment: String,
    pub target: String,
    pub seed: u64,
    /// The prompt salt of the recorded run; replay uses it to regenerate identical requests.
    pub salt: u64,
    pub inferlab_version: String,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEvent {
    /// Offset from the request's send, µs.
    pub offset_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub phase: String,
    /// The repeat of the experiment's phases it was recorded in (absent: 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeat: u32,
    pub index: u32,
    pub path: String,
    pub body: Value,
    pub status: u16,
    pub content_type: Option<String>,
    /// Response headers' offset from the request's send, µs.
    pub headers_offset_us: u64,
    #[serde(default)]
    pub events: Vec<FixtureEvent>,
    /// A non-stream body (error statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_text: Option<String>,
    pub end_offset_us: u64,
    /// The connection broke (reset or stall) instead of ending cleanly.
    #[serde(default)]
    pub broken: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Exchange {
    /// Turns a client capture into an exchange; `None` when no response ever came (connect
    /// failure, no headers), which cannot be replayed.
    pub fn from_capture(
        phase: &str,
        index: u32,
        path: &str,
        body: Value,
        c: &Capture,
    ) -> Option<Self> {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Some(Self {
            repeat: 0,
            phase: phase.to_string(),
            index,
            path: path.to_string(),
            body,
            status: c.status?,
            content_type: c.content_type.clone(),
            headers_offset_us: us(c.headers?),
            events: c
                .events
                .iter()
                .map(|e| FixtureEvent {
                    offset_us: us(e.offset),
                    event: e.event.clone(),
                    data: e.data.clone(),
                })
                .collect(),
            body_text: c.body_text.clone(),
            end_offset_us: us(c.end),
            broken: c.broken,
        })
    }
}

/// A recorded `/metrics` answer, for replaying the server side of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedScrape {
    pub phase: String,
    pub point: Point,
    /// Offset from the phase's start, ms.
    pub in_phase_ms: u64,
    pub status: u16,
    /// The exposition, reduced to the families inferlab reads.
    pub text: String,
}

/// A recorded GPU sample (replayed as data: GPU telemetry has no endpoint to pace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedGpu {
    pub phase: String,
    pub in_phase_ms: u64,
    pub values: crate::core::server::Canonical,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fixture {
    pub meta: FixtureMeta,
    pub exchanges: Vec<Exchange>,
    /// `scrapes.jsonl`; empty when the recording had no server metrics.
    pub scrapes: Vec<RecordedScrape>,
    /// `gpu_samples.jsonl`; empty when the recording had no GPU telemetry.
    pub gpu: Vec<RecordedGpu>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// `wiremock-fixtures/<experiment>/<target>`.
pub fn fixture_dir(root: &Path, experiment: &str, target: &str) -> PathBuf {
    root.join(experiment).join(target)
}

impl Fixture {
    pub fn exists(dir: &Path) -> bool {
        dir.join("meta.json").is_file() && dir.join("exchanges.jsonl").is_file()
    }

    pub fn load(dir: &Path) -> Result<Self, FixtureError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FixtureError::Io { path, source }
        };
        let meta_path = dir.join("meta.json");
        let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
        let meta: FixtureMeta = serde_json::from_str(&text).map_err(|e| FixtureError::Invalid {
            path: meta_path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if meta.schema_version != FIXTURE_SCHEMA_VERSION {
            return Err(FixtureError::Invalid {
                path: meta_path,
                line: 1,
                message: format!("unsupported fixture schema version {}", meta.schema_version),
            });
        }
        let exchanges = read_jsonl(&dir.join("exchanges.jsonl"))?;
        let scrapes_path = dir.join("scrapes.jsonl");
        let scrapes = if scrapes_path.is_file() {
            read_jsonl(&scrapes_path)?
        } else {
            Vec::new()
        };
        let gpu_path = dir.join("gpu_samples.jsonl");
        let gpu = if gpu_path.is_file() {
            read_jsonl(&gpu_path)?
        } else {
            Vec::new()
        };
        Ok(Self {
            meta,
            exchanges,
            scrapes,
            gpu,
        })
    }

    /// Writes the fixture, replacing any previous one in `dir` (written to temporary files first
    /// so a failure never leaves half a fixture).
    pub fn write(&self, dir: &Path) -> Result<(), FixtureError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FixtureError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let meta_tmp = dir.join("meta.json.tmp");
        let mut meta = serde_json::to_string_pretty(&self.meta).expect("fixture meta serialises");
        meta.push('\n');
        std::fs::write(&meta_tmp, meta).map_err(io(&meta_tmp))?;
        let ex_tmp = dir.join("exchanges.jsonl.tmp");
        write_jsonl(&ex_tmp, &self.exchanges)?;
        let scrapes_tmp = dir.join("scrapes.jsonl.tmp");
        if !self.scrapes.is_empty() {
            write_jsonl(&scrapes_tmp, &self.scrapes)?;
        }
        std::fs::rename(&meta_tmp, dir.join("meta.json")).map_err(io(dir))?;
        std::fs::rename(&ex_tmp, dir.join("exchanges.jsonl")).map_err(io(dir))?;
        if self.scrapes.is_empty() {
            let _ = std::fs::remove_file(dir.join("scrapes.jsonl"));
        } else {
            std::fs::rename(&scrapes_tmp, dir.join("scrapes.jsonl")).map_err(io(dir))?;
        }
        if self.gpu.is_empty() {
            let _ = std::fs::remove_file(dir.join("gpu_samples.jsonl"));
        } else {
            write_jsonl(&dir.join("gpu_samples.jsonl"), &self.gpu)?;
        }
        Ok(())
    }
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, FixtureError> {
    let io = |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| FixtureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| FixtureError::Invalid {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<(), FixtureError> {
    let io = |source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for item in items {
        let line = serde_json::to_string(item).expect("fixture records serialise");
        writeln!(f, "{line}").map_err(|source| FixtureError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    f.flush().map_err(|source| FixtureError::Io {
        path: path.to_path_buf(),
        source,
    })
}
