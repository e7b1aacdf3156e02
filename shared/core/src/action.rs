//! Agent actions and their signatures.
//!
//! An action is signed with HMAC-SHA256 over its canonical JSON (the action without the
//! signature field, keys sorted, no whitespace) using the cluster's secret. The agent verifies
//! the cluster id, the expiry and the signature before doing anything, so write access to the
//! queue alone cannot make an agent drain nodes.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::domain::Taint;
use crate::ids::{ClusterId, TenantId};
use crate::karpenter::{NodePoolSpec, NodeReservation};
use crate::rightsizing::{ContainerResources, ControllerRef};

pub type HmacSha256 = Hmac<Sha256>;

/// The kind of an action, for filters, labels and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Cordon,
    Uncordon,
    Drain,
    Label,
    Taint,
    Scale,
    #[serde(rename = "apply_node_pool")]
    ApplyNodePool,
    #[serde(rename = "delete_node_pool")]
    DeleteNodePool,
    #[serde(rename = "reserve_nodes")]
    ReserveNodes,
    #[serde(rename = "release_nodes")]
    ReleaseNodes,
    #[serde(rename = "set_resources")]
    SetResources,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Cordon => "cordon",
            ActionKind::Uncordon => "uncordon",
            ActionKind::Drain => "drain",
            ActionKind::Label => "label",
            ActionKind::Taint => "taint",
            ActionKind::Scale => "scale",
            ActionKind::ApplyNodePool => "apply_node_pool",
            ActionKind::DeleteNodePool => "delete_node_pool",
            ActionKind::ReserveNodes => "reserve_nodes",
            ActionKind::ReleaseNodes => "release_nodes",
            ActionKind::SetResources => "set_resources",
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action does and to what. Each kind carries exactly the target and parameters it
/// needs, so an action the agent could not execute cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ActionSpec {
    /// Marks the node unschedulable.
    Cordon { node: String },
    /// Makes the node schedulable again.
    Uncordon { node: String },
    /// Cordons the node (adding `taint` when given), evicts its pods within their disruption
    /// budgets by `not_after`, then completes the Auto Scaling lifecycle hook when given.
    Drain {
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        taint: Option<Taint>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lifecycle_hook: Option<LifecycleHook>,
    },
    /// Sets node labels; `null` removes one.
    Label {
        node: String,
        labels: BTreeMap<String, Option<String>>,
    },
    /// Adds a taint to the node (a no-op when one with the same key and effect is there).
    Taint { node: String, taint: Taint },
    /// Sets a workload's replica count.
    Scale {
        workload: WorkloadRef,
        replicas: u32,
    },
    /// Creates or updates a Spotwise NodePool (labelled `spotwise.io/managed=true`); a NodePool
    /// of that name without the label is the customer's and is refused.
    #[serde(rename = "apply_node_pool")]
    ApplyNodePool { node_pool: NodePoolSpec },
    /// Deletes a Spotwise NodePool (Karpenter then drains and removes its nodes); refused for a
    /// NodePool without the label.
    #[serde(rename = "delete_node_pool")]
    DeleteNodePool { name: String },
    /// Creates the reservation's placeholder pods (in the agent's namespace), so Karpenter
    /// launches the planned nodes of a Spotwise NodePool before any pod is drained to them.
    #[serde(rename = "reserve_nodes")]
    ReserveNodes { reservation: NodeReservation },
    /// Deletes the reservation's placeholder pods that were not preempted.
    #[serde(rename = "release_nodes")]
    ReleaseNodes { reservation: NodeReservation },
    /// Sets container requests and limits in a Deployment, StatefulSet or DaemonSet's pod
    /// template (a strategic merge patch: the controller then rolls its pods as it always
    /// does, within their disruption budgets and its own `maxUnavailable`).
    #[serde(rename = "set_resources")]
    SetResources {
        workload: ControllerRef,
        containers: Vec<ContainerResources>,
    },
}

/// A workload whose replica count can be set through the scale subresource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkloadRef {
    pub namespace: String,
    pub kind: ScalableKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ScalableKind {
    Deployment,
    StatefulSet,
}

