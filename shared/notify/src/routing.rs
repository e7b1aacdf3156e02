//! Which endpoints a notification goes to, and what holds it back: endpoint filters
//! (severity threshold, event types, label selectors, enabled), silences (label matchers with
//! an expiry), maintenance windows (an RRULE-style recurrence with a duration), per-endpoint
//! rate limits (token bucket) and retry delays (exponential backoff with full jitter).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use spotwise_core::domain::{Notification, Severity};
use time::{OffsetDateTime, Weekday};

use crate::format::EndpointKind;

/// A tenant's notification endpoint's routing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Route {
    pub kind: EndpointKind,
    pub enabled: bool,
    pub min_severity: Severity,
    /// Empty: every event type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Every pair must be among the notification's labels.
    #[serde(default)]
    pub label_selector: BTreeMap<String, String>,
}

impl Route {
    pub fn accepts(&self, n: &Notification) -> bool {
        self.enabled
            && n.severity >= self.min_severity
            && (self.event_types.is_empty() || self.event_types.contains(&n.event_type))
            && self
                .label_selector
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MatchOp {
    Equal,
    NotEqual,
}

/// Matches a label; `event_type`, `severity` and `cluster` can be matched like labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Matcher {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 253))]
    pub label: String,
    pub op: MatchOp,
    #[cfg_attr(feature = "openapi", schema(max_length = 253))]
    pub value: String,
}

/// Suppresses matching notifications until it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub comment: String,
}

impl Silence {
    pub fn silences(&self, n: &Notification, now: OffsetDateTime) -> bool {
        // A silence without matchers would mute everything, so it mutes nothing.
        now >= self.starts_at
            && now < self.expires_at
            && !self.matchers.is_empty()
            && matches_all(&self.matchers, n)
    }
}

fn matches_all(matchers: &[Matcher], n: &Notification) -> bool {
    let labels = match_labels(n);
    matchers.iter().all(|m| {
        let value = labels.get(&m.label).map(String::as_str);
        match m.op {
            MatchOp::Equal => value == Some(m.value.as_str()),
            MatchOp::NotEqual => value != Some(m.value.as_str()),
        }
    })
}

/// A notification's labels plus `event_type`, `severity` and `cluster`.
fn match_labels(n: &Notification) -> BTreeMap<String, String> {
    let mut labels = n.labels.clone();
    labels.insert("event_type".into(), n.event_type.clone());
    let severity = serde_json::to_value(n.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    labels.insert("severity".into(), severity);
    if let Some(cluster) = &n.cluster_id {
        labels.insert("cluster".into(), cluster.to_string());
    }
    labels
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Frequency {
    Daily,
    Weekly,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule part `{0}` is not KEY=VALUE")]
    Part(String),
    #[error("FREQ must be DAILY or WEEKLY, not `{0}`")]
    Freq(String),
    #[error("{0} has an invalid value `{1}`")]
    Value(&'static str, String),
    #[error("rule has no FREQ")]
    NoFreq,
    #[error("unsupported rule part `{0}` (FREQ, INTERVAL, BYDAY, BYHOUR, BYMINUTE)")]
    Unsupported(String),
}

/// A recurring window, in UTC: `FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=2;BYMINUTE=0` with a start
/// date and a duration. The subset of RFC 5545 RRULE that maintenance schedules use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceWindow {
    pub rule: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts: OffsetDateTime,
    pub duration_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    freq: Frequency,
    interval: u32,
    days: Vec<Weekday>,
    hour: u8,
    minute: u8,
}

fn parse_rule(text: &str, starts: OffsetDateTime) -> Result<Rule, RuleError> {
    let mut freq = None;
    let mut rule = Rule {
        freq: Frequency::Daily,
        interval: 1,
        days: Vec::new(),
        hour: starts.hour(),
        minute: starts.minute(),
    };
    for part in text
        .trim()
        .trim_start_matches("RRULE:")
        .split(';')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| RuleError::Part(part.to_owned()))?;
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => {
                freq = Some(match value.to_ascii_uppercase().as_str() {
                    "DAILY" => Frequency::Daily,
                    "WEEKLY" => Frequency::Weekly,
                    other => return Err(RuleError::Freq(other.to_owned())),
                })
            }
            "INTERVAL" => {
                rule.interval = value
                    .parse()
                    .ok()
                    .filter(|i| *i >= 1)
                    .ok_or_else(|| RuleError::Value("INTERVAL", value.to_owned()))?
            }
            "BYDAY" => {
                rule.days = value
                    .split(',')
                    .map(|d| match d.to_ascii_uppercase().as_str() {
                        "MO" => Ok(Weekday::Monday),
                        "TU" => Ok(Weekday::Tuesday),
                        "WE" => Ok(Weekday::Wednesday),
                        "TH" => Ok(Weekday::Thursday),
                        "FR" => Ok(Weekday::Friday),
                        "SA" => Ok(Weekday::Saturday),
                        "SU" => Ok(Weekday::Sunday),
                        _ => Err(RuleError::Value("BYDAY", d.to_owned())),
                    })
                    .collect::<Result<_, _>>()?
            }
            "BYHOUR" => {
                rule.hour = value
                    .parse()
                    .ok()
                    .filter(|h| *h < 24)
                    .ok_or_else(|| RuleError::Value("BYHOUR", value.to_owned()))?
            }
            "BYMINUTE" => {
                rule.minute = value
                    .parse()
                    .ok()
                    .filter(|m| *m < 60)
                    .ok_or_else(|| RuleError::Value("BYMINUTE", value.to_owned()))?
            }
            other => return Err(RuleError::Unsupported(other.to_owned())),
        }
    }
    rule.freq = freq.ok_or(RuleError::NoFreq)?;
    Ok(rule)
}

