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

use crate::ids::{ClusterId, TenantId};

pub type HmacSha256 = Hmac<Sha256>;

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
}

/// What an action is applied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ActionTarget {
    Node {
        name: String,
    },
    Workload {
        namespace: String,
        kind: String,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentAction {
    pub action_id: String,
    pub cluster_id: ClusterId,
    pub kind: ActionKind,
    pub target: ActionTarget,
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
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
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl AgentAction {
    /// The node or workload name the action targets (the FIFO group: one action at a time per
    /// target).
    pub fn target_name(&self) -> &str {
        match &self.target {
            ActionTarget::Node { name } | ActionTarget::Workload { name, .. } => name,
        }
    }

    /// The bytes that are signed: the action with an empty signature, as sorted compact JSON.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature.clear();
        // serde_json::Value keeps object keys in a BTreeMap, so this output is key-sorted.
        match serde_json::to_value(&unsigned) {
            Ok(mut value) => {
                if let Some(map) = value.as_object_mut() {
                    map.remove("signature");
                }
                value.to_string().into_bytes()
            }
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
        if &self.cluster_id != cluster {
            return Err(VerifyError::WrongCluster {
                action_id: self.action_id.clone(),
                expected: cluster.to_string(),
                found: self.cluster_id.to_string(),
            });
        }
        if now > self.not_after {
            return Err(VerifyError::Expired {
                action_id: self.action_id.clone(),
                not_after: self.not_after.to_string(),
            });
        }
        let bad = || VerifyError::BadSignature {
            action_id: self.action_id.clone(),
        };
        let expected = hex::decode(&self.signature).map_err(|_| bad())?;
        // verify_slice compares in constant time.
        hmac_sha256(secret, &self.canonical_bytes())
            .verify_slice(&expected)
            .map_err(|_| bad())
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
            kind: ActionKind::Drain,
            target: ActionTarget::Node {
                name: "ip-10-0-0-1.ec2.internal".into(),
            },
            params: BTreeMap::from([("grace_seconds".into(), serde_json::json!(90))]),
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
        signed.target = ActionTarget::Node {
            name: "other-node".into(),
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
}
