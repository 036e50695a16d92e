//! Pure, seeded workload generation: `Experiment` → `Schedule`.
//!
//! Every phase kind lowers into the one `Schedule` type that the executor consumes. Same
//! `(seed, salt)`, same schedule, byte for byte: the generator is our own SplitMix64, so no
//! crate upgrade can change a schedule. The seed fixes the experiment's structure; the salt is
//! mixed into every prompt so that a live run does not find the previous run's prompts in the
//! server's prefix cache (it is chosen per live run, and read back from the fixture on replay).
//!
//! Prompt lengths are approximate: prompts are made of common English words that are single
//! tokens in Llama-family tokenizers, one word per requested token. The summary says so.

pub mod capacity;
mod plan;
mod rng;
mod words;

pub use rng::{Rng, arrivals, ramp_arrivals};
pub use words::{Words, words, words_for};

use crate::spec::{Api, Experiment};
use serde::Serialize;
use std::time::Duration;

/// What to send, in order, phase by phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub seed: u64,
    pub salt: u64,
    pub phases: Vec<PhasePlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhasePlan {
    pub name: String,
    /// Which run of the experiment's phases it belongs to, from 0 (see `repeats`).
    #[serde(skip_serializing_if = "is_zero")]
    pub repeat: u32,
    /// How the measured requests are released (warmup requests always go one at a time).
    pub pacing: Pacing,
    /// Warmup requests first, then the measured ones.
    pub requests: Vec<PlannedRequest>,
    /// Warm up for this long (the warmup requests are then an upper bound).
    #[serde(
        serialize_with = "ser_opt_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub warmup_limit: Option<Duration>,
    /// Conversations (multi-turn and agentic phases); their requests are built as they run,
    /// since each turn carries the server's previous answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionPlan>,
}

impl PhasePlan {
    /// Requests the phase plans to send: warmups, measured requests and every conversation's
    /// calls (a duration limit may stop it sooner).
    pub fn planned(&self) -> usize {
        self.requests.len()
            + self
                .sessions
                .iter()
                .flat_map(|s| &s.steps)
                .map(|st| st.parallel as usize)
                .sum::<usize>()
    }

    /// The phase's duration limit, when its pacing has one.
    pub fn limit(&self) -> Option<Duration> {
        match self.pacing {
            Pacing::Closed { limit, .. } | Pacing::Open { limit, .. } => limit,
            Pacing::Batches { .. } | Pacing::Sessions { .. } => None,
        }
    }
}

/// One conversation: an optional system prompt, then steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionPlan {
    pub id: u32,
    pub system: Option<String>,
    pub steps: Vec<StepPlan>,
    pub api: Api,
    pub max_tokens: u32,
    pub ignore_eos: bool,
    pub temperature: f64,
}

/// One step: append `message` as a user message, make `parallel` calls with the conversation
/// so far, append the first answer, then wait `think`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepPlan {
    pub message: String,
    #[serde(serialize_with = "ser_secs")]
    pub think: Duration,
    pub parallel: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// How a phase's measured requests are released.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pacing {
    /// `concurrency` workers, each sending its next request when its previous one finished.
    Closed {
        concurrency: u32,
        /// Stop taking new requests at this offset from the start; cancel those in flight.
        #[serde(
            serialize_with = "ser_opt_secs",
            skip_serializing_if = "Option::is_none"
        )]
        limit: Option<Duration>,
    },
    /// Groups of `size` sent together; the next group when the whole previous one finished.
    Batches { size: u32 },
    /// `concurrency` sessions at a time, each running its steps in order.
    Sessions { concurrency: u32 },
    /// Each request at its `at` offset from the phase start. At most `max_concurrency` in
    /// flight: later arrivals wait (client queueing). At `limit` after the start, arrivals
    /// still waiting are dropped and requests in flight are cancelled.
    Open {
        max_concurrency: Option<u32>,
        #[serde(serialize_with = "ser_opt_secs")]
        limit: Option<Duration>,
    },
}

