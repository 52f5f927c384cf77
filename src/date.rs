//! Calendar days as LDAP's `shadowExpire` counts them (days since 1970-01-01, UTC), parsing of
//! `YYYY-MM-DD`, and the renewal policy's "next semester" deadline. No time zones: a day is a UTC day.

use std::time::{SystemTime, UNIX_EPOCH};

/// A date, a duration or an end date that cannot be used, with what to type instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("`{0}` is not a date: write it as YYYY-MM-DD, for example 2027-03-15")]
    NotADate(String),
    #[error("{0} does not exist in the calendar")]
    NoSuchDay(String),
    #[error("`{0}` is not a month and day: write it as MM-DD, for example 09-01")]
    NotAMonthDay(String),
    #[error("`{0}` is not a duration: write a number and a unit, for example 90s, 30m, 6h or 2d")]
    NotADuration(String),
    #[error("`{0}` is far too long a duration: write at most a few days, for example 6h or 2d")]
    DurationTooLong(String),
    /// Neither `--until`, `--next-semester` nor `--cut-off-now`.
    #[error("say until when: --until YYYY-MM-DD or --next-semester")]
    NoEndDate,
    /// `--next-semester` with a renewal policy that lists no semester start.
    #[error("the renewal policy lists no semester start")]
    NoSemester,
    /// `--cut-off-now` with an `--until` (its last day) that is today or later.
    #[error("--cut-off-now ends access today, but --until {} is not in the past: give one or the other", format_day(*.until))]
    CutOffButNotPast { until: i64 },
    /// An `--until` (its last day) before `today`, without `--cut-off-now`.
    #[error("{} is before today ({}): the person could not log in from now on. If that is what you want, add --cut-off-now (or use `picaops access revoke LOGIN`, which also removes their keys); if it is a typo, check the year", format_day(*.until), format_day(*.today))]
    InThePast { until: i64, today: i64 },
    /// An `--until` more than [`MAX_DAYS_AHEAD`] days after `today`: a typo in the year.
    #[error("{} is more than 10 years away: no semester policy goes that far, it is probably a typo in the year. Write the date again (for example --until {}), or use --next-semester", format_day(*.until), format_day(*.today + 180))]
    TooFarAhead { until: i64, today: i64 },
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian calendar).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date (year, month, day) of a day number.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// `YYYY-MM-DD` → day number, or why not.
pub fn parse_date(text: &str) -> Result<i64, DateError> {
    let bad = || DateError::NotADate(text.to_string());
    let parts: Vec<&str> = text.trim().split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return Err(DateError::NoSuchDay(text.to_string()));
    }
    Ok(days_from_civil(y, m, d))
}

/// `MM-DD` → (month, day), for semester starts.
pub fn parse_month_day(text: &str) -> Result<(u32, u32), DateError> {
    let bad = || DateError::NotAMonthDay(text.to_string());
    let (m, d) = text.trim().split_once('-').ok_or_else(bad)?;
    let (Ok(m), Ok(d)) = (m.parse::<u32>(), d.parse::<u32>()) else {
        return Err(bad());
    };
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(2024, m) {
        return Err(bad());
    }
    Ok((m, d))
}

pub fn format_day(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Today's day number (UTC).
pub fn today() -> i64 {
    now_secs().div_euclid(86400)
}

/// The first semester start strictly after `today`, plus `grace_days`: Picasoft's "about one
/// month after the start of the next semester". `starts` are (month, day) pairs.
pub fn next_semester_deadline(today: i64, starts: &[(u32, u32)], grace_days: u32) -> Option<i64> {
    let (year, _, _) = civil_from_days(today);
    let next = (year..=year + 1)
        .flat_map(|y| starts.iter().map(move |&(m, d)| days_from_civil(y, m, d)))
        .filter(|&start| start > today)
        .min()?;
    Some(next + grace_days as i64)
}

/// Parses a duration such as `90s`, `30m`, `6h`, `2d` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, DateError> {
    let t = text.trim();
    let bad = || DateError::NotADuration(text.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult)
        .ok_or_else(|| DateError::DurationTooLong(text.to_string()))
}

