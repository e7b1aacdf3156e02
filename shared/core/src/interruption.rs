//! Interruption signals: every AWS message that means "this instance is going away".
//!
//! Accepted forms: EventBridge events (EC2 spot and capacity-reservation interruption warnings,
//! rebalance recommendations, instance state changes, AWS Health scheduled changes, Auto Scaling
//! terminate lifecycle actions), and Auto Scaling's direct SQS notifications, bare or wrapped in
//! an SNS envelope. Anything else that is valid JSON is ignored with a reason, never an error,
//! so the queue never fills with messages we will not act on.
//!
//! Published samples carry traps this parser tolerates on purpose: ids that are not UUIDs,
//! placeholder accounts, RFC 1123 start times, ARNs in a non-standard form (instance ids come
//! from `detail`, never from `resources`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::{Duration, OffsetDateTime};

/// Notice AWS gives before reclaiming a spot or interruptible capacity-reservation instance.
pub const INTERRUPTION_NOTICE: Duration = Duration::seconds(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
}

/// What is needed to complete an Auto Scaling lifecycle action after draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgLifecycle {
    pub auto_scaling_group: String,
    pub hook_name: String,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// EventBridge event id, or the Auto Scaling request id for direct notifications.
    pub event_id: String,
    pub kind: SignalKind,
    pub instance_ids: Vec<String>,
    pub region: Option<String>,
    pub event_time: Option<OffsetDateTime>,
    /// When the capacity is expected to go away, when the event says.
    pub capacity_lost_at: Option<OffsetDateTime>,
    /// The new instance state, for state changes.
    pub state: Option<String>,
    pub lifecycle: Option<AsgLifecycle>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Signal(Signal),
    Ignored { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message is not JSON: {0}")]
    NotJson(String),
    #[error("message is neither an EventBridge event nor an Auto Scaling notification")]
    UnknownShape,
    #[error("{what} is missing {field}")]
    Missing {
        what: &'static str,
        field: &'static str,
    },
    #[error("{field} {value:?} is not a timestamp (RFC 3339 or RFC 1123)")]
    BadTime { field: &'static str, value: String },
}

/// Instance states after which the instance is gone or going; `pending` and `running` are not.
const DEPARTING_STATES: [&str; 4] = ["stopping", "stopped", "shutting-down", "terminated"];

pub fn parse(body: &str) -> Result<Parsed, ParseError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    parse_value(&value, true)
}

fn parse_value(value: &Value, unwrap_sns: bool) -> Result<Parsed, ParseError> {
    if unwrap_sns && value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = str_field(value, "Message", "SNS notification")?;
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

fn str_field<'a>(
    value: &'a Value,
    field: &'static str,
    what: &'static str,
) -> Result<&'a str, ParseError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::Missing { what, field })
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
            value: value.to_owned(),
        })
}

fn instance_id(
    value: &Value,
    field: &'static str,
    what: &'static str,
) -> Result<String, ParseError> {
    let id = str_field(value, field, what)?;
    if id.starts_with("i-") {
        Ok(id.to_owned())
    } else {
        Err(ParseError::Missing { what, field })
    }
}

