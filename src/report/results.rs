//! The results directory: `results/<experiment>/<UTC time>-<target>/` with `manifest.json`,
//! `requests.jsonl` (appended as requests complete, by a writer thread of its own),
//! `server_metrics.jsonl`, `summary.json` and `histograms/<phase>/<metric>.hdr` (HdrHistogram
//! V2 + DEFLATE, mergeable). Every JSON object carries `schema_version`.

use super::RESULTS_SCHEMA_VERSION;
use crate::core::metrics::Histograms;
use crate::core::record::RequestRecord;
use crate::core::record::ScrapeRecord;
use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One line of `requests.jsonl`: flat, units in names, times in ms from the run's origin.
#[derive(Debug, Serialize)]
pub struct RequestRow<'a> {
    pub schema_version: u32,
    pub phase: &'a str,
    /// The repeat of the experiment's phases, from 0.
    pub repeat: u32,
    pub index: u32,
    pub warmup: bool,
    pub group: Option<u32>,
    pub session: Option<u32>,
    pub turn: Option<u32>,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub error_detail: Option<&'a str>,
    pub http_status: Option<u16>,
    pub intended_ms: f64,
    pub sent_ms: f64,
    pub headers_ms: Option<f64>,
    pub end_ms: f64,
    pub client_queue_ms: f64,
    pub ttft_ms: Option<f64>,
    pub ttft_scheduled_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub ntpot_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub output_tokens: u64,
    pub cached_tokens: Option<u64>,
    pub usage_reported: bool,
    pub token_counting: crate::core::record::TokenCounting,
    pub output_chunks: usize,
    pub output_chars: u64,
    pub events: u32,
    pub send_attempts: u32,
    /// Each output chunk's arrival, ms after the send.
    pub chunk_offsets_ms: Vec<f64>,
    pub chunk_tokens: Vec<Option<u32>>,
    pub server_cache_n: Option<u64>,
    pub server_prompt_n: Option<u64>,
    pub server_prompt_ms: Option<f64>,
}

impl<'a> RequestRow<'a> {
    pub fn new(r: &'a RequestRecord) -> Self {
        Self {
            schema_version: RESULTS_SCHEMA_VERSION,
            phase: &r.phase,
            repeat: r.repeat,
            index: r.index,
            warmup: r.warmup,
            group: r.group,
            session: r.session,
            turn: r.turn,
            ok: r.ok(),
            error_kind: r.failure.as_ref().map(|f| f.kind.to_string()),
            error_detail: r.failure.as_ref().map(|f| f.detail.as_str()),
            http_status: r.status,
            intended_ms: ms(r.intended),
            sent_ms: ms(r.sent),
            headers_ms: r.headers.map(ms),
            end_ms: ms(r.end),
            client_queue_ms: ms(r.client_queue()),
            ttft_ms: r.ttft().map(ms),
            ttft_scheduled_ms: r.ttft_scheduled().map(ms),
            e2e_ms: r.e2e().map(ms),
            tpot_ms: r.tpot().map(ms),
            ntpot_ms: r.ntpot().map(ms),
            prompt_tokens: r.usage.map(|u| u.prompt_tokens),
            output_tokens: r.output_tokens(),
            cached_tokens: r.usage.and_then(|u| u.cached_tokens),
            usage_reported: r.usage.is_some(),
            token_counting: r.token_counting,
            output_chunks: r.chunks.len(),
            output_chars: r.output_chars,
            events: r.events,
            send_attempts: r.send_attempts,
            chunk_offsets_ms: r
                .chunks
                .iter()
                .map(|c| ms(c.at.saturating_sub(r.sent)))
                .collect(),
            chunk_tokens: r.chunks.iter().map(|c| c.tokens).collect(),
            server_cache_n: r.server_timings.and_then(|t| t.cache_n),
            server_prompt_n: r.server_timings.and_then(|t| t.prompt_n),
            server_prompt_ms: r.server_timings.and_then(|t| t.prompt_ms),
        }
    }
}

