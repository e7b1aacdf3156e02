//! A stored plan: what the optimizer recommends for a cluster, compact enough for one item.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spotwise_core::domain::PolicyMode;
use spotwise_core::{ClusterId, TenantId};
use time::OffsetDateTime;

use crate::consolidation::Consolidation;
use crate::plan::{Plan, RightSizing, Summary, UnschedulablePod};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendationStatus {
    /// Stored for review (`recommend` mode); approval through the API applies it.
    Proposed,
    /// Approved, or chosen by `auto` mode: its rollout realises it.
    Applying,
}

/// One node group of the planned mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixEntry {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
    pub nodes: u32,
    pub pods: u32,
    pub cost_hr: f64,
}

/// A stored plan, compact enough for one item: the node mix grouped, lists capped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub id: String,
    /// Counts up per cluster (the store's own `version` is its optimistic lock).
    pub revision: u64,
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    pub trigger: String,
    pub mode: PolicyMode,
    pub status: RecommendationStatus,
    pub snapshot_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub cost_hr: f64,
    pub summary: Summary,
    pub node_mix: Vec<MixEntry>,
    pub unschedulable: Vec<UnschedulablePod>,
    pub consolidation: Option<Consolidation>,
    pub right_sizing: Option<RightSizing>,
    /// Spot pools left out because an interruption put them in cooldown.
    pub pools_in_cooldown: Vec<String>,
    /// Actions `auto` mode sent before plans were rolled out (kept for records of that time).
    pub action_ids: Vec<String>,
}

pub fn node_mix(plan: &Plan) -> Vec<MixEntry> {
    let mut groups: BTreeMap<(&str, &str, &str), MixEntry> = BTreeMap::new();
    for n in &plan.nodes {
        let entry = groups
            .entry((&n.capacity_type, &n.instance_type, &n.zone))
            .or_insert_with(|| MixEntry {
                instance_type: n.instance_type.clone(),
                zone: n.zone.clone(),
                capacity_type: n.capacity_type.clone(),
                nodes: 0,
                pods: 0,
                cost_hr: 0.0,
            });
        entry.nodes += 1;
        entry.pods += u32::try_from(n.pods.len()).unwrap_or(u32::MAX);
        entry.cost_hr += n.price_hr;
    }
    groups.into_values().collect()
}