fn parse_eventbridge(event: &Value) -> Result<Parsed, ParseError> {
    const WHAT: &str = "EventBridge event";
    let event_id = str_field(event, "id", WHAT)?.to_owned();
    let source = str_field(event, "source", WHAT)?;
    let detail_type = str_field(event, "detail-type", WHAT)?;
    let detail = event.get("detail").ok_or(ParseError::Missing {
        what: WHAT,
        field: "detail",
    })?;
    let region = event
        .get("region")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let event_time = event
        .get("time")
        .and_then(Value::as_str)
        .map(|t| parse_time("time", t))
        .transpose()?;
    let mut signal = Signal {
        event_id,
        kind: SignalKind::SpotInterruption,
        instance_ids: Vec::new(),
        region,
        event_time,
        capacity_lost_at: None,
        state: None,
        lifecycle: None,
    };
    match (source, detail_type) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            signal.instance_ids = vec![instance_id(
                detail,
                "instance-id",
                "spot interruption warning detail",
            )?];
            signal.capacity_lost_at = event_time.map(|t| t + INTERRUPTION_NOTICE);
        }
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning") => {
            signal.kind = SignalKind::CapacityReservationInterruption;
            signal.instance_ids = vec![instance_id(
                detail,
                "instance-id",
                "capacity reservation interruption detail",
            )?];
            signal.capacity_lost_at = event_time.map(|t| t + INTERRUPTION_NOTICE);
        }
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            signal.kind = SignalKind::RebalanceRecommendation;
            signal.instance_ids = vec![instance_id(
                detail,
                "instance-id",
                "rebalance recommendation detail",
            )?];
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let state = str_field(detail, "state", "state-change detail")?;
            if !DEPARTING_STATES.contains(&state) {
                return ignored(format!("instance state {state:?} is not a departure"));
            }
            signal.kind = SignalKind::StateChange;
            signal.instance_ids = vec![instance_id(detail, "instance-id", "state-change detail")?];
            signal.state = Some(state.to_owned());
        }
        ("aws.health", "AWS Health Event") => {
            let service = detail
                .get("service")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let category = detail
                .get("eventTypeCategory")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if service != "EC2" || category != "scheduledChange" {
                return ignored(format!(
                    "health event {service}/{category} is not an EC2 scheduled change"
                ));
            }
            signal.kind = SignalKind::ScheduledChange;
            signal.instance_ids = detail
                .get("affectedEntities")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("entityValue").and_then(Value::as_str))
                .filter(|id| id.starts_with("i-"))
                .map(str::to_owned)
                .collect();
            signal.instance_ids.dedup();
            if signal.instance_ids.is_empty() {
                return ignored("scheduled change affects no EC2 instance");
            }
            signal.capacity_lost_at = detail
                .get("startTime")
                .and_then(Value::as_str)
                .map(|t| parse_time("detail.startTime", t))
                .transpose()?;
        }
        ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action") => {
            const DETAIL: &str = "lifecycle action detail";
            if str_field(detail, "LifecycleTransition", DETAIL)?
                != "autoscaling:EC2_INSTANCE_TERMINATING"
            {
                return ignored("lifecycle transition is not a termination");
            }
            signal.kind = SignalKind::AsgTermination;
            signal.instance_ids = vec![instance_id(detail, "EC2InstanceId", DETAIL)?];
            signal.lifecycle = Some(lifecycle(detail, DETAIL)?);
        }
        (source, detail_type) => {
            return ignored(format!(
                "{source} {detail_type:?} is not an interruption signal"
            ));
        }
    }
    Ok(Parsed::Signal(signal))
}

fn lifecycle(value: &Value, what: &'static str) -> Result<AsgLifecycle, ParseError> {
    Ok(AsgLifecycle {
        auto_scaling_group: str_field(value, "AutoScalingGroupName", what)?.to_owned(),
        hook_name: str_field(value, "LifecycleHookName", what)?.to_owned(),
        token: str_field(value, "LifecycleActionToken", what)?.to_owned(),
    })
}

/// Auto Scaling's own SQS notification (no EventBridge envelope).
fn parse_asg_direct(message: &Value) -> Result<Parsed, ParseError> {
    const WHAT: &str = "Auto Scaling notification";
    if message.get("Event").and_then(Value::as_str) == Some("autoscaling:TEST_NOTIFICATION") {
        return ignored("Auto Scaling test notification");
    }
    if str_field(message, "LifecycleTransition", WHAT)? != "autoscaling:EC2_INSTANCE_TERMINATING" {
        return ignored("lifecycle transition is not a termination");
    }
    let event_time = message
        .get("Time")
        .and_then(Value::as_str)
        .map(|t| parse_time("Time", t))
        .transpose()?;
    let event_id = str_field(message, "RequestId", WHAT)
        .or_else(|_| str_field(message, "LifecycleActionToken", WHAT))?
        .to_owned();
    Ok(Parsed::Signal(Signal {
        event_id,
        kind: SignalKind::AsgTermination,
        instance_ids: vec![instance_id(message, "EC2InstanceId", WHAT)?],
        region: None,
        event_time,
        capacity_lost_at: None,
        state: None,
        lifecycle: Some(lifecycle(message, WHAT)?),
    }))
}