fn slice_row(s: &crate::core::slices::Slice) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{Value, json};
    let mut row = serde_json::Map::new();
    let mut put = |k: String, v: Value| {
        row.insert(k, v);
    };
    put("schema_version".into(), json!(RESULTS_SCHEMA_VERSION));
    put("index".into(), json!(s.index));
    put("start_s".into(), json!(s.start_s));
    put("end_s".into(), json!(s.end_s));
    put("phases".into(), json!(s.phases.join(",")));
    put("requests_sent".into(), json!(s.requests_sent));
    put("requests_ended".into(), json!(s.requests_ended));
    put("requests_failed".into(), json!(s.requests_failed));
    put("errors".into(), json!(s.errors.values().sum::<u64>()));
    put("output_tokens".into(), json!(s.output_tokens));
    put("output_throughput".into(), json!(s.output_throughput));
    put("request_throughput".into(), json!(s.request_throughput));
    put("concurrency_mean".into(), json!(s.concurrency_mean));
    for (name, l) in [("ttft", &s.ttft), ("itl", &s.itl), ("e2e", &s.e2e)] {
        put(
            format!("{name}_count"),
            json!(l.as_ref().map_or(0, |l| l.count)),
        );
        put(
            format!("{name}_p50_ms"),
            json!(l.as_ref().map(|l| l.p50_ms)),
        );
        put(
            format!("{name}_p90_ms"),
            json!(l.as_ref().map(|l| l.p90_ms)),
        );
        put(
            format!("{name}_p99_ms"),
            json!(l.as_ref().map(|l| l.p99_ms)),
        );
    }
    for (g, v) in &s.server {
        put(format!("server_{g}_mean"), json!(v.mean));
        put(format!("server_{g}_max"), json!(v.max));
    }
    for (c, v) in &s.server_increase {
        put(format!("server_{c}_increase"), json!(v));
    }
    if let Some(r) = s.prefix_cache_hit_rate {
        put("server_prefix_cache_hit_rate".into(), json!(r));
    }
    row
}

/// One line of `server_metrics.jsonl`: a scrape, its canonical series flattened under `values`.
#[derive(Debug, Serialize)]
struct ScrapeRow<'a> {
    schema_version: u32,
    phase: &'a str,
    point: &'static str,
    at_ms: f64,
    in_phase_ms: f64,
    ok: bool,
    error: Option<&'a str>,
    http_status: Option<u16>,
    malformed_lines: usize,
    values: &'a crate::core::server::Canonical,
}

/// A results directory being written.
pub struct ResultsDir {
    pub path: PathBuf,
    /// Until a [`RequestWriter`] takes it.
    requests: Option<BufWriter<File>>,
    server_metrics: Option<BufWriter<File>>,
}

/// Appends records to `requests.jsonl` on a thread of its own, so serialising and writing
/// never happen on the threads that read sockets. A record is on disk (flushed) as soon as no
/// other record waits behind it: under load several go out in one write.
pub struct RequestWriter {
    tx: Option<std::sync::mpsc::Sender<RequestRecord>>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl RequestWriter {
    fn spawn(mut file: BufWriter<File>) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<RequestRecord>();
        let thread = std::thread::Builder::new()
            .name("inferlab-records".into())
            .spawn(move || {
                let mut errors: Vec<String> = Vec::new();
                let mut note = |r: io::Result<()>| {
                    if let Err(e) = r
                        && errors.len() < 5
                    {
                        errors.push(e.to_string());
                    }
                };
                let write = |f: &mut BufWriter<File>, r: &RequestRecord| -> io::Result<()> {
                    serde_json::to_writer(&mut *f, &RequestRow::new(r))?;
                    f.write_all(b"\n")
                };
                while let Ok(r) = rx.recv() {
                    note(write(&mut file, &r));
                    while let Ok(more) = rx.try_recv() {
                        note(write(&mut file, &more));
                    }
                    note(file.flush());
                }
                errors
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn send(&self, r: RequestRecord) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(r);
        }
    }

    /// Waits until every record sent is written; the first few write errors.
    pub fn finish(mut self) -> Vec<String> {
        self.close()
    }

    fn close(&mut self) -> Vec<String> {
        drop(self.tx.take());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RequestWriter {
    fn drop(&mut self) {
        self.close();
    }
}

impl ResultsDir {
    /// Creates `root/<experiment>/<UTC time>-<target>[-N]/`.
    pub fn create(
        root: &Path,
        experiment: &str,
        target: &str,
        started: SystemTime,
    ) -> io::Result<Self> {
        let parent = root.join(experiment);
        std::fs::create_dir_all(&parent)?;
        let base = format!("{}-{target}", crate::clock::utc_compact(started));
        let mut path = parent.join(&base);
        let mut n = 1;
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    n += 1;
                    path = parent.join(format!("{base}-{n}"));
                }
                Err(e) => return Err(e),
            }
        }
        let requests = BufWriter::new(File::create(path.join("requests.jsonl"))?);
        Ok(Self {
            path,
            requests: Some(requests),
            server_metrics: None,
        })
    }

