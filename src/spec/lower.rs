//! Lowering an experiment: the header, targets, timeouts, SLO, phases (`phase`), assertions,
//! observation, the tokenizer, and the rule that serverless phases start with a warmup.

use super::raw::{RawAssert, RawExperiment, RawObserve, RawSlo, RawTarget, RawTimeouts};
use super::{
    Api, Experiment, Files, Observe, Phase, SCHEMA_VERSION, SnapshotOptions, SpecError, TargetSpec,
    Timeouts, is_identifier,
};
use crate::core::assert::Assertion;
use crate::core::catalog::Mode;
use crate::core::diag::{Locator, parse_duration};
use crate::core::engine::TargetKind;
use crate::core::metrics::Slo;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

pub(super) fn lower(
    loc: &Locator<'_>,
    name: &str,
    raw: RawExperiment,
    files: &dyn Files,
) -> Result<Experiment, SpecError> {
    check_header(loc, name, &raw.schema_version)?;
    let targets = lower_targets(loc, raw.targets)?;
    let timeouts = lower_timeouts(loc, raw.timeouts)?;
    let slo = lower_slo(loc, raw.slo)?;
    let (phases, phase_spans) = super::phase::lower_phases(loc, raw.phase, files)?;
    let assertions = lower_assertions(loc, raw.assertions, &phases, &slo, &targets)?;
    let observe = lower_observe(loc, raw.observe)?;
    let tokenizer = match &raw.model.tokenizer {
        None => None,
        Some(t) => Some(
            files
                .tokenizer(t.get_ref())
                .map_err(|e| loc.error(Some(t.span()), "model.tokenizer", e.to_string()))?,
        ),
    };
    let repeats = lower_repeats(loc, raw.repeats.as_ref())?;
    if repeats > 1
        && phases
            .iter()
            .any(|p| matches!(p.workload, super::Workload::Capacity { .. }))
    {
        return Err(loc.error(
            raw.repeats.as_ref().map(|r| r.span()),
            "repeats",
            "a capacity search picks its probes from what it measures, so its repeats would not correspond: run it without `repeats`",
        ));
    }
    if raw.strict && repeats < 2 {
        return Err(loc.error(
            None,
            "strict",
            "`strict` decides inconclusive verdicts, which need intervals: set `repeats` to 2 or more",
        ));
    }
    check_serverless_warmups(loc, &targets, &phases, &phase_spans)?;
    check_native_api(loc, &targets, &phases, &phase_spans)?;
    Ok(Experiment {
        name: name.to_string(),
        description: raw.description,
        seed: raw.seed,
        targets,
        model: raw.model.name,
        tokenizer,
        timeouts,
        phases,
        slo,
        assertions,
        snapshot: SnapshotOptions {
            enabled: raw.snapshot.enabled,
            cached_tokens: raw.snapshot.cached_tokens,
        },
        observe,
        calibrate: raw.calibrate,
        repeats,
        strict: raw.strict,
    })
}

/// The most repeats an experiment may ask for.
const MAX_REPEATS: u32 = 100;

fn lower_repeats(loc: &Locator<'_>, raw: Option<&Spanned<u32>>) -> Result<u32, SpecError> {
    let Some(r) = raw else {
        return Ok(1);
    };
    let n = *r.get_ref();
    if n == 0 || n > MAX_REPEATS {
        return Err(loc.error(
            Some(r.span()),
            "repeats",
            format!("repeats must be 1 to {MAX_REPEATS} (2 or more give intervals), not {n}"),
        ));
    }
    Ok(n)
}

fn check_header(loc: &Locator<'_>, name: &str, version: &Spanned<u32>) -> Result<(), SpecError> {
    if *version.get_ref() != SCHEMA_VERSION {
        return Err(loc.error(
            Some(version.span()),
            "schema_version",
            format!(
                "unsupported schema version {} (this inferlab reads {SCHEMA_VERSION})",
                version.get_ref()
            ),
        ));
    }
    if !is_identifier(name) {
        return Err(loc.error(
            None,
            "(file name)",
            format!("experiment name `{name}` (the file stem) must be letters, digits, `_` or `-`, starting with a letter"),
        ));
    }
    Ok(())
}