/// The deadline for acting on a signal received at `received_at`.
///
/// The event's own clock is trusted only when it is plausible: a spot warning whose two
/// minutes already ran out before it arrived (replays, placeholder timestamps such as 1970 in
/// published samples) gets a fresh notice window from receipt instead of an action that would
/// expire before it is sent. Far-future scheduled changes are capped so no action stays valid
/// for weeks.
pub fn action_deadline(signal: &Signal, received_at: OffsetDateTime) -> OffsetDateTime {
    let default_window = match signal.kind {
        SignalKind::SpotInterruption | SignalKind::CapacityReservationInterruption => {
            INTERRUPTION_NOTICE
        }
        SignalKind::RebalanceRecommendation | SignalKind::StateChange => Duration::minutes(10),
        // Auto Scaling waits for the hook's heartbeat timeout (one hour by default).
        SignalKind::AsgTermination => Duration::hours(1),
        SignalKind::ScheduledChange => Duration::hours(1),
    };
    match signal.capacity_lost_at {
        Some(at) if at > received_at => at.min(received_at + Duration::hours(24)),
        _ => received_at + default_window,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const SPOT: &str = include_str!("../../../events/eventbridge/spot-interruption-warning.json");
    const REBALANCE: &str =
        include_str!("../../../events/eventbridge/rebalance-recommendation.json");
    const STATE: &str = include_str!("../../../events/eventbridge/instance-state-change.json");
    const HEALTH: &str = include_str!("../../../events/eventbridge/scheduled-change.json");
    const ASG: &str = include_str!("../../../events/eventbridge/asg-lifecycle-termination.json");

    fn signal(body: &str) -> Signal {
        match parse(body) {
            Ok(Parsed::Signal(s)) => s,
            other => panic!("expected a signal, got {other:?}"),
        }
    }

    fn ignored_reason(body: &str) -> String {
        match parse(body) {
            Ok(Parsed::Ignored { reason }) => reason,
            other => panic!("expected ignored, got {other:?}"),
        }
    }

    fn with(body: &str, pointer: &str, value: Value) -> String {
        let mut v: Value = serde_json::from_str(body).unwrap();
        *v.pointer_mut(pointer).unwrap() = value;
        v.to_string()
    }

    #[test]
    fn spot_warning_with_placeholder_account_and_1970_time() {
        let s = signal(SPOT);
        assert_eq!(s.kind, SignalKind::SpotInterruption);
        assert_eq!(s.instance_ids, ["i-0b662ef9931388ba0"]);
        assert_eq!(s.event_id, "1e5527d7-bb36-4607-3370-4164db56a40e");
        assert_eq!(s.capacity_lost_at, Some(datetime!(1970-01-01 00:02 UTC)));
        // The stale clock does not produce an already-expired action.
        let now = datetime!(2026-11-22 10:00 UTC);
        assert_eq!(action_deadline(&s, now), now + INTERRUPTION_NOTICE);
    }

    #[test]
    fn fresh_spot_warning_keeps_its_own_deadline() {
        let body = with(SPOT, "/time", json_str("2026-11-22T10:00:00Z"));
        let s = signal(&body);
        assert_eq!(
            action_deadline(&s, datetime!(2026-11-22 10:00:03 UTC)),
            datetime!(2026-11-22 10:02 UTC)
        );
    }

    #[test]
    fn rebalance_recommendation() {
        let s = signal(REBALANCE);
        assert_eq!(
            (s.kind, s.instance_ids.as_slice()),
            (
                SignalKind::RebalanceRecommendation,
                &["i-0b662ef9931388ba0".to_owned()][..]
            )
        );
        assert_eq!(s.capacity_lost_at, None);
    }

    #[test]
    fn state_change_pending_is_ignored_and_departures_are_signals() {
        assert!(ignored_reason(STATE).contains("pending"));
        assert!(
            ignored_reason(&with(STATE, "/detail/state", json_str("running"))).contains("running")
        );
        for state in DEPARTING_STATES {
            let s = signal(&with(STATE, "/detail/state", json_str(state)));
            assert_eq!(
                (s.kind, s.state.as_deref()),
                (SignalKind::StateChange, Some(state))
            );
            assert_eq!(s.instance_ids, ["i-abcd1111"]);
        }
    }

    #[test]
    fn health_scheduled_change_with_rfc1123_start_and_non_uuid_id() {
        let s = signal(HEALTH);
        assert_eq!(s.kind, SignalKind::ScheduledChange);
        assert_eq!(s.event_id, "7fb65329-1628-4cf3-a740-95fg457h1402");
        assert_eq!(s.instance_ids, ["i-12345678"]);
        assert_eq!(s.capacity_lost_at, Some(datetime!(2016-06-05 15:10:09 UTC)));
    }

    #[test]
    fn health_event_with_several_instances_and_other_entities() {
        let entities = serde_json::json!([
            {"entityValue": "i-aaa"}, {"entityValue": "vol-123"}, {"entityValue": "i-bbb"}
        ]);
        let s = signal(&with(HEALTH, "/detail/affectedEntities", entities));
        assert_eq!(s.instance_ids, ["i-aaa", "i-bbb"]);
    }

    #[test]
    fn health_events_for_other_services_or_categories_are_ignored() {
        assert!(ignored_reason(&with(HEALTH, "/detail/service", json_str("RDS"))).contains("RDS"));
        assert!(
            ignored_reason(&with(
                HEALTH,
                "/detail/eventTypeCategory",
                json_str("issue")
            ))
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
        serde_json::json!({
            "Origin": "AutoScalingGroup", "Destination": "EC2",
            "Service": "AWS Auto Scaling", "Time": "2026-11-22T10:00:00.123Z",
            "AccountId": "111122223333", "RequestId": "6f1a2b3c-0000-4d5e-8f90-a1b2c3d4e5f6",
            "LifecycleActionToken": "71514b9d-6a40-4b26-8523-05e7ee35fa40",
            "AutoScalingGroupName": "eks-workers", "LifecycleHookName": "spotwise-drain",
            "EC2InstanceId": "i-0aaa1111bbbb22223",
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "NotificationMetadata": "cluster=c1"
        })
    }

    #[test]
    fn direct_asg_notification_bare_and_sns_wrapped() {
        let bare = signal(&direct_asg().to_string());
        assert_eq!(bare.event_id, "6f1a2b3c-0000-4d5e-8f90-a1b2c3d4e5f6");
        assert_eq!(bare.instance_ids, ["i-0aaa1111bbbb22223"]);
        assert_eq!(
            bare.lifecycle.as_ref().map(|l| l.hook_name.as_str()),
            Some("spotwise-drain")
        );

        let wrapped = serde_json::json!({"Type": "Notification", "MessageId": "m1", "Message": direct_asg().to_string()});
        assert_eq!(signal(&wrapped.to_string()), bare);
    }

    #[test]
    fn asg_test_notification_and_launches_are_dropped() {
        let test = serde_json::json!({"AccountId": "111122223333", "RequestId": "r", "Event": "autoscaling:TEST_NOTIFICATION",
            "Service": "AWS Auto Scaling", "AutoScalingGroupName": "eks-workers", "Time": "2026-11-22T10:00:00Z"});
        assert!(ignored_reason(&test.to_string()).contains("test notification"));
        let mut launch = direct_asg();
        launch["LifecycleTransition"] = json_str("autoscaling:EC2_INSTANCE_LAUNCHING");
        assert!(ignored_reason(&launch.to_string()).contains("not a termination"));
    }

    #[test]
    fn capacity_reservation_interruption() {
        let body = with(
            SPOT,
            "/detail-type",
            json_str("EC2 Capacity Reservation Instance Interruption Warning"),
        );
        let s = signal(&body);
        assert_eq!(s.kind, SignalKind::CapacityReservationInterruption);
        assert_eq!(s.instance_ids, ["i-0b662ef9931388ba0"]);
    }

    #[test]
    fn unrelated_events_are_ignored_with_a_reason() {
        let body = with(SPOT, "/detail-type", json_str("EC2 AMI State Change"));
        assert!(ignored_reason(&body).contains("EC2 AMI State Change"));
    }

    #[test]
    fn malformed_messages_are_errors_that_say_what_is_wrong() {
        assert!(matches!(parse("{"), Err(ParseError::NotJson(_))));
        assert_eq!(parse(r#"{"hello":"world"}"#), Err(ParseError::UnknownShape));
        let no_instance = with(
            SPOT,
            "/detail",
            serde_json::json!({"instance-action": "terminate"}),
        );
        assert_eq!(
            parse(&no_instance).unwrap_err().to_string(),
            "spot interruption warning detail is missing instance-id"
        );
        let bad_time = with(HEALTH, "/detail/startTime", json_str("next tuesday"));
        assert!(matches!(
            parse(&bad_time),
            Err(ParseError::BadTime {
                field: "detail.startTime",
                ..
            })
        ));
        let not_instance = with(SPOT, "/detail/instance-id", json_str("arn:aws:ec2:x"));
        assert!(parse(&not_instance).is_err());
    }

    #[test]
    fn far_future_scheduled_change_is_capped() {
        let body = with(
            HEALTH,
            "/detail/startTime",
            json_str("Sat, 05 Jun 2027 15:10:09 GMT"),
        );
        let now = datetime!(2026-11-22 10:00 UTC);
        assert_eq!(
            action_deadline(&signal(&body), now),
            now + Duration::hours(24)
        );
    }

    fn json_str(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}
