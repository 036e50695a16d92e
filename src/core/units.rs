//! Units on disk and for people: wall-clock labels in RFC 3339 from seconds since the Unix
//! epoch, and the words that qualify a capacity search's answer. Pure: the caller reads the
//! clock (`clock`), this only formats.

/// After a capacity search's answer: why it is only a lower bound ("" when it is exact).
pub fn capacity_bound(converged: bool, cut_short: bool) -> &'static str {
    match (converged, cut_short) {
        (true, _) => "",
        (false, true) => " at least (the run died mid-search)",
        (false, false) => " at least (probes ran out)",
    }
}

/// `2026-11-28T12:34:56Z` for `unix_s` seconds since 1970-01-01T00:00:00Z.
pub fn utc_rfc3339(unix_s: u64) -> String {
    let (y, m, d) = civil_from_days((unix_s / 86_400) as i64);
    let s = unix_s % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `20261128T123456Z`, for directory names.
pub fn utc_compact(unix_s: u64) -> String {
    utc_rfc3339(unix_s).replace(['-', ':'], "")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_rfc3339(1_795_869_296), "2026-11-28T12:34:56Z");
        assert_eq!(utc_compact(1_795_869_296), "20261128T123456Z");
        // Leap day.
        assert_eq!(utc_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