impl ScalableKind {
    /// The kind from a controller's `kind` as Kubernetes writes it.
    pub fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "Deployment" => Some(ScalableKind::Deployment),
            "StatefulSet" => Some(ScalableKind::StatefulSet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ScalableKind::Deployment => "Deployment",
            ScalableKind::StatefulSet => "StatefulSet",
        }
    }
}

impl std::fmt::Display for ScalableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Auto Scaling termination hook held open for a drain: the agent sends heartbeats while it
/// drains and completes it with CONTINUE afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleHook {
    pub auto_scaling_group: String,
    pub hook_name: String,
    pub token: String,
    pub instance_id: String,
}

/// What the platform adds to a drain after signing it, when a later signal about the same node
/// arrives while the drain is in flight (a spot warning after an Auto Scaling hook, say). It can
/// only bring the deadline forward and add the lifecycle hook to complete; the agent reads it
/// with the action's status, before it starts and while it drains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Amendment {
    /// Earlier than the signed `not_after`; a later one is ignored.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub not_after: Option<OffsetDateTime>,
    /// Completed after the drain when the signed action carries none.
    #[serde(default)]
    pub lifecycle_hook: Option<LifecycleHook>,
}

/// The terms a drain runs under: the signed ones, as amendments bring them forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainTerms {
    pub not_after: OffsetDateTime,
    pub lifecycle_hook: Option<LifecycleHook>,
}

impl DrainTerms {
    pub fn of(action: &AgentAction) -> Self {
        let lifecycle_hook = match &action.spec {
            ActionSpec::Drain { lifecycle_hook, .. } => lifecycle_hook.clone(),
            _ => None,
        };
        Self {
            not_after: action.not_after,
            lifecycle_hook,
        }
    }

    /// Applies an amendment: never a later deadline, never a second hook.
    pub fn amend(&mut self, amendment: &Amendment) {
        if let Some(at) = amendment.not_after {
            self.not_after = self.not_after.min(at);
        }
        if self.lifecycle_hook.is_none() {
            self.lifecycle_hook = amendment.lifecycle_hook.clone();
        }
    }
}

/// Taint the interruption handler's drains put on a node that is about to go.
pub const INTERRUPTION_TAINT: &str = "spotwise.io/interruption";

impl ActionSpec {
    pub fn kind(&self) -> ActionKind {
        match self {
            ActionSpec::Cordon { .. } => ActionKind::Cordon,
            ActionSpec::Uncordon { .. } => ActionKind::Uncordon,
            ActionSpec::Drain { .. } => ActionKind::Drain,
            ActionSpec::Label { .. } => ActionKind::Label,
            ActionSpec::Taint { .. } => ActionKind::Taint,
            ActionSpec::Scale { .. } => ActionKind::Scale,
            ActionSpec::ApplyNodePool { .. } => ActionKind::ApplyNodePool,
            ActionSpec::DeleteNodePool { .. } => ActionKind::DeleteNodePool,
            ActionSpec::ReserveNodes { .. } => ActionKind::ReserveNodes,
            ActionSpec::ReleaseNodes { .. } => ActionKind::ReleaseNodes,
            ActionSpec::SetResources { .. } => ActionKind::SetResources,
        }
    }

    /// The node the action changes, for node actions.
    pub fn node(&self) -> Option<&str> {
        match self {
            ActionSpec::Cordon { node }
            | ActionSpec::Uncordon { node }
            | ActionSpec::Drain { node, .. }
            | ActionSpec::Label { node, .. }
            | ActionSpec::Taint { node, .. } => Some(node),
            ActionSpec::Scale { .. }
            | ActionSpec::ApplyNodePool { .. }
            | ActionSpec::DeleteNodePool { .. }
            | ActionSpec::ReserveNodes { .. }
            | ActionSpec::ReleaseNodes { .. }
            | ActionSpec::SetResources { .. } => None,
        }
    }