impl MaintenanceWindow {
    /// Checks the rule, for saving.
    pub fn validate(&self) -> Result<(), RuleError> {
        parse_rule(&self.rule, self.starts).map(|_| ())
    }

    /// Whether `at` falls inside an occurrence. Occurrences start on days the rule selects
    /// (every `INTERVAL` days or weeks from `starts`), at `BYHOUR:BYMINUTE`, never before
    /// `starts`, and last `duration_minutes`.
    pub fn active(&self, at: OffsetDateTime) -> bool {
        let Ok(rule) = parse_rule(&self.rule, self.starts) else {
            return false;
        };
        // Occurrences begin on whole minutes, the first one at `starts` cut to its minute.
        let starts = self.starts.to_offset(time::UtcOffset::UTC);
        let starts = starts
            - time::Duration::seconds(i64::from(starts.second()))
            - time::Duration::nanoseconds(i64::from(starts.nanosecond()));
        let at = at.to_offset(time::UtcOffset::UTC);
        let duration = time::Duration::minutes(i64::from(self.duration_minutes));
        // Any occurrence covering `at` began on one of these days.
        let first_day = (at - duration).date();
        let mut day = first_day;
        while day <= at.date() {
            let Ok(time) = time::Time::from_hms(rule.hour, rule.minute, 0) else {
                return false;
            };
            let begin = day.with_time(time).assume_utc();
            let days_since = (day - starts.date()).whole_days();
            let selected = match rule.freq {
                Frequency::Daily => days_since.rem_euclid(i64::from(rule.interval)) == 0,
                Frequency::Weekly => {
                    let weeks = (day.monday_based_week_start()
                        - starts.date().monday_based_week_start())
                    .whole_weeks();
                    let on_day = if rule.days.is_empty() {
                        day.weekday() == starts.weekday()
                    } else {
                        rule.days.contains(&day.weekday())
                    };
                    weeks.rem_euclid(i64::from(rule.interval)) == 0 && on_day
                }
            };
            if selected && begin >= starts && begin <= at && at < begin + duration {
                return true;
            }
            match day.next_day() {
                Some(next) => day = next,
                None => break,
            }
        }
        false
    }
}

/// A tenant's maintenance window: while it is active, the notifications its matchers select
/// (all of them when it has none) are recorded but not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Maintenance {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub window: MaintenanceWindow,
    #[serde(default)]
    pub matchers: Vec<Matcher>,
}

impl Maintenance {
    pub fn suppresses(&self, n: &Notification, at: OffsetDateTime) -> bool {
        self.window.active(at) && matches_all(&self.matchers, n)
    }
}

trait WeekStart {
    fn monday_based_week_start(self) -> time::Date;
}

impl WeekStart for time::Date {
    fn monday_based_week_start(self) -> time::Date {
        self - time::Duration::days(i64::from(self.weekday().number_days_from_monday()))
    }
}