    /// An existing run's directory, to write its summary (a killed run's, recovered).
    pub fn existing(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            requests: None,
            server_metrics: None,
        }
    }

    /// `slices.jsonl`: one flat line per time slice (latencies as `ttft_p50_ms`, server gauges
    /// as `server_kv_cache_usage_mean`, counters as `server_preemptions_increase`, phases
    /// joined by `,`), for pandas as it is.
    pub fn write_slices(&self, slices: &[crate::core::slices::Slice]) -> io::Result<()> {
        let mut w = BufWriter::new(File::create(self.path.join("slices.jsonl"))?);
        for s in slices {
            serde_json::to_writer(&mut w, &slice_row(s))?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Appends one scrape to `server_metrics.jsonl` (created on first use).
    pub fn append_scrape(&mut self, r: &ScrapeRecord) -> io::Result<()> {
        if self.server_metrics.is_none() {
            self.server_metrics = Some(BufWriter::new(File::create(
                self.path.join("server_metrics.jsonl"),
            )?));
        }
        let Some(w) = self.server_metrics.as_mut() else {
            return Ok(());
        };
        let row = ScrapeRow {
            schema_version: RESULTS_SCHEMA_VERSION,
            phase: &r.phase,
            point: r.point.as_str(),
            at_ms: ms(r.at),
            in_phase_ms: ms(r.in_phase),
            ok: r.error.is_none(),
            error: r.error.as_deref(),
            http_status: r.status,
            malformed_lines: r.issues,
            values: &r.values,
        };
        serde_json::to_writer(&mut *w, &row)?;
        w.write_all(b"\n")?;
        w.flush()
    }

    /// Appends one request and flushes, so the line is on disk when this returns.
    /// The writer of `requests.jsonl` (once).
    pub fn request_writer(&mut self) -> io::Result<RequestWriter> {
        let file = self
            .requests
            .take()
            .ok_or_else(|| io::Error::other("requests.jsonl already has its writer"))?;
        RequestWriter::spawn(file)
    }

    pub fn write_json(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        let tmp = self.path.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, self.path.join(name))
    }

    /// Writes each non-empty histogram as `histograms/<phase>/<metric>.hdr`.
    pub fn write_histograms(&self, phase: &str, hists: &Histograms) -> io::Result<()> {
        let dir = self.path.join("histograms").join(phase);
        std::fs::create_dir_all(&dir)?;
        let mut ser = V2DeflateSerializer::new();
        for (metric, h) in hists {
            if h.is_empty() {
                continue;
            }
            let mut buf = Vec::new();
            ser.serialize(h, &mut buf)
                .map_err(|e| io::Error::other(format!("histogram {phase}/{metric}: {e:?}")))?;
            std::fs::write(dir.join(format!("{metric}.hdr")), buf)?;
        }
        Ok(())
    }
}
