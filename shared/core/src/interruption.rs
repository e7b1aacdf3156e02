//! Interruption signals: every AWS message that means "this instance is going away".
//!
//! Accepted forms: EventBridge events (EC2 spot and capacity-reservation interruption warnings,
//! rebalance recommendations, instance state changes, AWS Health scheduled changes, Auto Scaling
//! terminate lifecycle actions), and Auto Scaling's direct SQS notifications, bare or wrapped in
//! an SNS envelope. Anything else that is valid JSON is ignored with a reason, never an error,
//! so the queue never fills with messages we will not act on.
//!
//! Published samples carry traps this parser tolerates on purpose: ids that are not UUIDs,
//! RFC 1123 start times, ARNs in a non-standard form (instance ids come from `detail`, never
//! from `resources`). What it does not tolerate is a field that cannot be what AWS sends: an
//! instance id that is not `i-` and 8 or 17 hex digits, an account that is not 12 digits, a
//! value of the wrong JSON type. Those fail the message with the field's path, and a wrong type
//! is reported as a wrong type, never as "missing".

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::{Duration, OffsetDateTime};

use crate::action::LifecycleHook;

/// Notice AWS gives before reclaiming a spot or interruptible capacity-reservation instance.
pub const INTERRUPTION_NOTICE: Duration = Duration::seconds(120);
/// The longest deadline an AWS Health scheduled change may carry. The drain starts at once;
/// the deadline only bounds how long PodDisruptionBudgets may hold it, and the agent runs one
/// action at a time.
pub const SCHEDULED_CHANGE_CAP: Duration = Duration::hours(1);
/// How a rebalance recommendation or a departure is given to act, from receipt.
const ADVISORY_WINDOW: Duration = Duration::minutes(10);
/// Auto Scaling holds a terminating instance for the hook's heartbeat timeout (one hour by
/// default), and the agent heartbeats the hook while it drains.
const LIFECYCLE_WINDOW: Duration = Duration::hours(1);
/// Values quoted in error messages are cut to this many characters.
const QUOTE_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    SpotInterruption,
    CapacityReservationInterruption,
    RebalanceRecommendation,
    ScheduledChange,
    StateChange,
    AsgTermination,
}

impl SignalKind {
    /// The kind as it is serialised, which is also a valid Kubernetes label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::SpotInterruption => "spot-interruption",
            SignalKind::CapacityReservationInterruption => "capacity-reservation-interruption",
            SignalKind::RebalanceRecommendation => "rebalance-recommendation",
            SignalKind::ScheduledChange => "scheduled-change",
            SignalKind::StateChange => "state-change",
            SignalKind::AsgTermination => "asg-termination",
        }
    }

    /// Signals after which the instance goes whatever the cluster does: an AWS Health change
    /// may still be withdrawn, a rebalance recommendation is advice.
    pub fn is_certain_loss(self) -> bool {
        matches!(
            self,
            SignalKind::SpotInterruption
                | SignalKind::CapacityReservationInterruption
                | SignalKind::AsgTermination
                | SignalKind::StateChange
        )
    }
}

/// What is needed to complete an Auto Scaling lifecycle action after draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgLifecycle {
    pub auto_scaling_group: String,
    pub hook_name: String,
    pub token: String,
}

impl AsgLifecycle {
    /// The hook a drain of `instance_id` completes.
    pub fn hook_for(&self, instance_id: &str) -> LifecycleHook {
        LifecycleHook {
            auto_scaling_group: self.auto_scaling_group.clone(),
            hook_name: self.hook_name.clone(),
            token: self.token.clone(),
            instance_id: instance_id.to_owned(),
        }
    }
}

/// An AWS Health event's status. Each change arrives as a new event with a new id; the
/// event ARN ties them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Upcoming,
    Open,
    /// Cancelled or finished.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChange {
    pub event_arn: String,
    pub status: HealthStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// EventBridge event id, or the Auto Scaling request id for direct notifications.
    pub event_id: String,
    pub kind: SignalKind,
    pub instance_ids: Vec<String>,
    /// The account the instance runs in, as AWS stamps it on the event.
    pub account: String,
    pub region: Option<String>,
    pub event_time: Option<OffsetDateTime>,
    /// When the capacity is expected to go away, when the event says.
    pub capacity_lost_at: Option<OffsetDateTime>,
    /// The new instance state, for state changes.
    pub state: Option<String>,
    pub lifecycle: Option<AsgLifecycle>,
    /// For AWS Health scheduled changes.
    pub health: Option<HealthChange>,
}

