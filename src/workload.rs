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

use crate::spec::{Api, Arrival, Experiment, LengthDist, Phase, Workload};
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
    /// keeps exactly the warmups that were `recorded` (phase, index), so a replay has an
    /// exchange for every one.
    pub fn keep_recorded_warmups<'a>(
        &mut self,
        recorded: impl Iterator<Item = (&'a str, u32)> + Clone,
    ) {
        for phase in &mut self.phases {
            if phase.warmup_limit.take().is_some() {
                let planned = phase.requests.iter().filter(|r| r.warmup).count() as u32;
                let sent = recorded
                    .clone()
                    .filter(|(p, i)| *p == phase.name && *i < planned)
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

/// SplitMix64: tiny, fast, and fixed forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for one named stream of `(seed, salt)`.
    pub fn for_stream(seed: u64, salt: u64, label: &str, a: u64, b: u64) -> Self {
        // FNV-1a over the label, then mix every component.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in label.bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut r = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        for v in [salt, h, a, b] {
            r.0 ^= v;
            r.next_u64();
        }
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift (bias below 2^-32 for our n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with the given rate.
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.unit()).ln() / rate
    }

    /// Standard normal (Box–Muller; one of the pair is discarded to keep the stream simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma with shape `k` and scale `theta` (Marsaglia and Tsang's method).
    pub fn gamma(&mut self, k: f64, theta: f64) -> f64 {
        if k < 1.0 {
            // Boost: Gamma(k) = Gamma(k + 1) · U^(1/k).
            let u = 1.0 - self.unit();
            return self.gamma(k + 1.0, theta) * u.powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.unit();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v * theta;
            }
        }
    }
}

impl LengthDist {
    /// One length, clamped.
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let (x, min, max) = match *self {
            LengthDist::Fixed { value } => return value,
            LengthDist::Uniform { min, max } => {
                return min + rng.below(u64::from(max - min) + 1) as u32;
            }
            LengthDist::Normal {
                mean,
                stddev,
                min,
                max,
            } => (mean + stddev * rng.normal(), min, max),
            LengthDist::Lognormal {
                median,
                sigma,
                min,
                max,
            } => (median * (sigma * rng.normal()).exp(), min, max),
        };
        (x.round().max(0.0) as u32).clamp(min, max)
    }
}

/// Arrival offsets of an open-loop phase: from `process` at `rate`, until `count` arrivals or
/// `limit` (offsets at or beyond it are not generated). The first arrival is at zero.
pub fn arrivals(
    rng: &mut Rng,
    process: Arrival,
    rate: f64,
    count: Option<u32>,
    limit: Option<Duration>,
) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut t = 0.0f64;
    // A duration-only phase at a high rate is still bounded: a safety cap on memory.
    let cap = count.map_or(10_000_000, |c| c as usize);
    while out.len() < cap {
        if limit.is_some_and(|l| t >= l.as_secs_f64()) {
            break;
        }
        out.push(Duration::from_secs_f64(t));
        t += match process {
            Arrival::Constant => 1.0 / rate,
            Arrival::Poisson => rng.exponential(rate),
            Arrival::Gamma { burstiness } => rng.gamma(burstiness, 1.0 / (rate * burstiness)),
        };
    }
    out
}

/// Arrival offsets of a linear ramp from `from` to `to` requests/s over `duration`: the i-th
/// arrival is where the integrated rate reaches i.
pub fn ramp_arrivals(from: f64, to: f64, duration: Duration) -> Vec<Duration> {
    let d = duration.as_secs_f64();
    let slope = (to - from) / d;
    let total = (from + to) / 2.0 * d;
    let mut out = Vec::new();
    let mut i = 0.0f64;
    while i < total {
        let t = if slope.abs() < 1e-12 {
            i / from
        } else {
            (-from + (from * from + 2.0 * slope * i).max(0.0).sqrt()) / slope
        };
        if !(0.0..d).contains(&t) {
            break;
        }
        out.push(Duration::from_secs_f64(t));
        i += 1.0;
    }
    out
}

