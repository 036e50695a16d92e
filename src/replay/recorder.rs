//! Recording a live run as a fixture: every completed request's capture becomes an exchange as
//! it arrives; at the end the exchanges are put in plan order and the run's `/metrics` answers
//! and GPU samples are kept beside them.

use super::{Exchange, Fixture, FixtureMeta, RecordedGpu, RecordedScrape};
use crate::client::Capture;
use crate::core::privacy::scrub_model_field;
use crate::core::record::RequestRecord;
use crate::core::record::{ScrapeRecord, ScrapeSource};
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;

/// Collects a recording's exchanges while the run goes on.
#[derive(Debug, Default)]
pub struct Recorder {
    exchanges: Vec<Exchange>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Recorder {
    /// Keeps one completed request. A request that never got a response (connect failure,
    /// no headers) cannot be replayed and is left out.
    pub fn add(&mut self, record: &RequestRecord, path: &str, body: Value, capture: &Capture) {
        if let Some(ex) = Exchange::from_capture(&record.phase, record.index, path, body, capture) {
            self.exchanges.push(Exchange {
                repeat: record.repeat,
                ..ex
            });
        }
    }

    /// The fixture: exchanges by repeat, in the order of `phases` (then by index), the scrapes that
    /// kept their text, and the GPU samples. A model that the responses named by its local
    /// path is kept as its file name (done here, after the run, not while it measures).
    pub fn finish(self, meta: FixtureMeta, phases: &[&str], scrapes: &[ScrapeRecord]) -> Fixture {
        let mut exchanges = self.exchanges;
        for ex in &mut exchanges {
            let records = ex
                .events
                .iter_mut()
                .map(|e| &mut e.data)
                .chain(ex.body_text.as_mut());
            for data in records {
                if let Cow::Owned(scrubbed) = scrub_model_field(data) {
                    *data = scrubbed;
                }
            }
        }
        exchanges.sort_by_key(|e| {
            let phase = phases.iter().position(|p| *p == e.phase);
            (e.repeat, phase.unwrap_or(usize::MAX), e.index)
        });
        Fixture {
            meta,
            exchanges,
            gpu: scrapes
                .iter()
                .filter(|r| r.is_gpu())
                .map(|r| RecordedGpu {
                    phase: r.phase.clone(),
                    in_phase_ms: ms(r.in_phase),
                    values: r.values.clone(),
                    error: r.error.clone(),
                })
                .collect(),
            scrapes: scrapes
                .iter()
                .filter(|r| !r.is_gpu())
                .filter_map(|r| {
                    Some(RecordedScrape {
                        phase: r.phase.clone(),
                        point: r.point,
                        in_phase_ms: ms(r.in_phase),
                        status: r.status?,
                        text: r.raw.clone()?,
                    })
                })
                .collect(),
        }
    }
}

impl RecordedGpu {
    /// The sample as a record of its phase (`at` is placed when the phase runs again).
    pub fn to_record(&self) -> ScrapeRecord {
        ScrapeRecord {
            phase: self.phase.clone(),
            point: crate::core::record::Point::Periodic,
            at: Duration::ZERO,
            in_phase: Duration::from_millis(self.in_phase_ms),
            error: self.error.clone(),
            issues: 0,
            values: self.values.clone(),
            raw: None,
            status: None,
            source: ScrapeSource::Gpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Point;
    use crate::core::server::Canonical;

    fn capture(status: Option<u16>) -> Capture {
        Capture {
            status,
            content_type: Some("text/event-stream".into()),
            headers: Some(Duration::from_millis(3)),
            events: Vec::new(),
            body_text: None,
            end: Duration::from_millis(9),
            broken: false,
        }
    }

    fn record(phase: &str, index: u32) -> RequestRecord {
        RequestRecord::dropped(phase, index, None, Duration::ZERO, Duration::ZERO)
    }

    fn meta() -> FixtureMeta {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "source": "recorded", "engine": "llama.cpp",
            "engine_version": null, "model": "m", "recorded_at": "2026-12-02T00:00:00Z",
            "experiment": "e", "target": "t", "seed": 1, "salt": 2, "inferlab_version": "0"
        }))
        .unwrap()
    }

    fn scrape(gpu: bool, raw: Option<&str>) -> ScrapeRecord {
        ScrapeRecord {
            phase: "warm".into(),
            point: Point::End,
            at: Duration::from_millis(50),
            in_phase: Duration::from_millis(40),
            error: None,
            issues: 0,
            values: Canonical::new(),
            raw: raw.map(str::to_string),
            status: Some(200),
            source: if gpu {
                ScrapeSource::Gpu
            } else {
                ScrapeSource::Metrics
            },
        }
    }

    #[test]
    fn exchanges_come_out_in_plan_order_and_unanswered_requests_are_left_out() {
        let mut rec = Recorder::default();
        let c = capture(Some(200));
        rec.add(&record("warm", 1), "/v1/completions", Value::Null, &c);
        rec.add(&record("cold", 0), "/v1/completions", Value::Null, &c);
        rec.add(&record("warm", 0), "/v1/completions", Value::Null, &c);
        rec.add(
            &record("cold", 1),
            "/v1/completions",
            Value::Null,
            &capture(None),
        );
        let scrapes = [
            scrape(false, Some("x 1\n")),
            scrape(false, None),
            scrape(true, None),
        ];
        let f = rec.finish(meta(), &["cold", "warm"], &scrapes);
        let order: Vec<(&str, u32)> = f
            .exchanges
            .iter()
            .map(|e| (e.phase.as_str(), e.index))
            .collect();
        assert_eq!(order, [("cold", 0), ("warm", 0), ("warm", 1)]);
        assert_eq!(f.scrapes.len(), 1, "only scrapes that kept their text");
        assert_eq!(f.scrapes[0].in_phase_ms, 40);
        assert_eq!(f.gpu.len(), 1);
        let back = f.gpu[0].to_record();
        assert_eq!(
            (back.in_phase, back.source),
            (Duration::from_millis(40), ScrapeSource::Gpu)
        );
    }

    #[test]
    fn a_model_named_by_its_local_path_is_kept_as_its_file_name() {
        let mut rec = Recorder::default();
        let mut c = capture(Some(200));
        let data = r#"{"choices":[{"text":"a"}],"model":"/home/alice/models/m.gguf"}"#;
        c.events.push(crate::client::CapturedEvent {
            offset: Duration::from_millis(5),
            event: None,
            data: data.into(),
        });
        c.body_text = Some(r#"{"error":"x","model":"/root/m.gguf"}"#.into());
        rec.add(&record("cold", 0), "/v1/completions", Value::Null, &c);
        let f = rec.finish(meta(), &["cold"], &[]);
        let ex = &f.exchanges[0];
        assert_eq!(
            ex.events[0].data,
            r#"{"choices":[{"text":"a"}],"model":"m.gguf"}"#
        );
        assert_eq!(
            ex.body_text.as_deref(),
            Some(r#"{"error":"x","model":"m.gguf"}"#)
        );
    }
}
