//! UTC civil dates and times as `audit log` reads and prints them: parsing
//! `YYYY-MM-DD[THH:MM[:SS]][Z]` and `@UNIX_SECONDS` into ms since the Unix epoch, and
//! formatting ms as `YYYY-MM-DDTHH:MM:SS.mmmZ`. Written out with H. Hinnant's civil-date
//! algorithms (<https://howardhinnant.github.io/date_algorithms.html>) rather than a date
//! crate: the agent needs UTC only, no time zones or calendars.

/// Days since 1970-01-01 of the proleptic Gregorian date `y`-`m`-`d` (H. Hinnant, "chrono-
/// Compatible Low-Level Date Algorithms", `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS][Z]` (also with a space for `T`), all UTC, or
/// `@UNIX_SECONDS`, into ms since the Unix epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Some(n) = s.strip_prefix('@') {
        return n.parse::<i64>().ok()?.checked_mul(1000);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let (y, m, d): (i64, i64, i64) = (
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
        dp.next()?.parse().ok()?,
    );
    if dp.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = 0;
    if let Some(t) = time {
        let mut tp = t.split(':');
        let h: i64 = tp.next()?.parse().ok()?;
        let mi: i64 = tp.next()?.parse().ok()?;
        let se: i64 = match tp.next() {
            Some(x) => x.parse().ok()?,
            None => 0,
        };
        if tp.next().is_some() || h > 23 || mi > 59 || se > 60 || h < 0 || mi < 0 || se < 0 {
            return None;
        }
        secs = h * 3600 + mi * 60 + se;
    }
    Some((days_from_civil(y, m, d) * 86400 + secs) * 1000)
}

/// Formats ms since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn format_time_ms(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // H. Hinnant's `civil_from_days`, the inverse of `days_from_civil`.
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_roundtrip() {
        let ms = parse_time_ms("2026-11-30T21:00:55Z").unwrap();
        assert_eq!(format_time_ms(ms), "2026-11-30T21:00:55.000Z");
        assert_eq!(parse_time_ms("1970-01-01"), Some(0));
        assert_eq!(parse_time_ms("@86400"), Some(86_400_000));
        assert_eq!(parse_time_ms("2024-02-29 12:00"), Some(1_709_208_000_000));
        assert_eq!(parse_time_ms("2024-13-01"), None);
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(format_time_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
