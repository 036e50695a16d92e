//! Before a trial sends its first request: what the server is (version, configuration), whether
//! every planned request fits its context, whether the prompts have their declared lengths,
//! and, when the experiment asks, how accurately this client measures on this machine now
//! (a short calibration at the run's largest concurrency). A replay takes the first three from
//! its recording instead of asking.

use crate::calibrate::Level;
use crate::client::Endpoint;
use crate::probe::{self, Context, ServerInfo};
use crate::report::PromptLengths;
use crate::spec::Experiment;
use crate::workload::Schedule;
use std::time::Duration;

/// What a trial knows before it starts.
#[derive(Debug, Clone)]
pub struct Preflight {
    pub server: ServerInfo,
    pub prompt_lengths: PromptLengths,
    pub calibration: Option<Level>,
}

impl Preflight {
    /// The client's own TTFT error p99 in seconds, when calibrated: verdicts closer than this
    /// to their threshold say so.
    pub fn noise_floor(&self) -> Option<f64> {
        self.calibration
            .as_ref()
            .map(|c| c.ttft_error_p99_ms / 1e3)
            .filter(|f| f.is_finite())
    }
}

/// What a recording says about its server (a replay asks nothing).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub server: ServerInfo,
    pub prompt_lengths: Option<PromptLengths>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{0}")]
    ContextTooSmall(String),
    #[error("calibration: {0}")]
    Calibration(String),
}

/// Runs the checks against the live server, or reads them from `recorded`.
pub async fn run(
    http: &reqwest::Client,
    ep: &Endpoint,
    exp: &Experiment,
    schedule: &Schedule,
    recorded: Option<Recorded>,
) -> Result<Preflight, PreflightError> {
    let (server, recorded_lengths) = match recorded {
        Some(r) => (r.server, Some(r.prompt_lengths)),
        None => {
            let server = probe::server_info(http, ep).await;
            let context = probe::context(http, ep, server.config.as_ref()).await;
            check_context(exp, schedule, context).map_err(PreflightError::ContextTooSmall)?;
            (server, None)
        }
    };
    let calibration = if exp.calibrate {
        Some(calibrate(schedule).await?)
    } else {
        None
    };
    let prompt_lengths = match (&exp.tokenizer, recorded_lengths) {
        (Some(t), _) => count_prompt_lengths(&t.file, |text| t.count(text), schedule),
        (None, Some(recorded)) => recorded
            .unwrap_or_else(|| PromptLengths::Approximate("not checked when recorded".to_string())),
        (None, None) => check_prompt_lengths(http, ep, schedule).await,
    };
    Ok(Preflight {
        server,
        prompt_lengths,
        calibration,
    })
}

/// A short calibration at the schedule's largest concurrency.
async fn calibrate(schedule: &Schedule) -> Result<Level, PreflightError> {
    crate::calibrate::measure(
        schedule.max_concurrency() as u32,
        3,
        Duration::from_millis(20),
        Duration::from_millis(5),
        16,
        1,
        None,
    )
    .await
    .map_err(|e| PreflightError::Calibration(e.to_string()))
}

/// Refuses a schedule with a request (declared prompt + max_tokens) that cannot fit the
/// server's context: the server would answer it with an error, and the phase would measure
/// errors, not latency. Conversations grow with the server's answers and are checked by the
/// server itself.
pub fn check_context(
    exp: &Experiment,
    schedule: &Schedule,
    context: Option<Context>,
) -> Result<(), String> {
    let Some(Context {
        tokens: ctx,
        source,
    }) = context
    else {
        return Ok(());
    };
    for phase in &schedule.phases {
        // +1 for the BOS token; chat templates add a few more, which the server will report.
        if let Some(r) = phase
            .requests
            .iter()
            .filter(|r| !r.warmup)
            .max_by_key(|r| u64::from(r.input_tokens) + u64::from(r.max_tokens))
            && u64::from(r.input_tokens) + 1 + u64::from(r.max_tokens) > ctx
        {
            return Err(format!(
                "{}: phase `{}` plans a request of {} prompt + {} output tokens, more than the server's context of {ctx} tokens ({source}); shorten the phase's lengths or give the server a larger context",
                exp.name, phase.name, r.input_tokens, r.max_tokens
            ));
        }
    }
    Ok(())
}

/// Prompts counted per phase with the experiment's tokenizer (the first ones: a
/// million-request phase would take seconds).
const COUNTED_PER_PHASE: usize = 2000;

/// Counts planned prompts with the model's tokenizer against their declared lengths.
/// Conversations are left out: the server's chat template adds tokens the tokenizer alone
/// does not know.
pub fn count_prompt_lengths(
    tokenizer: &str,
    count: impl Fn(&str) -> Option<usize>,
    schedule: &Schedule,
) -> PromptLengths {
    let (mut checked, mut differ) = (0usize, Vec::new());
    for p in &schedule.phases {
        for r in p
            .requests
            .iter()
            .filter(|r| r.input_tokens > 0 && r.messages.is_none())
            .take(COUNTED_PER_PHASE)
        {
            checked += 1;
            match count(&r.prompt) {
                Some(n) if n == r.input_tokens as usize => {}
                n => differ.push((p.name.as_str(), r.index, r.input_tokens, n)),
            }
        }
    }
    if checked == 0 {
        return PromptLengths::Approximate(format!(
            "no single-prompt requests to count with tokenizer {tokenizer} (conversations carry the server's chat template)"
        ));
    }
    match differ.first() {
        None => PromptLengths::Exact(format!(
            "{checked} prompts have their declared lengths, counted with tokenizer {tokenizer}"
        )),
        Some((phase, index, want, got)) => PromptLengths::Approximate(format!(
            "{} of {checked} prompts differ from their declared lengths (tokenizer {tokenizer}), e.g. {phase}[{index}]: declared {want}, counted {}",
            differ.len(),
            got.map_or("nothing".to_string(), |n| n.to_string())
        )),
    }
}

