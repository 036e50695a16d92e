//! The experiment as results files describe it: its own shapes, separate from the domain
//! types, with units in the field names (`duration_s`, `think_time_s`, `rate_per_s`), so a
//! change to the model does not silently change a file and a reader never guesses a unit.

use crate::core::metrics::Slo;
use crate::spec::{
    Arrival, CapacityOver, DatasetFormat, Experiment, LengthDist, Phase, RequestShape,
    SnapshotOptions, TargetSpec, Timeouts, Workload,
};
use serde::Serialize;
use std::time::Duration;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// An experiment, resolved (sweeps expanded), as `manifest.json` holds it.
#[derive(Debug, Serialize)]
pub struct ExperimentDto<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub seed: u64,
    pub targets: &'a [TargetSpec],
    pub model: &'a str,
    /// The tokenizer file, as written in the experiment.
    pub tokenizer: Option<&'a str>,
    pub timeouts: TimeoutsDto,
    pub phases: Vec<PhaseDto<'a>>,
    pub slo: &'a Slo,
    pub assertions: Vec<AssertionDto<'a>>,
    pub snapshot: &'a SnapshotOptions,
    pub observe: ObserveDto,
    pub calibrate: bool,
}

impl<'a> ExperimentDto<'a> {
    pub fn of(e: &'a Experiment) -> Self {
        Self {
            name: &e.name,
            description: &e.description,
            seed: e.seed,
            targets: &e.targets,
            model: &e.model,
            tokenizer: e.tokenizer.as_ref().map(|t| t.file.as_str()),
            timeouts: TimeoutsDto::of(&e.timeouts),
            phases: e.phases.iter().map(PhaseDto::of).collect(),
            slo: &e.slo,
            assertions: e
                .assertions
                .iter()
                .map(|a| AssertionDto {
                    expr: &a.source,
                    targets: &a.targets,
                })
                .collect(),
            snapshot: &e.snapshot,
            observe: ObserveDto {
                metrics: e.observe.metrics,
                interval_s: secs(e.observe.interval),
                slice_s: e.observe.slice.map(secs),
            },
            calibrate: e.calibrate,
        }
    }
}

/// An assertion and the targets it is checked on (absent: all).
#[derive(Debug, Serialize)]
pub struct AssertionDto<'a> {
    pub expr: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub targets: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct TimeoutsDto {
    pub connect_s: f64,
    pub first_byte_s: f64,
    pub idle_s: f64,
    pub total_s: f64,
}