impl Signal {
    /// A state change to a state the instance does not come back from (a stopped instance can
    /// be started again under the same id).
    pub fn is_final_departure(&self) -> bool {
        matches!(self.state.as_deref(), Some("shutting-down" | "terminated"))
    }

    pub fn withdraws(&self) -> bool {
        self.health
            .as_ref()
            .is_some_and(|h| h.status == HealthStatus::Closed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Signal(Box<Signal>),
    Ignored { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is neither an EventBridge event nor an Auto Scaling notification")]
    UnknownShape,
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("{field} must be {expected}, not {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{field} {value:?} is not {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{field} {value:?} is not a timestamp (RFC 3339 or RFC 1123)")]
    BadTime { field: &'static str, value: String },
}

/// Instance states after which the instance is gone or going; `pending` and `running` are not.
const DEPARTING_STATES: [&str; 4] = ["stopping", "stopped", "shutting-down", "terminated"];
const INSTANCE_ID: &str = "an instance id (i- and 8 or 17 lowercase hex digits)";

pub fn parse(body: &str) -> Result<Parsed, ParseError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    parse_value(&value, true)
}

fn parse_value(value: &Value, unwrap_sns: bool) -> Result<Parsed, ParseError> {
    if !value.is_object() {
        return Err(ParseError::UnknownShape);
    }
    if unwrap_sns && value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = text(value, "Message", "Message")?;
        let inner: Value = serde_json::from_str(inner)
            .map_err(|e| ParseError::NotJson(format!("SNS Message: {e}")))?;
        return parse_value(&inner, false);
    }
    if value.get("detail-type").is_some() {
        return parse_eventbridge(value);
    }
    if value.get("LifecycleTransition").is_some() || value.get("Event").is_some() {
        return parse_asg_direct(value);
    }
    Err(ParseError::UnknownShape)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn quote(value: &str) -> String {
    value.chars().take(QUOTE_MAX).collect()
}

/// `object[key]` when present, checked to be a string; `path` names it in errors.
fn optional_text<'a>(
    object: &'a Value,
    key: &str,
    path: &'static str,
) -> Result<Option<&'a str>, ParseError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ParseError::WrongType {
            field: path,
            expected: "a string",
            found: json_type(other),
        }),
    }
}

/// `object[key]` as a non-empty string.
fn text<'a>(object: &'a Value, key: &str, path: &'static str) -> Result<&'a str, ParseError> {
    match optional_text(object, key, path)? {
        Some("") => Err(ParseError::Invalid {
            field: path,
            value: String::new(),
            expected: "a non-empty string",
        }),
        Some(s) => Ok(s),
        None => Err(ParseError::Missing { field: path }),
    }
}

fn object<'a>(parent: &'a Value, key: &str, path: &'static str) -> Result<&'a Value, ParseError> {
    match parent.get(key) {
        None | Some(Value::Null) => Err(ParseError::Missing { field: path }),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(other) => Err(ParseError::WrongType {
            field: path,
            expected: "an object",
            found: json_type(other),
        }),
    }
}

fn ignored(reason: impl Into<String>) -> Result<Parsed, ParseError> {
    Ok(Parsed::Ignored {
        reason: reason.into(),
    })
}

/// RFC 3339, or RFC 1123 as AWS Health writes it (`Sat, 05 Jun 2016 15:10:09 GMT`).
pub fn parse_time(field: &'static str, value: &str) -> Result<OffsetDateTime, ParseError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(value, &Rfc2822))
        .or_else(|_| {
            match value
                .strip_suffix(" GMT")
                .or_else(|| value.strip_suffix(" UTC"))
            {
                Some(rest) => OffsetDateTime::parse(&format!("{rest} +0000"), &Rfc2822),
                None => OffsetDateTime::parse(value, &Rfc2822),
            }
        })
        .map_err(|_| ParseError::BadTime {
            field,
            value: quote(value),
        })
}

