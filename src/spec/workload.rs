//! Lowering a phase's `workload = { kind = …, … }`: the fields its kind takes (and only those),
//! each checked and named in errors as `phase[i].workload.<field>`.

use super::raw::{CapacityOverKind, ProcessKind, RawWorkload, WorkloadKind};
use super::{Arrival, CapacityOver, Files, Phase, SpecError, Workload};
use crate::core::diag::{Locator, parse_duration};
use std::ops::Range;
use std::time::Duration;

/// A workload after lowering: most kinds are one phase, a sweep is one phase per point.
pub(super) enum Lowered {
    One(Workload),
    Sweep(Vec<(String, Workload)>),
}

/// Checks of one workload's fields, with errors located at the workload.
struct Fields<'a> {
    loc: &'a Locator<'a>,
    field: &'a str,
    span: Range<usize>,
    kind: &'static str,
}

impl Fields<'_> {
    fn err(&self, f: &str, m: impl Into<String>) -> SpecError {
        self.loc.error(
            Some(self.span.clone()),
            format!("{}.{f}", self.field),
            m.into(),
        )
    }

    /// A count the kind needs, at least 1.
    fn require(&self, v: Option<u32>, f: &str) -> Result<u32, SpecError> {
        match v {
            None => Err(self.err(f, format!("workload kind `{}` needs `{f}`", self.kind))),
            Some(0) => Err(self.err(f, "must be at least 1")),
            Some(n) => Ok(n),
        }
    }

    /// An optional count, at least 1 when given.
    fn optional(&self, v: Option<u32>, f: &str) -> Result<Option<u32>, SpecError> {
        match v {
            Some(0) => Err(self.err(f, "must be at least 1")),
            v => Ok(v),
        }
    }

    fn positive(&self, v: f64, f: &str) -> Result<f64, SpecError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.err(f, format!("must be a positive number, not {v}")))
        }
    }

    /// A rate the kind needs, in requests per second.
    fn rate(&self, v: Option<f64>, f: &str) -> Result<f64, SpecError> {
        let v = v.ok_or_else(|| {
            self.err(
                f,
                format!(
                    "workload kind `{}` needs `{f}` (requests per second)",
                    self.kind
                ),
            )
        })?;
        self.positive(v, f)
    }

    fn duration(&self, v: &Option<String>) -> Result<Option<Duration>, SpecError> {
        v.as_deref()
            .map(|d| super::phase::positive_duration(d).map_err(|m| self.err("duration", m)))
            .transpose()
    }

    fn arrival(&self, w: &RawWorkload) -> Result<Arrival, SpecError> {
        match (w.process, w.burstiness) {
            (None, _) => Err(self.err(
                "process",
                format!(
                    "workload kind `{}` needs `process` (constant, poisson or gamma)",
                    self.kind
                ),
            )),
            (Some(ProcessKind::Gamma), Some(b)) => Ok(Arrival::Gamma {
                burstiness: self.positive(b, "burstiness")?,
            }),
            (Some(ProcessKind::Gamma), None) => Err(self.err(
                "burstiness",
                "process `gamma` needs `burstiness` (1 is Poisson, below 1 is burstier)",
            )),
            (Some(_), Some(_)) => {
                Err(self.err("burstiness", "`burstiness` applies to process `gamma` only"))
            }
            (Some(ProcessKind::Constant), None) => Ok(Arrival::Constant),
            (Some(ProcessKind::Poisson), None) => Ok(Arrival::Poisson),
        }
    }
}

