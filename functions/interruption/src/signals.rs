//! What the handler knows about one instance across signals, and the pure decision each new
//! signal leads to. EventBridge and a standard SQS queue deliver in any order and at any delay,
//! so a decision depends on what came before, never on arrival order:
//!
//! - one action per instance, whatever mix of spot warning, Health event and Auto Scaling hook
//!   asks for it: a later signal that adds a lifecycle hook or an earlier deadline amends the
//!   action in flight; only a drain where there was a cordon issues a second action;
//! - a signal for an instance that has already departed issues nothing;
//! - an AWS Health change that closes withdraws the drain only it asked for, unless a signal
//!   that means certain loss (spot warning, Auto Scaling hook, departure) has been seen.

use serde::{Deserialize, Serialize};
use spotwise_core::action::{ActionKind, LifecycleHook};
use spotwise_core::interruption::{Signal, SignalKind};
use spotwise_core::{ClusterId, TenantId};
use time::{Duration, OffsetDateTime};

/// A drain (or cordon) counts as in flight for at least this long after it is issued.
pub const IN_FLIGHT_AT_LEAST: Duration = Duration::hours(1);
/// Signals remembered per instance (the latest ones), for the record.
const SEEN_MAX: usize = 16;

/// The record of one instance's signals; one item per instance in its cluster's partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSignals {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    pub node: String,
    pub seen: Vec<Seen>,
    /// The latest action issued for the instance, while it is in flight.
    pub action: Option<InFlight>,
    pub departed: Option<Departure>,
    /// The spot interruption has been counted against its pool.
    #[serde(default)]
    pub pool_counted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub kind: SignalKind,
    pub event_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub action_id: String,
    pub kind: ActionKind,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub lifecycle_hook: Option<LifecycleHook>,
    /// The kinds of signal behind it.
    pub because: Vec<SignalKind>,
    /// The AWS Health events behind it, by ARN, while they are not closed.
    #[serde(default)]
    pub health_events: Vec<String>,
    /// Actions this one superseded, still on the queue ahead of it.
    #[serde(default)]
    pub superseded: Vec<String>,
}

impl InFlight {
    fn live(&self, now: OffsetDateTime) -> bool {
        now < self.not_after.max(self.issued_at + IN_FLIGHT_AT_LEAST)
    }

    /// Records that `signal` is behind this action (once per kind and Health event).
    fn note(&mut self, signal: &Signal) {
        if !self.because.contains(&signal.kind) {
            self.because.push(signal.kind);
        }
        if let Some(health) = &signal.health
            && !self.health_events.contains(&health.event_arn)
        {
            self.health_events.push(health.event_arn.clone());
        }
    }

