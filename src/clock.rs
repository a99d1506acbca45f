//! The clock and its calendar: Unix seconds now, the `Date:` header's RFC 5322 form, and
//! times as people read them (`2026-11-22 23:14:05 UTC`, `in 52 min`, `3 h ago`) for
//! `login` and `status`, and the log's RFC 3339. Token files and queue entries keep Unix
//! seconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 for a clock before 1970, which nothing here can mend).
#[must_use]
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-22 23:14:05 UTC`.
#[must_use]
pub fn utc(unix: u64) -> String {
    let (year, month, day) = civil_from_days(unix / 86_400);
    let secs = unix % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// RFC 3339 in UTC, e.g. `2026-11-22T23:14:05Z` (the log's timestamps).
#[must_use]
pub fn rfc3339(unix: u64) -> String {
    let (year, month, day) = civil_from_days(unix / 86_400);
    let secs = unix % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// How far `then` is from `now`, roughly: `in 52 min`, `3 h ago`, `in 2 days`, `now`.
#[must_use]
pub fn relative(then: u64, now: u64) -> String {
    let (span, future) = if then >= now {
        (then - now, true)
    } else {
        (now - then, false)
    };
    let amount = match span {
        0..60 => {
            return if span == 0 {
                "now".into()
            } else {
                in_or_ago(&format!("{span} s"), future)
            };
        }
        60..7_200 => format!("{} min", span / 60),
        7_200..172_800 => format!("{} h", span / 3600),
        _ => format!("{} days", span / 86_400),
    };
    in_or_ago(&amount, future)
}

fn in_or_ago(amount: &str, future: bool) -> String {
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// RFC 5322 date in UTC, e.g. `Sun, 22 Nov 2026 21:59:36 +0000`.
#[must_use]
pub fn rfc5322(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[((days + 4) % 7) as usize];
    format!(
        "{weekday}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5322_dates() {
        for (unix, want) in [
            (0, "Thu, 1 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_735_689_599, "Tue, 31 Dec 2024 23:59:59 +0000"),
            (1_795_384_776, "Sun, 22 Nov 2026 21:59:36 +0000"),
        ] {
            assert_eq!(rfc5322(unix), want);
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // 2026-11-22 23:14:05 UTC, the example in the issue.
        assert_eq!(utc(1_795_389_245), "2026-11-22 23:14:05 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_389_245), "2026-11-22T23:14:05Z");
    }

    #[test]
    fn relative_spans() {
        assert_eq!(relative(1000, 1000), "now");
        assert_eq!(relative(1030, 1000), "in 30 s");
        assert_eq!(relative(1000 + 52 * 60 + 7, 1000), "in 52 min");
        assert_eq!(relative(1000, 1000 + 3 * 3600), "3 h ago");
        assert_eq!(relative(1000 + 3 * 86_400, 1000), "in 3 days");
    }
}
