//! Checking a job's `schedule` (systemd `OnCalendar=` syntax) and reading durations and rates
//! (`26h`, `15min`, `10MiB/s`) from the inventory. Pure text functions: no I/O.
//!
//! The schedule check is a small parser for the forms a volunteer writes, not all of systemd's
//! grammar. Accepted (and every accepted form is also accepted by `systemd-analyze calendar`,
//! which tests/backup_units.rs verifies):
//!
//! - a shorthand: `minutely`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`, `annually`,
//!   `quarterly`, `semiannually`;
//! - `[WEEKDAYS] [DATE] [TIME]`, at least one part, in that order, separated by spaces:
//!   - WEEKDAYS: `Mon`, `Monday`, lists `Mon,Wed` and ranges `Mon..Fri` (any case);
//!   - DATE: `YEAR-MONTH-DAY` or `MONTH-DAY`;
//!   - TIME: `HOUR:MINUTE` or `HOUR:MINUTE:SECOND`;
//!   - each number is `*`, a value, a list `1,15`, a range `1..5`, or a repetition `*/6`, `0/15`.
//!
//! Not accepted (write it out instead): time zones, `~` (last days of the month), fractional
//! seconds, `@epoch`, `now`/`today`. The error says so.

/// Shorthands systemd expands (`daily` is `*-*-* 00:00:00`).
pub const SHORTHANDS: &[&str] = &[
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
];

/// Forms the documentation shows; each is accepted here and by `systemd-analyze calendar`
/// (both tested).
pub const EXAMPLES: &[&str] = &[
    "daily",
    "*-*-* 03:15",
    "03:15",
    "Mon..Fri 02:00",
    "Sat,Sun *-*-* 04:30:00",
    "*-*-01 05:00",
    "*:0/15",
    "Monday",
    "*-02-29 01:00",
    "2026-*-* 00/6:00",
    "mon,wed,fri 1,13:30",
];

