//! Dates and times as `audit log` reads and prints them, with the `time` crate: parsing
//! `YYYY-MM-DD`, `YYYY-MM-DD[T| ]HH:MM[:SS]` (local time, or UTC with `Z`, or a `±HH:MM`
//! offset) and `@UNIX_SECONDS` into ms since the Unix epoch, and formatting ms as RFC 3339 in
//! UTC (`2026-11-30T21:00:55.000Z`) or in the host's local time
//! (`2026-11-30T22:00:55.000+01:00`). Calendar dates are checked (`2026-02-30` is refused).
//!
//! Local time is the offset of the host's time zone (`TZ`, `/etc/localtime`) at that instant,
//! as `time::UtcOffset::local_offset_at` reads it; where it cannot be determined (the process
//! has more than one thread) UTC is used.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

const DATE: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");
const HM: &[FormatItem<'static>] = format_description!("[hour]:[minute]");
const HMS: &[FormatItem<'static>] = format_description!("[hour]:[minute]:[second]");
const OFFSET: &[FormatItem<'static>] =
    format_description!("[offset_hour sign:mandatory]:[offset_minute]");
const SHOWN: &[FormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory]:[offset_minute]"
);
const SHOWN_UTC: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The host's UTC offset at `t` (UTC when it cannot be determined).
fn local_offset_at(t: OffsetDateTime) -> UtcOffset {
    UtcOffset::local_offset_at(t).unwrap_or(UtcOffset::UTC)
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (also with a space for `T`) followed by
/// nothing (local time), `Z` (UTC) or `±HH:MM`, or `@UNIX_SECONDS`, into ms since the Unix
/// epoch. `None` for anything else, including dates that do not exist.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    if let Some(n) = s.strip_prefix('@') {
        return n.parse::<i64>().ok()?.checked_mul(1000);
    }
    let (date, rest) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let (date, zone_of_date) = match (rest, date.strip_suffix('Z')) {
        (None, Some(d)) => (d, Some(UtcOffset::UTC)),
        _ => (date, None),
    };
    let date = Date::parse(date, DATE).ok()?;
    let (time, zone) = match rest {
        None => (Time::MIDNIGHT, zone_of_date),
        Some(t) => {
            let (clock, zone) = if let Some(c) = t.strip_suffix('Z') {
                (c, Some(UtcOffset::UTC))
            } else if let Some(i) = t.rfind(['+', '-']) {
                (&t[..i], Some(UtcOffset::parse(&t[i..], OFFSET).ok()?))
            } else {
                (t, None)
            };
            let time = Time::parse(clock, HMS)
                .or_else(|_| Time::parse(clock, HM))
                .ok()?;
            (time, zone)
        }
    };
    let civil = PrimitiveDateTime::new(date, time);
    let at = match zone {
        Some(z) => civil.assume_offset(z),
        None => {
            // The offset in force at that local time (as of the same instant read as UTC,
            // then corrected once: enough across a DST change but for the skipped hour).
            let guess = local_offset_at(civil.assume_utc());
            let first = civil.assume_offset(guess);
            civil.assume_offset(local_offset_at(first))
        }
    };
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).ok()
}

fn at_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

/// Formats ms since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC); out-of-range values
/// as `@<ms>ms`.
pub fn format_time_ms(ms: i64) -> String {
    at_ms(ms)
        .and_then(|t| t.format(SHOWN_UTC).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

/// Formats ms since the Unix epoch in the host's local time, RFC 3339 with its offset:
/// `2026-11-30T22:00:55.000+01:00`.
pub fn format_local_ms(ms: i64) -> String {
    at_ms(ms)
        .and_then(|t| t.to_offset(local_offset_at(t)).format(SHOWN).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_roundtrip() {
        let ms = parse_time_ms("2026-11-30T21:00:55Z").unwrap();
        assert_eq!(format_time_ms(ms), "2026-11-30T21:00:55.000Z");
        assert_eq!(parse_time_ms("1970-01-01Z"), Some(0));
        assert_eq!(parse_time_ms("1970-01-02T00:00Z"), Some(86_400_000));
        assert_eq!(parse_time_ms("@86400"), Some(86_400_000));
        assert_eq!(parse_time_ms("2024-02-29 12:00Z"), Some(1_709_208_000_000));
        assert_eq!(
            parse_time_ms("2024-02-29T13:00+01:00"),
            Some(1_709_208_000_000)
        );
        assert_eq!(format_time_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn impossible_dates_and_garbage_are_refused() {
        for s in [
            "2026-02-30",
            "2026-13-01",
            "2025-02-29",
            "2026-04-31T00:00Z",
            "2026-01-01T24:00",
            "2026-01-01T12:60",
            "yesterday",
            "2026-01-01T12:00+01:0",
            "",
        ] {
            assert_eq!(parse_time_ms(s), None, "{s}");
        }
        assert!(parse_time_ms("2024-02-29").is_some());
    }

    #[test]
    fn local_time_has_an_offset() {
        // The tests run with the host's zone; whatever it is, the text carries an offset and
        // reads back as the same instant.
        let ms = 1_709_208_000_123;
        let s = format_local_ms(ms);
        assert!(
            s.len() == 29 && (s.contains('+') || s[19..].contains('-')),
            "{s}"
        );
        assert_eq!(
            parse_time_ms(&s[..19].replace('T', " ")).map(|m| m / 1000),
            Some(ms / 1000)
        );
        assert_eq!(
            parse_time_ms(&format!("{}{}", &s[..19], &s[23..])),
            Some(ms - 123)
        );
    }
}
