//! The wall clock, for human labels only (`started_at`, directory names): measurements use
//! `Instant`s. Reads `SystemTime` so that `core::units` can stay pure.

use crate::core::units;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whole seconds since the Unix epoch (0 for a clock set before it).
pub fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-11-28T12:34:56Z` for `t`.
pub fn utc_rfc3339(t: SystemTime) -> String {
    units::utc_rfc3339(unix_s(t))
}

/// `20261128T123456Z` for `t`, for directory names.
pub fn utc_compact(t: SystemTime) -> String {
    units::utc_compact(unix_s(t))
}

/// Now, as `2026-11-28T12:34:56Z`.
pub fn now_rfc3339() -> String {
    utc_rfc3339(SystemTime::now())
}
