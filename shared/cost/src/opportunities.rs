//! The ways to save a cluster's latest recommendation offers, ranked by monthly saving, each
//! with the action that realises it.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spotwise_optimizer::consolidation::Step;
use spotwise_optimizer::plan::HOURS_PER_MONTH;
use spotwise_optimizer::recommendation::Recommendation;

use crate::breakdown::Summary;
use crate::money;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SuggestedAction {
    /// Approving the recommendation applies its plan (API `POST .../approve`).
    ApproveRecommendation {
        recommendation_id: String,
        revision: u64,
    },
    /// Its pods fit on the other nodes: drain it and let the node group scale in.
    DrainNode { node: String },
    /// Launch the cheaper node first, then drain this one.
    ReplaceNode {
        node: String,
        with: String,
        zone: String,
        capacity_type: String,
    },
    /// Change the container's requests in its workload's pod template.
    SetRequests {
        pod: String,
        container: String,
        cpu_m: u64,
        mem_mib: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opportunity {
    /// In cents.
    pub monthly_saving: Decimal,
    pub title: String,
    pub action: SuggestedAction,
}

/// What a core-hour and a GiB-hour of the cluster's nodes cost, from an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPrices {
    pub cpu_core_hr: Decimal,
    pub memory_gib_hr: Decimal,
}

impl UnitPrices {
    /// From a period's totals: cpu cost per allocatable core-hour, memory cost per GiB-hour.
    pub fn of(summary: &Summary) -> Option<Self> {
        let core_hours = Decimal::from(summary.cpu_m_hours) / Decimal::from(1000);
        let gib_hours = Decimal::from(summary.mem_mib_hours) / Decimal::from(1024);
        (!core_hours.is_zero() && !gib_hours.is_zero()).then(|| Self {
            cpu_core_hr: summary.total.cpu / core_hours,
            memory_gib_hr: summary.total.memory / gib_hours,
        })
    }
}

fn hours_per_month() -> Decimal {
    money::price(HOURS_PER_MONTH).unwrap_or_default()
}

fn monthly(hourly: f64) -> Decimal {
    let magnitude = money::price((hourly * HOURS_PER_MONTH).abs()).unwrap_or_default();
    money::cents(if hourly < 0.0 { -magnitude } else { magnitude })
}

/// Every saving in `recommendation` worth at least a cent a month, largest first. Adopting
/// the whole plan includes its consolidation steps, so those are alternatives, not extras.
pub fn rank(recommendation: &Recommendation, prices: Option<&UnitPrices>) -> Vec<Opportunity> {
    let mut found = Vec::new();
    if let Some(saving) = recommendation.summary.monthly_savings {
        found.push(Opportunity {
            monthly_saving: money::cents(money::price(saving.max(0.0)).unwrap_or_default()),
            title: format!(
                "Adopt plan r{}: {} nodes ({} spot) instead of the current ones",
                recommendation.revision,
                recommendation.summary.nodes,
                recommendation.summary.spot_nodes
            ),
            action: SuggestedAction::ApproveRecommendation {
                recommendation_id: recommendation.id.clone(),
                revision: recommendation.revision,
            },
        });
    }
    for step in recommendation
        .consolidation
        .iter()
        .flat_map(|c| c.steps.iter())
    {
        found.push(match step {
            Step::Remove {
                node,
                saving_hr,
                reason,
                ..
            } => Opportunity {
                monthly_saving: monthly(*saving_hr),
                title: format!("Remove node {node}: {reason}"),
                action: SuggestedAction::DrainNode { node: node.clone() },
            },
            Step::Replace {
                node,
                with,
                zone,
                capacity_type,
                saving_hr,
                reason,
            } => Opportunity {
                monthly_saving: monthly(*saving_hr),
                title: format!("Replace node {node} with a {capacity_type} {with}: {reason}"),
                action: SuggestedAction::ReplaceNode {
                    node: node.clone(),
                    with: with.clone(),
                    zone: zone.clone(),
                    capacity_type: capacity_type.clone(),
                },
            },
        });
    }
    if let Some(prices) = prices {
        for change in recommendation
            .right_sizing
            .iter()
            .flat_map(|r| r.recommendations.iter())
        {
            let cores = (Decimal::from(change.cpu_request_m)
                - Decimal::from(change.recommended_cpu_m))
                / Decimal::from(1000);
            let gib = (Decimal::from(change.mem_request_mib)
                - Decimal::from(change.recommended_mem_mib))
                / Decimal::from(1024);
            let hourly = cores * prices.cpu_core_hr + gib * prices.memory_gib_hr;
            found.push(Opportunity {
                monthly_saving: money::cents(hourly * hours_per_month()),
                title: format!(
                    "Right-size {} container {}: cpu {}m -> {}m, memory {} MiB -> {} MiB ({})",
                    change.pod,
                    change.container,
                    change.cpu_request_m,
                    change.recommended_cpu_m,
                    change.mem_request_mib,
                    change.recommended_mem_mib,
                    change.reason
                ),
                action: SuggestedAction::SetRequests {
                    pod: change.pod.clone(),
                    container: change.container.clone(),
                    cpu_m: change.recommended_cpu_m,
                    mem_mib: change.recommended_mem_mib,
                },
            });
        }
    }
    found.retain(|o| o.monthly_saving >= Decimal::new(1, 2));
    found.sort_by(|a, b| {
        b.monthly_saving
            .cmp(&a.monthly_saving)
            .then_with(|| a.title.cmp(&b.title))
    });
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use super::*;

    fn recommendation() -> Recommendation {
        serde_json::from_value(serde_json::json!({
            "id": "rec1", "revision": 3, "tenant_id": "t1", "cluster_id": "c1",
            "trigger": "schedule", "mode": "recommend", "status": "proposed",
            "snapshot_id": "s1", "created_at": "2026-11-24T10:00:00Z", "cost_hr": 0.5,
            "summary": {
                "pods": 10, "placed_pods": 10, "nodes": 3, "spot_nodes": 2,
                "monthly_cost": 365.0, "on_demand_equivalent_monthly": 700.0,
                "current_monthly_cost": 500.0, "monthly_savings": 135.0,
                "spot_cost_share": 0.5, "spot_pod_share": 0.5, "spot_pools": 2,
                "risk_score": 20.0, "cpu_utilisation": 0.8, "mem_utilisation": 0.6,
                "explanation": []
            },
            "node_mix": [], "unschedulable": [],
            "consolidation": {
                "current_cost_hr": 0.68, "after_cost_hr": 0.5, "budget": 1, "waves": [[0], [1]],
                "steps": [
                    {"kind": "remove", "node": "n1", "saving_hr": 0.096, "moves": [], "reason": "its 2 pods fit elsewhere"},
                    {"kind": "replace", "node": "n2", "with": "m6a.large", "zone": "us-east-1a",
                     "capacity_type": "spot", "saving_hr": 0.000001, "reason": "cheaper"}
                ],
                "blocked": []
            },
            "right_sizing": {
                "recommendations": [{
                    "pod": "shop/web-1", "container": "app", "cpu_request_m": 2000,
                    "recommended_cpu_m": 500, "mem_request_mib": 4096, "recommended_mem_mib": 1024,
                    "samples": 100, "reason": "p95 cpu 400m"
                }],
                "projected_cost_hr": 0.4, "projected_monthly_saving": 20.0
            },
            "pools_in_cooldown": [], "action_ids": []
        }))
        .unwrap()
    }

    #[test]
    fn opportunities_are_ranked_with_their_actions() {
        let prices = UnitPrices {
            cpu_core_hr: Decimal::from_str("0.02").unwrap(),
            memory_gib_hr: Decimal::from_str("0.0025").unwrap(),
        };
        let ranked = rank(&recommendation(), Some(&prices));
        let savings: Vec<String> = ranked
            .iter()
            .map(|o| o.monthly_saving.to_string())
            .collect();
        // Plan 135.00; drain n1 0.096 x 730 = 70.08; right-size 1.5 cores x 0.02 + 3 GiB x
        // 0.0025 = 0.0375/h = 27.375 -> 27.38; the replacement saves under a cent.
        assert_eq!(savings, vec!["135.00", "70.08", "27.38"]);
        assert_eq!(
            ranked[0].action,
            SuggestedAction::ApproveRecommendation {
                recommendation_id: "rec1".into(),
                revision: 3
            }
        );
        assert_eq!(
            ranked[1].action,
            SuggestedAction::DrainNode { node: "n1".into() }
        );
        assert!(matches!(
            &ranked[2].action,
            SuggestedAction::SetRequests {
                cpu_m: 500,
                mem_mib: 1024,
                ..
            }
        ));
        assert_eq!(
            rank(&recommendation(), None).len(),
            2,
            "no prices, no right-sizing value"
        );
    }
}
