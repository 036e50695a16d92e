//! What a run could see, as types (written to `summary.json` as the words people read, and
//! read back from them): whether prompt lengths are exact, whether server metrics came.

use crate::core::engine::TargetKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Whether prompts have exactly their declared token lengths, and how that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptLengths {
    Exact(String),
    Approximate(String),
}

impl PromptLengths {
    pub fn is_exact(&self) -> bool {
        matches!(self, Self::Exact(_))
    }

    /// From the words a recording kept (`exact: …` or `approximate: …`).
    pub fn parse(words: &str) -> Self {
        match words.strip_prefix("exact: ") {
            Some(how) => Self::Exact(how.to_string()),
            None => Self::Approximate(
                words
                    .strip_prefix("approximate: ")
                    .unwrap_or(words)
                    .to_string(),
            ),
        }
    }
}

impl fmt::Display for PromptLengths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(how) => write!(f, "exact: {how}"),
            Self::Approximate(why) => write!(f, "approximate: {why}"),
        }
    }
}

impl Serialize for PromptLengths {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PromptLengths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|w| Self::parse(&w))
    }
}

/// Whether the server's `/metrics` was collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMetrics {
    /// `ok` of `of` scrapes succeeded (at least one).
    Scraped { ok: usize, of: usize },
    /// The experiment turned observation off.
    Off,
    /// Targets of this kind have no `/metrics`.
    NotServed(TargetKind),
    /// Every scrape failed; the first reason.
    Unavailable(Option<String>),
}

impl ServerMetrics {
    pub fn scraped(&self) -> bool {
        matches!(self, Self::Scraped { .. })
    }
}

impl ServerMetrics {
    /// From the words a summary keeps (what `Display` writes); `None` for other words.
    pub fn parse(words: &str) -> Option<Self> {
        if words == "off" {
            return Some(Self::Off);
        }
        if words == "unavailable" {
            return Some(Self::Unavailable(None));
        }
        if let Some(why) = words.strip_prefix("unavailable: ") {
            return Some(Self::Unavailable(Some(why.to_string())));
        }
        if let Some(kind) = words
            .strip_prefix("none: ")
            .and_then(|r| r.strip_suffix(" targets have no /metrics"))
        {
            return TargetKind::parse(kind).map(Self::NotServed);
        }
        let counts = words
            .strip_prefix("scraped (")?
            .strip_suffix(" scrapes succeeded)")?;
        let (ok, of) = counts.split_once(" of ")?;
        Some(Self::Scraped {
            ok: ok.parse().ok()?,
            of: of.parse().ok()?,
        })
    }
}

impl fmt::Display for ServerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scraped { ok, of } => write!(f, "scraped ({ok} of {of} scrapes succeeded)"),
            Self::Off => write!(f, "off"),
            Self::NotServed(kind) => write!(f, "none: {kind} targets have no /metrics"),
            Self::Unavailable(Some(why)) => write!(f, "unavailable: {why}"),
            Self::Unavailable(None) => write!(f, "unavailable"),
        }
    }
}

impl Serialize for ServerMetrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ServerMetrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let words = String::deserialize(d)?;
        Self::parse(&words).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{words}` is not `scraped (N of M scrapes succeeded)`, `off`, `none: …` or `unavailable…`"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lengths_round_trip_through_their_words() {
        for p in [
            PromptLengths::Exact("3 prompts counted".into()),
            PromptLengths::Approximate("no tokenizer".into()),
        ] {
            assert_eq!(PromptLengths::parse(&p.to_string()), p);
        }
        assert_eq!(
            serde_json::to_value(PromptLengths::Exact("x".into())).unwrap(),
            "exact: x"
        );
    }

    #[test]
    fn server_metrics_read_as_before() {
        let s = |m: ServerMetrics| m.to_string();
        assert_eq!(
            s(ServerMetrics::Scraped { ok: 3, of: 4 }),
            "scraped (3 of 4 scrapes succeeded)"
        );
        assert_eq!(s(ServerMetrics::Unavailable(None)), "unavailable");
        assert_eq!(
            s(ServerMetrics::NotServed(TargetKind::RunpodServerless)),
            format!(
                "none: {} targets have no /metrics",
                TargetKind::RunpodServerless
            )
        );
        assert!(!ServerMetrics::Off.scraped());
    }

    #[test]
    fn server_metrics_round_trip_through_their_words() {
        let all = [
            ServerMetrics::Scraped { ok: 3, of: 4 },
            ServerMetrics::Off,
            ServerMetrics::NotServed(TargetKind::Llamacpp),
            ServerMetrics::NotServed(TargetKind::RunpodServerless),
            ServerMetrics::Unavailable(None),
            ServerMetrics::Unavailable(Some("connection refused".into())),
        ];
        for m in all {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ServerMetrics>(&json).unwrap(), m);
        }
        let e = serde_json::from_str::<ServerMetrics>("\"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("`sometimes` is not"), "{e}");
    }
}
