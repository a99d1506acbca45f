//! Times as people read them: `2026-11-22 23:14:05 UTC` and `in 52 min` / `3 h ago`, for
//! `login` and `status` (the token file itself keeps Unix seconds).

use crate::plan::civil_from_days;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // 2026-11-22 23:14:05 UTC, the example in the issue.
        assert_eq!(utc(1_795_389_245), "2026-11-22 23:14:05 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
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