fn ser_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Schedule {
    /// Requests planned in all phases (conversations' requests are built as they run).
    pub fn planned(&self) -> usize {
        self.phases.iter().map(|p| p.requests.len()).sum()
    }

    /// The most requests any phase keeps in flight, an unbounded phase counted by its
    /// requests; capped at 256 (what the client's connection pool is sized for).
    pub fn max_concurrency(&self) -> usize {
        self.phases
            .iter()
            .map(|p| p.max_in_flight().unwrap_or(p.requests.len()).min(256))
            .max()
            .unwrap_or(1)
    }

    /// A warmup bounded by time sent as many requests as the recording's timing allowed:
    /// keeps exactly the warmups that were `recorded` (phase, repeat, index), so a replay has
    /// an exchange for every one.
    pub fn keep_recorded_warmups<'a>(
        &mut self,
        recorded: impl Iterator<Item = (&'a str, u32, u32)> + Clone,
    ) {
        for phase in &mut self.phases {
            if phase.warmup_limit.take().is_some() {
                let planned = phase.requests.iter().filter(|r| r.warmup).count() as u32;
                let sent = recorded
                    .clone()
                    .filter(|(p, k, i)| *p == phase.name && *k == phase.repeat && *i < planned)
                    .count() as u32;
                phase.requests.retain(|r| !r.warmup || r.index < sent);
            }
        }
    }
}

impl PhasePlan {
    /// The most requests in flight at once, when bounded.
    pub fn max_in_flight(&self) -> Option<usize> {
        match self.pacing {
            Pacing::Closed { concurrency, .. } => Some(concurrency as usize),
            Pacing::Batches { size } => Some(size as usize),
            Pacing::Sessions { concurrency } => Some(
                concurrency as usize
                    * self
                        .sessions
                        .first()
                        .and_then(|s| s.steps.first())
                        .map_or(1, |st| st.parallel as usize),
            ),
            Pacing::Open {
                max_concurrency, ..
            } => max_concurrency.map(|c| c as usize),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PlannedRequest {
    pub index: u32,
    pub warmup: bool,
    pub group: Option<u32>,
    pub api: Api,
    pub prompt: String,
    /// The declared prompt length (words that are single tokens); 0 for conversations.
    pub input_tokens: u32,
    pub max_tokens: u32,
    pub ignore_eos: bool,
    pub temperature: f64,
    /// Open loop: when to send, as an offset from the phase's start.
    #[serde(serialize_with = "ser_opt_secs")]
    pub at: Option<Duration>,
    /// A whole conversation to send instead of `prompt` (multi-turn and agentic sessions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<std::sync::Arc<Vec<Message>>>,
    pub session: Option<u32>,
    /// Turn (or agent step) within the session, from 0.
    pub turn: Option<u32>,
}

/// Lowers an experiment into its schedule: its phases in order, `repeats` times over; each
/// repeat's prompts are salted apart (repeat 0 with `salt` itself), so no repeat finds the
/// previous one's prompts in the server's cache, while the seed keeps the structure (lengths,
/// groups, arrival times) the same.
pub fn schedule(exp: &Experiment, salt: u64) -> Schedule {
    let phases = (0..exp.repeats.max(1))
        .flat_map(|k| {
            let salt = repeat_salt(salt, k);
            exp.phases.iter().map(move |p| PhasePlan {
                repeat: k,
                ..plan::plan_phase(exp.seed, salt, p, words_for(exp))
            })
        })
        .collect();
    Schedule {
        seed: exp.seed,
        salt,
        phases,
    }
}

/// A capacity search's probe as a one-phase schedule (its prompts salted like the run's).
pub fn plan_probe(exp: &Experiment, probe: &crate::spec::Phase, salt: u64) -> Schedule {
    Schedule {
        seed: exp.seed,
        salt,
        phases: vec![plan::plan_phase(exp.seed, salt, probe, words_for(exp))],
    }
}

/// The salt of repeat `k`.
pub fn repeat_salt(salt: u64, k: u32) -> u64 {
    if k == 0 {
        return salt;
    }
    Rng::for_stream(0, salt, "repeat", u64::from(k), 0).next_u64()
}

#[cfg(test)]
mod tests;