    /// A drain answering an interruption warning: the one action an agent runs when the
    /// platform cannot confirm it, because the node goes whatever happens.
    pub fn is_interruption_drain(&self) -> bool {
        matches!(self, ActionSpec::Drain { taint: Some(taint), .. } if taint.key == INTERRUPTION_TAINT)
    }
}

impl std::fmt::Display for ActionSpec {
    /// What the action does, as people read it: `drain node ip-10-0-1-5`,
    /// `scale Deployment shop/web to 0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionSpec::Scale { workload, replicas } => write!(
                f,
                "scale {} {}/{} to {replicas}",
                workload.kind, workload.namespace, workload.name
            ),
            ActionSpec::ApplyNodePool { node_pool } => {
                write!(f, "apply NodePool {}", node_pool.name)
            }
            ActionSpec::DeleteNodePool { name } => write!(f, "delete NodePool {name}"),
            ActionSpec::ReserveNodes { reservation } => write!(
                f,
                "reserve {} node(s) of NodePool {}",
                reservation.nodes, reservation.node_pool
            ),
            ActionSpec::ReleaseNodes { reservation } => write!(
                f,
                "release the reserved nodes of NodePool {}",
                reservation.node_pool
            ),
            ActionSpec::SetResources {
                workload,
                containers,
            } => write!(
                f,
                "set the requests of {} container(s) of {} {}/{}",
                containers.len(),
                workload.kind.as_str(),
                workload.namespace,
                workload.name
            ),
            node_action => write!(
                f,
                "{} node {}",
                node_action.kind(),
                node_action.node().unwrap_or_default()
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "wire::WireAction")]
pub struct AgentAction {
    pub action_id: String,
    pub cluster_id: ClusterId,
    pub spec: ActionSpec,
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Hex HMAC-SHA256; empty until [`AgentAction::sign`].
    #[serde(default)]
    pub signature: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("action {action_id} is for cluster {found}, this agent serves {expected}")]
    WrongCluster {
        action_id: String,
        expected: String,
        found: String,
    },
    #[error("action {action_id} expired at {not_after}")]
    Expired {
        action_id: String,
        not_after: String,
    },
    #[error("action {action_id} has an invalid signature")]
    BadSignature { action_id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// On the cluster's queue, not yet reported by the agent.
    Queued,
    /// Could not be queued: the cluster has no agent queue or secret yet.
    Undeliverable,
    /// Overtaken by events (the instance is already gone).
    Closed,
    Succeeded,
    Failed,
    /// Withdrawn through the API before the agent reported it.
    Cancelled,
}

impl ActionStatus {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Queued => "queued",
            ActionStatus::Undeliverable => "undeliverable",
            ActionStatus::Closed => "closed",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Cancelled => "cancelled",
        }
    }
}

/// The platform's record of an action it issued, kept in the tenant's partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionRecord {
    pub tenant_id: TenantId,
    pub action: AgentAction,
    pub status: ActionStatus,
    #[serde(default)]
    pub status_reason: Option<String>,
    /// What caused it: `interruption:<event id>`, `optimizer:<plan id>`, `api:<key prefix>`.
    pub source: String,
    #[serde(default)]
    pub instance_id: Option<String>,
    /// For a scale the agent reported: the replica count it replaced.
    #[serde(default)]
    pub previous_replicas: Option<i32>,
    /// What later signals about the node added to this drain while it was in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amendment: Option<Amendment>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl AgentAction {
    /// A fresh action id (ULID, lower-case).
    pub fn new_id() -> String {
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    }

    /// The node or workload name the action targets (the FIFO group: one action at a time per
    /// target).
    pub fn target_name(&self) -> &str {
        match &self.spec {
            ActionSpec::Scale { workload, .. } => &workload.name,
            ActionSpec::SetResources { workload, .. } => &workload.name,
            ActionSpec::ApplyNodePool { node_pool } => &node_pool.name,
            ActionSpec::DeleteNodePool { name } => name,
            ActionSpec::ReserveNodes { reservation } | ActionSpec::ReleaseNodes { reservation } => {
                &reservation.node_pool
            }
            node_action => node_action.node().unwrap_or_default(),
        }
    }

    pub fn kind(&self) -> ActionKind {
        self.spec.kind()
    }

    /// The bytes that are signed: the action without its signature, as compact JSON with every
    /// object's keys sorted.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        match serde_json::to_value(self) {
            Ok(value) => unsigned_canonical(value),
            // Serialising plain data with string keys cannot fail; fall back to something that
            // will never verify rather than panic.
            Err(_) => Vec::new(),
        }
    }

    pub fn sign(mut self, secret: &[u8]) -> Self {
        self.signature = hex::encode(
            hmac_sha256(secret, &self.canonical_bytes())
                .finalize()
                .into_bytes(),
        );
        self
    }

    /// Checks the action is for `cluster`, still valid at `now`, and signed with `secret`.
    pub fn verify(
        &self,
        cluster: &ClusterId,
        secret: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), VerifyError> {
        check(self, &self.canonical_bytes(), cluster, secret, now)
    }
}

