//! Confidence intervals from repeats: a statistic measured once per repeat (each repeat a run
//! of the experiment's phases with fresh prompts) is summarised by the mean of its per-repeat
//! values and a two-sided 95 % Student-t interval for that mean. Run-to-run noise — the
//! server's state, the machine's load — is what a regression gate must see through, and only
//! repeats measure it: one run's requests are not independent draws of the next run's.
//!
//! An expression over several such estimates (`warm.ttft.p99 - 1.1 * baseline.warm.ttft.p99`)
//! gets a standard error by the delta method and degrees of freedom by Welch–Satterthwaite
//! ([`combine`]); that is Welch's unequal-variance t-test when the expression is a difference.

use serde::{Deserialize, Serialize};

/// The intervals' confidence level.
pub const CONFIDENCE: f64 = 0.95;

/// How the intervals are made, as results files say it.
pub const METHOD: &str = "student_t_mean_of_repeats";

/// Two-sided 95 % critical values of Student's t by degrees of freedom (1–30, 40, 60, 120).
const T975: [(f64, f64); 33] = [
    (1.0, 12.706),
    (2.0, 4.303),
    (3.0, 3.182),
    (4.0, 2.776),
    (5.0, 2.571),
    (6.0, 2.447),
    (7.0, 2.365),
    (8.0, 2.306),
    (9.0, 2.262),
    (10.0, 2.228),
    (11.0, 2.201),
    (12.0, 2.179),
    (13.0, 2.160),
    (14.0, 2.145),
    (15.0, 2.131),
    (16.0, 2.120),
    (17.0, 2.110),
    (18.0, 2.101),
    (19.0, 2.093),
    (20.0, 2.086),
    (21.0, 2.080),
    (22.0, 2.074),
    (23.0, 2.069),
    (24.0, 2.064),
    (25.0, 2.060),
    (26.0, 2.056),
    (27.0, 2.052),
    (28.0, 2.048),
    (29.0, 2.045),
    (30.0, 2.042),
    (40.0, 2.021),
    (60.0, 2.000),
    (120.0, 1.980),
];

/// The normal quantile the t quantiles tend to.
const Z975: f64 = 1.960;

/// The 97.5 % quantile of Student's t with `df` degrees of freedom (not necessarily a whole
/// number, as Welch–Satterthwaite gives): tabled values, interpolated linearly in 1/df, which
/// is within 0.3 % of the exact quantile between the table's points.
pub fn t975(df: f64) -> f64 {
    if df.is_nan() || df < 1.0 {
        // Below one degree of freedom (or NaN): no finite interval worth the name.
        return f64::INFINITY;
    }
    let mut prev = T975[0];
    for &(d, t) in &T975 {
        if df == d {
            return t;
        }
        if df < d {
            let (d0, t0) = prev;
            let w = (1.0 / d0 - 1.0 / df) / (1.0 / d0 - 1.0 / d);
            return t0 + w * (t - t0);
        }
        prev = (d, t);
    }
    let (d0, t0) = prev;
    // Between 120 and infinity, 1/df goes from 1/120 to 0.
    let w = (1.0 / d0 - 1.0 / df) / (1.0 / d0);
    t0 + w * (Z975 - t0)
}

/// One statistic over repeats: the mean of its per-repeat values and its 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    /// Sample standard deviation of the per-repeat values (n − 1 in the denominator).
    pub stddev: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// The per-repeat values, in repeat order.
    pub values: Vec<f64>,
}

impl Interval {
    /// From per-repeat values: `None` with fewer than two, or any that is not finite.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n < 2 || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let nf = n as f64;
        let mean = values.iter().sum::<f64>() / nf;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (nf - 1.0);
        let stddev = var.sqrt();
        let half = t975(nf - 1.0) * stddev / nf.sqrt();
        Some(Self {
            mean,
            stddev,
            ci_low: mean - half,
            ci_high: mean + half,
            values: values.to_vec(),
        })
    }

    /// The mean's standard error and degrees of freedom.
    pub fn spread(&self) -> Spread {
        let n = self.values.len() as f64;
        Spread {
            se: self.stddev / n.sqrt(),
            df: n - 1.0,
        }
    }

    /// The same interval with every figure multiplied by `k` (a change of unit).
    pub fn scaled(&self, k: f64) -> Self {
        Self {
            mean: self.mean * k,
            stddev: self.stddev * k.abs(),
            ci_low: (self.ci_low * k).min(self.ci_high * k),
            ci_high: (self.ci_low * k).max(self.ci_high * k),
            values: self.values.iter().map(|v| v * k).collect(),
        }
    }
}

