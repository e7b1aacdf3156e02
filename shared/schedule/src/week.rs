//! The weekly hibernation matrix: 168 hour-of-week slots (Monday 00:00 local is slot 0), each
//! awake or asleep, read in the cluster's time zone.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Duration, OffsetDateTime};

use crate::Zone;

pub const HOURS_PER_WEEK: usize = 168;
/// UTC offsets are whole quarter hours, so every local hour starts on a UTC quarter hour.
const STEP: Duration = Duration::minutes(15);

/// Awake (`true`) or asleep per local hour of the week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeekMatrix([bool; HOURS_PER_WEEK]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatrixError {
    #[error("expected 7 days (Monday first), got {0}")]
    Days(usize),
    #[error("day {day} must be 24 characters, each 1 (awake) or 0 (asleep)")]
    Day { day: usize },
}

impl WeekMatrix {
    pub fn always_awake() -> Self {
        Self([true; HOURS_PER_WEEK])
    }

    /// Seven strings, Monday first, of 24 characters: `1` awake, `0` asleep.
    pub fn parse<S: AsRef<str>>(days: &[S]) -> Result<Self, MatrixError> {
        if days.len() != 7 {
            return Err(MatrixError::Days(days.len()));
        }
        let mut slots = [true; HOURS_PER_WEEK];
        for (day, text) in days.iter().enumerate() {
            let text = text.as_ref();
            if text.len() != 24 || !text.bytes().all(|b| b == b'0' || b == b'1') {
                return Err(MatrixError::Day { day });
            }
            for (hour, b) in text.bytes().enumerate() {
                slots[day * 24 + hour] = b == b'1';
            }
        }
        Ok(Self(slots))
    }

    /// Weekday hours `from..to` awake (`8, 20` is 08:00–20:00), weekends asleep.
    pub fn office_hours(from: usize, to: usize) -> Self {
        let mut slots = [false; HOURS_PER_WEEK];
        for day in 0..5 {
            for hour in from.min(24)..to.min(24) {
                slots[day * 24 + hour] = true;
            }
        }
        Self(slots)
    }

    pub fn days(&self) -> Vec<String> {
        self.0
            .chunks(24)
            .map(|day| day.iter().map(|&a| if a { '1' } else { '0' }).collect())
            .collect()
    }

    pub fn awake(&self, slot: usize) -> bool {
        self.0[slot % HOURS_PER_WEEK]
    }

    pub fn asleep_slots(&self) -> usize {
        self.0.iter().filter(|&&a| !a).count()
    }
}

impl Serialize for WeekMatrix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.days().serialize(serializer)
    }
}

/// Read day by day, so that a bad day is reported at its index (`awake[3]`).
impl<'de> Deserialize<'de> for WeekMatrix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let days = Vec::<DayHours>::deserialize(deserializer)?;
        Self::parse(&days).map_err(serde::de::Error::custom)
    }
}

/// One day of the matrix: 24 characters, `1` awake or `0` asleep, from 00:00 local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayHours(String);

