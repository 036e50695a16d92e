//! One phase of an experiment lowered into its plan: warmups, then the measured requests or
//! conversations its workload kind describes, and how they are released.

use super::{
    Pacing, PhasePlan, PlannedRequest, Rng, SessionPlan, StepPlan, Words, arrivals, ramp_arrivals,
    words,
};
use crate::spec::{Phase, Workload};
use std::time::Duration;

/// Warmup prompts are short and unrelated to the measured ones.
const WARMUP_TOKENS: u32 = 16;

pub(super) fn plan_phase(seed: u64, salt: u64, p: &Phase, w: Words<'_>) -> PhasePlan {
    let mut g = PhaseGen {
        seed,
        salt,
        p,
        w,
        requests: Vec::new(),
    };
    // A capacity search's warmups go to its first probe.
    if !matches!(p.workload, Workload::Capacity { .. }) {
        g.warmups();
    }
    let (pacing, sessions) = g.measured();
    PhasePlan {
        name: p.name.clone(),
        repeat: 0,
        pacing,
        requests: g.requests,
        warmup_limit: p.warmup_duration,
        sessions,
    }
}

/// Builds one phase's requests; every prompt comes from a seeded stream of its own, named by
/// what it is for, so a phase's requests do not depend on the phases around it.
struct PhaseGen<'a> {
    seed: u64,
    salt: u64,
    p: &'a Phase,
    w: Words<'a>,
    requests: Vec<PlannedRequest>,
}

/// A duration-bounded warmup without a count may send up to this many.
const WARMUP_CAP: u32 = 10_000;