fn optional_time(
    object: &Value,
    key: &str,
    path: &'static str,
) -> Result<Option<OffsetDateTime>, ParseError> {
    optional_text(object, key, path)?
        .map(|t| parse_time(path, t))
        .transpose()
}

/// `i-` and 8 (older) or 17 lowercase hex digits, as EC2 issues them.
pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn checked_instance_id(id: &str, path: &'static str) -> Result<String, ParseError> {
    if is_instance_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ParseError::Invalid {
            field: path,
            value: quote(id),
            expected: INSTANCE_ID,
        })
    }
}

fn instance_id(object: &Value, key: &str, path: &'static str) -> Result<String, ParseError> {
    checked_instance_id(text(object, key, path)?, path)
}

fn account(object: &Value, key: &str, path: &'static str) -> Result<String, ParseError> {
    let account = text(object, key, path)?;
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(account.to_owned())
    } else {
        Err(ParseError::Invalid {
            field: path,
            value: quote(account),
            expected: "an AWS account id (12 digits)",
        })
    }
}

fn parse_eventbridge(event: &Value) -> Result<Parsed, ParseError> {
    let event_id = text(event, "id", "id")?.to_owned();
    let source = text(event, "source", "source")?;
    let detail_type = text(event, "detail-type", "detail-type")?;
    let relevant = matches!(source, "aws.ec2" | "aws.health" | "aws.autoscaling");
    if !relevant {
        return ignored(format!(
            "{source} {detail_type:?} is not an interruption signal"
        ));
    }
    let detail = object(event, "detail", "detail")?;
    let region = optional_text(event, "region", "region")?.map(str::to_owned);
    let event_time = optional_time(event, "time", "time")?;
    let mut signal = Signal {
        event_id,
        kind: SignalKind::SpotInterruption,
        instance_ids: Vec::new(),
        account: String::new(),
        region,
        event_time,
        capacity_lost_at: None,
        state: None,
        lifecycle: None,
        health: None,
    };
    match (source, detail_type) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            signal.instance_ids = vec![instance_id(detail, "instance-id", "detail.instance-id")?];
            signal.capacity_lost_at = event_time.map(|t| t + INTERRUPTION_NOTICE);
        }
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning") => {
            signal.kind = SignalKind::CapacityReservationInterruption;
            signal.instance_ids = vec![instance_id(detail, "instance-id", "detail.instance-id")?];
            signal.capacity_lost_at = event_time.map(|t| t + INTERRUPTION_NOTICE);
        }
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            signal.kind = SignalKind::RebalanceRecommendation;
            signal.instance_ids = vec![instance_id(detail, "instance-id", "detail.instance-id")?];
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let state = text(detail, "state", "detail.state")?;
            if !DEPARTING_STATES.contains(&state) {
                return ignored(format!(
                    "instance state {:?} is not a departure",
                    quote(state)
                ));
            }
            signal.kind = SignalKind::StateChange;
            signal.instance_ids = vec![instance_id(detail, "instance-id", "detail.instance-id")?];
            signal.state = Some(state.to_owned());
        }
        ("aws.health", "AWS Health Event") => {
            let service = optional_text(detail, "service", "detail.service")?.unwrap_or_default();
            let category = optional_text(detail, "eventTypeCategory", "detail.eventTypeCategory")?
                .unwrap_or_default();
            if service != "EC2" || category != "scheduledChange" {
                return ignored(format!(
                    "health event {}/{} is not an EC2 scheduled change",
                    quote(service),
                    quote(category)
                ));
            }
            signal.kind = SignalKind::ScheduledChange;
            signal.instance_ids = health_instances(detail)?;
            if signal.instance_ids.is_empty() {
                return ignored("scheduled change affects no EC2 instance");
            }
            signal.capacity_lost_at = optional_time(detail, "startTime", "detail.startTime")?;
            signal.health = Some(HealthChange {
                event_arn: text(detail, "eventArn", "detail.eventArn")?.to_owned(),
                status: health_status(detail)?,
            });
        }
        ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action") => {
            if text(detail, "LifecycleTransition", "detail.LifecycleTransition")?
                != "autoscaling:EC2_INSTANCE_TERMINATING"
            {
                return ignored("lifecycle transition is not a termination");
            }
            signal.kind = SignalKind::AsgTermination;
            signal.instance_ids = vec![instance_id(
                detail,
                "EC2InstanceId",
                "detail.EC2InstanceId",
            )?];
            signal.lifecycle = Some(AsgLifecycle {
                auto_scaling_group: text(
                    detail,
                    "AutoScalingGroupName",
                    "detail.AutoScalingGroupName",
                )?
                .to_owned(),
                hook_name: text(detail, "LifecycleHookName", "detail.LifecycleHookName")?
                    .to_owned(),
                token: text(
                    detail,
                    "LifecycleActionToken",
                    "detail.LifecycleActionToken",
                )?
                .to_owned(),
            });
        }
        (source, detail_type) => {
            return ignored(format!(
                "{source} {:?} is not an interruption signal",
                quote(detail_type)
            ));
        }
    }
    // Only events we act on need the account: it is how the handler ties the instance to the
    // tenant that linked the account.
    signal.account = account(event, "account", "account")?;
    Ok(Parsed::Signal(Box::new(signal)))
}