/// A token bucket per endpoint: `per_minute` deliveries a minute on average, bursts up to
/// `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub tokens: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Bucket {
    pub fn full(burst: u32, now: OffsetDateTime) -> Self {
        Self {
            tokens: f64::from(burst),
            updated_at: now,
        }
    }

    /// Takes a token, or says how long until one is free.
    pub fn take(
        &mut self,
        per_minute: u32,
        burst: u32,
        now: OffsetDateTime,
    ) -> Result<(), Duration> {
        let rate = f64::from(per_minute.max(1)) / 60.0;
        let elapsed = (now - self.updated_at).as_seconds_f64().max(0.0);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst.max(1)));
        self.updated_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// SQS cannot hide a message for longer than 12 hours.
const MAX_DELAY: Duration = Duration::from_secs(12 * 60 * 60);

/// The wait before retry number `attempt` (1 = the first retry): full jitter, uniform in
/// `[0, min(cap, base * 2^attempt)]`; a receiver's `Retry-After` is honoured when longer.
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2_u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    let jittered = Duration::from_millis(rng.random_range(0..=ceiling.as_millis() as u64));
    retry_after
        .map_or(jittered, |after| after.max(jittered))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use time::macros::datetime;

    use super::*;
    use crate::format::tests::notification;

    fn route() -> Route {
        Route {
            kind: EndpointKind::Slack,
            enabled: true,
            min_severity: Severity::Warning,
            event_types: vec!["interruption".into(), "agent_offline".into()],
            label_selector: BTreeMap::new(),
        }
    }

    #[test]
    fn routes_filter_by_severity_type_labels_and_enabled() {
        let n = notification();
        assert!(route().accepts(&n));
        assert!(
            !Route {
                enabled: false,
                ..route()
            }
            .accepts(&n)
        );
        assert!(
            !Route {
                min_severity: Severity::Critical,
                ..route()
            }
            .accepts(&Notification {
                severity: Severity::Warning,
                ..n.clone()
            })
        );
        assert!(
            !Route {
                event_types: vec!["savings_report".into()],
                ..route()
            }
            .accepts(&n)
        );
        assert!(
            Route {
                event_types: vec![],
                ..route()
            }
            .accepts(&n)
        );
        let team = Route {
            label_selector: BTreeMap::from([("team".to_owned(), "web".to_owned())]),
            ..route()
        };
        assert!(!team.accepts(&n));
        let mut labelled = n.clone();
        labelled.labels.insert("team".into(), "web".into());
        assert!(team.accepts(&labelled));
    }

    #[test]
    fn silences_match_labels_until_they_expire() {
        let n = notification();
        let silence = Silence {
            id: "s1".into(),
            matchers: vec![
                Matcher {
                    label: "event_type".into(),
                    op: MatchOp::Equal,
                    value: "interruption".into(),
                },
                Matcher {
                    label: "severity".into(),
                    op: MatchOp::NotEqual,
                    value: "info".into(),
                },
            ],
            starts_at: datetime!(2026-11-22 09:00 UTC),
            expires_at: datetime!(2026-11-22 11:00 UTC),
            comment: "known spot churn".into(),
        };
        assert!(silence.silences(&n, datetime!(2026-11-22 10:00 UTC)));
        assert!(
            !silence.silences(&n, datetime!(2026-11-22 11:00 UTC)),
            "expired"
        );
        assert!(
            !silence.silences(&n, datetime!(2026-11-22 08:59 UTC)),
            "not yet"
        );
        let other = Notification {
            event_type: "action_result".into(),
            ..n.clone()
        };
        assert!(!silence.silences(&other, datetime!(2026-11-22 10:00 UTC)));
        let by_cluster = Silence {
            matchers: vec![Matcher {
                label: "cluster".into(),
                op: MatchOp::Equal,
                value: "111122223333.us-east-1.prod".into(),
            }],
            ..silence
        };
        assert!(by_cluster.silences(&n, datetime!(2026-11-22 10:00 UTC)));
    }

    #[test]
    fn maintenance_windows_recur() {
        // Saturdays and Sundays, 02:00 to 04:00 UTC, from Saturday 2026-11-07.
        let weekend = MaintenanceWindow {
            rule: "FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=2;BYMINUTE=0".into(),
            starts: datetime!(2026-11-07 00:00 UTC),
            duration_minutes: 120,
        };
        assert!(weekend.validate().is_ok());
        assert!(
            weekend.active(datetime!(2026-11-21 02:00 UTC)),
            "a Saturday"
        );
        assert!(weekend.active(datetime!(2026-11-22 03:59 UTC)), "a Sunday");
        assert!(!weekend.active(datetime!(2026-11-22 04:00 UTC)), "ended");
        assert!(!weekend.active(datetime!(2026-11-23 02:30 UTC)), "a Monday");
        assert!(
            !weekend.active(datetime!(2026-10-31 02:30 UTC)),
            "before it starts"
        );
        // Every other day at 23:30 for an hour: crosses midnight.
        let nightly = MaintenanceWindow {
            rule: "RRULE:FREQ=DAILY;INTERVAL=2".into(),
            starts: datetime!(2026-11-01 23:30 UTC),
            duration_minutes: 60,
        };
        assert!(
            nightly.active(datetime!(2026-11-04 00:15 UTC)),
            "from the 3rd"
        );
        assert!(
            !nightly.active(datetime!(2026-11-05 00:15 UTC)),
            "the 4th is skipped"
        );
        for (rule, err) in [
            ("FREQ=HOURLY", RuleError::Freq("HOURLY".into())),
            ("BYDAY=MO", RuleError::NoFreq),
            (
                "FREQ=WEEKLY;BYDAY=XX",
                RuleError::Value("BYDAY", "XX".into()),
            ),
            ("FREQ=DAILY;COUNT=3", RuleError::Unsupported("COUNT".into())),
        ] {
            let w = MaintenanceWindow {
                rule: rule.into(),
                ..weekend.clone()
            };
            assert_eq!(w.validate(), Err(err), "{rule}");
        }
    }

    #[test]
    fn maintenance_suppresses_what_its_matchers_select_while_active() {
        let n = notification();
        let window = MaintenanceWindow {
            rule: "FREQ=DAILY;BYHOUR=9;BYMINUTE=30".into(),
            starts: datetime!(2026-11-01 00:00 UTC),
            duration_minutes: 60,
        };
        let everything = Maintenance {
            id: "m1".into(),
            name: "patching".into(),
            window,
            matchers: vec![],
        };
        assert!(everything.suppresses(&n, datetime!(2026-11-22 10:00 UTC)));
        let from_now = Maintenance {
            window: MaintenanceWindow {
                starts: datetime!(2026-11-22 09:30:42.5 UTC),
                ..everything.window.clone()
            },
            ..everything.clone()
        };
        assert!(
            from_now.suppresses(&n, datetime!(2026-11-22 09:30:50 UTC)),
            "the first occurrence is the start's minute"
        );
        assert!(!everything.suppresses(&n, datetime!(2026-11-22 10:30 UTC)));
        let other_cluster = Maintenance {
            matchers: vec![Matcher {
                label: "cluster".into(),
                op: MatchOp::Equal,
                value: "999988887777.eu-west-1.staging".into(),
            }],
            ..everything.clone()
        };
        assert!(!other_cluster.suppresses(&n, datetime!(2026-11-22 10:00 UTC)));
        let stored = serde_json::to_value(&everything).unwrap();
        assert_eq!(stored["rule"], "FREQ=DAILY;BYHOUR=9;BYMINUTE=30");
        assert_eq!(
            serde_json::from_value::<Maintenance>(stored).unwrap(),
            everything
        );
    }

    #[test]
    fn buckets_refill_at_their_rate() {
        let t0 = datetime!(2026-11-22 10:00 UTC);
        let mut bucket = Bucket::full(2, t0);
        assert!(bucket.take(6, 2, t0).is_ok());
        assert!(bucket.take(6, 2, t0).is_ok());
        let wait = bucket.take(6, 2, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10), "6 a minute: one every 10 s");
        assert!(bucket.take(6, 2, t0 + time::Duration::seconds(10)).is_ok());
        // A long pause refills to the burst, no more.
        let later = t0 + time::Duration::hours(1);
        assert!(bucket.take(6, 2, later).is_ok());
        assert!(bucket.take(6, 2, later).is_ok());
        assert!(bucket.take(6, 2, later).is_err());
    }

    #[test]
    fn retry_delays_are_jittered_capped_and_honour_retry_after() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=12 {
            let ceiling = Duration::from_secs(2_u64.pow(attempt).min(60));
            for _ in 0..200 {
                assert!(retry_delay(attempt, None, &mut rng) <= ceiling);
            }
        }
        let spread: Vec<Duration> = (0..50).map(|_| retry_delay(5, None, &mut rng)).collect();
        assert!(
            spread.iter().any(|d| *d < Duration::from_secs(10))
                && spread.iter().any(|d| *d > Duration::from_secs(20)),
            "full jitter"
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(120)), &mut rng),
            Duration::from_secs(120)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(100_000)), &mut rng),
            Duration::from_secs(12 * 60 * 60)
        );
    }
}