impl PhaseGen<'_> {
    fn rng(&self, stream: &str, i: u64, j: u64) -> Rng {
        Rng::for_stream(
            self.seed,
            self.salt,
            &format!("{stream}/{}", self.p.name),
            i,
            j,
        )
    }

    fn push(&mut self, warmup: bool, group: Option<u32>, prompt: String) -> &mut PlannedRequest {
        let r = &self.p.request;
        self.requests.push(PlannedRequest {
            index: self.requests.len() as u32,
            warmup,
            group,
            api: r.api,
            input_tokens: prompt.split_whitespace().count() as u32,
            prompt,
            max_tokens: r.output_tokens,
            ignore_eos: r.ignore_eos,
            temperature: r.temperature,
            ..PlannedRequest::default()
        });
        let last = self.requests.len() - 1;
        &mut self.requests[last]
    }

    fn warmups(&mut self) {
        let n = match (self.p.warmup_duration, self.p.warmup) {
            (Some(_), 0) => WARMUP_CAP,
            (_, n) => n,
        };
        for i in 0..n {
            let prompt = words(
                self.w,
                &mut self.rng("warmup", u64::from(i), 0),
                WARMUP_TOKENS,
            );
            self.push(true, None, prompt);
        }
    }

    /// The measured requests, and how they are released.
    fn measured(&mut self) -> (Pacing, Vec<SessionPlan>) {
        let p = self.p;
        let closed = Pacing::Closed {
            concurrency: p.workload.concurrency().unwrap_or(1),
            limit: match &p.workload {
                Workload::Concurrent { duration, .. } => *duration,
                _ => None,
            },
        };
        let open = |max_concurrency: &Option<u32>, limit: Option<Duration>| Pacing::Open {
            max_concurrency: *max_concurrency,
            limit,
        };
        match &p.workload {
            Workload::MultiTurn { .. } | Workload::Agentic { .. } => self.sessions(),
            Workload::Single {
                requests: n,
                input_tokens,
            }
            | Workload::Concurrent {
                requests: n,
                input_tokens,
                ..
            } => {
                self.plain(vec![None; *n as usize], *input_tokens);
                (closed, Vec::new())
            }
            Workload::Batch {
                batch_size,
                batches,
                input_tokens,
            } => {
                self.plain(vec![None; (*batch_size * *batches) as usize], *input_tokens);
                (Pacing::Batches { size: *batch_size }, Vec::new())
            }
            Workload::Rate {
                process,
                rate,
                requests: count,
                duration,
                max_concurrency,
                input_tokens,
            } => {
                // Arrival times depend on the seed only, not on the prompt salt: an experiment
                // always has the same timing, live or replayed.
                let mut rng = Rng::for_stream(self.seed, 0, &format!("arrivals/{}", p.name), 0, 0);
                let at = arrivals(&mut rng, *process, *rate, *count, *duration);
                self.plain(at.into_iter().map(Some).collect(), *input_tokens);
                (open(max_concurrency, *duration), Vec::new())
            }
            Workload::Trace {
                time_scale,
                max_concurrency,
                entries,
                ..
            } => {
                self.trace(entries, *time_scale);
                (open(max_concurrency, None), Vec::new())
            }
            Workload::Ramp {
                from,
                to,
                duration,
                max_concurrency,
                input_tokens,
            } => {
                // The duration shapes the arrivals, all inside it; it does not cut the phase
                // off. The requests arriving at the peak rate are what a ramp is for: a limit
                // would cancel them, and how many depended on how fast the server was that day.
                let at = ramp_arrivals(*from, *to, *duration);
                self.plain(at.into_iter().map(Some).collect(), *input_tokens);
                (open(max_concurrency, None), Vec::new())
            }
            Workload::SharedPrefix { .. } => {
                self.shared_prefix();
                (closed, Vec::new())
            }
            // The search plans each probe as it goes (as a phase of its own).
            Workload::Capacity { .. } => (closed, Vec::new()),
        }
    }

    /// Distinct prompts of `input_tokens` (or the phase's lengths, or its dataset's prompts)
    /// for the measured requests, at the given offsets.
    fn plain(&mut self, offsets: Vec<Option<Duration>>, input_tokens: u32) {
        let p = self.p;
        for (i, at) in offsets.into_iter().enumerate() {
            let mut rng = self.rng("prompt", i as u64, 0);
            // Lengths depend on the seed only, like arrival times.
            let mut len_rng =
                Rng::for_stream(self.seed, 0, &format!("lengths/{}", p.name), i as u64, 0);
            let input = p
                .input_lengths
                .map_or(input_tokens, |d| d.sample(&mut len_rng));
            let prompt = match &p.dataset {
                Some(d) => d.prompts[i % d.prompts.len()].clone(),
                None => words(self.w, &mut rng, input),
            };
            let last = self.push(false, None, prompt);
            last.at = at;
            if let Some(d) = p.output_lengths {
                last.max_tokens = d.sample(&mut len_rng);
            }
        }
    }

    /// Each trace entry at its timestamp × `time_scale`, with its own lengths; entries with
    /// a prefix id share that prefix's first words.
    fn trace(&mut self, entries: &[crate::spec::TraceEntry], time_scale: f64) {
        let w = self.w;
        let t0 = entries.first().map_or(0.0, |e| e.timestamp);
        for (i, e) in entries.iter().enumerate() {
            let mut rng = self.rng("prompt", i as u64, 0);
            let prompt = match e.prefix_id {
                Some(id) => {
                    let shared = e.prefix_length.unwrap_or(e.input_length / 2);
                    let prefix = words(w, &mut self.rng("trace-prefix", id, 0), shared);
                    let rest = e.input_length - shared;
                    match (shared, rest) {
                        (0, _) => words(w, &mut rng, rest),
                        (_, 0) => prefix,
                        _ => format!("{prefix} {}", words(w, &mut rng, rest)),
                    }
                }
                None => words(w, &mut rng, e.input_length),
            };
            let last = self.push(false, e.prefix_id.map(|id| id as u32), prompt);
            last.at = Some(Duration::from_secs_f64((e.timestamp - t0) * time_scale));
            last.max_tokens = e.output_length;
        }
    }

    /// Round-robin over the prefix groups: every group's first suffix, then every group's
    /// second…; the prefixes are those of phase `prefix_from`.
    fn shared_prefix(&mut self) {
        let Workload::SharedPrefix {
            groups,
            prefix_tokens,
            suffixes,
            suffix_tokens,
            prefix_from,
            ..
        } = &self.p.workload
        else {
            return;
        };
        let w = self.w;
        let prefixes: Vec<String> = (0..*groups)
            .map(|g| {
                let stream = format!("prefix/{prefix_from}");
                let mut rng = Rng::for_stream(self.seed, self.salt, &stream, u64::from(g), 0);
                words(w, &mut rng, *prefix_tokens)
            })
            .collect();
        for s in 0..*suffixes {
            for (g, prefix) in prefixes.iter().enumerate() {
                let mut rng = self.rng("suffix", g as u64, u64::from(s));
                let prompt = format!("{prefix} {}", words(w, &mut rng, *suffix_tokens));
                self.push(false, Some(g as u32), prompt);
            }
        }
    }

    /// Conversations: multi-turn chats or agent-like sessions, released `session_concurrency`
    /// at a time.
    fn sessions(&self) -> (Pacing, Vec<SessionPlan>) {
        let (seed, salt, p, w) = (self.seed, self.salt, self.p, self.w);
        match &p.workload {
            Workload::MultiTurn {
                sessions: n,
                turns,
                system_tokens,
                first_tokens,
                turn_tokens,
                session_concurrency,
                think_time,
            } => (
                Pacing::Sessions {
                    concurrency: *session_concurrency,
                },
                plan_sessions(
                    (seed, salt, p),
                    SessionShape {
                        sessions: *n,
                        steps: *turns,
                        system_tokens: *system_tokens,
                        think: *think_time,
                        parallel: 1,
                        label: "turn",
                    },
                    &|t, rng| words(w, rng, if t == 0 { *first_tokens } else { *turn_tokens }),
                    w,
                ),
            ),
            Workload::Agentic {
                sessions: n,
                steps,
                system_tokens,
                task_tokens,
                tool_result_tokens,
                parallel_calls,
                session_concurrency,
                think_time,
            } => (
                Pacing::Sessions {
                    concurrency: *session_concurrency,
                },
                plan_sessions(
                    (seed, salt, p),
                    SessionShape {
                        sessions: *n,
                        steps: *steps,
                        system_tokens: *system_tokens,
                        think: *think_time,
                        parallel: *parallel_calls,
                        label: "step",
                    },
                    &|t, rng| {
                        if t == 0 {
                            format!("Task: {}", words(w, rng, *task_tokens))
                        } else {
                            format!("Tool result: {}", words(w, rng, *tool_result_tokens))
                        }
                    },
                    w,
                ),
            ),
            _ => (Pacing::Sessions { concurrency: 1 }, Vec::new()),
        }
    }
}