impl AsRef<str> for DayHours {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DayHours {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() == 24 && text.bytes().all(|b| b == b'0' || b == b'1') {
            Ok(Self(text))
        } else {
            Err(serde::de::Error::custom(
                "must be 24 characters, each 1 (awake) or 0 (asleep)",
            ))
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for DayHours {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[01]{24}$"))
            .examples(["000000001111111111110000"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for DayHours {}

/// A change of state: from `at` on, the cluster should be awake or asleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub awake: bool,
}

/// A matrix read in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hibernation {
    pub zone: Zone,
    pub matrix: WeekMatrix,
}

impl Hibernation {
    /// The matrix's wish at `at`: the slot of the local weekday and hour. In the hour a DST
    /// change skips there is no slot to read; the repeated hour reads its slot twice.
    pub fn awake_at(&self, at: OffsetDateTime) -> bool {
        let local = self.zone.local(at);
        let day = usize::from(local.weekday().to_monday_zero_offset().unsigned_abs());
        let hour = usize::from(local.hour().unsigned_abs());
        self.matrix.awake(day * 24 + hour)
    }

    /// What the cluster should be at `at`, a manual wake-up (`wake_until`) winning over the matrix.
    pub fn desired(&self, at: OffsetDateTime, wake_until: Option<OffsetDateTime>) -> bool {
        wake_until.is_some_and(|until| at < until) || self.awake_at(at)
    }

    /// Every change of state after `from` up to `until`, in order.
    pub fn transitions(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
        wake_until: Option<OffsetDateTime>,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let mut state = self.desired(from, wake_until);
        let mut at = next_quarter(from);
        let mut override_end = wake_until.filter(|&u| u > from && u <= until);
        while at <= until {
            // The override ends between quarter hours: look at that instant too.
            let probe = match override_end {
                Some(end) if end <= at => {
                    override_end = None;
                    end
                }
                _ => {
                    let probe = at;
                    at += STEP;
                    probe
                }
            };
            let next = self.desired(probe, wake_until);
            if next != state {
                out.push(Transition {
                    at: probe,
                    awake: next,
                });
                state = next;
            }
        }
        out
    }

    /// Hours the cluster would sleep between `from` and `until`.
    pub fn asleep_hours(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
        wake_until: Option<OffsetDateTime>,
    ) -> f64 {
        let mut asleep = Duration::ZERO;
        let mut state_since = (from, self.desired(from, wake_until));
        for change in self.transitions(from, until, wake_until) {
            if !state_since.1 {
                asleep += change.at - state_since.0;
            }
            state_since = (change.at, change.awake);
        }
        if !state_since.1 {
            asleep += until - state_since.0;
        }
        asleep.as_seconds_f64() / 3600.0
    }
}

/// The first quarter hour strictly after `at`.
fn next_quarter(at: OffsetDateTime) -> OffsetDateTime {
    let step = STEP.whole_seconds();
    let seconds = at.unix_timestamp();
    let next = (seconds.div_euclid(step) + 1) * step;
    OffsetDateTime::from_unix_timestamp(next).unwrap_or(at + STEP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn berlin_office() -> Hibernation {
        Hibernation {
            zone: Zone::new("Europe/Berlin").unwrap(),
            matrix: WeekMatrix::office_hours(8, 20),
        }
    }

    #[test]
    fn parse_and_render_round_trip_with_errors_naming_the_day() {
        let mut days = vec!["1".repeat(24); 7];
        days[6] = "0".repeat(24);
        let matrix = WeekMatrix::parse(&days).unwrap();
        assert_eq!(matrix.days(), days);
        assert_eq!(matrix.asleep_slots(), 24);
        assert_eq!(
            WeekMatrix::parse(&days[..6]).unwrap_err(),
            MatrixError::Days(6)
        );
        days[2] = "1".repeat(23);
        assert_eq!(
            WeekMatrix::parse(&days).unwrap_err(),
            MatrixError::Day { day: 2 }
        );
        days[2] = "2".repeat(24);
        assert!(WeekMatrix::parse(&days).is_err());
        let json: Result<WeekMatrix, _> = serde_json::from_str(r#"["111"]"#);
        assert!(json.unwrap_err().to_string().contains("24 characters"));
        let one_day = format!(r#"["{}"]"#, "1".repeat(24));
        let json: Result<WeekMatrix, _> = serde_json::from_str(&one_day);
        assert!(json.unwrap_err().to_string().contains("7 days"));
    }

    #[test]
    fn slots_are_read_in_local_time() {
        let h = berlin_office();
        // 07:30 UTC on a winter Monday is 08:30 in Berlin (UTC+1).
        assert!(h.awake_at(datetime!(2026-01-05 07:30 UTC)));
        assert!(!h.awake_at(datetime!(2026-01-05 06:59 UTC)));
        // In summer (UTC+2) the same local hour starts an hour earlier in UTC.
        assert!(h.awake_at(datetime!(2026-07-06 06:00 UTC)));
        assert!(!h.awake_at(datetime!(2026-07-06 18:00 UTC)));
    }

    #[test]
    fn the_week_wraps_from_sunday_night_to_monday_morning() {
        let mut days = vec!["0".repeat(24); 7];
        // Awake Sunday 23:00 through Monday 01:00 only.
        days[6] = format!("{}1", "0".repeat(23));
        days[0] = format!("1{}", "0".repeat(23));
        let h = Hibernation {
            zone: Zone::utc(),
            matrix: WeekMatrix::parse(&days).unwrap(),
        };
        let changes = h.transitions(
            datetime!(2026-11-22 12:00 UTC),
            datetime!(2026-11-23 12:00 UTC),
            None,
        );
        assert_eq!(
            changes,
            vec![
                Transition {
                    at: datetime!(2026-11-22 23:00 UTC),
                    awake: true
                },
                Transition {
                    at: datetime!(2026-11-23 01:00 UTC),
                    awake: false
                },
            ]
        );
    }

    #[test]
    fn dst_changes_keep_local_hours() {
        let h = berlin_office();
        // Week of the spring change (Sunday 2026-03-29): Friday wakes at 07:00 UTC, the next
        // Monday at 06:00 UTC.
        let spring = h.transitions(
            datetime!(2026-03-27 00:00 UTC),
            datetime!(2026-03-31 00:00 UTC),
            None,
        );
        assert_eq!(spring[0].at, datetime!(2026-03-27 07:00 UTC));
        assert_eq!(spring[1].at, datetime!(2026-03-27 19:00 UTC));
        assert_eq!(spring[2].at, datetime!(2026-03-30 06:00 UTC));
        // Autumn (Sunday 2026-10-25): back to 07:00 UTC on Monday.
        let autumn = h.transitions(
            datetime!(2026-10-23 12:00 UTC),
            datetime!(2026-10-27 00:00 UTC),
            None,
        );
        assert_eq!(autumn[0].at, datetime!(2026-10-23 18:00 UTC));
        assert_eq!(autumn[1].at, datetime!(2026-10-26 07:00 UTC));
    }

    #[test]
    fn the_skipped_and_repeated_hours_of_a_dst_change() {
        let zone = Zone::new("America/New_York").unwrap();
        let asleep_on_sunday_at = |hour: usize| {
            let mut days = vec!["1".repeat(24); 7];
            days[6].replace_range(hour..=hour, "0");
            Hibernation {
                zone: zone.clone(),
                matrix: WeekMatrix::parse(&days).unwrap(),
            }
        };
        // 2026-03-08 skips 02:00-03:00: that slot is never read.
        let march = asleep_on_sunday_at(2);
        let (from, until) = (
            datetime!(2026-03-08 00:00 UTC),
            datetime!(2026-03-09 00:00 UTC),
        );
        assert!(march.transitions(from, until, None).is_empty());
        assert_eq!(march.asleep_hours(from, until, None), 0.0);
        // 2026-11-01 repeats 01:00-02:00: that slot is read twice.
        let november = asleep_on_sunday_at(1);
        let hours = november.asleep_hours(
            datetime!(2026-11-01 00:00 UTC),
            datetime!(2026-11-02 00:00 UTC),
            None,
        );
        assert!((hours - 2.0).abs() < 1e-9, "{hours}");
    }

    #[test]
    fn all_awake_and_all_asleep_never_change() {
        for matrix in [
            WeekMatrix::always_awake(),
            WeekMatrix::parse(&vec!["0".repeat(24); 7]).unwrap(),
        ] {
            let h = Hibernation {
                zone: Zone::new("Asia/Kolkata").unwrap(),
                matrix,
            };
            let from = datetime!(2026-11-25 03:17 UTC);
            assert!(
                h.transitions(from, from + Duration::days(7), None)
                    .is_empty()
            );
        }
    }

    #[test]
    fn half_hour_zones_change_on_the_half_hour() {
        let h = Hibernation {
            zone: Zone::new("Asia/Kolkata").unwrap(),
            matrix: WeekMatrix::office_hours(9, 18),
        };
        let changes = h.transitions(
            datetime!(2026-11-23 00:00 UTC),
            datetime!(2026-11-24 00:00 UTC),
            None,
        );
        assert_eq!(changes[0].at, datetime!(2026-11-23 03:30 UTC));
        assert_eq!(changes[1].at, datetime!(2026-11-23 12:30 UTC));
    }

    #[test]
    fn a_manual_wake_up_wins_until_it_ends() {
        let h = berlin_office();
        // Saturday, asleep all day; woken until 14:10 UTC.
        let from = datetime!(2026-11-28 09:00 UTC);
        let until = datetime!(2026-11-28 14:10 UTC);
        assert!(!h.desired(from, None));
        assert!(h.desired(from, Some(until)));
        assert!(!h.desired(until, Some(until)));
        let changes = h.transitions(from, from + Duration::days(1), Some(until));
        assert_eq!(
            changes,
            vec![Transition {
                at: until,
                awake: false
            }]
        );
        let hours = h.asleep_hours(from, from + Duration::days(1), Some(until));
        assert!((hours - (24.0 - 5.0 - 10.0 / 60.0)).abs() < 1e-9, "{hours}");
    }

    #[test]
    fn a_week_of_office_hours_sleeps_108_hours() {
        let h = berlin_office();
        let from = datetime!(2026-11-23 00:00 UTC);
        let hours = h.asleep_hours(from, from + Duration::days(7), None);
        assert!((hours - 108.0).abs() < 1e-9, "{hours}");
        assert_eq!(
            h.transitions(from, from + Duration::days(7), None).len(),
            10
        );
    }
}
