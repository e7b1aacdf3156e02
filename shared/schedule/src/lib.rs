//! Calendars evaluated in a cluster's own time zone: the weekly hibernation matrix and cron
//! expressions for scheduled runs. Local times come from the IANA database built into the
//! binary, so daylight-saving changes land where the cluster's people expect them.

pub mod cron;
pub mod model;
pub mod week;

pub use cron::{Cron, CronError};
pub use week::{DayHours, Hibernation, MatrixError, Transition, WeekMatrix};

use jiff::tz::TimeZone;
use time::OffsetDateTime;

/// An IANA time zone (`Europe/Berlin`, `UTC`), validated.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin or America/New_York")]
pub struct UnknownZone(pub String);

impl Zone {
    pub fn new(name: &str) -> Result<Self, UnknownZone> {
        let tz = jiff::tz::db()
            .get(name)
            .map_err(|_| UnknownZone(name.to_owned()))?;
        Ok(Self {
            name: name.to_owned(),
            tz,
        })
    }

    pub fn utc() -> Self {
        Self {
            name: "UTC".into(),
            tz: TimeZone::UTC,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local civil time at `at`.
    pub(crate) fn local(&self, at: OffsetDateTime) -> jiff::civil::DateTime {
        self.tz.to_datetime(to_timestamp(at))
    }

    /// The instant of a local civil time. A time skipped by a DST change maps to the same
    /// wall-clock distance after the change; a repeated time maps to its first occurrence.
    pub(crate) fn instant(&self, local: jiff::civil::DateTime) -> Option<OffsetDateTime> {
        let zoned = self.tz.to_ambiguous_zoned(local).compatible().ok()?;
        from_timestamp(zoned.timestamp())
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Zone {}

fn to_timestamp(at: OffsetDateTime) -> jiff::Timestamp {
    // Every OffsetDateTime the platform handles is within jiff's range (years -9999..=9999).
    jiff::Timestamp::from_second(at.unix_timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn from_timestamp(at: jiff::Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(at.as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_iana_names() {
        assert_eq!(Zone::new("Europe/Berlin").unwrap().name(), "Europe/Berlin");
        assert!(Zone::new("UTC").is_ok());
        let err = Zone::new("Mars/Olympus").unwrap_err();
        assert!(err.to_string().contains("Mars/Olympus"));
        assert!(Zone::new("").is_err());
    }
}