/// Why a `schedule` is not an `OnCalendar=` expression picaops accepts, in words for the
/// volunteer (the inventory check puts it after "schedule `…` is not valid: ").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the schedule is empty")]
    Empty,
    #[error("the schedule must be one line")]
    MultiLine,
    #[error("too many parts ({0}): expected at most `WEEKDAYS DATE TIME`")]
    TooManyParts(usize),
    /// A part after the time (a time zone, most often).
    #[error("`{0}` is not understood here (time zones are not accepted: schedules use the host's local time)")]
    Trailing(String),
    #[error("`{0}` is not a weekday range (write `Mon..Fri`)")]
    WeekdayRange(String),
    #[error("`{0}` is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")]
    Weekday(String),
    #[error("`~` (counting days from the end of the month) is not accepted")]
    FromMonthEnd,
    #[error("`{0}` is not a date: write YEAR-MONTH-DAY (`*-*-*` for every day)")]
    Date(String),
    #[error("`{0}` is not a time: write HOUR:MINUTE or HOUR:MINUTE:SECOND (e.g. 03:15)")]
    Time(String),
    #[error("fractional seconds are not accepted")]
    FractionalSeconds,
    /// `what`: year, month, day, hour, minute or second.
    #[error("the {what} is missing")]
    Missing { what: &'static str },
    #[error("`{item}`: the repetition after `/` must be a whole number of at least 1")]
    Repetition { item: String },
    #[error("`{item}` is not a {what} range (write `1..5`)")]
    Range { what: &'static str, item: String },
    #[error("`{text}` is not a {what} (expected a number or `*`)")]
    NotANumber { what: &'static str, text: String },
    #[error("{what} {value} is out of range ({min}..{max})")]
    OutOfRange {
        what: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error("the {what} range `{range}` goes backwards (write the smaller value first)")]
    Backwards { what: &'static str, range: String },
}

/// Why a text is not a duration (`26h`, `15min`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("`{text}`: expected a number before `{rest}`")]
    NoNumber { text: String, rest: String },
    #[error("number too large")]
    NumberTooLarge,
    #[error("`{text}`: a unit is missing (s, min, h, d, w)")]
    NoUnit { text: String },
    #[error("`{0}` is not a unit (use s, min, h, d or w)")]
    Unit(String),
    #[error("duration too large")]
    TooLarge,
}

/// Why a text is not an upload rate (`10MiB/s`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("`{0}` is not a rate: write it per second, e.g. `10MiB/s`")]
    NotPerSecond(String),
    #[error("`{0}` must start with a whole number")]
    NoNumber(String),
    #[error("`{0}` is not a unit here (use KiB/s, MiB/s or GiB/s)")]
    Unit(String),
    #[error("a rate of 0 would stop the backup; leave `bandwidth` out for no limit")]
    Zero,
}

const WEEKDAYS: &[(&str, &str)] = &[
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// Checks an `OnCalendar=` expression; `Err` says what is wrong in words for the volunteer.
pub fn check_schedule(text: &str) -> Result<(), ScheduleError> {
    if text.trim().is_empty() {
        return Err(ScheduleError::Empty);
    }
    if text.contains('\n') || text.contains('\r') {
        return Err(ScheduleError::MultiLine);
    }
    let text = text.trim();
    if SHORTHANDS.contains(&text) {
        return Ok(());
    }
    let parts: Vec<&str> = text.split_whitespace().collect();
    if parts.len() > 3 {
        return Err(ScheduleError::TooManyParts(parts.len()));
    }
    let mut rest = parts.as_slice();
    if let Some(first) = rest.first() {
        if first.starts_with(|c: char| c.is_ascii_alphabetic()) {
            check_weekdays(first)?;
            rest = &rest[1..];
        }
    }
    if let Some(part) = rest.first() {
        if !part.contains(':') {
            check_date(part)?;
            rest = &rest[1..];
        }
    }
    if let Some(part) = rest.first() {
        check_time(part)?;
        rest = &rest[1..];
    }
    if let Some(extra) = rest.first() {
        return Err(ScheduleError::Trailing(extra.to_string()));
    }
    Ok(())
}

fn check_weekdays(text: &str) -> Result<(), ScheduleError> {
    for item in text.split(',') {
        let days: Vec<&str> = item.split("..").collect();
        if days.len() > 2 {
            return Err(ScheduleError::WeekdayRange(item.to_string()));
        }
        for day in days {
            let lower = day.to_ascii_lowercase();
            if !WEEKDAYS.iter().any(|(s, l)| lower == *s || lower == *l) {
                return Err(ScheduleError::Weekday(day.to_string()));
            }
        }
    }
    Ok(())
}

fn check_date(text: &str) -> Result<(), ScheduleError> {
    if text.contains('~') {
        return Err(ScheduleError::FromMonthEnd);
    }
    let parts: Vec<&str> = text.split('-').collect();
    let (year, month, day) = match parts.as_slice() {
        [y, m, d] => (Some(*y), *m, *d),
        [m, d] => (None, *m, *d),
        _ => return Err(ScheduleError::Date(text.to_string())),
    };
    if let Some(year) = year {
        check_values(year, "year", 1970, 2199)?;
    }
    check_values(month, "month", 1, 12)?;
    check_values(day, "day", 1, 31)
}

fn check_time(text: &str) -> Result<(), ScheduleError> {
    let parts: Vec<&str> = text.split(':').collect();
    let (hour, minute, second) = match parts.as_slice() {
        [h, m] => (*h, *m, None),
        [h, m, s] => (*h, *m, Some(*s)),
        _ => return Err(ScheduleError::Time(text.to_string())),
    };
    check_values(hour, "hour", 0, 23)?;
    check_values(minute, "minute", 0, 59)?;
    if let Some(second) = second {
        if second.contains('.') {
            return Err(ScheduleError::FractionalSeconds);
        }
        check_values(second, "second", 0, 59)?;
    }
    Ok(())
}

/// One date or time component: `*`, `5`, `1,15`, `1..5`, `*/6`, `0/15`, or lists of those.
fn check_values(text: &str, what: &'static str, min: u32, max: u32) -> Result<(), ScheduleError> {
    if text.is_empty() {
        return Err(ScheduleError::Missing { what });
    }
    for item in text.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(n) if n >= 1 => {}
                _ => {
                    return Err(ScheduleError::Repetition {
                        item: item.to_string(),
                    })
                }
            }
        }
        if base == "*" {
            continue;
        }
        let bounds: Vec<&str> = base.split("..").collect();
        if bounds.len() > 2 {
            return Err(ScheduleError::Range {
                what,
                item: item.to_string(),
            });
        }
        let mut values = Vec::new();
        for b in &bounds {
            let v: u32 = b.parse().map_err(|_| ScheduleError::NotANumber {
                what,
                text: b.to_string(),
            })?;
            if v < min || v > max {
                return Err(ScheduleError::OutOfRange {
                    what,
                    value: v,
                    min,
                    max,
                });
            }
            values.push(v);
        }
        if values.len() == 2 && values[0] > values[1] {
            return Err(ScheduleError::Backwards {
                what,
                range: base.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads a duration: one or more `NUMBER UNIT` pairs, units `s`, `min` (or `m`), `h`, `d`, `w`
/// (`26h`, `1d12h`, `15min`, `90s`). Returns seconds.
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::NoNumber {
                text: text.to_string(),
                rest: rest.to_string(),
            });
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| DurationError::NumberTooLarge)?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let seconds = match unit {
            "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "" => {
                return Err(DurationError::NoUnit {
                    text: text.to_string(),
                })
            }
            other => return Err(DurationError::Unit(other.to_string())),
        };
        total = number
            .checked_mul(seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or(DurationError::TooLarge)?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// Reads an upload rate such as `10MiB/s` or `512KiB/s`; returns KiB/s (restic's
/// `--limit-upload` unit). At least 1 KiB/s.
pub fn parse_rate(text: &str) -> Result<u64, RateError> {
    let text = text.trim();
    let Some(size) = text.strip_suffix("/s") else {
        return Err(RateError::NotPerSecond(text.to_string()));
    };
    let digits = size
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(size.len());
    let number: u64 = size[..digits]
        .parse()
        .map_err(|_| RateError::NoNumber(text.to_string()))?;
    let kib = match size[digits..].trim() {
        "KiB" => number,
        "MiB" => number.saturating_mul(1024),
        "GiB" => number.saturating_mul(1024 * 1024),
        other => return Err(RateError::Unit(other.to_string())),
    };
    if kib == 0 {
        return Err(RateError::Zero);
    }
    Ok(kib)
}

/// Writes seconds the way people read them: `26h`, `1d 2h`, `15min`, `45s`.
pub fn human_duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".into();
    }
    let units = [("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (name, size) in units {
        if rest >= size {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_people_write() {
        for ok in EXAMPLES {
            assert_eq!(check_schedule(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn schedules_refused_with_a_reason() {
        for (bad, says) in [
            ("", "empty"),
            ("daily\n03:00", "one line"),
            ("every night", "weekday"),
            ("*-*-* 25:00", "hour 25"),
            ("*-13-* 00:00", "month 13"),
            ("03:15 Europe/Paris", "time zones"),
            ("*-*~01 00:00", "`~`"),
            ("*:0/0", "at least 1"),
            ("Fri..Mon..Sun", "range"),
            ("*-*-* 5..2:00", "backwards"),
        ] {
            let err = check_schedule(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(parse_duration("26h"), Ok(26 * 3600));
        assert_eq!(parse_duration("1d12h"), Ok(36 * 3600));
        assert_eq!(parse_duration("15min"), Ok(900));
        assert!(parse_duration("26").is_err());
        assert!(parse_duration("2 days").is_err());
        assert_eq!(parse_rate("10MiB/s"), Ok(10 * 1024));
        assert_eq!(parse_rate("512KiB/s"), Ok(512));
        assert!(parse_rate("10MB/s").is_err());
        assert!(parse_rate("10MiB").is_err());
        assert!(parse_rate("0KiB/s").is_err());
        assert_eq!(human_duration(26 * 3600), "1d 2h");
        assert_eq!(human_duration(900), "15min");
    }
}