/// A phase's sessions: how many, of how many steps, and what each step carries.
struct SessionShape {
    sessions: u32,
    steps: u32,
    system_tokens: Option<u32>,
    think: Duration,
    parallel: u32,
    /// Names the random stream of the steps' messages (`turn`, `step`).
    label: &'static str,
}

/// The sessions of phase `p` (with the run's seed and salt); `message(step, rng)` writes each
/// step's user message.
fn plan_sessions(
    (seed, salt, p): (u64, u64, &Phase),
    shape: SessionShape,
    message: &dyn Fn(u32, &mut Rng) -> String,
    w: Words<'_>,
) -> Vec<SessionPlan> {
    let SessionShape {
        sessions,
        steps,
        system_tokens,
        think,
        parallel,
        label,
    } = shape;
    let system = system_prompt(seed, salt, &p.name, system_tokens, w);
    (0..sessions)
        .map(|id| {
            let steps = (0..steps)
                .map(|t| {
                    let mut rng = Rng::for_stream(
                        seed,
                        salt,
                        &format!("{label}/{}", p.name),
                        u64::from(id),
                        u64::from(t),
                    );
                    StepPlan {
                        message: message(t, &mut rng),
                        think,
                        parallel,
                    }
                })
                .collect();
            session(p, id, system.clone(), steps)
        })
        .collect()
}

/// A system prompt shared by every session of a phase.
fn system_prompt(
    seed: u64,
    salt: u64,
    phase: &str,
    tokens: Option<u32>,
    w: Words<'_>,
) -> Option<String> {
    tokens.map(|n| {
        let mut rng = Rng::for_stream(seed, salt, &format!("system/{phase}"), 0, 0);
        words(w, &mut rng, n)
    })
}

fn session(p: &Phase, id: u32, system: Option<String>, steps: Vec<StepPlan>) -> SessionPlan {
    SessionPlan {
        id,
        system,
        steps,
        api: p.request.api,
        max_tokens: p.request.output_tokens,
        ignore_eos: p.request.ignore_eos,
        temperature: p.request.temperature,
    }
}
