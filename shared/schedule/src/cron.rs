//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) as crontab(5)
//! reads them: lists, ranges, steps, month and weekday names, 0 or 7 for Sunday, and the
//! `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` shorthands. When both day fields are
//! restricted, a day matching either runs. Times are local to a zone: a time a DST change
//! skips runs once, shifted by the gap (02:30 on a spring-forward night runs at 03:30); a
//! repeated time runs once, at its first occurrence.
//!
//! Kept rather than taken from a crate: `croner` (4, with its jiff feature) agrees on zones,
//! `?` and either-day matching, but its errors name neither field nor value (the API's
//! as-you-type validation returns `minute: 60 is outside 0-59`), it finds an expression that
//! never fires only when searching, and it runs a skipped time at the hour after the gap
//! (03:00), which would move existing schedules. `cron` and `cron-parser` need chrono and
//! chrono-tz, a second time stack beside jiff's bundled database.

use std::fmt;

use jiff::civil::{Date, DateTime};
use time::OffsetDateTime;

use crate::Zone;

/// How far ahead a run is looked for; an expression that never fires within it is refused.
const HORIZON_DAYS: i32 = 366 * 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    source: String,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    /// Crontab's rule: with both day fields restricted, either may match.
    either_day: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), got {0}")]
    FieldCount(usize),
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("unknown shorthand {0:?} (use @hourly, @daily, @weekly, @monthly or @yearly)")]
    Shorthand(String),
    #[error("the expression never fires in the next five years")]
    Never,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// The value of the first name (`JAN` is 1, `SUN` is 0).
    names: &'static [&'static str],
    first_name: u32,
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    first_name: 0,
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    first_name: 0,
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    first_name: 0,
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    first_name: 1,
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    first_name: 0,
};

