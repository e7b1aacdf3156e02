//! The ways to save a cluster's latest recommendation offers, ranked by monthly saving, each
//! with the action that realises it.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spotwise_optimizer::consolidation::Step;
use spotwise_optimizer::plan::HOURS_PER_MONTH;
use spotwise_optimizer::recommendation::Recommendation;

use crate::allocate::{Allocation, NodeInput};
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
    pub fn of(allocation: &Allocation, nodes: &[NodeInput]) -> Option<Self> {
        let (mut cpu_cost, mut mem_cost, mut cores, mut gib) =
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
        for cost in &allocation.nodes {
            let node = &nodes[cost.node];
            cpu_cost += cost.line.cpu;
            mem_cost += cost.line.memory;
            cores += Decimal::from(node.cpu_m) / Decimal::from(1000);
            gib += Decimal::from(node.mem_mib) / Decimal::from(1024);
        }
        let hours = Decimal::from(allocation.hours);
        (!cores.is_zero() && !gib.is_zero() && !hours.is_zero()).then(|| Self {
            cpu_core_hr: cpu_cost / cores / hours,
            memory_gib_hr: mem_cost / gib / hours,
        })
    }
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
                monthly_saving: money::cents(hourly * Decimal::from(730)),
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