/// An action as an agent took it off its queue: the typed action, and the canonical bytes of
/// exactly what was sent, which is what the signature covers. Verifying the received form
/// rather than a re-serialisation keeps actions signed in the earlier wire form (still on a
/// queue during an upgrade) verifiable.
#[derive(Debug, Clone)]
pub struct ReceivedAction {
    pub action: AgentAction,
    signed_bytes: Vec<u8>,
}

impl ReceivedAction {
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(body)?;
        let action = AgentAction::deserialize(&value)?;
        Ok(Self {
            action,
            signed_bytes: unsigned_canonical(value),
        })
    }

    /// As [`AgentAction::verify`], over the bytes that were received.
    pub fn verify(
        &self,
        cluster: &ClusterId,
        secret: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), VerifyError> {
        check(&self.action, &self.signed_bytes, cluster, secret, now)
    }
}

fn check(
    action: &AgentAction,
    signed_bytes: &[u8],
    cluster: &ClusterId,
    secret: &[u8],
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    if &action.cluster_id != cluster {
        return Err(VerifyError::WrongCluster {
            action_id: action.action_id.clone(),
            expected: cluster.to_string(),
            found: action.cluster_id.to_string(),
        });
    }
    if now > action.not_after {
        return Err(VerifyError::Expired {
            action_id: action.action_id.clone(),
            not_after: crate::rfc3339(action.not_after),
        });
    }
    let bad = || VerifyError::BadSignature {
        action_id: action.action_id.clone(),
    };
    let expected = hex::decode(&action.signature).map_err(|_| bad())?;
    // verify_slice compares in constant time.
    hmac_sha256(secret, signed_bytes)
        .verify_slice(&expected)
        .map_err(|_| bad())
}