/// Checks the first generated prompt of each phase (up to eight) with the server's
/// `/tokenize` and says whether prompt lengths are exact.
async fn check_prompt_lengths(
    http: &reqwest::Client,
    ep: &Endpoint,
    schedule: &Schedule,
) -> PromptLengths {
    let sample = prompt_sample(schedule);
    if sample.is_empty() {
        return PromptLengths::Approximate("no generated prompts to check".to_string());
    }
    let (mut declared, mut counted) = (0u64, 0u64);
    for (text, n_declared) in &sample {
        let Some(n) = probe::tokenize(http, ep, text).await else {
            return PromptLengths::Approximate(
                "the server has no usable /tokenize endpoint".to_string(),
            );
        };
        declared += n_declared;
        counted += n;
    }
    if declared == counted {
        PromptLengths::Exact(format!(
            "{} sampled prompts tokenize to exactly the {declared} tokens declared for them in all (server /tokenize)",
            sample.len()
        ))
    } else {
        PromptLengths::Approximate(format!(
            "{} sampled prompts declared {declared} tokens, the server's tokenizer counts {counted} ({:.3}×)",
            sample.len(),
            counted as f64 / declared as f64
        ))
    }
}

/// (text, declared tokens) per phase: its first measured prompt, or its first session message;
/// eight at most.
fn prompt_sample(schedule: &Schedule) -> Vec<(&str, u64)> {
    schedule
        .phases
        .iter()
        .filter_map(|p| {
            p.requests
                .iter()
                .find(|r| !r.warmup && r.input_tokens > 0)
                .map(|r| (r.prompt.as_str(), u64::from(r.input_tokens)))
                .or_else(|| {
                    let m = &p.sessions.first()?.steps.first()?.message;
                    Some((m.as_str(), m.split_whitespace().count() as u64))
                })
        })
        .take(8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"schema_version = 1
description = "t"
seed = 1
[targets.llamacpp]
[model]
name = "m"
[[phase]]
name = "short"
warmup = 1
workload = { kind = "concurrent", concurrency = 2, requests = 4, input_tokens = 20 }
request = { api = "completions", output_tokens = 10 }
[[phase]]
name = "long"
workload = { kind = "concurrent", concurrency = 1, requests = 2, input_tokens = 100 }
request = { api = "completions", output_tokens = 27 }
"#;

    fn exp() -> Experiment {
        crate::spec_io::parse("t.toml", "t", SRC).unwrap()
    }

    fn ctx(tokens: u64) -> Option<Context> {
        Some(Context {
            tokens,
            source: "test",
        })
    }

    #[test]
    fn a_request_that_cannot_fit_the_context_is_refused_naming_its_phase() {
        let s = crate::workload::schedule(&exp(), 1);
        // long: 100 prompt + 1 BOS + 27 output = 128.
        assert_eq!(check_context(&exp(), &s, ctx(128)), Ok(()));
        let e = check_context(&exp(), &s, ctx(127)).unwrap_err();
        assert!(
            e.contains("phase `long`") && e.contains("100 prompt + 27 output"),
            "{e}"
        );
        assert!(e.contains("context of 127 tokens (test)"), "{e}");
        assert_eq!(check_context(&exp(), &s, None), Ok(()), "unknown context");
    }

    #[test]
    fn prompt_lengths_are_exact_only_when_every_counted_prompt_matches() {
        let s = crate::workload::schedule(&exp(), 1);
        let words = |t: &str| Some(t.split_whitespace().count());
        let exact = count_prompt_lengths("w.json", words, &s);
        assert_eq!(
            exact,
            PromptLengths::Exact(
                "7 prompts have their declared lengths, counted with tokenizer w.json".into()
            )
        );
        let plus_one = |t: &str| Some(t.split_whitespace().count() + 1);
        let off = count_prompt_lengths("w.json", plus_one, &s);
        assert!(!off.is_exact());
        let off = off.to_string();
        assert!(
            off.starts_with("approximate: 7 of 7 prompts differ"),
            "{off}"
        );
        let first = s.phases[0].requests[0].input_tokens;
        let example = format!("e.g. short[0]: declared {first}, counted {}", first + 1);
        assert!(off.contains(&example), "{off}");
    }

    #[test]
    fn the_sample_takes_each_phases_first_measured_prompt() {
        let s = crate::workload::schedule(&exp(), 1);
        let sample = prompt_sample(&s);
        let declared: Vec<u64> = sample.iter().map(|(_, n)| *n).collect();
        assert_eq!(declared, [20, 100]);
        assert_eq!(sample[0].0.split_whitespace().count(), 20);
    }

    #[test]
    fn the_noise_floor_is_the_calibrated_ttft_error_in_seconds() {
        let mut p = Preflight {
            server: ServerInfo::default(),
            prompt_lengths: PromptLengths::Approximate(String::new()),
            calibration: None,
        };
        assert_eq!(p.noise_floor(), None, "not calibrated");
        p.calibration = Some(Level {
            ttft_error_p99_ms: 2.5,
            ..Level::default()
        });
        assert_eq!(p.noise_floor(), Some(0.0025));
        p.calibration = Some(Level {
            ttft_error_p99_ms: f64::NAN,
            ..Level::default()
        });
        assert_eq!(p.noise_floor(), None, "no steady requests: no figure");
    }
}