impl TimeoutsDto {
    fn of(t: &Timeouts) -> Self {
        Self {
            connect_s: secs(t.connect),
            first_byte_s: secs(t.first_byte),
            idle_s: secs(t.idle),
            total_s: secs(t.total),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ObserveDto {
    pub metrics: bool,
    pub interval_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct PhaseDto<'a> {
    pub name: &'a str,
    pub workload: WorkloadDto,
    pub request: &'a RequestShape,
    pub warmup: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_duration_s: Option<f64>,
    pub input_lengths: Option<&'a LengthDist>,
    pub output_lengths: Option<&'a LengthDist>,
    pub dataset: Option<DatasetDto<'a>>,
}

impl<'a> PhaseDto<'a> {
    pub fn of(p: &'a Phase) -> Self {
        Self {
            name: &p.name,
            workload: WorkloadDto::of(&p.workload),
            request: &p.request,
            warmup: p.warmup,
            warmup_duration_s: p.warmup_duration.map(secs),
            input_lengths: p.input_lengths.as_ref(),
            output_lengths: p.output_lengths.as_ref(),
            dataset: p.dataset.as_ref().map(|d| DatasetDto {
                file: &d.file,
                format: d.format,
                prompts: d.prompts.len(),
            }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DatasetDto<'a> {
    pub file: &'a str,
    pub format: DatasetFormat,
    /// How many prompts it holds.
    pub prompts: usize,
}

/// A workload with its durations in seconds and its rates per second.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkloadDto {
    Single {
        requests: u32,
        input_tokens: u32,
    },
    Concurrent {
        concurrency: u32,
        requests: u32,
        input_tokens: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_s: Option<f64>,
    },
    SharedPrefix {
        groups: u32,
        prefix_tokens: u32,
        suffixes: u32,
        suffix_tokens: u32,
        concurrency: u32,
        prefix_from: String,
    },
    Batch {
        batch_size: u32,
        batches: u32,
        input_tokens: u32,
    },
    Rate {
        process: Arrival,
        rate_per_s: f64,
        requests: Option<u32>,
        duration_s: Option<f64>,
        max_concurrency: Option<u32>,
        input_tokens: u32,
    },
    MultiTurn {
        sessions: u32,
        turns: u32,
        system_tokens: Option<u32>,
        first_tokens: u32,
        turn_tokens: u32,
        session_concurrency: u32,
        think_time_s: f64,
    },
    Agentic {
        sessions: u32,
        steps: u32,
        system_tokens: Option<u32>,
        task_tokens: u32,
        tool_result_tokens: u32,
        parallel_calls: u32,
        session_concurrency: u32,
        think_time_s: f64,
    },
    Trace {
        file: String,
        time_scale: f64,
        max_concurrency: Option<u32>,
        /// How many requests the trace holds.
        entries: usize,
    },
    Ramp {
        from_per_s: f64,
        to_per_s: f64,
        duration_s: f64,
        max_concurrency: Option<u32>,
        input_tokens: u32,
    },
    Capacity {
        /// `concurrency` or `rate` (requests per second).
        over: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        process: Option<Arrival>,
        min: f64,
        max: f64,
        step: f64,
        max_probes: u32,
        requests_per_probe: u32,
        input_tokens: u32,
        max_concurrency: Option<u32>,
        slo: Vec<String>,
    },
}

impl WorkloadDto {
    /// One arm per kind, field by field: a mapping with no logic of its own, kept exhaustive
    /// so that a new workload kind cannot compile without its on-disk shape.
    // Long because it is one arm per workload kind; splitting it would hide that it is whole.
    #[allow(clippy::too_many_lines)]
    pub fn of(w: &Workload) -> Self {
        match *w {
            Workload::Single {
                requests,
                input_tokens,
            } => Self::Single {
                requests,
                input_tokens,
            },
            Workload::Concurrent {
                concurrency,
                requests,
                input_tokens,
                duration,
            } => Self::Concurrent {
                concurrency,
                requests,
                input_tokens,
                duration_s: duration.map(secs),
            },
            Workload::SharedPrefix {
                groups,
                prefix_tokens,
                suffixes,
                suffix_tokens,
                concurrency,
                ref prefix_from,
            } => Self::SharedPrefix {
                groups,
                prefix_tokens,
                suffixes,
                suffix_tokens,
                concurrency,
                prefix_from: prefix_from.clone(),
            },
            Workload::Batch {
                batch_size,
                batches,
                input_tokens,
            } => Self::Batch {
                batch_size,
                batches,
                input_tokens,
            },
            Workload::Rate {
                process,
                rate,
                requests,
                duration,
                max_concurrency,
                input_tokens,
            } => Self::Rate {
                process,
                rate_per_s: rate,
                requests,
                duration_s: duration.map(secs),
                max_concurrency,
                input_tokens,
            },
            Workload::Trace {
                ref file,
                time_scale,
                max_concurrency,
                ref entries,
            } => Self::Trace {
                file: file.clone(),
                time_scale,
                max_concurrency,
                entries: entries.len(),
            },
            Workload::Capacity {
                over,
                min,
                max,
                step,
                max_probes,
                requests,
                input_tokens,
                max_concurrency,
                ref slo,
            } => Self::Capacity {
                over: match over {
                    CapacityOver::Concurrency => "concurrency",
                    CapacityOver::Rate(_) => "rate",
                },
                process: match over {
                    CapacityOver::Concurrency => None,
                    CapacityOver::Rate(p) => Some(p),
                },
                min,
                max,
                step,
                max_probes,
                requests_per_probe: requests,
                input_tokens,
                max_concurrency,
                slo: slo.iter().map(|a| a.source.clone()).collect(),
            },
            Workload::Ramp {
                from,
                to,
                duration,
                max_concurrency,
                input_tokens,
            } => Self::Ramp {
                from_per_s: from,
                to_per_s: to,
                duration_s: secs(duration),
                max_concurrency,
                input_tokens,
            },
            Workload::MultiTurn {
                sessions,
                turns,
                system_tokens,
                first_tokens,
                turn_tokens,
                session_concurrency,
                think_time,
            } => Self::MultiTurn {
                sessions,
                turns,
                system_tokens,
                first_tokens,
                turn_tokens,
                session_concurrency,
                think_time_s: secs(think_time),
            },
            Workload::Agentic {
                sessions,
                steps,
                system_tokens,
                task_tokens,
                tool_result_tokens,
                parallel_calls,
                session_concurrency,
                think_time,
            } => Self::Agentic {
                sessions,
                steps,
                system_tokens,
                task_tokens,
                tool_result_tokens,
                parallel_calls,
                session_concurrency,
                think_time_s: secs(think_time),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_carry_their_units() {
        let w = Workload::MultiTurn {
            sessions: 2,
            turns: 3,
            system_tokens: None,
            first_tokens: 10,
            turn_tokens: 5,
            session_concurrency: 1,
            think_time: Duration::from_millis(250),
        };
        let v = serde_json::to_value(WorkloadDto::of(&w)).unwrap();
        assert_eq!(v["kind"], "multi_turn");
        assert_eq!(v["think_time_s"], 0.25);
        assert!(v.get("think_time").is_none());
        let r = Workload::Ramp {
            from: 1.0,
            to: 4.0,
            duration: Duration::from_secs(8),
            max_concurrency: None,
            input_tokens: 16,
        };
        let v = serde_json::to_value(WorkloadDto::of(&r)).unwrap();
        assert_eq!(
            (v["from_per_s"].as_f64(), v["duration_s"].as_f64()),
            (Some(1.0), Some(8.0))
        );
    }
}