/// The furthest end date `--until` takes, in days from today: beyond any semester policy, so a
/// date further out is a typo (2207 for 2027).
pub const MAX_DAYS_AHEAD: i64 = 10 * 366;

/// The `shadowExpire` to store for an end date given by hand (`--until DATE`: `last_day` is
/// the last day access works), checked against `today`. A date before today is refused unless
/// `cut_off_now` says the person must be cut off now; then (and with `cut_off_now` alone) the
/// value is `today`, refused from today on, as `access revoke` stores — never a date from long
/// ago, which would read as a negative number.
pub fn end_from(last_day: Option<i64>, cut_off_now: bool, today: i64) -> Result<i64, DateError> {
    match (last_day, cut_off_now) {
        (None, true) => Ok(today),
        (None, false) => Err(DateError::NoEndDate),
        (Some(d), true) if d >= today => Err(DateError::CutOffButNotPast { until: d }),
        (Some(_), true) => Ok(today),
        (Some(d), false) if d < today => Err(DateError::InThePast { until: d, today }),
        (Some(d), false) if d > today + MAX_DAYS_AHEAD => {
            Err(DateError::TooFarAhead { until: d, today })
        }
        (Some(d), false) => Ok(d + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip_and_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(parse_date("2027-03-15").unwrap(), 20892);
        for d in [-1000, 0, 59, 60, 11016, 20000, 20892, 40000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(format_day(20892), "2027-03-15");
    }

    #[test]
    fn bad_dates_are_refused_with_the_format() {
        assert!(parse_date("2027-02-29")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        assert!(parse_date("15/03/2027")
            .unwrap_err()
            .to_string()
            .contains("YYYY-MM-DD"));
        assert!(parse_date("2027-3-15").is_err());
        assert!(parse_month_day("13-01").is_err());
        assert_eq!(parse_month_day("09-01").unwrap(), (9, 1));
    }

    #[test]
    fn next_semester_is_a_month_after_the_next_start() {
        let starts = [(2, 15), (9, 1)];
        // 2026-11-21: next start 2027-02-15, deadline 30 days later: 2027-03-17.
        let today = parse_date("2026-11-21").unwrap();
        let d = next_semester_deadline(today, &starts, 30).unwrap();
        assert_eq!(format_day(d), "2027-03-17");
        // On a start day, the next one is the following semester's.
        let today = parse_date("2027-09-01").unwrap();
        assert_eq!(
            format_day(next_semester_deadline(today, &starts, 0).unwrap()),
            "2028-02-15"
        );
        assert_eq!(next_semester_deadline(today, &[], 30), None);
    }

    #[test]
    fn hand_written_end_dates_are_checked_against_today() {
        let today = parse_date("2026-12-04").unwrap();
        assert_eq!(end_from(Some(today + 10), false, today), Ok(today + 11));
        assert_eq!(end_from(Some(today), false, today), Ok(today + 1));
        // The typo for 2027 and an absurd year: refused, with what to type instead.
        let typo = parse_date("1027-03-15").unwrap();
        let e = end_from(Some(typo), false, today).unwrap_err().to_string();
        assert!(
            e.contains("before today") && e.contains("--cut-off-now"),
            "{e}"
        );
        let e = end_from(Some(parse_date("2207-03-15").unwrap()), false, today)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10 years") && e.contains("--until 2027-"), "{e}");
        // Cut off now: today, never the long-ago date (which reads as a negative number).
        assert_eq!(end_from(Some(typo), true, today), Ok(today));
        assert_eq!(end_from(None, true, today), Ok(today));
        assert!(end_from(Some(today + 3), true, today).is_err());
        assert!(end_from(None, false, today).is_err());
    }

    #[test]
    fn durations() {
        // 213503982334602 d × 86400 wraps u64 to 61184 s (about 17 h, inside the 7-day bound): refused, not wrapped.
        assert!(parse_duration("213503982334602d")
            .unwrap_err()
            .to_string()
            .contains("far too long"));
        assert_eq!(parse_duration("6h").unwrap(), 21600);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert!(parse_duration("6 hours").is_err());
        assert!(parse_duration("h").is_err());
    }
}
