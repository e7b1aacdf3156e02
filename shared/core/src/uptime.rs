//! An agent's uptime per day, from the intervals in which it did not report: what a tenant's
//! public status page shows for each cluster.

use time::{Date, Duration, OffsetDateTime, Time};

/// One UTC day: the share of its monitored time the agent reported in, or `None` when the
/// agent was not yet installed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayUptime {
    pub day: Date,
    pub uptime: Option<f64>,
    /// Seconds of the day the agent was watched (a partial day at either end).
    monitored_seconds: i64,
}

fn overlap(a: (OffsetDateTime, OffsetDateTime), b: (OffsetDateTime, OffsetDateTime)) -> i64 {
    let start = a.0.max(b.0);
    let end = a.1.min(b.1);
    (end - start).whole_seconds().max(0)
}

/// The last `days` UTC days up to `now`, oldest first. `monitored_since` is the agent's first
/// report; `silent` the intervals without reports (overlaps are counted once).
pub fn daily(
    now: OffsetDateTime,
    days: u16,
    monitored_since: Option<OffsetDateTime>,
    silent: &[(OffsetDateTime, OffsetDateTime)],
) -> Vec<DayUptime> {
    let mut merged: Vec<(OffsetDateTime, OffsetDateTime)> = silent
        .iter()
        .filter(|(from, to)| to > from)
        .copied()
        .collect();
    merged.sort_by_key(|(from, _)| *from);
    let mut intervals: Vec<(OffsetDateTime, OffsetDateTime)> = Vec::with_capacity(merged.len());
    for (from, to) in merged {
        match intervals.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => intervals.push((from, to)),
        }
    }
    let today = now.date();
    (0..i64::from(days))
        .rev()
        .map(|back| {
            let day = today - Duration::days(back);
            let start = day.with_time(Time::MIDNIGHT).assume_utc();
            let watched = (
                monitored_since.map_or(start, |since| since.max(start)),
                (start + Duration::days(1)).min(now),
            );
            let monitored_seconds = (watched.1 - watched.0).whole_seconds().max(0);
            let uptime = (monitored_since.is_some() && monitored_seconds > 0).then(|| {
                let down: i64 = intervals.iter().map(|i| overlap(*i, watched)).sum();
                1.0 - down as f64 / monitored_seconds as f64
            });
            DayUptime {
                day,
                uptime,
                monitored_seconds,
            }
        })
        .collect()
}

/// Uptime over all the monitored time of `days`, weighted by how long each day was watched.
pub fn overall(days: &[DayUptime]) -> Option<f64> {
    let watched: i64 = days
        .iter()
        .filter(|d| d.uptime.is_some())
        .map(|d| d.monitored_seconds)
        .sum();
    (watched > 0).then(|| {
        days.iter()
            .filter_map(|d| d.uptime.map(|u| u * d.monitored_seconds as f64))
            .sum::<f64>()
            / watched as f64
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn days_before_the_agent_was_installed_have_no_uptime() {
        let now = datetime!(2026-12-04 12:00 UTC);
        let days = daily(now, 90, Some(datetime!(2026-12-03 06:00 UTC)), &[]);
        assert_eq!(days.len(), 90);
        assert_eq!(days[89].day, now.date());
        assert!(days[..88].iter().all(|d| d.uptime.is_none()));
        assert_eq!(days[88].uptime, Some(1.0));
        assert_eq!(days[89].uptime, Some(1.0));
        assert_eq!(overall(&days), Some(1.0));
        assert_eq!(overall(&daily(now, 90, None, &[])), None);
    }

    #[test]
    fn a_silence_counts_against_the_days_it_spans_once() {
        let now = datetime!(2026-12-04 12:00 UTC);
        let silent = [
            // 22:00 to 02:00 across midnight, and an overlapping report of part of it.
            (
                datetime!(2026-12-02 22:00 UTC),
                datetime!(2026-12-03 02:00 UTC),
            ),
            (
                datetime!(2026-12-03 01:00 UTC),
                datetime!(2026-12-03 01:30 UTC),
            ),
        ];
        let days = daily(now, 3, Some(datetime!(2026-12-01 00:00 UTC)), &silent);
        assert_eq!(days[0].uptime, Some(22.0 / 24.0));
        assert_eq!(days[1].uptime, Some(22.0 / 24.0));
        // Today is watched for 12 hours so far, all of them reporting.
        assert_eq!(days[2].uptime, Some(1.0));
        let expected = (22.0 + 22.0 + 12.0) / (24.0 + 24.0 + 12.0);
        assert!((overall(&days).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn a_silence_still_going_counts_up_to_now() {
        let now = datetime!(2026-12-04 12:00 UTC);
        let days = daily(
            now,
            1,
            Some(datetime!(2026-11-01 00:00 UTC)),
            &[(datetime!(2026-12-04 09:00 UTC), now)],
        );
        assert_eq!(days[0].uptime, Some(0.75));
    }
}