pub(super) fn lower_workload(
    loc: &Locator<'_>,
    field: &str,
    span: Range<usize>,
    w: RawWorkload,
    earlier: &[Phase],
    files: &dyn Files,
) -> Result<Lowered, SpecError> {
    let f = Fields {
        loc,
        field,
        span,
        kind: w.kind.name(),
    };
    for name in w.present() {
        if !w.kind.allowed().contains(&name) {
            return Err(f.err(
                name,
                format!(
                    "`{name}` does not apply to workload kind `{}` (it takes {})",
                    f.kind,
                    w.kind.allowed().join(", ")
                ),
            ));
        }
    }
    Ok(Lowered::One(match w.kind {
        WorkloadKind::Single => Workload::Single {
            requests: f.require(w.requests, "requests")?,
            input_tokens: f.require(w.input_tokens, "input_tokens")?,
        },
        WorkloadKind::Concurrent => Workload::Concurrent {
            concurrency: f.require(w.concurrency, "concurrency")?,
            requests: f.require(w.requests, "requests")?,
            input_tokens: f.require(w.input_tokens, "input_tokens")?,
            duration: f.duration(&w.duration)?,
        },
        WorkloadKind::Batch => Workload::Batch {
            batch_size: f.require(w.batch_size, "batch_size")?,
            batches: f.require(w.batches, "batches")?,
            input_tokens: f.require(w.input_tokens, "input_tokens")?,
        },
        WorkloadKind::Rate => rate(&f, &w)?,
        WorkloadKind::Ramp => ramp(&f, &w)?,
        WorkloadKind::Trace => trace(&f, &w, files)?,
        WorkloadKind::MultiTurn | WorkloadKind::Agentic => session(&f, &w)?,
        WorkloadKind::Sweep => return sweep(&f, &w).map(Lowered::Sweep),
        WorkloadKind::SharedPrefix => shared_prefix(&f, &w, earlier)?,
        WorkloadKind::Capacity => capacity(&f, &w)?,
    }))
}

/// The most probes a capacity search may make.
const MAX_PROBES: u32 = 50;

fn capacity(f: &Fields, w: &RawWorkload) -> Result<Workload, SpecError> {
    let over = match w.over {
        None => {
            return Err(f.err(
                "over",
                "workload kind `capacity` needs `over` (`concurrency` or `rate`)",
            ));
        }
        Some(CapacityOverKind::Concurrency) => {
            if w.process.is_some() || w.max_concurrency.is_some() {
                return Err(f.err(
                    "process",
                    "`process` and `max_concurrency` apply to a search over `rate`",
                ));
            }
            CapacityOver::Concurrency
        }
        Some(CapacityOverKind::Rate) => CapacityOver::Rate(f.arrival(w)?),
    };
    let need = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| f.err(name, format!("workload kind `capacity` needs `{name}`")))
            .and_then(|v| f.positive(v, name))
    };
    let (min, max) = (need(w.min, "min")?, need(w.max, "max")?);
    let step = need(w.step, "step")?;
    if max < min {
        return Err(f.err("max", format!("`max` ({max}) is below `min` ({min})")));
    }
    if over == CapacityOver::Concurrency && [min, max, step].iter().any(|v| v.fract() != 0.0) {
        return Err(f.err(
            "step",
            "a search over concurrency takes whole numbers for `min`, `max` and `step`",
        ));
    }
    let max_probes = f.require(w.max_probes, "max_probes")?;
    if max_probes > MAX_PROBES {
        return Err(f.err(
            "max_probes",
            format!("at most {MAX_PROBES} probes, not {max_probes}"),
        ));
    }
    let Some(raw_slo) = w.slo.as_ref().filter(|s| !s.is_empty()) else {
        return Err(f.err(
            "slo",
            "workload kind `capacity` needs `slo`: what each probe must meet, e.g. [\"probe.ttft.p90 <= 500ms\", \"probe.error_rate == 0\"]",
        ));
    };
    let mut slo = Vec::new();
    for (i, expr) in raw_slo.iter().enumerate() {
        let at = |m: String| f.err(&format!("slo[{i}]"), format!("`{expr}`: {m}"));
        let a = crate::core::assert::Assertion::parse(expr)
            .and_then(|a| a.check(&["probe"], &[]).map(|()| a))
            .map_err(|e| at(e.to_string()))?;
        if let Some(p) = a.paths().iter().find(|p| {
            p.phase != "probe" || p.baseline || p.scope != crate::core::catalog::Scope::Client
        }) {
            return Err(at(format!(
                "`{p}`: an SLO reads the probe's own client figures, `probe.<metric>[.<stat>]`"
            )));
        }
        slo.push(a);
    }
    Ok(Workload::Capacity {
        over,
        min,
        max,
        step,
        max_probes,
        requests: f.require(w.requests, "requests")?,
        input_tokens: f.require(w.input_tokens, "input_tokens")?,
        max_concurrency: f.optional(w.max_concurrency, "max_concurrency")?,
        slo,
    })
}

