//! Message contracts between functions (SQS bodies). Changing one is a breaking change for
//! messages already in flight, so fields are only ever added with defaults.

use serde::{Deserialize, Serialize};

use crate::domain::Notification;
use crate::ids::{ClusterId, TenantId};

/// Discovery fan-out: one per linked account per run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverAccount {
    pub tenant_id: TenantId,
    pub account_id: String,
    /// The discovery run this message belongs to, for run accounting.
    pub run_id: String,
    /// Set when a scheduled run asked for this discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<RunRef>,
}

/// A scheduled run whose outcome the receiving function records when it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    pub tenant_id: TenantId,
    pub schedule_id: String,
    pub run_id: String,
}

/// Asks the optimizer to plan one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptimizeRequest {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    /// Who asked: `schedule`, `api:<key prefix>`, ...
    #[serde(default = "default_trigger")]
    pub trigger: String,
    /// Set when a scheduled run asked for this plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<RunRef>,
}

fn default_trigger() -> String {
    "unspecified".into()
}

/// Asks the cost function to sample one cluster's hour or to report on its month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CostRequest {
    /// Allocate the cluster's latest snapshot as the cost of the hour it was taken in.
    Sample {
        tenant_id: TenantId,
        cluster_id: ClusterId,
    },
    /// Build and send the savings report of `month` (`2026-10`).
    Report {
        tenant_id: TenantId,
        cluster_id: ClusterId,
        month: String,
        /// Set when a scheduled run asked for this report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled: Option<RunRef>,
    },
}

/// One notification for one endpoint: the dispatcher fans a notification out into these, so
/// each endpoint retries (and dead-letters) on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    pub tenant_id: TenantId,
    pub endpoint_id: String,
    /// The notification's id in the tenant's feed.
    pub notification_id: String,
    pub notification: Notification,
    /// Attempts made before this message was sent (a rate-limited request is re-sent later
    /// with its count, since SQS starts counting receives anew for the new message).
    #[serde(default)]
    pub prior_attempts: u32,
}

/// The payload a scheduled invocation carries (EventBridge Scheduler `Input`). Every field is
/// optional so a bare `{}` or a classic EventBridge "Scheduled Event" works too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTrigger {
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimize_request_defaults_trigger() {
        let r: OptimizeRequest =
            serde_json::from_str(r#"{"tenant_id":"t1","cluster_id":"c1"}"#).unwrap();
        assert_eq!(r.trigger, "unspecified");
    }

    #[test]
    fn schedule_trigger_accepts_classic_scheduled_events() {
        let raw = r#"{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.events",
            "time":"2026-11-22T10:00:00Z","region":"us-east-1","resources":[],"detail":{}}"#;
        let t: ScheduleTrigger = serde_json::from_str(raw).unwrap();
        assert_eq!(t.time.as_deref(), Some("2026-11-22T10:00:00Z"));
        assert_eq!(
            serde_json::from_str::<ScheduleTrigger>("{}").unwrap(),
            ScheduleTrigger::default()
        );
    }
}

/// What an agent reports every 30 seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub agent_version: String,
    pub dry_run: bool,
    /// Messages the agent refused since its last heartbeat that it could not report against an
    /// action: unreadable, for another cluster, or not signed with this cluster's secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 50))]
    pub rejected: Vec<Rejection>,
}

/// A heartbeat carries at most this many refusals; the agent keeps no more between beats.
pub const MAX_REJECTIONS_PER_HEARTBEAT: usize = 50;
/// Longest refusal reason, in characters; the agent shortens longer ones.
pub const MAX_REJECTION_REASON: usize = 1000;
/// Longest agent version string.
pub const MAX_AGENT_VERSION: usize = 64;

/// A message on the agent's queue that it refused without executing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejection {
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

/// How an action ended, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReportedOutcome {
    Succeeded,
    Failed,
    /// Verified but not executed: the agent runs in dry-run mode.
    DryRun,
}

/// The agent's report of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionReport {
    pub outcome: ReportedOutcome,
    pub detail: String,
    /// Pods a drain left on the node, with why.
    #[serde(default)]
    pub pods_left: std::collections::BTreeMap<String, String>,
    /// For a scale: the replica count it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_replicas: Option<i32>,
}

/// An agent's request to upload a snapshot: the digest lets the platform skip an unchanged one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapshotUploadRequest {
    /// Hex SHA-256 of the snapshot JSON before compression.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 64, max_length = 64, pattern = "^[0-9a-f]{64}$")
    )]
    pub sha256: String,
    /// Size of the gzip body the agent will PUT, in bytes.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 33554432))]
    pub size: u64,
}

/// The platform's answer to [`SnapshotUploadRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SnapshotUpload {
    /// The stored snapshot has this digest and is recent: it now counts as taken now, and
    /// nothing is uploaded.
    Unchanged { snapshot_id: String },
    /// PUT the gzip body to `url` with exactly `headers` before `expires_at`, then confirm
    /// `upload_id`.
    Upload {
        upload_id: String,
        url: String,
        headers: std::collections::BTreeMap<String, String>,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: time::OffsetDateTime,
    },
}

/// A confirmed snapshot, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotStored {
    pub snapshot_id: String,
    pub nodes: usize,
    pub pods: usize,
}

/// One region for the pricing scraper, from its hourly fan-out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeRegion {
    pub region: String,
}