    pub fn action_ids(&self) -> impl Iterator<Item = &String> {
        self.superseded
            .iter()
            .chain(std::iter::once(&self.action_id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    pub state: String,
    /// When EC2 says it happened (receipt time when the event has no time).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Shutting down or terminated: nothing comes back under this id.
    pub terminal: bool,
}

/// What one signal asks of the node, before what came before is taken into account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub kind: ActionKind,
    pub not_after: OffsetDateTime,
    pub lifecycle_hook: Option<LifecycleHook>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this action (it replaces `supersedes` when set).
    Issue {
        wanted: Wanted,
        supersedes: Option<String>,
    },
    /// The action in flight gets what this signal adds (an earlier deadline, a lifecycle hook)
    /// as an amendment the agent reads before and while it runs the action.
    Amend { action_id: String, wanted: Wanted },
    /// The action in flight already does everything this signal asks.
    AlreadyHandled { action_id: String },
    /// The instance departed before this signal could matter.
    AlreadyDeparted,
    /// Mark the node departed and close its open actions.
    Depart,
    /// A Health change closed: withdraw these actions, queued only for it.
    Withdraw { action_ids: Vec<String> },
    /// A Health change closed, but nothing it alone asked for is in flight, or the node is
    /// going anyway.
    NothingToWithdraw,
    /// Policy says tell the tenant only.
    NotifyOnly,
}

impl InstanceSignals {
    pub fn new(tenant_id: TenantId, cluster_id: ClusterId, node: String) -> Self {
        Self {
            tenant_id,
            cluster_id,
            node,
            seen: Vec::new(),
            action: None,
            departed: None,
            pool_counted: false,
        }
    }

    /// Decides what `signal` leads to and records it. `wanted` is what the signal alone asks
    /// for (`None` when policy says notify only); ignored for departures and withdrawals.
    pub fn apply(
        &mut self,
        signal: &Signal,
        wanted: Option<Wanted>,
        now: OffsetDateTime,
    ) -> Decision {
        self.remember(signal, now);
        if signal.kind == SignalKind::StateChange {
            return self.depart(signal, now);
        }
        if self.departed_before(signal) {
            return Decision::AlreadyDeparted;
        }
        if signal.withdraws() {
            return self.withdraw(signal, now);
        }
        let Some(wanted) = wanted else {
            return Decision::NotifyOnly;
        };
        match self.action.as_mut().filter(|a| a.live(now)) {
            Some(current) => {
                // A deadline already past binds nothing: the new signal's applies.
                let not_after = Some(current.not_after)
                    .filter(|t| *t > now)
                    .map_or(wanted.not_after, |t| t.min(wanted.not_after));
                let merged = Wanted {
                    kind: stronger(current.kind, wanted.kind),
                    not_after,
                    lifecycle_hook: current.lifecycle_hook.clone().or(wanted.lifecycle_hook),
                };
                current.note(signal);
                if merged.kind != current.kind {
                    return Decision::Issue {
                        wanted: merged,
                        supersedes: Some(current.action_id.clone()),
                    };
                }
                let adds = merged.not_after != current.not_after
                    || merged.lifecycle_hook != current.lifecycle_hook;
                if !adds {
                    return Decision::AlreadyHandled {
                        action_id: current.action_id.clone(),
                    };
                }
                current.not_after = merged.not_after;
                current.lifecycle_hook = merged.lifecycle_hook.clone();
                Decision::Amend {
                    action_id: current.action_id.clone(),
                    wanted: merged,
                }
            }
            None => Decision::Issue {
                wanted,
                supersedes: None,
            },
        }
    }

    /// Records the action a [`Decision::Issue`] sent.
    pub fn issued(
        &mut self,
        action_id: String,
        wanted: &Wanted,
        signal: &Signal,
        now: OffsetDateTime,
    ) {
        let (because, health_events, superseded) = match self.action.take().filter(|a| a.live(now))
        {
            Some(previous) => {
                let mut superseded = previous.superseded;
                superseded.push(previous.action_id);
                (previous.because, previous.health_events, superseded)
            }
            None => Default::default(),
        };
        let mut issued = InFlight {
            action_id,
            kind: wanted.kind,
            issued_at: now,
            not_after: wanted.not_after,
            lifecycle_hook: wanted.lifecycle_hook.clone(),
            because,
            health_events,
            superseded,
        };
        issued.note(signal);
        self.action = Some(issued);
    }

    /// Whether this signal should count against its pool: a spot warning, once per instance.
    pub fn count_on_pool(&mut self, signal: &Signal) -> bool {
        let count = signal.kind == SignalKind::SpotInterruption && !self.pool_counted;
        self.pool_counted |= count;
        count
    }

    fn remember(&mut self, signal: &Signal, now: OffsetDateTime) {
        self.seen.push(Seen {
            kind: signal.kind,
            event_id: signal.event_id.clone(),
            received_at: now,
        });
        if self.seen.len() > SEEN_MAX {
            self.seen.remove(0);
        }
    }

    fn depart(&mut self, signal: &Signal, now: OffsetDateTime) -> Decision {
        let at = signal.event_time.filter(|t| *t <= now).unwrap_or(now);
        let terminal = signal.is_final_departure();
        let already = self
            .departed
            .as_ref()
            .is_some_and(|d| d.terminal || (!terminal && d.at >= at));
        if !already {
            self.departed = Some(Departure {
                state: signal.state.clone().unwrap_or_default(),
                at,
                terminal,
            });
        }
        self.action = None;
        Decision::Depart
    }

    /// A signal about an instance that departed: every signal after a termination, and those
    /// dated before a stop (a stopped instance may start again and be warned about anew).
    fn departed_before(&self, signal: &Signal) -> bool {
        self.departed
            .as_ref()
            .is_some_and(|d| d.terminal || signal.event_time.is_none_or(|t| t <= d.at))
    }

    fn withdraw(&mut self, signal: &Signal, now: OffsetDateTime) -> Decision {
        let Some(arn) = signal.health.as_ref().map(|h| h.event_arn.as_str()) else {
            return Decision::NothingToWithdraw;
        };
        let certain_loss = self.seen.iter().any(|s| s.kind.is_certain_loss());
        let Some(current) = self.action.as_mut().filter(|a| a.live(now)) else {
            return Decision::NothingToWithdraw;
        };
        current.health_events.retain(|a| a != arn);
        let only_health = current
            .because
            .iter()
            .all(|k| *k == SignalKind::ScheduledChange);
        if certain_loss || !only_health || !current.health_events.is_empty() {
            return Decision::NothingToWithdraw;
        }
        let action_ids = current.action_ids().cloned().collect();
        self.action = None;
        Decision::Withdraw { action_ids }
    }
}

/// Drain is stronger than cordon: a merge never weakens the action in flight.
fn stronger(a: ActionKind, b: ActionKind) -> ActionKind {
    if b == ActionKind::Drain { b } else { a }
}

#[cfg(test)]
mod tests {
    use spotwise_core::interruption::{HealthChange, HealthStatus};
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-11-22 10:00 UTC);
    const INSTANCE: &str = "i-0b662ef9931388ba0";

    fn signal(kind: SignalKind, id: &str) -> Signal {
        Signal {
            event_id: id.into(),
            kind,
            instance_ids: vec![INSTANCE.into()],
            account: "111122223333".into(),
            region: Some("us-east-1".into()),
            event_time: Some(NOW),
            capacity_lost_at: None,
            state: None,
            lifecycle: None,
            health: None,
        }
    }

    fn health(id: &str, status: HealthStatus) -> Signal {
        Signal {
            health: Some(HealthChange {
                event_arn: "arn:aws:health:us-east-1::event/EC2/x/1".into(),
                status,
            }),
            ..signal(SignalKind::ScheduledChange, id)
        }
    }

    fn departure(state: &str, at: OffsetDateTime) -> Signal {
        Signal {
            state: Some(state.into()),
            event_time: Some(at),
            ..signal(SignalKind::StateChange, "departure")
        }
    }

    fn hook() -> LifecycleHook {
        LifecycleHook {
            auto_scaling_group: "eks-workers".into(),
            hook_name: "spotwise-drain".into(),
            token: "tok".into(),
            instance_id: INSTANCE.into(),
        }
    }

    fn drain(minutes: i64, hook: Option<LifecycleHook>) -> Wanted {
        Wanted {
            kind: ActionKind::Drain,
            not_after: NOW + Duration::minutes(minutes),
            lifecycle_hook: hook,
        }
    }

    fn record() -> InstanceSignals {
        InstanceSignals::new(
            TenantId::new("t1").unwrap(),
            ClusterId::new("c1").unwrap(),
            "ip-10-0-1-17.ec2.internal".into(),
        )
    }

    /// A record whose instance got a spot warning: a two-minute drain is in flight.
    fn warned() -> InstanceSignals {
        let mut s = record();
        step(
            &mut s,
            &signal(SignalKind::SpotInterruption, "e1"),
            Some(drain(2, None)),
        );
        s
    }

    /// The instance's Auto Scaling hook arriving at `at`, with its hour-long window.
    fn hook_arrives(s: &mut InstanceSignals, at: OffsetDateTime) -> Decision {
        s.apply(
            &signal(SignalKind::AsgTermination, "e2"),
            Some(Wanted {
                not_after: at + Duration::hours(1),
                ..drain(0, Some(hook()))
            }),
            at,
        )
    }

    /// Applies and, for an issue, records the action as sent, like the handler does.
    fn step(state: &mut InstanceSignals, signal: &Signal, wanted: Option<Wanted>) -> Decision {
        let decision = state.apply(signal, wanted, NOW);
        if let Decision::Issue { wanted, .. } = &decision {
            let id = format!("a{}", state.seen.len());
            state.issued(id, wanted, signal, NOW);
        }
        decision
    }

    #[test]
    fn first_signal_issues_its_own_action() {
        let mut s = record();
        assert_eq!(
            step(
                &mut s,
                &signal(SignalKind::SpotInterruption, "e1"),
                Some(drain(2, None))
            ),
            Decision::Issue {
                wanted: drain(2, None),
                supersedes: None
            }
        );
        assert_eq!(s.action.as_ref().map(|a| a.action_id.as_str()), Some("a1"));
    }

    #[test]
    fn spot_warning_then_hook_amends_one_drain_with_the_hook_and_the_earlier_deadline() {
        let mut s = warned();
        let asg = signal(SignalKind::AsgTermination, "e2");
        assert_eq!(
            step(&mut s, &asg, Some(drain(60, Some(hook())))),
            Decision::Amend {
                action_id: "a1".into(),
                wanted: drain(2, Some(hook()))
            }
        );
        let a = s.action.as_ref().unwrap();
        assert_eq!(
            (a.not_after, a.lifecycle_hook.clone()),
            (NOW + Duration::minutes(2), Some(hook()))
        );
        assert_eq!(
            a.because,
            [SignalKind::SpotInterruption, SignalKind::AsgTermination]
        );
    }

    #[test]
    fn hook_then_spot_warning_amends_with_the_earlier_deadline() {
        let mut s = record();
        step(
            &mut s,
            &signal(SignalKind::AsgTermination, "e1"),
            Some(drain(60, Some(hook()))),
        );
        assert_eq!(
            step(
                &mut s,
                &signal(SignalKind::SpotInterruption, "e2"),
                Some(drain(2, None))
            ),
            Decision::Amend {
                action_id: "a1".into(),
                wanted: drain(2, Some(hook()))
            }
        );
    }

    #[test]
    fn a_signal_that_adds_nothing_is_recorded_against_the_action_in_flight() {
        let mut s = warned();
        let later = health("e2", HealthStatus::Open);
        assert_eq!(
            step(&mut s, &later, Some(drain(30, None))),
            Decision::AlreadyHandled {
                action_id: "a1".into()
            }
        );
        let a = s.action.as_ref().unwrap();
        assert!(a.because.contains(&SignalKind::ScheduledChange));
        assert_eq!(a.health_events.len(), 1);
        assert_eq!(s.seen.len(), 2);
    }

    #[test]
    fn a_drain_after_a_cordon_is_a_second_action() {
        let mut s = record();
        let cordon = Wanted {
            kind: ActionKind::Cordon,
            ..drain(10, None)
        };
        step(
            &mut s,
            &signal(SignalKind::RebalanceRecommendation, "e1"),
            Some(cordon),
        );
        assert_eq!(
            step(
                &mut s,
                &signal(SignalKind::SpotInterruption, "e2"),
                Some(drain(2, None))
            ),
            Decision::Issue {
                wanted: drain(2, None),
                supersedes: Some("a1".into())
            }
        );
        assert_eq!(s.action.as_ref().unwrap().superseded, ["a1"]);
    }

    #[test]
    fn a_cordon_after_a_drain_changes_nothing() {
        let mut s = warned();
        let cordon = Wanted {
            kind: ActionKind::Cordon,
            ..drain(10, None)
        };
        assert!(matches!(
            step(
                &mut s,
                &signal(SignalKind::RebalanceRecommendation, "e2"),
                Some(cordon)
            ),
            Decision::AlreadyHandled { .. }
        ));
    }

    #[test]
    fn an_action_long_finished_does_not_absorb_a_new_signal() {
        let mut s = warned();
        let later = NOW + Duration::hours(2);
        let decision = hook_arrives(&mut s, later);
        assert!(
            matches!(
                decision,
                Decision::Issue {
                    supersedes: None,
                    ..
                }
            ),
            "{decision:?}"
        );
    }

    #[test]
    fn a_deadline_already_past_does_not_bind_the_merge() {
        let mut s = warned();
        let later = NOW + Duration::minutes(5);
        let decision = hook_arrives(&mut s, later);
        let Decision::Amend { wanted, .. } = decision else {
            panic!("{decision:?}");
        };
        assert_eq!(wanted.not_after, later + Duration::hours(1));
    }

    #[test]
    fn terminated_before_the_warning_issues_nothing() {
        let mut s = record();
        assert_eq!(
            step(&mut s, &departure("terminated", NOW), None),
            Decision::Depart
        );
        let late = Signal {
            event_time: Some(NOW - Duration::minutes(2)),
            ..signal(SignalKind::SpotInterruption, "e1")
        };
        assert_eq!(
            step(&mut s, &late, Some(drain(2, None))),
            Decision::AlreadyDeparted
        );
        // A terminated instance never comes back, whatever a later clock says.
        let later = Signal {
            event_time: Some(NOW + Duration::hours(1)),
            ..signal(SignalKind::AsgTermination, "e2")
        };
        assert_eq!(
            step(&mut s, &later, Some(drain(60, Some(hook())))),
            Decision::AlreadyDeparted
        );
    }

    #[test]
    fn a_stopped_instance_started_again_can_be_warned_about_anew() {
        let mut s = record();
        step(&mut s, &departure("stopped", NOW), None);
        let before = Signal {
            event_time: Some(NOW - Duration::minutes(1)),
            ..signal(SignalKind::SpotInterruption, "e1")
        };
        assert_eq!(
            step(&mut s, &before, Some(drain(2, None))),
            Decision::AlreadyDeparted
        );
        let after = Signal {
            event_time: Some(NOW + Duration::hours(3)),
            ..signal(SignalKind::SpotInterruption, "e2")
        };
        assert!(matches!(
            step(&mut s, &after, Some(drain(2, None))),
            Decision::Issue { .. }
        ));
    }

    #[test]
    fn a_stop_does_not_overwrite_a_termination() {
        let mut s = record();
        step(&mut s, &departure("terminated", NOW), None);
        step(
            &mut s,
            &departure("stopping", NOW - Duration::minutes(1)),
            None,
        );
        assert!(s.departed.as_ref().unwrap().terminal);
    }

    #[test]
    fn closed_health_event_withdraws_the_drain_it_alone_asked_for() {
        let mut s = record();
        step(
            &mut s,
            &health("e1", HealthStatus::Upcoming),
            Some(drain(30, None)),
        );
        assert_eq!(
            step(&mut s, &health("e2", HealthStatus::Closed), None),
            Decision::Withdraw {
                action_ids: vec!["a1".into()]
            }
        );
        assert!(s.action.is_none());
        // Closed again (a redelivery under a new id): nothing left to withdraw.
        assert_eq!(
            step(&mut s, &health("e3", HealthStatus::Closed), None),
            Decision::NothingToWithdraw
        );
    }

    #[test]
    fn closed_health_event_leaves_a_node_that_is_really_going() {
        for certain in [SignalKind::SpotInterruption, SignalKind::AsgTermination] {
            let mut s = record();
            step(
                &mut s,
                &health("e1", HealthStatus::Open),
                Some(drain(30, None)),
            );
            step(&mut s, &signal(certain, "e2"), Some(drain(2, Some(hook()))));
            assert_eq!(
                step(&mut s, &health("e3", HealthStatus::Closed), None),
                Decision::NothingToWithdraw,
                "{certain:?}"
            );
            assert!(s.action.is_some());
        }
    }

    #[test]
    fn closed_health_event_with_nothing_issued_drains_nothing() {
        let mut s = record();
        assert_eq!(
            step(&mut s, &health("e1", HealthStatus::Closed), None),
            Decision::NothingToWithdraw
        );
        assert!(s.action.is_none());
    }

    #[test]
    fn policy_notify_only_issues_nothing() {
        let mut s = record();
        assert_eq!(
            step(
                &mut s,
                &signal(SignalKind::RebalanceRecommendation, "e1"),
                None
            ),
            Decision::NotifyOnly
        );
    }

    #[test]
    fn a_spot_interruption_counts_on_its_pool_once_per_instance() {
        let mut s = record();
        let warning = signal(SignalKind::SpotInterruption, "e1");
        assert!(s.count_on_pool(&warning));
        assert!(!s.count_on_pool(&signal(SignalKind::SpotInterruption, "e2")));
        let mut other = record();
        assert!(!other.count_on_pool(&signal(SignalKind::AsgTermination, "e3")));
    }

    #[test]
    fn the_record_keeps_the_latest_signals_only() {
        let mut s = record();
        for i in 0..40 {
            s.apply(
                &signal(SignalKind::RebalanceRecommendation, &format!("e{i}")),
                None,
                NOW,
            );
        }
        assert_eq!(s.seen.len(), SEEN_MAX);
        assert_eq!(s.seen.last().map(|x| x.event_id.as_str()), Some("e39"));
    }
}