/// A statistic's per-repeat values (in the units an assertion reads) and which repeats they
/// are: values with the same `pairing` come from corresponding repeats — the same run, or
/// replays of the same recording — so a difference can be taken repeat by repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeated {
    pub values: Vec<f64>,
    pub pairing: String,
}

impl Repeated {
    /// The mean's spread; `None` with fewer than two values.
    pub fn spread(&self) -> Option<Spread> {
        Interval::of(&self.values).map(|i| i.spread())
    }
}

/// An estimate's standard error and its degrees of freedom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub se: f64,
    pub df: f64,
}

impl Spread {
    /// The 95 % interval around `value`.
    pub fn interval(&self, value: f64) -> (f64, f64) {
        let half = t975(self.df) * self.se;
        (value - half, value + half)
    }
}

/// The spread of a weighted sum of independent estimates, each given as (weight × its
/// standard error, its degrees of freedom): standard errors add in quadrature, degrees of
/// freedom by Welch–Satterthwaite. `None` when every term is zero (nothing uncertain).
pub fn combine(terms: &[(f64, f64)]) -> Option<Spread> {
    let var: f64 = terms.iter().map(|(s, _)| s * s).sum();
    if var.is_nan() || var <= 0.0 {
        return None;
    }
    let denom: f64 = terms
        .iter()
        .filter(|(s, _)| *s != 0.0)
        .map(|(s, df)| s.powi(4) / df)
        .sum();
    Some(Spread {
        se: var.sqrt(),
        df: var * var / denom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_table_and_tend_to_the_normal() {
        assert_eq!(t975(4.0), 2.776);
        assert_eq!(t975(30.0), 2.042);
        // Between points, in 1/df: exact t(0.975, 35) = 2.030, t(0.975, 7.5) ≈ 2.334.
        assert!((t975(35.0) - 2.030).abs() < 0.003, "{}", t975(35.0));
        assert!((t975(7.5) - 2.334).abs() < 0.005, "{}", t975(7.5));
        assert!((t975(1e9) - 1.960).abs() < 1e-6);
        assert!((t975(240.0) - 1.970).abs() < 0.002, "{}", t975(240.0));
        assert!(t975(0.5).is_infinite());
        assert!(t975(f64::NAN).is_infinite());
        // Monotone: more data, narrower intervals.
        let mut last = f64::INFINITY;
        for i in 1..400 {
            let t = t975(f64::from(i) * 0.5 + 1.0);
            assert!(t <= last, "not monotone at {i}");
            last = t;
        }
    }

    #[test]
    fn an_interval_is_the_mean_plus_minus_t_standard_errors() {
        // Values 10, 12, 14: mean 12, s = 2, se = 2/√3, t(2) = 4.303.
        let i = Interval::of(&[10.0, 12.0, 14.0]).unwrap();
        assert_eq!(i.mean, 12.0);
        assert_eq!(i.stddev, 2.0);
        let half = 4.303 * 2.0 / 3f64.sqrt();
        assert!((i.ci_low - (12.0 - half)).abs() < 1e-9);
        assert!((i.ci_high - (12.0 + half)).abs() < 1e-9);
        assert_eq!(i.spread().df, 2.0);
        let ms = i.scaled(1e-3);
        assert!((ms.mean - 0.012).abs() < 1e-12 && ms.ci_low < ms.ci_high);
        // Identical repeats: a zero-width interval, not a missing one.
        let same = Interval::of(&[5.0, 5.0]).unwrap();
        assert_eq!((same.ci_low, same.ci_high), (5.0, 5.0));
        assert!(Interval::of(&[1.0]).is_none());
        assert!(Interval::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn welch_satterthwaite_gives_the_two_sample_degrees_of_freedom() {
        // Two means with se 1 and df 4 each: se √2, df 8 (equal variances, equal n).
        let s = combine(&[(1.0, 4.0), (-1.0, 4.0)]).unwrap();
        assert!((s.se - 2f64.sqrt()).abs() < 1e-12);
        assert!((s.df - 8.0).abs() < 1e-12);
        // One term dominating: its own degrees of freedom.
        let s = combine(&[(10.0, 4.0), (1e-6, 100.0)]).unwrap();
        assert!((s.df - 4.0).abs() < 1e-6);
        assert!(combine(&[(0.0, 4.0)]).is_none());
        assert!(combine(&[]).is_none());
        let (lo, hi) = Spread { se: 1.0, df: 4.0 }.interval(0.0);
        assert!((hi - 2.776).abs() < 1e-12 && (lo + 2.776).abs() < 1e-12);
    }
}