fn lower_targets(
    loc: &Locator<'_>,
    raw: Spanned<BTreeMap<String, Spanned<RawTarget>>>,
) -> Result<Vec<TargetSpec>, SpecError> {
    let targets_span = raw.span();
    let mut targets = Vec::new();
    for (tname, t) in raw.into_inner() {
        let span = t.span();
        let t = t.into_inner();
        let field = format!("targets.{tname}");
        if !is_identifier(&tname) {
            return Err(loc.error(
                Some(span),
                field,
                "target names must be letters, digits, `_` or `-`",
            ));
        }
        if tname == "baseline" {
            return Err(loc.error(
                Some(span),
                field,
                "`baseline` is reserved: in assertions it names the committed baseline",
            ));
        }
        let Some(kind) = t.kind.or_else(|| TargetKind::from_name(&tname)) else {
            return Err(loc.error(
                Some(span),
                format!("{field}.kind"),
                format!("target `{tname}` needs a kind (one of vllm, sglang, llamacpp, openai, runpod_serverless); only targets named vllm, sglang or llamacpp get theirs from the name"),
            ));
        };
        targets.push(TargetSpec {
            name: tname,
            kind,
            continuous_usage_stats: t
                .continuous_usage_stats
                .unwrap_or(kind.supports_continuous_usage()),
        });
    }
    if targets.is_empty() {
        return Err(loc.error(
            Some(targets_span),
            "targets",
            "at least one target is needed, e.g. `[targets.llamacpp]`",
        ));
    }
    Ok(targets)
}

/// SGLang's native `/generate` exists only on SGLang: a phase that uses it needs every target of
/// the experiment to be one.
fn check_native_api(
    loc: &Locator<'_>,
    targets: &[TargetSpec],
    phases: &[Phase],
    spans: &[Range<usize>],
) -> Result<(), SpecError> {
    let Some(i) = phases.iter().position(|p| p.request.api == Api::Generate) else {
        return Ok(());
    };
    match targets.iter().find(|t| t.kind != TargetKind::Sglang) {
        None => Ok(()),
        Some(t) => Err(loc.error(
            spans.get(i).cloned(),
            format!("phase[{i}].request.api"),
            format!(
                "api = \"generate\" is SGLang's native API, but target `{}` is {}: give this experiment sglang targets only, or use api = \"completions\"",
                t.name, t.kind
            ),
        )),
    }
}

/// A duration field: `default` when absent; zero is refused.
fn nonzero_duration(
    loc: &Locator<'_>,
    v: Option<Spanned<String>>,
    field: &str,
    default: Duration,
) -> Result<Duration, SpecError> {
    let Some(s) = v else {
        return Ok(default);
    };
    let d = parse_duration(s.get_ref()).map_err(|m| loc.error(Some(s.span()), field, m))?;
    if d.is_zero() {
        return Err(loc.error(Some(s.span()), field, "must be longer than zero"));
    }
    Ok(d)
}

fn lower_timeouts(loc: &Locator<'_>, raw: RawTimeouts) -> Result<Timeouts, SpecError> {
    let d = Timeouts::default();
    Ok(Timeouts {
        connect: nonzero_duration(loc, raw.connect, "timeouts.connect", d.connect)?,
        first_byte: nonzero_duration(loc, raw.first_byte, "timeouts.first_byte", d.first_byte)?,
        idle: nonzero_duration(loc, raw.idle, "timeouts.idle", d.idle)?,
        total: nonzero_duration(loc, raw.total, "timeouts.total", d.total)?,
    })
}

fn lower_slo(loc: &Locator<'_>, raw: RawSlo) -> Result<Slo, SpecError> {
    let get = |v: Option<Spanned<String>>, field: &str| -> Result<Option<Duration>, SpecError> {
        v.map(|s| parse_duration(s.get_ref()).map_err(|m| loc.error(Some(s.span()), field, m)))
            .transpose()
    };
    Ok(Slo {
        ttft: get(raw.ttft, "slo.ttft")?,
        tpot: get(raw.tpot, "slo.tpot")?,
        e2e: get(raw.e2e, "slo.e2e")?,
    })
}

