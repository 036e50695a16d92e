//! Workload fidelity: was the load that was sent the load that was declared? Pure.
//!
//! For open-loop phases: the achieved arrival rate (from actual send instants) against the
//! declared one, and a Kolmogorov–Smirnov statistic of the actual gaps between sends against
//! the declared gap distribution (exponential for Poisson, gamma for gamma; constant and ramp
//! arrivals have no gap distribution to test). For every phase: the mean output length against
//! the requested `max_tokens`. A phase is `ok` when the achieved rate is within 10 % of the
//! scheduled one (what the harness controls) and the KS statistic is below its 1 % critical
//! value (1.63/√n).

use crate::core::record::RequestRecord;
use serde::{Deserialize, Serialize};

/// An arrival process for open-loop phases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrival {
    /// Evenly spaced: gap = 1/rate.
    Constant,
    /// Exponential gaps.
    Poisson,
    /// Gamma gaps with shape `burstiness` and scale 1/(rate·burstiness); 1 is Poisson, below 1
    /// burstier, above 1 more regular.
    Gamma { burstiness: f64 },
}

/// The open-loop load a phase declared, which its sends are held to: the mean rate, and the
/// arrival process where the gaps have a distribution to test.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Offered {
    pub rate: Option<f64>,
    pub process: Option<Arrival>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    /// Requests per second the workload declared (mean rate for a ramp); open loop only.
    pub declared_rate: Option<f64>,
    /// The rate of the generated schedule: (n − 1) / (last intended − first intended). A short
    /// Poisson phase's schedule legitimately differs from the declared rate.
    pub scheduled_rate: Option<f64>,
    /// (n − 1) / (last send − first send).
    pub achieved_rate: Option<f64>,
    /// KS distance between the actual send gaps and the declared gap distribution.
    pub ks_statistic: Option<f64>,
    /// The 1 % critical value for that many gaps.
    pub ks_critical: Option<f64>,
    /// Output tokens of successful requests ÷ the requested `max_tokens`.
    pub output_length_ratio: Option<f64>,
    /// Prompt tokens the server counted ÷ the declared input lengths.
    pub input_length_ratio: Option<f64>,
    pub ok: bool,
}

/// What fidelity needs of one request: a few dozen bytes, kept for a whole run while the
/// record itself goes to disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub sent: std::time::Duration,
    pub intended: std::time::Duration,
    /// Warmup or dropped: not part of the load that was sent.
    pub excluded: bool,
    pub ok: bool,
    pub output_tokens: u64,
    pub max_tokens: Option<u32>,
    pub prompt_tokens: Option<u64>,
    pub declared_input_tokens: Option<u32>,
}

impl From<&RequestRecord> for Row {
    fn from(r: &RequestRecord) -> Self {
        Row {
            sent: r.sent,
            intended: r.intended,
            excluded: r.warmup
                || r.failure
                    .as_ref()
                    .is_some_and(|f| f.kind == crate::core::record::ErrorKind::Dropped),
            ok: r.ok(),
            output_tokens: r.output_tokens(),
            max_tokens: r.max_tokens,
            prompt_tokens: r.usage.map(|u| u.prompt_tokens),
            declared_input_tokens: r.declared_input_tokens,
        }
    }
}

/// How well the send gaps fit the declared arrival process: the Kolmogorov–Smirnov statistic
/// and its 1 % critical value (Poisson and gamma processes, five gaps or more).
fn arrival_fit(
    sent: &[&Row],
    process: Option<Arrival>,
    declared_rate: Option<f64>,
) -> (Option<f64>, Option<f64>) {
    let gaps: Vec<f64> = sent
        .windows(2)
        .map(|w| (w[1].sent - w[0].sent).as_secs_f64())
        .collect();
    let critical = || Some(1.63 / (gaps.len() as f64).sqrt());
    match (process, declared_rate) {
        (Some(Arrival::Poisson), Some(rate)) if gaps.len() >= 5 => {
            (Some(ks(&gaps, |x| 1.0 - (-rate * x).exp())), critical())
        }
        (Some(Arrival::Gamma { burstiness }), Some(rate)) if gaps.len() >= 5 => {
            let theta = 1.0 / (rate * burstiness);
            (
                Some(ks(&gaps, |x| gamma_p(burstiness, x / theta))),
                critical(),
            )
        }
        _ => (None, None),
    }
}