/// The instances a Health event names; other entities (volumes, hosts) are skipped.
fn health_instances(detail: &Value) -> Result<Vec<String>, ParseError> {
    const PATH: &str = "detail.affectedEntities";
    let entities = match detail.get("affectedEntities") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entities)) => entities,
        Some(other) => {
            return Err(ParseError::WrongType {
                field: PATH,
                expected: "an array",
                found: json_type(other),
            });
        }
    };
    let mut ids = Vec::new();
    for entity in entities {
        let value = text(
            entity,
            "entityValue",
            "detail.affectedEntities[].entityValue",
        )?;
        if value.starts_with("i-") {
            let id = checked_instance_id(value, "detail.affectedEntities[].entityValue")?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// Published samples carry no status; a scheduled change without one is in force.
fn health_status(detail: &Value) -> Result<HealthStatus, ParseError> {
    const PATH: &str = "detail.statusCode";
    match optional_text(detail, "statusCode", PATH)? {
        None | Some("open") => Ok(HealthStatus::Open),
        Some("upcoming") => Ok(HealthStatus::Upcoming),
        Some("closed") => Ok(HealthStatus::Closed),
        Some(other) => Err(ParseError::Invalid {
            field: PATH,
            value: quote(other),
            expected: "upcoming, open or closed",
        }),
    }
}

/// Auto Scaling's own SQS notification (no EventBridge envelope).
fn parse_asg_direct(message: &Value) -> Result<Parsed, ParseError> {
    if message.get("Event").and_then(Value::as_str) == Some("autoscaling:TEST_NOTIFICATION") {
        return ignored("Auto Scaling test notification");
    }
    if text(message, "LifecycleTransition", "LifecycleTransition")?
        != "autoscaling:EC2_INSTANCE_TERMINATING"
    {
        return ignored("lifecycle transition is not a termination");
    }
    let event_id = match optional_text(message, "RequestId", "RequestId")? {
        Some(id) if !id.is_empty() => id,
        _ => text(message, "LifecycleActionToken", "LifecycleActionToken")?,
    }
    .to_owned();
    Ok(Parsed::Signal(Box::new(Signal {
        event_id,
        kind: SignalKind::AsgTermination,
        instance_ids: vec![instance_id(message, "EC2InstanceId", "EC2InstanceId")?],
        account: account(message, "AccountId", "AccountId")?,
        region: None,
        event_time: optional_time(message, "Time", "Time")?,
        capacity_lost_at: None,
        state: None,
        lifecycle: Some(AsgLifecycle {
            auto_scaling_group: text(message, "AutoScalingGroupName", "AutoScalingGroupName")?
                .to_owned(),
            hook_name: text(message, "LifecycleHookName", "LifecycleHookName")?.to_owned(),
            token: text(message, "LifecycleActionToken", "LifecycleActionToken")?.to_owned(),
        }),
        health: None,
    })))
}

/// The deadline for acting on a signal received at `received_at`.
///
/// An event's clock is trusted only to shorten the notice: a spot warning dated in the future
/// gets two minutes from receipt, and one whose two minutes ran out before it arrived (a late
/// delivery, a wrong clock, the 1970 of published samples) gets two minutes from receipt too,
/// rather than an action that expires before it is sent. Only an AWS Health scheduled change
/// carries a later deadline, its start time, capped at [`SCHEDULED_CHANGE_CAP`]; one already
/// started gets the two-minute notice. Rebalance recommendations and Auto Scaling hooks carry
/// no time to trust: they get a fixed window from receipt.
pub fn action_deadline(signal: &Signal, received_at: OffsetDateTime) -> OffsetDateTime {
    let notice_end = received_at + INTERRUPTION_NOTICE;
    match signal.kind {
        SignalKind::SpotInterruption | SignalKind::CapacityReservationInterruption => {
            match signal.capacity_lost_at {
                Some(at) if at > received_at => at.min(notice_end),
                _ => notice_end,
            }
        }
        SignalKind::ScheduledChange => match signal.capacity_lost_at {
            Some(at) if at > notice_end => at.min(received_at + SCHEDULED_CHANGE_CAP),
            _ => notice_end,
        },
        SignalKind::RebalanceRecommendation | SignalKind::StateChange => {
            received_at + ADVISORY_WINDOW
        }
        SignalKind::AsgTermination => received_at + LIFECYCLE_WINDOW,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    const SPOT: &str = include_str!("../../../events/eventbridge/spot-interruption-warning.json");
    const REBALANCE: &str =
        include_str!("../../../events/eventbridge/rebalance-recommendation.json");
    const STATE: &str = include_str!("../../../events/eventbridge/instance-state-change.json");
    const HEALTH: &str = include_str!("../../../events/eventbridge/scheduled-change.json");
    const ASG: &str = include_str!("../../../events/eventbridge/asg-lifecycle-termination.json");
    const ACCOUNT: &str = "111122223333";

    /// A published sample as a linked account would forward it: with a real account id.
    fn forwarded(body: &str) -> Value {
        let mut v: Value = serde_json::from_str(body).unwrap();
        v["account"] = json!(ACCOUNT);
        v
    }

    fn signal_of(v: &Value) -> Signal {
        match parse(&v.to_string()) {
            Ok(Parsed::Signal(s)) => *s,
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    fn signal(body: &str) -> Signal {
        signal_of(&forwarded(body))
    }

    fn with(body: &str, pointer: &str, value: Value) -> Value {
        let mut v = forwarded(body);
        *v.pointer_mut(pointer).unwrap() = value;
        v
    }

    fn ignored_reason(v: &Value) -> String {
        match parse(&v.to_string()) {
            Ok(Parsed::Ignored { reason }) => reason,
            other => panic!("expected ignored, got {other:?}"),
        }
    }

    fn error(v: &Value) -> String {
        match parse(&v.to_string()) {
            Err(e) => e.to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn spot_warning_with_a_1970_clock_gets_two_minutes_from_receipt() {
        let s = signal(SPOT);
        assert_eq!(s.kind, SignalKind::SpotInterruption);
        assert_eq!(s.instance_ids, ["i-0b662ef9931388ba0"]);
        assert_eq!(s.event_id, "1e5527d7-bb36-4607-3370-4164db56a40e");
        assert_eq!(s.account, ACCOUNT);
        assert_eq!(s.capacity_lost_at, Some(datetime!(1970-01-01 00:02 UTC)));
        let now = datetime!(2026-11-22 10:00 UTC);
        assert_eq!(action_deadline(&s, now), now + INTERRUPTION_NOTICE);
    }

    #[test]
    fn spot_warning_keeps_what_is_left_of_its_own_notice() {
        let s = signal_of(&with(SPOT, "/time", json!("2026-11-22T10:00:00Z")));
        assert_eq!(
            action_deadline(&s, datetime!(2026-11-22 10:00:03 UTC)),
            datetime!(2026-11-22 10:02 UTC)
        );
    }

    #[test]
    fn spot_warning_dated_in_the_future_is_capped_at_two_minutes_from_receipt() {
        let now = datetime!(2026-11-22 10:00 UTC);
        for time in ["2026-11-22T10:30:00Z", "2031-01-01T00:00:00Z"] {
            let s = signal_of(&with(SPOT, "/time", json!(time)));
            assert_eq!(
                action_deadline(&s, now),
                now + INTERRUPTION_NOTICE,
                "{time}"
            );
        }
    }

    #[test]
    fn spot_warning_hours_late_gets_two_minutes_from_receipt() {
        let s = signal_of(&with(SPOT, "/time", json!("2026-11-22T07:00:00Z")));
        let now = datetime!(2026-11-22 10:00 UTC);
        assert_eq!(action_deadline(&s, now), now + INTERRUPTION_NOTICE);
    }

    #[test]
    fn only_a_scheduled_change_carries_a_later_deadline_and_it_is_capped() {
        let now = datetime!(2026-11-22 10:00 UTC);
        let soon = signal_of(&with(
            HEALTH,
            "/detail/startTime",
            json!("Sun, 22 Nov 2026 10:20:00 GMT"),
        ));
        assert_eq!(action_deadline(&soon, now), datetime!(2026-11-22 10:20 UTC));
        let far = signal_of(&with(
            HEALTH,
            "/detail/startTime",
            json!("Sat, 05 Jun 2027 15:10:09 GMT"),
        ));
        assert_eq!(action_deadline(&far, now), now + SCHEDULED_CHANGE_CAP);
        // Already started (or a wrong clock): the maintenance is under way.
        let started = signal(HEALTH);
        assert_eq!(action_deadline(&started, now), now + INTERRUPTION_NOTICE);
    }

    #[test]
    fn rebalance_recommendation() {
        let s = signal(REBALANCE);
        assert_eq!(s.kind, SignalKind::RebalanceRecommendation);
        assert_eq!(s.instance_ids, ["i-0b662ef9931388ba0"]);
        assert_eq!(s.capacity_lost_at, None);
    }

    #[test]
    fn state_change_pending_is_ignored_and_departures_are_signals() {
        assert!(ignored_reason(&forwarded(STATE)).contains("pending"));
        assert!(
            ignored_reason(&with(STATE, "/detail/state", json!("running"))).contains("running")
        );
        for state in DEPARTING_STATES {
            let s = signal_of(&with(STATE, "/detail/state", json!(state)));
            assert_eq!(
                (s.kind, s.state.as_deref()),
                (SignalKind::StateChange, Some(state))
            );
            assert_eq!(s.instance_ids, ["i-abcd1111"]);
            assert_eq!(
                s.is_final_departure(),
                matches!(state, "shutting-down" | "terminated")
            );
        }
    }

    #[test]
    fn health_scheduled_change_with_rfc1123_start_and_non_uuid_id() {
        let s = signal(HEALTH);
        assert_eq!(s.kind, SignalKind::ScheduledChange);
        assert_eq!(s.event_id, "7fb65329-1628-4cf3-a740-95fg457h1402");
        assert_eq!(s.instance_ids, ["i-12345678"]);
        assert_eq!(s.capacity_lost_at, Some(datetime!(2016-06-05 15:10:09 UTC)));
        // The published sample has no status: it is in force.
        assert_eq!(
            s.health,
            Some(HealthChange {
                event_arn: "arn:aws:health:region::event/id".into(),
                status: HealthStatus::Open
            })
        );
        assert!(!s.withdraws());
    }

    #[test]
    fn health_status_changes_are_read_and_closed_withdraws() {
        for (code, status) in [
            ("upcoming", HealthStatus::Upcoming),
            ("open", HealthStatus::Open),
            ("closed", HealthStatus::Closed),
        ] {
            let mut v = forwarded(HEALTH);
            v["detail"]["statusCode"] = json!(code);
            let s = signal_of(&v);
            assert_eq!(s.health.as_ref().map(|h| h.status), Some(status));
            assert_eq!(s.withdraws(), code == "closed");
        }
        let mut v = forwarded(HEALTH);
        v["detail"]["statusCode"] = json!("resolved");
        assert_eq!(
            error(&v),
            "detail.statusCode \"resolved\" is not upcoming, open or closed"
        );
    }

    #[test]
    fn health_event_with_several_instances_and_other_entities() {
        let entities = json!([
            {"entityValue": "i-0aaa1111bbbb22223"}, {"entityValue": "vol-123"},
            {"entityValue": "i-0bbb1111bbbb22223"}, {"entityValue": "i-0aaa1111bbbb22223"}
        ]);
        let s = signal_of(&with(HEALTH, "/detail/affectedEntities", entities));
        assert_eq!(
            s.instance_ids,
            ["i-0aaa1111bbbb22223", "i-0bbb1111bbbb22223"]
        );
    }

    #[test]
    fn health_events_for_other_services_or_categories_are_ignored() {
        assert!(ignored_reason(&with(HEALTH, "/detail/service", json!("RDS"))).contains("RDS"));
        assert!(
            ignored_reason(&with(HEALTH, "/detail/eventTypeCategory", json!("issue")))
                .contains("issue")
        );
    }

    #[test]
    fn asg_lifecycle_event_carries_what_completion_needs() {
        let s = signal(ASG);
        assert_eq!(s.kind, SignalKind::AsgTermination);
        assert_eq!(s.instance_ids, ["i-0633ac2b0d9769723"]);
        assert_eq!(
            s.lifecycle,
            Some(AsgLifecycle {
                auto_scaling_group: "testt1.demo-0a20f32c.kops.sh".into(),
                hook_name: "cluster-termination-handler".into(),
                token: "0befcbdb-6ecd-498a-9ff7-ae9b54447cd6".into(),
            })
        );
    }

    fn direct_asg() -> Value {
        json!({
            "Origin": "AutoScalingGroup", "Destination": "EC2",
            "Service": "AWS Auto Scaling", "Time": "2026-11-22T10:00:00.123Z",
            "AccountId": ACCOUNT, "RequestId": "6f1a2b3c-0000-4d5e-8f90-a1b2c3d4e5f6",
            "LifecycleActionToken": "71514b9d-6a40-4b26-8523-05e7ee35fa40",
            "AutoScalingGroupName": "eks-workers", "LifecycleHookName": "spotwise-drain",
            "EC2InstanceId": "i-0aaa1111bbbb22223",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "NotificationMetadata": "cluster=c1"
        })
    }

    #[test]
    fn direct_asg_notification_bare_and_sns_wrapped() {
        let bare = signal_of(&direct_asg());
        assert_eq!(bare.event_id, "6f1a2b3c-0000-4d5e-8f90-a1b2c3d4e5f6");
        assert_eq!(bare.instance_ids, ["i-0aaa1111bbbb22223"]);
        assert_eq!(bare.account, ACCOUNT);
        assert_eq!(
            bare.lifecycle.as_ref().map(|l| l.hook_name.as_str()),
            Some("spotwise-drain")
        );
        let wrapped =
            json!({"Type": "Notification", "MessageId": "m1", "Message": direct_asg().to_string()});
        assert_eq!(signal_of(&wrapped), bare);
    }

    #[test]
    fn asg_test_notification_and_launches_are_dropped() {
        let test = json!({"AccountId": ACCOUNT, "RequestId": "r", "Event": "autoscaling:TEST_NOTIFICATION",
            "Service": "AWS Auto Scaling", "AutoScalingGroupName": "eks-workers", "Time": "2026-11-22T10:00:00Z"});
        assert!(ignored_reason(&test).contains("test notification"));
        let mut launch = direct_asg();
        launch["LifecycleTransition"] = json!("autoscaling:EC2_INSTANCE_LAUNCHING");
        assert!(ignored_reason(&launch).contains("not a termination"));
    }

    #[test]
    fn capacity_reservation_interruption() {
        let s = signal_of(&with(
            SPOT,
            "/detail-type",
            json!("EC2 Capacity Reservation Instance Interruption Warning"),
        ));
        assert_eq!(s.kind, SignalKind::CapacityReservationInterruption);
        assert_eq!(s.instance_ids, ["i-0b662ef9931388ba0"]);
    }

    #[test]
    fn unrelated_events_are_ignored_with_a_reason() {
        let v = with(SPOT, "/detail-type", json!("EC2 AMI State Change"));
        assert!(ignored_reason(&v).contains("EC2 AMI State Change"));
        let mut other = forwarded(SPOT);
        other["source"] = json!("my.app");
        other.as_object_mut().unwrap().remove("detail");
        assert!(ignored_reason(&other).contains("my.app"));
    }

    #[test]
    fn instance_ids_must_look_like_instance_ids() {
        for good in ["i-12345678", "i-0b662ef9931388ba0"] {
            assert!(is_instance_id(good), "{good}");
        }
        for bad in [
            "i-aaa",
            "i-1234567",
            "i-123456789",
            "i-0B662EF9931388BA0",
            "i-0b662ef9931388bz0",
            "arn:aws:ec2:x",
            "",
        ] {
            assert!(!is_instance_id(bad), "{bad}");
        }
        assert_eq!(
            error(&with(SPOT, "/detail/instance-id", json!("i-aaa"))),
            "detail.instance-id \"i-aaa\" is not an instance id (i- and 8 or 17 lowercase hex digits)"
        );
        let entities = json!([{"entityValue": "i-not-an-id"}]);
        assert!(
            error(&with(HEALTH, "/detail/affectedEntities", entities))
                .starts_with("detail.affectedEntities[].entityValue \"i-not-an-id\"")
        );
        let mut asg = direct_asg();
        asg["EC2InstanceId"] = json!("i-".to_owned() + &"0".repeat(500));
        let message = error(&asg);
        assert!(message.starts_with("EC2InstanceId "), "{message}");
        assert!(message.len() < 200, "quoted values are cut: {message}");
    }

    #[test]
    fn a_wrong_type_is_reported_as_a_wrong_type_not_as_missing() {
        assert_eq!(
            error(&with(SPOT, "/detail/instance-id", json!(12345678))),
            "detail.instance-id must be a string, not a number"
        );
        assert_eq!(
            error(&with(SPOT, "/detail", json!(["i-12345678"]))),
            "detail must be an object, not an array"
        );
        assert_eq!(
            error(&with(
                HEALTH,
                "/detail/affectedEntities",
                json!("i-12345678")
            )),
            "detail.affectedEntities must be an array, not a string"
        );
        assert_eq!(
            error(&with(SPOT, "/account", json!(111122223333u64))),
            "account must be a string, not a number"
        );
        assert_eq!(
            error(&with(SPOT, "/time", json!(0))),
            "time must be a string, not a number"
        );
        let mut asg = direct_asg();
        asg["LifecycleActionToken"] = json!(null);
        assert_eq!(error(&asg), "LifecycleActionToken is missing");
    }

    #[test]
    fn the_account_must_be_an_account_id() {
        // The published spot sample carries a placeholder account.
        assert_eq!(
            parse(SPOT).unwrap_err().to_string(),
            "account \"<account_number>\" is not an AWS account id (12 digits)"
        );
        let mut v = forwarded(SPOT);
        v.as_object_mut().unwrap().remove("account");
        assert_eq!(error(&v), "account is missing");
        let mut asg = direct_asg();
        asg["AccountId"] = json!("1111");
        assert!(error(&asg).starts_with("AccountId \"1111\""));
    }

    #[test]
    fn malformed_messages_are_errors_that_say_what_is_wrong() {
        assert!(matches!(parse("{"), Err(ParseError::NotJson(_))));
        assert_eq!(parse(r#"{"hello":"world"}"#), Err(ParseError::UnknownShape));
        assert_eq!(parse("[1,2]"), Err(ParseError::UnknownShape));
        assert_eq!(
            error(&with(
                SPOT,
                "/detail",
                json!({"instance-action": "terminate"})
            )),
            "detail.instance-id is missing"
        );
        assert!(matches!(
            parse(&with(HEALTH, "/detail/startTime", json!("next tuesday")).to_string()),
            Err(ParseError::BadTime {
                field: "detail.startTime",
                ..
            })
        ));
    }
}