fn lower_assertions(
    loc: &Locator<'_>,
    raw: Vec<RawAssert>,
    phases: &[Phase],
    slo: &Slo,
    targets: &[TargetSpec],
) -> Result<Vec<Assertion>, SpecError> {
    let phase_names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
    // A target named like a phase stays a phase in paths (a target cannot be compared by it).
    let target_names: Vec<&str> = targets
        .iter()
        .map(|t| t.name.as_str())
        .filter(|t| !phase_names.contains(t) && *t != "all")
        .collect();
    let mut assertions = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let field = format!("assert[{i}].expr");
        let span = a.expr.span();
        let parsed = Assertion::parse_with_targets(a.expr.get_ref(), &target_names)
            .and_then(|x| x.check(&phase_names, &target_names).map(|()| x))
            .map_err(|e| loc.error_in_string(span.clone(), e.column, &field, e.message))?;
        if parsed.is_across_targets()
            && let Some(only) = &a.targets
        {
            return Err(loc.error(
                Some(only.span()),
                format!("assert[{i}].targets"),
                "an assertion whose paths name targets is checked across them: leave `targets` out",
            ));
        }
        if parsed.paths().iter().any(|p| p.metric == "goodput") && slo.is_empty() {
            return Err(loc.error(
                Some(span),
                field,
                "`goodput` needs an `[slo]` section (e.g. `ttft = \"200ms\"`)",
            ));
        }
        let mut parsed = parsed;
        if let Some(only) = a.targets {
            let span = only.span();
            let field = format!("assert[{i}].targets");
            let only = only.into_inner();
            if only.is_empty() {
                return Err(loc.error(
                    Some(span),
                    field,
                    "name at least one target, or leave `targets` out for all",
                ));
            }
            if let Some(unknown) = only.iter().find(|t| !targets.iter().any(|x| x.name == **t)) {
                let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                return Err(loc.error(
                    Some(span),
                    field,
                    format!(
                        "unknown target `{unknown}` (the experiment's targets: {})",
                        known.join(", ")
                    ),
                ));
            }
            parsed.targets = only;
        }
        if let Some(modes) = a.modes {
            let span = modes.span();
            let modes = modes.into_inner();
            let typed: Vec<Mode> = modes
                .iter()
                .filter_map(|m| match m.as_str() {
                    "live" => Some(Mode::Live),
                    "replay" => Some(Mode::Replay),
                    _ => None,
                })
                .collect();
            if modes.is_empty() || typed.len() != modes.len() {
                return Err(loc.error(
                    Some(span),
                    format!("assert[{i}].modes"),
                    "modes are `live` (recording included) and `replay`: name one or both, or leave `modes` out for both",
                ));
            }
            parsed.modes = typed;
        }
        assertions.push(parsed);
    }
    Ok(assertions)
}

/// The default scrape interval. Measured with scripts/cross-check.sh on vLLM 0.32.0 (2-core
/// CPU, 4 in flight): scraping every 500 ms raised the server's own ITL from 4.3 to 5.2 ms and
/// TPOT from 4.3 to 5.4 ms (medians of 3 rounds); every 2 s was within noise of never.
const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(2);

/// Narrower slices hold too few requests for their percentiles to mean much, and a long run
/// would have millions of them.
const MIN_SLICE: Duration = Duration::from_millis(100);

fn lower_observe(loc: &Locator<'_>, raw: RawObserve) -> Result<Observe, SpecError> {
    let interval = match raw.interval {
        None => DEFAULT_SCRAPE_INTERVAL,
        Some(s) => {
            let d = parse_duration(s.get_ref())
                .map_err(|m| loc.error(Some(s.span()), "observe.interval", m))?;
            if d < Duration::from_millis(50) {
                return Err(loc.error(Some(s.span()), "observe.interval", "must be at least 50ms"));
            }
            d
        }
    };
    let slice = match raw.slice {
        None => None,
        Some(s) => {
            let d = parse_duration(s.get_ref())
                .map_err(|m| loc.error(Some(s.span()), "observe.slice", m))?;
            if d < MIN_SLICE {
                return Err(loc.error(Some(s.span()), "observe.slice", "must be at least 100ms"));
            }
            Some(d)
        }
    };
    Ok(Observe {
        metrics: raw.metrics.unwrap_or(true),
        interval,
        slice,
    })
}

/// A serverless endpoint's first request after idle measures a cold start: each phase must
/// begin with a warmup request, which the summary reports apart.
fn check_serverless_warmups(
    loc: &Locator<'_>,
    targets: &[TargetSpec],
    phases: &[Phase],
    phase_spans: &[Range<usize>],
) -> Result<(), SpecError> {
    if let Some(t) = targets.iter().find(|t| t.kind.is_serverless())
        && let Some((i, p)) = phases
            .iter()
            .enumerate()
            .find(|(_, p)| p.warmup == 0 && p.warmup_duration.is_none())
    {
        return Err(loc.error(
            phase_spans.get(i).cloned(),
            format!("phase[{i}].warmup"),
            format!(
                "target `{}` is serverless: its first request after idle is a cold start, not a TTFT; give phase `{}` warmup = 1 or more (the summary reports it as the cold start)",
                t.name, p.name
            ),
        ));
    }
    Ok(())
}