impl Cron {
    pub fn parse(expression: &str) -> Result<Self, CronError> {
        let trimmed = expression.trim();
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other if other.starts_with('@') => return Err(CronError::Shorthand(other.into())),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(CronError::FieldCount(fields.len()));
        };
        let mut days_of_week = field(dow, &DAY_OF_WEEK)?;
        // 7 is Sunday too.
        if days_of_week & (1 << 7) != 0 {
            days_of_week |= 1;
        }
        let cron = Self {
            source: trimmed.to_owned(),
            minutes: field(minute, &MINUTE)?,
            hours: u32::try_from(field(hour, &HOUR)?).unwrap_or(u32::MAX),
            days_of_month: u32::try_from(field(dom, &DAY_OF_MONTH)?).unwrap_or(u32::MAX),
            months: u16::try_from(field(month, &MONTH)?).unwrap_or(u16::MAX),
            days_of_week: u8::try_from(days_of_week & 0x7f).unwrap_or(u8::MAX),
            // `?` (as in AWS and Quartz cron) leaves a day field open, like `*`.
            either_day: !is_open(dom) && !is_open(dow),
        };
        // Catches `0 0 30 2 *` and friends, which parse but never run.
        if cron
            .next_after(&Zone::utc(), OffsetDateTime::UNIX_EPOCH)
            .is_none()
        {
            return Err(CronError::Never);
        }
        Ok(cron)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    fn day_matches(&self, date: Date) -> bool {
        let month = u16::from(date.month().unsigned_abs());
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day().unsigned_abs()) != 0;
        let dow =
            self.days_of_week & (1 << date.weekday().to_sunday_zero_offset().unsigned_abs()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first run strictly after `after`, in `zone`; `None` when there is none within five
    /// years.
    pub fn next_after(&self, zone: &Zone, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let start = zone.local(after).date();
        for offset in 0..HORIZON_DAYS {
            let date = start.checked_add(jiff::Span::new().days(offset)).ok()?;
            if !self.day_matches(date) {
                continue;
            }
            // A day's candidates are gathered before choosing, since a time moved by a DST
            // gap can land after a later time of the same day.
            let earliest = (0..24u8)
                .filter(|h| self.hours & (1 << h) != 0)
                .flat_map(|h| {
                    (0..60u8)
                        .filter(|m| self.minutes & (1 << m) != 0)
                        .map(move |m| (h, m))
                })
                .filter_map(|(h, m)| {
                    let local = DateTime::from_parts(
                        date,
                        jiff::civil::time(i8::try_from(h).ok()?, i8::try_from(m).ok()?, 0, 0),
                    );
                    zone.instant(local)
                })
                .filter(|&at| at > after)
                .min();
            if earliest.is_some() {
                return earliest;
            }
        }
        None
    }

    /// The next `count` runs after `after`.
    pub fn upcoming(
        &self,
        zone: &Zone,
        after: OffsetDateTime,
        count: usize,
    ) -> Vec<OffsetDateTime> {
        let mut runs = Vec::with_capacity(count);
        let mut cursor = after;
        while runs.len() < count {
            let Some(next) = self.next_after(zone, cursor) else {
                break;
            };
            runs.push(next);
            cursor = next;
        }
        runs
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// One field as a bit set of the values it allows.
fn field(text: &str, spec: &FieldSpec) -> Result<u64, CronError> {
    let error = |reason: String| CronError::Field {
        field: spec.name,
        reason,
    };
    if text.is_empty() {
        return Err(error("empty".into()));
    }
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let span = spec.max - spec.min + 1;
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|&s| s > 0 && s <= span)
                    .ok_or_else(|| {
                        error(format!("step {step:?} must be a number from 1 to {span}"))
                    })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" || range == "?" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            (value(low, spec)?, value(high, spec)?)
        } else {
            let low = value(range, spec)?;
            // `5/15` runs from 5 to the end of the range.
            (low, if part.contains('/') { spec.max } else { low })
        };
        if low > high {
            return Err(error(format!("range {range:?} runs backwards")));
        }
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn is_open(day_field: &str) -> bool {
    day_field.starts_with('*') || day_field.starts_with('?')
}

fn value(text: &str, spec: &FieldSpec) -> Result<u32, CronError> {
    let upper = text.to_ascii_uppercase();
    let parsed = match spec.names.iter().position(|n| *n == upper) {
        Some(index) => u32::try_from(index).unwrap_or(u32::MAX) + spec.first_name,
        None => text.parse::<u32>().map_err(|_| CronError::Field {
            field: spec.name,
            reason: format!("{text:?} is not a number or a name"),
        })?,
    };
    if !(spec.min..=spec.max).contains(&parsed) {
        return Err(CronError::Field {
            field: spec.name,
            reason: format!("{parsed} is outside {}-{}", spec.min, spec.max),
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    fn runs(
        expression: &str,
        zone: &str,
        after: OffsetDateTime,
        count: usize,
    ) -> Vec<OffsetDateTime> {
        Cron::parse(expression)
            .unwrap()
            .upcoming(&Zone::new(zone).unwrap(), after, count)
    }

    #[test]
    fn bad_expressions_say_which_field_is_wrong() {
        let cases = [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute: 60 is outside 0-59"),
            ("* 24 * * *", "hour: 24 is outside 0-23"),
            ("* * 0 * *", "day-of-month: 0 is outside 1-31"),
            ("* * * 13 *", "month: 13 is outside 1-12"),
            ("* * * * 8", "day-of-week: 8 is outside 0-7"),
            (
                "*/0 * * * *",
                "minute: step \"0\" must be a number from 1 to 60",
            ),
            (
                "1/4294967295 * * * *",
                "minute: step \"4294967295\" must be a number from 1 to 60",
            ),
            ("5-1 * * * *", "minute: range \"5-1\" runs backwards"),
            ("x * * * *", "minute: \"x\" is not a number or a name"),
            ("* * * FOO *", "month: \"FOO\" is not a number or a name"),
            ("0 0 30 2 *", "never fires"),
            ("@fortnightly", "unknown shorthand"),
            ("", "expected 5 fields"),
        ];
        for (expression, expected) in cases {
            let err = Cron::parse(expression).unwrap_err().to_string();
            assert!(err.contains(expected), "{expression:?}: {err}");
        }
    }

    #[test]
    fn lists_ranges_steps_and_names() {
        let from = datetime!(2026-11-25 10:07 UTC); // a Wednesday
        assert_eq!(
            runs("*/15 * * * *", "UTC", from, 3),
            [
                datetime!(2026-11-25 10:15 UTC),
                datetime!(2026-11-25 10:30 UTC),
                datetime!(2026-11-25 10:45 UTC)
            ]
        );
        assert_eq!(
            runs("0 9 * * MON-FRI", "UTC", from, 3),
            [
                datetime!(2026-11-26 09:00 UTC),
                datetime!(2026-11-27 09:00 UTC),
                datetime!(2026-11-30 09:00 UTC)
            ]
        );
        assert_eq!(
            runs("30 2,14 1 jan,jul *", "UTC", from, 2),
            [
                datetime!(2027-01-01 02:30 UTC),
                datetime!(2027-01-01 14:30 UTC)
            ]
        );
        assert_eq!(
            runs("5/20 8 * * *", "UTC", from, 3)[2],
            datetime!(2026-11-26 08:45 UTC)
        );
        assert_eq!(
            runs("@weekly", "UTC", from, 1),
            [datetime!(2026-11-29 00:00 UTC)]
        );
        assert_eq!(
            runs("0 0 * * 7", "UTC", from, 1),
            [datetime!(2026-11-29 00:00 UTC)]
        );
        assert_eq!(
            runs("0 0 29 2 *", "UTC", from, 1),
            [datetime!(2028-02-29 00:00 UTC)]
        );
    }

    #[test]
    fn a_question_mark_leaves_its_day_field_open() {
        // Mondays only, as AWS cron writes it; not "every day or Monday".
        let from = datetime!(2026-11-25 00:00 UTC); // a Wednesday
        assert_eq!(
            runs("0 12 ? * MON", "UTC", from, 2),
            [
                datetime!(2026-11-30 12:00 UTC),
                datetime!(2026-12-07 12:00 UTC)
            ]
        );
        assert_eq!(
            runs("0 12 1 * ?", "UTC", from, 1),
            [datetime!(2026-12-01 12:00 UTC)]
        );
    }

    #[test]
    fn either_day_field_matches_when_both_are_restricted() {
        // The 1st of the month or any Friday.
        let from = datetime!(2026-11-25 00:00 UTC);
        assert_eq!(
            runs("0 12 1 * FRI", "UTC", from, 3),
            [
                datetime!(2026-11-27 12:00 UTC),
                datetime!(2026-12-01 12:00 UTC),
                datetime!(2026-12-04 12:00 UTC)
            ]
        );
    }

    #[test]
    fn local_times_survive_dst_changes() {
        let berlin = runs(
            "0 6 * * *",
            "Europe/Berlin",
            datetime!(2026-03-27 12:00 UTC),
            4,
        );
        assert_eq!(
            berlin,
            [
                datetime!(2026-03-28 05:00 UTC),
                datetime!(2026-03-29 04:00 UTC),
                datetime!(2026-03-30 04:00 UTC),
                datetime!(2026-03-31 04:00 UTC)
            ]
        );
        // 02:30 does not exist on 2026-03-08 in New York: that day's run comes at 03:30 EDT.
        let skipped = runs(
            "30 2 * * *",
            "America/New_York",
            datetime!(2026-03-07 12:00 UTC),
            2,
        );
        assert_eq!(
            skipped,
            [
                datetime!(2026-03-08 07:30 UTC),
                datetime!(2026-03-09 06:30 UTC)
            ]
        );
        // 01:30 happens twice on 2026-11-01: one run, at the first.
        let repeated = runs(
            "30 1 * * *",
            "America/New_York",
            datetime!(2026-10-31 12:00 UTC),
            2,
        );
        assert_eq!(
            repeated,
            [
                datetime!(2026-11-01 05:30 UTC),
                datetime!(2026-11-02 06:30 UTC)
            ]
        );
    }

    #[test]
    fn upcoming_runs_are_strictly_increasing() {
        let cron = Cron::parse("*/7 */5 * * *").unwrap();
        let zone = Zone::new("Australia/Lord_Howe").unwrap();
        let from = datetime!(2026-10-03 00:00 UTC);
        let runs = cron.upcoming(&zone, from, 200);
        assert_eq!(runs.len(), 200);
        assert!(runs.windows(2).all(|w| w[0] < w[1]));
        assert!(runs[0] > from && runs[199] < from + Duration::days(30));
    }
}