fn rate(f: &Fields, w: &RawWorkload) -> Result<Workload, SpecError> {
    let requests = f.optional(w.requests, "requests")?;
    let duration = f.duration(&w.duration)?;
    if requests.is_none() && duration.is_none() {
        return Err(f.err(
            "requests",
            "an open-loop phase needs `requests`, `duration` or both to end",
        ));
    }
    Ok(Workload::Rate {
        process: f.arrival(w)?,
        rate: f.rate(w.rate, "rate")?,
        requests,
        duration,
        max_concurrency: f.optional(w.max_concurrency, "max_concurrency")?,
        input_tokens: f.require(w.input_tokens, "input_tokens")?,
    })
}

fn ramp(f: &Fields, w: &RawWorkload) -> Result<Workload, SpecError> {
    let Some(duration) = f.duration(&w.duration)? else {
        return Err(f.err("duration", "workload kind `ramp` needs `duration`"));
    };
    Ok(Workload::Ramp {
        from: f.rate(w.from, "from")?,
        to: f.rate(w.to, "to")?,
        duration,
        max_concurrency: f.optional(w.max_concurrency, "max_concurrency")?,
        input_tokens: f.require(w.input_tokens, "input_tokens")?,
    })
}

fn trace(f: &Fields, w: &RawWorkload, files: &dyn Files) -> Result<Workload, SpecError> {
    let Some(file) = w.file.clone() else {
        return Err(f.err("file", "workload kind `trace` needs `file` (a JSONL trace)"));
    };
    let time_scale = f.positive(w.time_scale.unwrap_or(1.0), "time_scale")?;
    let path = files.path(&file);
    let entries = files
        .read(&file)
        .map_err(|e| format!("cannot read trace {path}: {e}"))
        .and_then(|text| super::data::parse_trace(&path, &text))
        .map_err(|m| f.err("file", m))?;
    Ok(Workload::Trace {
        file,
        time_scale,
        max_concurrency: f.optional(w.max_concurrency, "max_concurrency")?,
        entries,
    })
}

fn session(f: &Fields, w: &RawWorkload) -> Result<Workload, SpecError> {
    let think_time = match w.think_time.as_deref() {
        None => Duration::ZERO,
        Some(t) => parse_duration(t).map_err(|m| f.err("think_time", m))?,
    };
    let sessions = f.require(w.sessions, "sessions")?;
    let session_concurrency = f
        .optional(w.session_concurrency, "session_concurrency")?
        .unwrap_or(1);
    let system_tokens = f.optional(w.system_tokens, "system_tokens")?;
    Ok(if w.kind == WorkloadKind::MultiTurn {
        Workload::MultiTurn {
            sessions,
            turns: f.require(w.turns, "turns")?,
            system_tokens,
            first_tokens: f.require(w.first_tokens, "first_tokens")?,
            turn_tokens: f.require(w.turn_tokens, "turn_tokens")?,
            session_concurrency,
            think_time,
        }
    } else {
        Workload::Agentic {
            sessions,
            steps: f.require(w.steps, "steps")?,
            system_tokens,
            task_tokens: f.require(w.task_tokens, "task_tokens")?,
            tool_result_tokens: f.require(w.tool_result_tokens, "tool_result_tokens")?,
            parallel_calls: f.optional(w.parallel_calls, "parallel_calls")?.unwrap_or(1),
            session_concurrency,
            think_time,
        }
    })
}

/// A sweep's points, each a phase of its own: `c<N>` closed loops or `r<rate>` open loops.
fn sweep(f: &Fields, w: &RawWorkload) -> Result<Vec<(String, Workload)>, SpecError> {
    let input_tokens = f.require(w.input_tokens, "input_tokens")?;
    match (&w.concurrencies, &w.rates) {
        (Some(_), Some(_)) => Err(f.err(
            "rates",
            "a sweep takes `concurrencies` or `rates`, not both",
        )),
        (None, None) => Err(f.err(
            "concurrencies",
            "a sweep needs `concurrencies = [...]` or `rates = [...]`",
        )),
        (Some(c), None) => concurrency_sweep(f, w, c, input_tokens),
        (None, Some(r)) => rate_sweep(f, w, r, input_tokens),
    }
}