/// Fidelity of one phase from its requests' rows.
pub fn fidelity(offered: Offered, rows: &[Row]) -> Fidelity {
    let sent: Vec<&Row> = {
        let mut v: Vec<&Row> = rows.iter().filter(|r| !r.excluded).collect();
        v.sort_by_key(|r| r.sent);
        v
    };
    let Offered {
        rate: declared_rate,
        process,
    } = offered;
    let rate_of = |first: std::time::Duration, last: std::time::Duration| {
        (declared_rate.is_some() && sent.len() >= 2 && last > first)
            .then(|| (sent.len() - 1) as f64 / (last - first).as_secs_f64())
    };
    let (achieved_rate, scheduled_rate) = match (sent.first(), sent.last()) {
        (Some(a), Some(b)) => {
            let first = sent.iter().map(|r| r.intended).min().unwrap_or(a.intended);
            let last = sent.iter().map(|r| r.intended).max().unwrap_or(b.intended);
            (rate_of(a.sent, b.sent), rate_of(first, last))
        }
        _ => (None, None),
    };
    let (ks_statistic, ks_critical) = arrival_fit(&sent, process, declared_rate);
    let ok_records: Vec<&&Row> = sent.iter().filter(|r| r.ok).collect();
    // Declared lengths travel with each record: the phase's `output_tokens` / `input_tokens`,
    // a trace entry's own, or a draw from the phase's length distribution. The server's
    // `usage.prompt_tokens` also counts the BOS token and any chat template, so chat phases sit
    // a little above 1.
    let ratio = |pairs: Vec<(f64, f64)>| -> Option<f64> {
        let want: f64 = pairs.iter().map(|p| p.1).sum();
        (want > 0.0).then(|| pairs.iter().map(|p| p.0).sum::<f64>() / want)
    };
    let output_length_ratio = ratio(
        ok_records
            .iter()
            .filter_map(|r| Some((r.output_tokens as f64, f64::from(r.max_tokens?))))
            .collect(),
    );
    let input_length_ratio = ratio(
        ok_records
            .iter()
            .filter_map(|r| Some((r.prompt_tokens? as f64, f64::from(r.declared_input_tokens?))))
            .collect(),
    );
    let rate_ok = match (scheduled_rate, achieved_rate) {
        (Some(d), Some(a)) => (a / d - 1.0).abs() <= 0.10,
        _ => true,
    };
    let ks_ok = match (ks_statistic, ks_critical) {
        (Some(d), Some(c)) => d <= c,
        _ => true,
    };
    Fidelity {
        declared_rate,
        scheduled_rate,
        achieved_rate,
        ks_statistic,
        ks_critical,
        output_length_ratio,
        input_length_ratio,
        ok: rate_ok && ks_ok,
    }
}

/// Nothing to hold the phase to (no open-loop load, no lengths): what [`fidelity`] finds of
/// a phase without requests.
impl Default for Fidelity {
    fn default() -> Self {
        Self {
            declared_rate: None,
            scheduled_rate: None,
            achieved_rate: None,
            ks_statistic: None,
            ks_critical: None,
            output_length_ratio: None,
            input_length_ratio: None,
            ok: true,
        }
    }
}

impl Fidelity {
    /// Reads a fidelity metric; `ok` is 1 or 0.
    pub fn value(&self, metric: &str) -> Option<f64> {
        match metric {
            "ok" => Some(if self.ok { 1.0 } else { 0.0 }),
            "declared_rate" => self.declared_rate,
            "scheduled_rate" => self.scheduled_rate,
            "achieved_rate" => self.achieved_rate,
            "ks_statistic" => self.ks_statistic,
            "output_length_ratio" => self.output_length_ratio,
            "input_length_ratio" => self.input_length_ratio,
            _ => None,
        }
    }
}

/// Kolmogorov–Smirnov distance of `samples` from the CDF `cdf`.
pub fn ks(samples: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let mut xs = samples.to_vec();
    xs.sort_by(f64::total_cmp);
    let n = xs.len() as f64;
    xs.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, nine coefficients).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        return std::f64::consts::PI.ln()
            - (std::f64::consts::PI * x).sin().ln()
            - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularised lower incomplete gamma P(a, x): the gamma(a, 1) CDF at x.
pub fn gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let lead = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        // Series.
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..500 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (sum.ln() + lead).exp().min(1.0)
    } else {
        // Continued fraction (modified Lentz) for Q, then P = 1 − Q.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..500 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (1.0 - (lead.exp() * h)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_cdf_matches_known_values() {
        // Shape 1 is the exponential CDF.
        for x in [0.1, 0.5, 1.0, 3.0, 8.0] {
            assert!(
                (gamma_p(1.0, x) - (1.0 - (-x).exp())).abs() < 1e-10,
                "x={x}"
            );
        }
        // P(2, 2) = 1 − 3e^−2; P(0.5, x) = erf(√x): erf(1) at x = 1.
        assert!((gamma_p(2.0, 2.0) - (1.0 - 3.0 * (-2.0f64).exp())).abs() < 1e-10);
        assert!((gamma_p(0.5, 1.0) - 0.842_700_792_949_714_9).abs() < 1e-9);
        // Q(5, 20) = e^−20 · Σ_{k<5} 20^k/k!.
        let q = (-20.0f64).exp() * (1.0 + 20.0 + 200.0 + 8000.0 / 6.0 + 160_000.0 / 24.0);
        assert!((gamma_p(5.0, 20.0) - (1.0 - q)).abs() < 1e-12);
        assert!((gamma_p(5.0, 6.0) - 0.714_943_499_683_3).abs() < 1e-9);
    }
}