/// Common English words, each a single token (with its leading space) in the Llama
/// SentencePiece vocabulary.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "she",
    "other",
    "its",
    "may",
    "these",
    "what",
    "them",
    "than",
    "some",
    "him",
    "time",
    "into",
    "only",
    "do",
    "could",
    "new",
    "about",
    "two",
    "first",
    "then",
    "also",
    "after",
    "any",
    "like",
    "our",
    "over",
    "out",
    "such",
    "most",
    "very",
    "my",
    "man",
    "made",
    "many",
    "where",
    "before",
    "must",
    "through",
    "back",
    "years",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "himself",
    "few",
    "house",
    "use",
    "during",
    "without",
    "again",
    "place",
    "around",
    "however",
    "home",
    "small",
    "found",
    "thought",
    "went",
    "say",
    "part",
    "once",
    "general",
    "high",
    "upon",
    "school",
    "every",
    "don",
    "does",
    "got",
    "money",
    "left",
    "number",
    "course",
    "war",
    "until",
    "always",
    "away",
    "something",
    "fact",
    "though",
    "water",
    "less",
    "public",
    "put",
    "think",
    "almost",
    "hand",
    "enough",
    "far",
    "took",
    "head",
    "yet",
    "government",
    "system",
    "better",
    "set",
    "told",
    "nothing",
    "night",
    "end",
    "why",
    "called",
    "didn",
    "eyes",
    "find",
    "going",
    "look",
    "asked",
    "later",
    "knew",
    "point",
    "next",
    "program",
    "city",
    "business",
    "give",
    "group",
    "toward",
    "young",
    "days",
    "let",
    "room",
    "president",
    "side",
    "social",
    "given",
    "present",
    "several",
    "order",
    "national",
    "second",
    "possible",
    "rather",
    "per",
    "face",
    "among",
    "form",
    "important",
    "often",
    "things",
    "looked",
    "early",
    "white",
    "case",
    "become",
    "large",
    "big",
    "need",
    "four",
    "within",
    "felt",
    "along",
    "children",
    "saw",
    "best",
    "church",
    "ever",
    "least",
    "power",
    "development",
    "light",
    "thing",
    "seemed",
    "family",
    "interest",
    "want",
    "members",
    "mind",
    "country",
    "area",
    "others",
    "done",
    "turned",
    "although",
    "open",
    "god",
    "service",
    "certain",
    "kind",
    "problem",
    "began",
];

/// The first word of a message has no leading space (chat templates put it right after a
/// newline); these words are single tokens with or without one.
const FIRST_WORDS: usize = 30;

/// Where prompt words come from: the built-in Llama list, or a tokenizer's own vocabulary.
#[derive(Debug, Clone, Copy)]
pub enum Words<'a> {
    Llama,
    Pool(&'a crate::tokenize::WordPool),
}

impl Words<'_> {
    fn first(&self) -> usize {
        match self {
            Words::Llama => FIRST_WORDS,
            Words::Pool(p) => p.first,
        }
    }

    fn len(&self) -> usize {
        match self {
            Words::Llama => WORDS.len(),
            Words::Pool(p) => p.words.len(),
        }
    }

    fn get(&self, i: usize) -> &str {
        match self {
            Words::Llama => WORDS[i],
            Words::Pool(p) => &p.words[i],
        }
    }
}

/// `n` words from `rng`, space separated.
pub fn words(pool: Words<'_>, rng: &mut Rng, n: u32) -> String {
    let mut out = String::with_capacity(n as usize * 6);
    for i in 0..n {
        let k = if i == 0 { pool.first() } else { pool.len() };
        if i > 0 {
            out.push(' ');
        }
        out.push_str(pool.get(rng.below(k as u64) as usize));
    }
    out
}

/// Warmup prompts are short and unrelated to the measured ones.
const WARMUP_TOKENS: u32 = 16;

/// Where an experiment's synthetic prompt words come from: its tokenizer's vocabulary, or the
/// built-in list.
pub fn words_for(exp: &Experiment) -> Words<'_> {
    match &exp.tokenizer {
        Some(t) => Words::Pool(&t.pool),
        None => Words::Llama,
    }
}

/// Lowers an experiment into its schedule.
pub fn schedule(exp: &Experiment, salt: u64) -> Schedule {
    let phases = exp
        .phases
        .iter()
        .map(|p| plan_phase(exp.seed, salt, p, words_for(exp)))
        .collect();
    Schedule {
        seed: exp.seed,
        salt,
        phases,
    }
}

