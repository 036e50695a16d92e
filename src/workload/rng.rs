//! The seeded randomness behind every schedule: length distributions sampled from
//! [`core::rng`](crate::core::rng) streams, and arrival times of open-loop phases.

pub use crate::core::rng::Rng;
use crate::spec::{Arrival, LengthDist};
use std::time::Duration;

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
