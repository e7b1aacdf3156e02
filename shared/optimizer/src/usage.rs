//! Usage history per workload container: one sketch per UTC day for 14 days, folded from the
//! complete hours the agent's snapshots carry, each hour once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spotwise_core::rightsizing::{MAX_USAGE_CONTAINERS, UsageHour, UsageSketch};

/// Days of usage a recommendation reads.
pub const HISTORY_DAYS: i64 = 14;
const DAY: i64 = 86_400;
/// A day counts as a weekday's full cycle, peak included, when this many of its hours have
/// samples.
const FULL_DAY_HOURS: u32 = 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageHistory {
    /// The last hour folded (Unix seconds of its start): an hour is folded once, however many
    /// snapshots carry it.
    pub last_hour: Option<i64>,
    pub containers: BTreeMap<String, ContainerHistory>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHistory {
    /// Keyed by days since the Unix epoch (UTC).
    pub days: BTreeMap<i64, DayUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    pub sketch: UsageSketch,
    /// Bit `h` is set when hour `h` (UTC) of the day had samples.
    pub hours: u32,
}

/// What a container's history says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSummary {
    /// Hours with samples in the window.
    pub hours: u32,
    /// Whether one Monday-to-Friday (UTC) day has samples in at least 20 of its hours, so its
    /// business-hours peak is in the history.
    pub full_weekday: bool,
    pub samples: u64,
    pub cpu_p50_m: u64,
    pub cpu_p95_m: u64,
    pub cpu_p99_m: u64,
    pub mem_peak_mib: u64,
}

/// Monday to Friday, for days since the epoch (1970-01-01 was a Thursday).
fn is_weekday(day: i64) -> bool {
    (day + 3).rem_euclid(7) < 5
}

impl UsageHistory {
    /// Adds the hours after [`Self::last_hour`]; returns how many it added. New containers
    /// beyond [`MAX_USAGE_CONTAINERS`] are not tracked.
    pub fn fold(&mut self, hours: &[UsageHour]) -> usize {
        let mut folded = 0;
        let mut hours: Vec<&UsageHour> = hours.iter().collect();
        hours.sort_by_key(|h| h.hour);
        for hour in hours {
            if self.last_hour.is_some_and(|last| hour.hour <= last) {
                continue;
            }
            let (day, bit) = (hour.hour.div_euclid(DAY), hour.hour.rem_euclid(DAY) / 3600);
            for (key, sketch) in &hour.containers {
                if sketch.samples == 0 {
                    continue;
                }
                if !self.containers.contains_key(key)
                    && self.containers.len() >= MAX_USAGE_CONTAINERS
                {
                    continue;
                }
                let slot = self
                    .containers
                    .entry(key.clone())
                    .or_default()
                    .days
                    .entry(day)
                    .or_default();
                slot.sketch.merge(sketch);
                slot.hours |= 1 << bit;
            }
            self.last_hour = Some(hour.hour);
            folded += 1;
        }
        folded
    }

    /// Drops days older than the window ending at `now` (Unix seconds), and containers left
    /// without any; returns whether it dropped anything.
    pub fn prune(&mut self, now: i64) -> bool {
        let first = now.div_euclid(DAY) - (HISTORY_DAYS - 1);
        let mut dropped = false;
        self.containers.retain(|_, c| {
            let days = c.days.len();
            c.days.retain(|&day, _| day >= first);
            dropped |= c.days.len() != days;
            !c.days.is_empty()
        });
        dropped
    }

    pub fn summary(&self, key: &str) -> Option<UsageSummary> {
        let history = self.containers.get(key)?;
        let mut all = UsageSketch::default();
        let mut hours = 0;
        let mut full_weekday = false;
        for (&day, usage) in &history.days {
            all.merge(&usage.sketch);
            hours += usage.hours.count_ones();
            full_weekday |= is_weekday(day) && usage.hours.count_ones() >= FULL_DAY_HOURS;
        }
        Some(UsageSummary {
            hours,
            full_weekday,
            samples: u64::from(all.samples),
            cpu_p50_m: all.cpu_percentile(50.0)?,
            cpu_p95_m: all.cpu_percentile(95.0)?,
            cpu_p99_m: all.cpu_percentile(99.0)?,
            mem_peak_mib: all.mem_peak_mib,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// 2026-11-30, a Monday, 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800;

    fn hour(at: i64, cpu: u64, mem: u64) -> UsageHour {
        let mut sketch = UsageSketch::default();
        for _ in 0..12 {
            sketch.add(cpu, mem);
        }
        UsageHour {
            hour: at,
            containers: BTreeMap::from([("shop/Deployment/web/app".to_owned(), sketch)]),
        }
    }

    #[test]
    fn each_hour_is_folded_once() {
        let mut history = UsageHistory::default();
        let hours = [hour(MONDAY, 100, 200), hour(MONDAY + 3600, 300, 250)];
        assert_eq!(history.fold(&hours), 2);
        // The next snapshot carries the second hour again and a third.
        assert_eq!(
            history.fold(&[hours[1].clone(), hour(MONDAY + 7200, 50, 900)]),
            1
        );
        let summary = history.summary("shop/Deployment/web/app").unwrap();
        assert_eq!(summary.hours, 3);
        assert_eq!(summary.samples, 36);
        assert_eq!(summary.mem_peak_mib, 900);
        assert!(!summary.full_weekday);
        assert!(summary.cpu_p99_m >= 300 && summary.cpu_p50_m >= 100 && summary.cpu_p50_m < 110);
    }

    #[test]
    fn a_full_weekday_counts_and_a_weekend_does_not() {
        assert!(is_weekday(MONDAY / DAY));
        assert!(!is_weekday(MONDAY / DAY - 1)); // Sunday
        let mut weekend = UsageHistory::default();
        weekend.fold(
            &(0..24)
                .map(|h| hour(MONDAY - 2 * DAY + h * 3600, 100, 100))
                .collect::<Vec<_>>(),
        );
        let summary = weekend.summary("shop/Deployment/web/app").unwrap();
        assert_eq!((summary.hours, summary.full_weekday), (24, false));
        let mut weekday = UsageHistory::default();
        weekday.fold(
            &(0..20)
                .map(|h| hour(MONDAY + h * 3600, 100, 100))
                .collect::<Vec<_>>(),
        );
        assert!(
            weekday
                .summary("shop/Deployment/web/app")
                .unwrap()
                .full_weekday
        );
    }

    #[test]
    fn days_leave_the_window_after_fourteen_days() {
        let mut history = UsageHistory::default();
        history.fold(&[hour(MONDAY, 100, 100), hour(MONDAY + 5 * DAY, 100, 100)]);
        assert!(history.prune(MONDAY + 14 * DAY));
        assert_eq!(history.summary("shop/Deployment/web/app").unwrap().hours, 1);
        assert!(!history.prune(MONDAY + 14 * DAY), "nothing more to drop");
        assert!(history.prune(MONDAY + 19 * DAY));
        assert!(history.containers.is_empty());
    }
}
