//! Lowering one `[[phase]]`: its name, prompt and output lengths, dataset, warmup, request
//! shape and workload (`workload`); a sweep becomes one phase per point.

use super::raw::{DistKind, RawDataset, RawDist, RawPhase, RawRequest, RawWorkload, WorkloadKind};
use super::workload::{Lowered, lower_workload};
use super::{
    Api, Dataset, Files, LengthDist, Phase, RequestShape, SpecError, Workload, is_identifier,
};
use crate::core::diag::{Locator, parse_duration};
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// Every phase in file order (a sweep's points in its place), and each raw phase's span.
pub(super) fn lower_phases(
    loc: &Locator<'_>,
    raw: Spanned<Vec<Spanned<RawPhase>>>,
    files: &dyn Files,
) -> Result<(Vec<Phase>, Vec<Range<usize>>), SpecError> {
    let phases_span = raw.span();
    let mut phases: Vec<Phase> = Vec::new();
    let mut spans = Vec::new();
    for (i, p) in raw.into_inner().into_iter().enumerate() {
        spans.push(p.span());
        let wspan = p.get_ref().workload.span();
        for phase in lower_phase(loc, i, p.into_inner(), &phases, files)? {
            if phases.iter().any(|q| q.name == phase.name) {
                return Err(loc.error(
                    Some(wspan.clone()),
                    format!("phase[{i}].workload"),
                    format!("phase `{}` (from this sweep) already exists", phase.name),
                ));
            }
            phases.push(phase);
        }
    }
    if phases.is_empty() {
        return Err(loc.error(
            Some(phases_span),
            "phase",
            "at least one `[[phase]]` is needed",
        ));
    }
    Ok((phases, spans))
}

/// Phase `i`, after the phases `earlier` (a shared prefix may reuse theirs).
fn lower_phase(
    loc: &Locator<'_>,
    i: usize,
    p: RawPhase,
    earlier: &[Phase],
    files: &dyn Files,
) -> Result<Vec<Phase>, SpecError> {
    let field = |f: &str| format!("phase[{i}].{f}");
    let pname = check_name(loc, &field("name"), &p.name, earlier)?;
    let wspan = p.workload.span();
    let mut w = p.workload.into_inner();
    let (input_lengths, output_lengths) =
        lower_lengths(loc, i, (p.input_lengths, p.output_lengths), &mut w, &wspan)?;
    let dataset = match p.prompts {
        None => None,
        Some(d) => {
            let span = d.span();
            let at = |m: String| loc.error(Some(span.clone()), field("prompts"), m);
            let ds = lower_dataset(d.into_inner(), &mut w, input_lengths.is_some(), files);
            Some(ds.map_err(at)?)
        }
    };
    let warmup_duration = match &p.warmup_duration {
        None => None,
        Some(d) => Some(
            positive_duration(d.get_ref())
                .map_err(|m| loc.error(Some(d.span()), field("warmup_duration"), m))?,
        ),
    };
    let lowered = lower_workload(loc, &field("workload"), wspan, w, earlier, files)?;
    let request = lower_request(loc, i, p.request, &lowered)?;
    let named: Vec<(String, Workload)> = match lowered {
        Lowered::One(mut workload) => {
            if let Workload::SharedPrefix { prefix_from, .. } = &mut workload
                && prefix_from.is_empty()
            {
                prefix_from.clone_from(&pname);
            }
            vec![(pname, workload)]
        }
        // A sweep's points are phases of their own, named `c8`, `r2.5`, …
        Lowered::Sweep(points) => points,
    };
    Ok(named
        .into_iter()
        .map(|(name, workload)| Phase {
            name,
            workload,
            request,
            warmup: p.warmup,
            warmup_duration,
            input_lengths,
            output_lengths,
            dataset: dataset.clone(),
        })
        .collect())
}

/// The phase's prompt and output length distributions. Prompt lengths replace the workload's
/// `input_tokens` (by their typical value, where one number is needed); output lengths do not
/// apply to kinds whose answers feed the next request or come from a trace.
fn lower_lengths(
    loc: &Locator<'_>,
    i: usize,
    (input, output): (Option<Spanned<RawDist>>, Option<Spanned<RawDist>>),
    w: &mut RawWorkload,
    wspan: &Range<usize>,
) -> Result<(Option<LengthDist>, Option<LengthDist>), SpecError> {
    let field = |f: &str| format!("phase[{i}].{f}");
    let lengths = |d: Option<Spanned<RawDist>>, name: &str| {
        d.map(|d| {
            let span = d.span();
            lower_dist(d.into_inner()).map_err(|m| loc.error(Some(span), field(name), m))
        })
        .transpose()
    };
    let input_lengths = lengths(input, "input_lengths")?;
    let output_lengths = lengths(output, "output_lengths")?;
    let here = |f: &str, m: String| loc.error(Some(wspan.clone()), field(f), m);
    if let Some(d) = &input_lengths {
        if !takes_input_tokens(w) {
            return Err(here(
                "input_lengths",
                format!(
                    "workload kind `{}` sets its own prompt lengths; `input_lengths` applies to kinds with `input_tokens`",
                    w.kind.name()
                ),
            ));
        }
        if w.input_tokens.is_some() {
            return Err(here(
                "input_lengths",
                "give `input_tokens` or `input_lengths`, not both".to_string(),
            ));
        }
        w.input_tokens = Some(d.typical());
    }
    if output_lengths.is_some()
        && matches!(
            w.kind,
            WorkloadKind::Trace | WorkloadKind::MultiTurn | WorkloadKind::Agentic
        )
    {
        return Err(here(
            "output_lengths",
            format!(
                "`output_lengths` does not apply to workload kind `{}`",
                w.kind.name()
            ),
        ));
    }
    Ok((input_lengths, output_lengths))
}