fn plan_phase(seed: u64, salt: u64, p: &Phase, w: Words<'_>) -> PhasePlan {
    let mut requests = Vec::new();
    let push =
        |warmup: bool, group: Option<u32>, prompt: String, requests: &mut Vec<PlannedRequest>| {
            requests.push(PlannedRequest {
                index: requests.len() as u32,
                warmup,
                group,
                api: p.request.api,
                input_tokens: prompt.split_whitespace().count() as u32,
                prompt,
                max_tokens: p.request.output_tokens,
                ignore_eos: p.request.ignore_eos,
                temperature: p.request.temperature,
                ..PlannedRequest::default()
            });
        };
    // A duration-bounded warmup without a count may send up to this many.
    const WARMUP_CAP: u32 = 10_000;
    let warmups = match (p.warmup_duration, p.warmup) {
        (Some(_), 0) => WARMUP_CAP,
        (_, n) => n,
    };
    for i in 0..warmups {
        let mut rng = Rng::for_stream(seed, salt, &format!("warmup/{}", p.name), u64::from(i), 0);
        push(true, None, words(w, &mut rng, WARMUP_TOKENS), &mut requests);
    }
    // Distinct prompts of `input_tokens` for the measured requests, at the given offsets.
    let plain = |offsets: Vec<Option<Duration>>,
                 input_tokens: u32,
                 requests: &mut Vec<PlannedRequest>| {
        for (i, at) in offsets.into_iter().enumerate() {
            let mut rng = Rng::for_stream(seed, salt, &format!("prompt/{}", p.name), i as u64, 0);
            // Lengths depend on the seed only, like arrival times.
            let mut len_rng = Rng::for_stream(seed, 0, &format!("lengths/{}", p.name), i as u64, 0);
            let input = p
                .input_lengths
                .map_or(input_tokens, |d| d.sample(&mut len_rng));
            let prompt = match &p.dataset {
                Some(d) => d.prompts[i % d.prompts.len()].clone(),
                None => words(w, &mut rng, input),
            };
            push(false, None, prompt, requests);
            if let Some(last) = requests.last_mut() {
                last.at = at;
                if let Some(d) = p.output_lengths {
                    last.max_tokens = d.sample(&mut len_rng);
                }
            }
        }
    };
    let mut pacing = Pacing::Closed {
        concurrency: p.workload.concurrency().unwrap_or(1),
        limit: match &p.workload {
            Workload::Concurrent { duration, .. } => *duration,
            _ => None,
        },
    };
    let mut sessions = Vec::new();
    match &p.workload {
        Workload::MultiTurn {
            sessions: n,
            turns,
            system_tokens,
            first_tokens,
            turn_tokens,
            session_concurrency,
            think_time,
        } => {
            pacing = Pacing::Sessions {
                concurrency: *session_concurrency,
            };
            sessions = plan_sessions(
                seed,
                salt,
                p,
                *n,
                *turns,
                *system_tokens,
                *think_time,
                1,
                "turn",
                &|t, rng| words(w, rng, if t == 0 { *first_tokens } else { *turn_tokens }),
                w,
            );
        }
        Workload::Agentic {
            sessions: n,
            steps,
            system_tokens,
            task_tokens,
            tool_result_tokens,
            parallel_calls,
            session_concurrency,
            think_time,
        } => {
            pacing = Pacing::Sessions {
                concurrency: *session_concurrency,
            };
            sessions = plan_sessions(
                seed,
                salt,
                p,
                *n,
                *steps,
                *system_tokens,
                *think_time,
                *parallel_calls,
                "step",
                &|t, rng| {
                    if t == 0 {
                        format!("Task: {}", words(w, rng, *task_tokens))
                    } else {
                        format!("Tool result: {}", words(w, rng, *tool_result_tokens))
                    }
                },
                w,
            );
        }
        Workload::Single {
            requests: n,
            input_tokens,
        }
        | Workload::Concurrent {
            requests: n,
            input_tokens,
            ..
        } => plain(vec![None; *n as usize], *input_tokens, &mut requests),
        Workload::Batch {
            batch_size,
            batches,
            input_tokens,
        } => {
            pacing = Pacing::Batches { size: *batch_size };
            plain(
                vec![None; (*batch_size * *batches) as usize],
                *input_tokens,
                &mut requests,
            );
        }
        Workload::Rate {
            process,
            rate,
            requests: count,
            duration,
            max_concurrency,
            input_tokens,
        } => {
            pacing = Pacing::Open {
                max_concurrency: *max_concurrency,
                limit: *duration,
            };
            // Arrival times depend on the seed only, not on the prompt salt: an experiment
            // always has the same timing, live or replayed.
            let mut rng = Rng::for_stream(seed, 0, &format!("arrivals/{}", p.name), 0, 0);
            let at = arrivals(&mut rng, *process, *rate, *count, *duration);
            plain(
                at.into_iter().map(Some).collect(),
                *input_tokens,
                &mut requests,
            );
        }
        Workload::Trace {
            time_scale,
            max_concurrency,
            entries,
            ..
        } => {
            pacing = Pacing::Open {
                max_concurrency: *max_concurrency,
                limit: None,
            };
            let t0 = entries.first().map_or(0.0, |e| e.timestamp);
            for (i, e) in entries.iter().enumerate() {
                let mut rng =
                    Rng::for_stream(seed, salt, &format!("prompt/{}", p.name), i as u64, 0);
                let prompt = match e.prefix_id {
                    Some(id) => {
                        let shared = e.prefix_length.unwrap_or(e.input_length / 2);
                        let mut prefix_rng =
                            Rng::for_stream(seed, salt, &format!("trace-prefix/{}", p.name), id, 0);
                        let prefix = words(w, &mut prefix_rng, shared);
                        let rest = e.input_length - shared;
                        match (shared, rest) {
                            (0, _) => words(w, &mut rng, rest),
                            (_, 0) => prefix,
                            _ => format!("{prefix} {}", words(w, &mut rng, rest)),
                        }
                    }
                    None => words(w, &mut rng, e.input_length),
                };
                push(
                    false,
                    e.prefix_id.map(|id| id as u32),
                    prompt,
                    &mut requests,
                );
                if let Some(last) = requests.last_mut() {
                    last.at = Some(Duration::from_secs_f64((e.timestamp - t0) * time_scale));
                    last.max_tokens = e.output_length;
                }
            }
        }
        Workload::Ramp {
            from,
            to,
            duration,
            max_concurrency,
            input_tokens,
        } => {
            // The duration shapes the arrivals, all inside it; it does not cut the phase off.
            // The requests arriving at the peak rate are what a ramp is for: a limit would
            // cancel them, and how many depended on how fast the server was that day.
            pacing = Pacing::Open {
                max_concurrency: *max_concurrency,
                limit: None,
            };
            let at = ramp_arrivals(*from, *to, *duration);
            plain(
                at.into_iter().map(Some).collect(),
                *input_tokens,
                &mut requests,
            );
        }
        Workload::SharedPrefix {
            groups,
            prefix_tokens,
            suffixes,
            suffix_tokens,
            prefix_from,
            ..
        } => {
            let prefixes: Vec<String> = (0..*groups)
                .map(|g| {
                    let mut rng = Rng::for_stream(
                        seed,
                        salt,
                        &format!("prefix/{prefix_from}"),
                        u64::from(g),
                        0,
                    );
                    words(w, &mut rng, *prefix_tokens)
                })
                .collect();
            // Round-robin over groups: every group's first suffix, then every group's second…
            for s in 0..*suffixes {
                for (g, prefix) in prefixes.iter().enumerate() {
                    let mut rng = Rng::for_stream(
                        seed,
                        salt,
                        &format!("suffix/{}", p.name),
                        g as u64,
                        u64::from(s),
                    );
                    let prompt = format!("{prefix} {}", words(w, &mut rng, *suffix_tokens));
                    push(false, Some(g as u32), prompt, &mut requests);
                }
            }
        }
    }
    PhasePlan {
        name: p.name.clone(),
        pacing,
        requests,
        warmup_limit: p.warmup_duration,
        sessions,
    }
}