/// `value` without its top-level `signature`, as compact JSON with sorted keys at every level
/// (whatever map order serde_json was built with).
fn unsigned_canonical(mut value: serde_json::Value) -> Vec<u8> {
    if let Some(map) = value.as_object_mut() {
        map.remove("signature");
    }
    let mut out = String::new();
    write_canonical(&value, &mut out);
    out.into_bytes()
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The wire forms an action is read from. The typed form (`spec`) is what this release writes;
/// the earlier form (`kind`, `target`, free-form `params`) is still read, for one release, from
/// queues and stored records written before the upgrade.
mod wire {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use time::OffsetDateTime;

    use super::{ActionKind, ActionSpec, AgentAction, LifecycleHook, ScalableKind, WorkloadRef};
    use crate::ClusterId;
    use crate::domain::Taint;

    #[derive(Deserialize)]
    pub(super) struct WireAction {
        action_id: String,
        cluster_id: ClusterId,
        #[serde(default)]
        spec: Option<ActionSpec>,
        #[serde(default)]
        kind: Option<ActionKind>,
        #[serde(default)]
        target: Option<LegacyTarget>,
        #[serde(default)]
        params: BTreeMap<String, serde_json::Value>,
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        issued_at: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        not_after: OffsetDateTime,
        #[serde(default)]
        signature: String,
    }

    #[derive(Deserialize)]
    #[serde(tag = "type", rename_all = "lowercase")]
    enum LegacyTarget {
        Node {
            name: String,
        },
        Workload {
            namespace: String,
            kind: String,
            name: String,
        },
    }

    impl TryFrom<WireAction> for AgentAction {
        type Error = String;

        fn try_from(received: WireAction) -> Result<Self, String> {
            let spec = match (received.spec, received.kind, received.target) {
                (Some(spec), _, _) => spec,
                (None, Some(kind), Some(target)) => legacy_spec(kind, target, &received.params)?,
                (None, _, _) => return Err("missing field `spec`".into()),
            };
            Ok(AgentAction {
                action_id: received.action_id,
                cluster_id: received.cluster_id,
                spec,
                reason: received.reason,
                issued_at: received.issued_at,
                not_after: received.not_after,
                signature: received.signature,
            })
        }
    }

    fn param<T: serde::de::DeserializeOwned>(
        params: &BTreeMap<String, serde_json::Value>,
        name: &str,
    ) -> Result<Option<T>, String> {
        params
            .get(name)
            .map(|value| T::deserialize(value).map_err(|e| format!("params.{name}: {e}")))
            .transpose()
    }

    fn required<T: serde::de::DeserializeOwned>(
        params: &BTreeMap<String, serde_json::Value>,
        name: &str,
    ) -> Result<T, String> {
        param(params, name)?.ok_or_else(|| format!("params.{name} is required"))
    }

    fn legacy_spec(
        kind: ActionKind,
        target: LegacyTarget,
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Result<ActionSpec, String> {
        match (kind, target) {
            (
                ActionKind::Scale,
                LegacyTarget::Workload {
                    namespace,
                    kind,
                    name,
                },
            ) => Ok(ActionSpec::Scale {
                workload: WorkloadRef {
                    namespace,
                    kind: ScalableKind::from_kind(&kind)
                        .ok_or_else(|| format!("cannot scale a {kind}"))?,
                    name,
                },
                replicas: required(params, "replicas")?,
            }),
            (ActionKind::Scale, LegacyTarget::Node { .. }) => {
                Err("scale needs a workload target".into())
            }
            (
                kind @ (ActionKind::ApplyNodePool
                | ActionKind::DeleteNodePool
                | ActionKind::ReserveNodes
                | ActionKind::ReleaseNodes
                | ActionKind::SetResources),
                _,
            ) => Err(format!("{kind} has no earlier wire form")),
            (kind, LegacyTarget::Workload { .. }) => Err(format!("{kind} needs a node target")),
            (ActionKind::Cordon, LegacyTarget::Node { name }) => {
                Ok(ActionSpec::Cordon { node: name })
            }
            (ActionKind::Uncordon, LegacyTarget::Node { name }) => {
                Ok(ActionSpec::Uncordon { node: name })
            }
            (ActionKind::Drain, LegacyTarget::Node { name }) => Ok(ActionSpec::Drain {
                node: name,
                taint: param::<Taint>(params, "taint")?,
                lifecycle_hook: param::<LifecycleHook>(params, "asg_lifecycle")?,
            }),
            (ActionKind::Label, LegacyTarget::Node { name }) => Ok(ActionSpec::Label {
                node: name,
                labels: required(params, "labels")?,
            }),
            (ActionKind::Taint, LegacyTarget::Node { name }) => Ok(ActionSpec::Taint {
                node: name,
                taint: required(params, "taint")?,
            }),
        }
    }
}

/// HMAC-SHA256 of `message` under `secret`, for agent actions and webhook signatures.
pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> HmacSha256 {
    // HMAC is defined for keys of any length, so new_from_slice never fails for Hmac<Sha256>.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(message);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    fn action() -> AgentAction {
        AgentAction {
            action_id: "01hx".into(),
            cluster_id: ClusterId::new("c1").unwrap(),
            spec: ActionSpec::Drain {
                node: "ip-10-0-0-1.ec2.internal".into(),
                taint: Some(Taint {
                    key: "spotwise.io/interruption".into(),
                    value: Some("spot".into()),
                    effect: "NoSchedule".into(),
                }),
                lifecycle_hook: None,
            },
            reason: "spot interruption warning".into(),
            issued_at: datetime!(2026-11-22 10:00 UTC),
            not_after: datetime!(2026-11-22 10:02 UTC),
            signature: String::new(),
        }
    }

    const SECRET: &[u8] = b"cluster-secret";

    #[test]
    fn signed_action_verifies_and_survives_json_round_trip() {
        let signed = action().sign(SECRET);
        let wire = serde_json::to_string(&signed).unwrap();
        let received: AgentAction = serde_json::from_str(&wire).unwrap();
        let now = datetime!(2026-11-22 10:01 UTC);
        assert_eq!(received.verify(&signed.cluster_id, SECRET, now), Ok(()));
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let mut signed = action().sign(SECRET);
        signed.spec = ActionSpec::Cordon {
            node: "other-node".into(),
        };
        let now = datetime!(2026-11-22 10:01 UTC);
        assert!(matches!(
            signed.verify(&signed.cluster_id.clone(), SECRET, now),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[test]
    fn wrong_secret_wrong_cluster_and_expiry_are_rejected() {
        let signed = action().sign(SECRET);
        let now = datetime!(2026-11-22 10:01 UTC);
        assert!(matches!(
            signed.verify(&signed.cluster_id, b"other", now),
            Err(VerifyError::BadSignature { .. })
        ));
        assert!(matches!(
            signed.verify(&ClusterId::new("c2").unwrap(), SECRET, now),
            Err(VerifyError::WrongCluster { .. })
        ));
        assert!(matches!(
            signed.verify(
                &signed.cluster_id,
                SECRET,
                signed.not_after + Duration::SECOND
            ),
            Err(VerifyError::Expired { .. })
        ));
    }

    #[test]
    fn garbage_signature_is_rejected_not_panicking() {
        let mut signed = action().sign(SECRET);
        signed.signature = "zz-not-hex".into();
        let now = datetime!(2026-11-22 10:01 UTC);
        assert!(
            signed
                .verify(&signed.cluster_id.clone(), SECRET, now)
                .is_err()
        );
    }

    #[test]
    fn canonical_form_is_key_sorted_and_excludes_signature() {
        let signed = action().sign(SECRET);
        let canonical = String::from_utf8(signed.canonical_bytes()).unwrap();
        assert!(canonical.starts_with("{\"action_id\":"), "{canonical}");
        assert!(!canonical.contains("signature"));
    }

    #[test]
    fn received_bytes_are_what_is_verified() {
        let signed = action().sign(SECRET);
        let wire = serde_json::to_string(&signed).unwrap();
        let received = ReceivedAction::parse(&wire).unwrap();
        let now = datetime!(2026-11-22 10:01 UTC);
        assert_eq!(received.action, signed);
        assert_eq!(received.verify(&signed.cluster_id, SECRET, now), Ok(()));
        let forged = wire.replace("ip-10-0-0-1", "ip-10-0-0-2");
        let forged = ReceivedAction::parse(&forged).unwrap();
        assert!(matches!(
            forged.verify(&signed.cluster_id, SECRET, now),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    /// An action in the earlier wire form, signed over that form, as an earlier platform
    /// queued it.
    fn legacy_signed(kind: &str, target: serde_json::Value, params: serde_json::Value) -> String {
        let mut legacy = serde_json::json!({
            "action_id": "01old",
            "cluster_id": "c1",
            "kind": kind,
            "target": target,
            "params": params,
            "reason": "before the upgrade",
            "issued_at": "2026-11-22T10:00:00Z",
            "not_after": "2026-11-22T10:02:00Z",
        });
        let signature = hex::encode(
            hmac_sha256(SECRET, &unsigned_canonical(legacy.clone()))
                .finalize()
                .into_bytes(),
        );
        legacy["signature"] = signature.into();
        legacy.to_string()
    }

    #[test]
    fn earlier_wire_form_is_read_typed_and_still_verifies() {
        let now = datetime!(2026-11-22 10:01 UTC);
        let cluster = ClusterId::new("c1").unwrap();
        let drain = legacy_signed(
            "drain",
            serde_json::json!({"type": "node", "name": "n1"}),
            serde_json::json!({
                "deadline": "2026-11-22T10:02:00Z",
                "taint": {"key": "spotwise.io/interruption", "value": "spot", "effect": "NoSchedule"},
                "asg_lifecycle": {"auto_scaling_group": "g", "hook_name": "h", "token": "t", "instance_id": "i-0123456789abcdef0"},
            }),
        );
        let received = ReceivedAction::parse(&drain).unwrap();
        assert_eq!(received.verify(&cluster, SECRET, now), Ok(()));
        let ActionSpec::Drain {
            node,
            taint,
            lifecycle_hook,
        } = &received.action.spec
        else {
            panic!("{:?}", received.action.spec);
        };
        assert_eq!(node, "n1");
        assert_eq!(
            taint.as_ref().map(|t| t.key.as_str()),
            Some("spotwise.io/interruption")
        );
        assert_eq!(lifecycle_hook.as_ref().map(|h| h.token.as_str()), Some("t"));

        let scale = legacy_signed(
            "scale",
            serde_json::json!({"type": "workload", "namespace": "shop", "kind": "Deployment", "name": "web"}),
            serde_json::json!({"replicas": 3}),
        );
        let received = ReceivedAction::parse(&scale).unwrap();
        assert_eq!(received.verify(&cluster, SECRET, now), Ok(()));
        assert_eq!(
            received.action.spec.to_string(),
            "scale Deployment shop/web to 3"
        );
    }

    #[test]
    fn earlier_wire_form_that_no_typed_action_can_express_is_refused_by_name() {
        let cases = [
            (
                "scale",
                serde_json::json!({"type": "node", "name": "n1"}),
                serde_json::json!({"replicas": 1}),
                "workload target",
            ),
            (
                "cordon",
                serde_json::json!({"type": "workload", "namespace": "a", "kind": "Deployment", "name": "b"}),
                serde_json::json!({}),
                "node target",
            ),
            (
                "scale",
                serde_json::json!({"type": "workload", "namespace": "a", "kind": "DaemonSet", "name": "b"}),
                serde_json::json!({"replicas": 1}),
                "cannot scale a DaemonSet",
            ),
            (
                "scale",
                serde_json::json!({"type": "workload", "namespace": "a", "kind": "Deployment", "name": "b"}),
                serde_json::json!({"replicas": -1}),
                "params.replicas",
            ),
            (
                "label",
                serde_json::json!({"type": "node", "name": "n1"}),
                serde_json::json!({}),
                "params.labels is required",
            ),
            (
                "label",
                serde_json::json!({"type": "node", "name": "n1"}),
                serde_json::json!({"labels": {"a": 1}}),
                "params.labels",
            ),
        ];
        for (kind, target, params, expected) in cases {
            let err = ReceivedAction::parse(&legacy_signed(kind, target, params)).unwrap_err();
            assert!(err.to_string().contains(expected), "{kind}: {err}");
        }
    }

    #[test]
    fn typed_form_names_the_kind_beside_its_fields() {
        let signed = action().sign(SECRET);
        let value = serde_json::to_value(&signed).unwrap();
        assert_eq!(value["spec"]["kind"], "drain");
        assert_eq!(value["spec"]["node"], "ip-10-0-0-1.ec2.internal");
        assert!(value["spec"].get("lifecycle_hook").is_none());
        assert_eq!(signed.kind(), ActionKind::Drain);
        assert_eq!(
            signed.spec.to_string(),
            "drain node ip-10-0-0-1.ec2.internal"
        );
        let wrong = serde_json::json!({"kind": "scale", "node": "n1"});
        let err = serde_json::from_value::<ActionSpec>(wrong).unwrap_err();
        assert!(err.to_string().contains("workload"), "{err}");
    }
}