/// A phase name is an identifier other than `all`, without `-`, not used before.
fn check_name(
    loc: &Locator<'_>,
    field: &str,
    name: &Spanned<String>,
    earlier: &[Phase],
) -> Result<String, SpecError> {
    let pname = name.get_ref().clone();
    let at = |m: String| loc.error(Some(name.span()), field, m);
    if !is_identifier(&pname) || pname == "all" {
        return Err(at(format!(
            "phase name `{pname}` must be letters, digits or `_`, start with a letter, and not be `all` (it names the whole run in assertions)"
        )));
    }
    if pname.contains('-') {
        return Err(at(
            "phase names are used in assertions: use `_` instead of `-`".to_string(),
        ));
    }
    if earlier.iter().any(|q| q.name == pname) {
        return Err(at(format!("duplicate phase name `{pname}`")));
    }
    Ok(pname)
}

fn takes_input_tokens(w: &RawWorkload) -> bool {
    w.kind.allowed().contains(&"input_tokens")
}

/// A dataset's prompts; the workload's declared prompt length becomes their mean word count.
fn lower_dataset(
    d: RawDataset,
    w: &mut RawWorkload,
    has_input_lengths: bool,
    files: &dyn Files,
) -> Result<Dataset, String> {
    if !takes_input_tokens(w) {
        return Err(format!(
            "workload kind `{}` makes its own prompts",
            w.kind.name()
        ));
    }
    if w.input_tokens.is_some() || has_input_lengths {
        return Err(
            "prompts from a dataset have their own lengths: drop `input_tokens` / `input_lengths`"
                .to_string(),
        );
    }
    let path = files.path(&d.file);
    let text = files
        .read(&d.file)
        .map_err(|e| format!("cannot read dataset {path}: {e}"))?;
    let prompts = super::data::parse_dataset(&path, &text, d.format)?;
    let words: usize = prompts.iter().map(|p| p.split_whitespace().count()).sum();
    w.input_tokens = Some(((words / prompts.len()).max(1)) as u32);
    Ok(Dataset {
        file: d.file,
        format: d.format,
        prompts,
    })
}

/// A duration longer than zero.
pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be longer than zero".to_string()),
        d => Ok(d),
    }
}

fn lower_request(
    loc: &Locator<'_>,
    i: usize,
    raw: Spanned<RawRequest>,
    workload: &Lowered,
) -> Result<RequestShape, SpecError> {
    let span = raw.span();
    let r = raw.into_inner();
    let at = |f: &str, m: &str| loc.error(Some(span.clone()), format!("phase[{i}].request.{f}"), m);
    if r.output_tokens == 0 {
        return Err(at("output_tokens", "must be at least 1"));
    }
    if !(0.0..=2.0).contains(&r.temperature) {
        return Err(at("temperature", "must be between 0 and 2"));
    }
    if r.api != Api::Chat
        && let Lowered::One(w) = workload
        && w.is_session()
    {
        return Err(at(
            "api",
            "multi_turn and agentic sessions are conversations: use api = \"chat\"",
        ));
    }
    Ok(RequestShape {
        api: r.api,
        output_tokens: r.output_tokens,
        ignore_eos: r.ignore_eos,
        temperature: r.temperature,
    })
}

pub(super) fn lower_dist(raw: RawDist) -> Result<LengthDist, String> {
    let min = raw.min.unwrap_or(1).max(1);
    let max = raw.max.unwrap_or(32_768);
    if min > max {
        return Err(format!("min {min} is above max {max}"));
    }
    let need = |v: Option<f64>, f: &str| -> Result<f64, String> {
        match v {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(format!("`{f}` must be a positive number, not {x}")),
            None => Err(format!("this distribution needs `{f}`")),
        }
    };
    let given = [
        ("value", raw.value.is_some()),
        ("mean", raw.mean.is_some()),
        ("median", raw.median.is_some()),
        ("stddev", raw.stddev.is_some()),
        ("sigma", raw.sigma.is_some()),
        ("min", raw.min.is_some()),
        ("max", raw.max.is_some()),
    ];
    // The fields each distribution takes; any other given is an error.
    let takes: &[&str] = match raw.dist {
        DistKind::Fixed => &["value"],
        DistKind::Uniform => &["min", "max"],
        DistKind::Normal => &["mean", "stddev", "min", "max"],
        DistKind::Lognormal => &["median", "sigma", "min", "max"],
    };
    if let Some((f, _)) = given.iter().find(|(f, g)| *g && !takes.contains(f)) {
        return Err(format!("`{f}` does not apply to this distribution"));
    }
    Ok(match raw.dist {
        DistKind::Fixed => match raw.value {
            Some(v) if v >= 1 => LengthDist::Fixed { value: v },
            _ => return Err("`fixed` needs `value` of at least 1".to_string()),
        },
        DistKind::Uniform => {
            if raw.min.is_none() || raw.max.is_none() {
                return Err("`uniform` needs `min` and `max`".to_string());
            }
            LengthDist::Uniform { min, max }
        }
        DistKind::Normal => LengthDist::Normal {
            mean: need(raw.mean, "mean")?,
            stddev: need(raw.stddev, "stddev")?,
            min,
            max,
        },
        DistKind::Lognormal => LengthDist::Lognormal {
            median: need(raw.median, "median")?,
            sigma: need(raw.sigma, "sigma")?,
            min,
            max,
        },
    })
}