/// `n` sessions of `steps` steps each; `message(step, rng)` writes each step's user message.
#[allow(clippy::too_many_arguments)]
fn plan_sessions(
    seed: u64,
    salt: u64,
    p: &Phase,
    n: u32,
    steps: u32,
    system_tokens: Option<u32>,
    think: Duration,
    parallel: u32,
    label: &str,
    message: &dyn Fn(u32, &mut Rng) -> String,
    w: Words<'_>,
) -> Vec<SessionPlan> {
    let system = system_prompt(seed, salt, &p.name, system_tokens, w);
    (0..n)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec_io;

    const SRC: &str = r#"schema_version = 1
description = "t"
seed = 11
[targets.llamacpp]
[model]
name = "m"
[[phase]]
name = "cold"
warmup = 1
workload = { kind = "shared_prefix", groups = 3, prefix_tokens = 50, suffixes = 2, suffix_tokens = 5 }
request = { api = "completions", output_tokens = 4 }
[[phase]]
name = "warm"
workload = { kind = "shared_prefix", reuse = "cold", suffixes = 1, suffix_tokens = 5, concurrency = 2 }
request = { api = "chat", output_tokens = 4 }
[[phase]]
name = "load"
workload = { kind = "concurrent", concurrency = 4, requests = 10, input_tokens = 20 }
request = { api = "completions", output_tokens = 4 }
"#;

    fn exp() -> Experiment {
        spec_io::parse("t.toml", "t", SRC).unwrap()
    }

    #[test]
    fn a_schedule_counts_its_requests_and_its_widest_phase() {
        let s = schedule(&exp(), 5);
        // cold: 1 warmup + 3 groups × 2 suffixes; warm: 3 × 1; load: 10.
        assert_eq!(s.planned(), 7 + 3 + 10);
        assert_eq!(
            s.max_concurrency(),
            4,
            "load keeps four in flight, the others fewer"
        );
    }

    #[test]
    fn a_replay_keeps_the_warmups_a_timed_warmup_sent() {
        let src = SRC.replace("warmup = 1", "warmup = 3\nwarmup_duration = \"1s\"");
        let mut s = schedule(&spec_io::parse("t.toml", "t", &src).unwrap(), 5);
        assert_eq!(s.phases[0].requests.iter().filter(|r| r.warmup).count(), 3);
        let recorded = [("cold", 0), ("cold", 1), ("warm", 0), ("cold", 3)];
        s.keep_recorded_warmups(recorded.iter().copied());
        let cold = &s.phases[0];
        assert_eq!(cold.warmup_limit, None, "the limit is spent");
        assert_eq!(
            cold.requests.iter().filter(|r| r.warmup).count(),
            2,
            "warmups 0 and 1 were recorded; index 3 is a measured request"
        );
        assert_eq!(cold.requests.len(), 2 + 6);
        assert_eq!(
            s.phases[2].requests.len(),
            10,
            "phases without a limit stay whole"
        );
    }

    #[test]
    fn same_seed_and_salt_same_schedule_byte_for_byte() {
        let a = serde_json::to_string(&schedule(&exp(), 5)).unwrap();
        let b = serde_json::to_string(&schedule(&exp(), 5)).unwrap();
        assert_eq!(a, b);
        let c = serde_json::to_string(&schedule(&exp(), 6)).unwrap();
        assert_ne!(a, c, "the salt changes the prompts");
    }

    #[test]
    fn shared_prefix_structure() {
        let s = schedule(&exp(), 1);
        let cold = &s.phases[0];
        assert_eq!(cold.requests.len(), 1 + 6);
        assert!(cold.requests[0].warmup);
        let groups: Vec<_> = cold.requests[1..]
            .iter()
            .map(|r| r.group.unwrap())
            .collect();
        assert_eq!(groups, [0, 1, 2, 0, 1, 2]);
        let prefix =
            |r: &PlannedRequest| r.prompt.split(' ').take(50).collect::<Vec<_>>().join(" ");
        // Same group, same prefix; different groups, different prefixes; suffixes differ.
        assert_eq!(prefix(&cold.requests[1]), prefix(&cold.requests[4]));
        assert_ne!(prefix(&cold.requests[1]), prefix(&cold.requests[2]));
        assert_ne!(cold.requests[1].prompt, cold.requests[4].prompt);
        assert_eq!(cold.requests[1].prompt.split(' ').count(), 55);
        // The warm phase reuses cold's prefixes with new suffixes.
        let warm = &s.phases[1];
        assert_eq!(
            warm.pacing,
            Pacing::Closed {
                concurrency: 2,
                limit: None
            }
        );
        assert_eq!(warm.requests.len(), 3);
        for (w, c) in warm.requests.iter().zip(&cold.requests[1..4]) {
            assert_eq!(prefix(w), prefix(c));
            assert_ne!(w.prompt, c.prompt);
            assert_eq!(w.api, Api::Chat);
        }
    }

    #[test]
    fn concurrent_prompts_are_distinct_and_sized() {
        let s = schedule(&exp(), 1);
        let load = &s.phases[2];
        assert_eq!(
            load.pacing,
            Pacing::Closed {
                concurrency: 4,
                limit: None
            }
        );
        assert_eq!(load.requests.len(), 10);
        let mut prompts: Vec<_> = load.requests.iter().map(|r| r.prompt.as_str()).collect();
        assert!(prompts.iter().all(|p| p.split(' ').count() == 20));
        prompts.sort();
        prompts.dedup();
        assert_eq!(prompts.len(), 10);
    }

    #[test]
    fn length_distributions_sample_within_their_clamps() {
        let mut rng = Rng::for_stream(3, 0, "l", 0, 0);
        let d = LengthDist::Lognormal {
            median: 200.0,
            sigma: 0.5,
            min: 16,
            max: 1024,
        };
        let mut xs: Vec<u32> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
        xs.sort_unstable();
        assert!(xs.iter().all(|&x| (16..=1024).contains(&x)));
        let median = xs[xs.len() / 2];
        assert!((190..=210).contains(&median), "median {median}");
        let d = LengthDist::Uniform { min: 10, max: 12 };
        let seen: std::collections::BTreeSet<u32> = (0..1000).map(|_| d.sample(&mut rng)).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [10, 11, 12]);
        let d = LengthDist::Normal {
            mean: 32.0,
            stddev: 100.0,
            min: 4,
            max: 64,
        };
        assert!(
            (0..1000)
                .map(|_| d.sample(&mut rng))
                .all(|x| (4..=64).contains(&x))
        );
    }

    #[test]
    fn phases_with_length_distributions_vary_prompt_and_output_lengths() {
        let src = SRC.replace(
            "workload = { kind = \"concurrent\", concurrency = 4, requests = 10, input_tokens = 20 }",
            "workload = { kind = \"concurrent\", concurrency = 4, requests = 10 }\ninput_lengths = { dist = \"uniform\", min = 5, max = 50 }\noutput_lengths = { dist = \"uniform\", min = 1, max = 9 }",
        );
        let e = spec_io::parse("t.toml", "t", &src).unwrap();
        let a = schedule(&e, 1);
        let load = &a.phases[2];
        let lens: Vec<u32> = load.requests.iter().map(|r| r.input_tokens).collect();
        assert!(lens.iter().all(|&l| (5..=50).contains(&l)));
        assert!(lens.iter().collect::<std::collections::BTreeSet<_>>().len() > 3);
        for r in &load.requests {
            assert_eq!(r.prompt.split(' ').count() as u32, r.input_tokens);
            assert!((1..=9).contains(&r.max_tokens));
        }
        // Lengths come from the seed, not the salt.
        let b = schedule(&e, 2);
        let lens_b: Vec<u32> = b.phases[2]
            .requests
            .iter()
            .map(|r| r.input_tokens)
            .collect();
        assert_eq!(lens, lens_b);
    }

    #[test]
    fn a_ramp_sends_every_arrival_and_sets_no_limit() {
        let src = SRC.replace(
            "workload = { kind = \"concurrent\", concurrency = 4, requests = 10, input_tokens = 20 }",
            "workload = { kind = \"ramp\", from = 1.0, to = 6.0, duration = \"6s\", max_concurrency = 8, input_tokens = 20 }",
        );
        let e = spec_io::parse("t.toml", "t", &src).unwrap();
        let load = &schedule(&e, 1).phases[2];
        assert!(matches!(
            load.pacing,
            Pacing::Open {
                max_concurrency: Some(8),
                limit: None
            }
        ));
        // (1 + 6) / 2 req/s over 6 s, all inside the ramp.
        let at: Vec<Duration> = load.requests.iter().filter_map(|r| r.at).collect();
        assert_eq!(at.len(), 21);
        assert!(at.iter().all(|&t| t < Duration::from_secs(6)));
        assert!(at.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::for_stream(1, 2, "x", 0, 0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }
}