fn concurrency_sweep(
    f: &Fields,
    w: &RawWorkload,
    concurrencies: &[u32],
    input_tokens: u32,
) -> Result<Vec<(String, Workload)>, SpecError> {
    if concurrencies.is_empty() {
        return Err(f.err(
            "concurrencies",
            "an empty sweep: give at least one concurrency",
        ));
    }
    for (name, present) in [
        ("process", w.process.is_some()),
        ("max_concurrency", w.max_concurrency.is_some()),
    ] {
        if present {
            return Err(f.err(name, format!("`{name}` applies to rate sweeps only")));
        }
    }
    let requests = f.require(w.requests, "requests")?;
    let duration = f.duration(&w.duration)?;
    concurrencies
        .iter()
        .map(|&c| {
            let c = f.require(Some(c), "concurrencies")?;
            Ok((
                format!("c{c}"),
                Workload::Concurrent {
                    concurrency: c,
                    requests,
                    input_tokens,
                    duration,
                },
            ))
        })
        .collect()
}

fn rate_sweep(
    f: &Fields,
    w: &RawWorkload,
    rates: &[f64],
    input_tokens: u32,
) -> Result<Vec<(String, Workload)>, SpecError> {
    if rates.is_empty() {
        return Err(f.err("rates", "an empty sweep: give at least one rate"));
    }
    let requests = f.optional(w.requests, "requests")?;
    let duration = f.duration(&w.duration)?;
    if requests.is_none() && duration.is_none() {
        return Err(f.err(
            "requests",
            "each point of a rate sweep needs `requests`, `duration` or both to end",
        ));
    }
    let process = f.arrival(w)?;
    let max_concurrency = f.optional(w.max_concurrency, "max_concurrency")?;
    rates
        .iter()
        .map(|&rate| {
            let rate = f.positive(rate, "rates")?;
            Ok((
                format!("r{rate}"),
                Workload::Rate {
                    process,
                    rate,
                    requests,
                    duration,
                    max_concurrency,
                    input_tokens,
                },
            ))
        })
        .collect()
}

fn shared_prefix(f: &Fields, w: &RawWorkload, earlier: &[Phase]) -> Result<Workload, SpecError> {
    let concurrency = match w.concurrency {
        None => 1,
        Some(_) => f.require(w.concurrency, "concurrency")?,
    };
    let suffixes = f.require(w.suffixes, "suffixes")?;
    let suffix_tokens = f.require(w.suffix_tokens, "suffix_tokens")?;
    let Some(from) = &w.reuse else {
        return Ok(Workload::SharedPrefix {
            groups: f.require(w.groups, "groups")?,
            prefix_tokens: f.require(w.prefix_tokens, "prefix_tokens")?,
            suffixes,
            suffix_tokens,
            concurrency,
            prefix_from: String::new(),
        });
    };
    let Some(src) = earlier.iter().find(|p| p.name == *from) else {
        return Err(f.err(
            "reuse",
            format!("`reuse = \"{from}\"` must name an earlier phase"),
        ));
    };
    let Workload::SharedPrefix {
        groups,
        prefix_tokens,
        prefix_from,
        ..
    } = &src.workload
    else {
        return Err(f.err(
            "reuse",
            format!("phase `{from}` is not a shared_prefix phase: it has no prefix groups"),
        ));
    };
    for (v, name, known) in [
        (w.groups, "groups", *groups),
        (w.prefix_tokens, "prefix_tokens", *prefix_tokens),
    ] {
        if v.is_some_and(|v| v != known) {
            return Err(f.err(
                name,
                format!(
                    "reused groups come from phase `{from}` ({name} = {known}); omit `{name}` or make it equal"
                ),
            ));
        }
    }
    Ok(Workload::SharedPrefix {
        groups: *groups,
        prefix_tokens: *prefix_tokens,
        suffixes,
        suffix_tokens,
        concurrency,
        prefix_from: prefix_from.clone(),
    })
}
