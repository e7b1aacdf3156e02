//! The plan: node mix with every pod placed, costs, spot share and risk, each explained.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::consolidation::{self, Consolidation};
use crate::model::{CPU, MEM, Offering, PlanInput};
use crate::packing::{self, Packing};
use crate::rightsizing::{self, ContainerRecommendation, WorkloadRightSizing};

/// Hours in an average month (8,760 / 12), as cloud bills count them.
pub const HOURS_PER_MONTH: f64 = 730.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedNode {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: String,
    pub pods: Vec<String>,
    pub price_hr: f64,
    pub cpu_m_requested: u64,
    pub mem_mib_requested: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnschedulablePod {
    pub pod: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub pods: usize,
    pub placed_pods: usize,
    pub nodes: usize,
    pub spot_nodes: usize,
    pub monthly_cost: f64,
    /// The same nodes at on-demand prices: what spot saves.
    pub on_demand_equivalent_monthly: f64,
    pub current_monthly_cost: Option<f64>,
    pub monthly_savings: Option<f64>,
    /// Share of the planned cost that is spot.
    pub spot_cost_share: f64,
    pub spot_pod_share: f64,
    pub spot_pools: usize,
    /// 0 (no spot exposure) to 100 (all spot, all in one high-risk pool).
    pub risk_score: f64,
    pub cpu_utilisation: f64,
    pub mem_utilisation: f64,
    pub explanation: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RightSizing {
    pub recommendations: Vec<ContainerRecommendation>,
    pub projected_cost_hr: f64,
    pub projected_monthly_saving: f64,
    /// Per workload, from its usage history (the platform's plans only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadRightSizing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub nodes: Vec<PlannedNode>,
    pub cost_hr: f64,
    pub unschedulable: Vec<UnschedulablePod>,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidation: Option<Consolidation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right_sizing: Option<RightSizing>,
}

pub fn plan(input: &PlanInput) -> Plan {
    let packing = packing::pack(input);
    let mut plan = render(input, &packing);
    if !input.current_nodes.is_empty() {
        let consolidation = consolidation::plan(input);
        plan.summary.current_monthly_cost = Some(consolidation.current_cost_hr * HOURS_PER_MONTH);
        plan.summary.monthly_savings =
            Some((consolidation.current_cost_hr - plan.cost_hr) * HOURS_PER_MONTH);
        plan.summary.explanation.push(format!(
            "The cluster runs {} nodes at ${:.2}/month now; this plan costs ${:.2}/month, saving ${:.2}/month. Consolidating the current nodes in place ({} steps, at most {} node(s) at a time) reaches ${:.2}/month.",
            input.current_nodes.len(),
            consolidation.current_cost_hr * HOURS_PER_MONTH,
            plan.summary.monthly_cost,
            (consolidation.current_cost_hr - plan.cost_hr) * HOURS_PER_MONTH,
            consolidation.steps.len(),
            consolidation.budget,
            consolidation.after_cost_hr * HOURS_PER_MONTH,
        ));
        plan.consolidation = Some(consolidation);
    }
    let mut recommendations = rightsizing::recommend(&input.usage, &input.policy.right_sizing);
    recommendations.extend(input.right_sized.iter().cloned());
    if !recommendations.is_empty() {
        let resized = PlanInput {
            pods: rightsizing::apply(&input.pods, &recommendations),
            ..input.clone()
        };
        let projected = packing::pack(&resized).cost_hr(&input.offerings);
        let saving = (plan.cost_hr - projected) * HOURS_PER_MONTH;
        plan.summary.explanation.push(format!(
            "Right-sizing {} containers to observed usage would let the same pods run for ${:.2}/month (${saving:.2}/month less than this plan).",
            recommendations.len(),
            projected * HOURS_PER_MONTH
        ));
        plan.right_sizing = Some(RightSizing {
            recommendations,
            projected_cost_hr: projected,
            projected_monthly_saving: saving,
            workloads: Vec::new(),
        });
    }
    plan
}

fn render(input: &PlanInput, packing: &Packing) -> Plan {
    let offerings = &input.offerings;
    let nodes: Vec<PlannedNode> = packing
        .bins
        .iter()
        .map(|bin| {
            let o = &offerings[bin.offering];
            PlannedNode {
                instance_type: o.instance_type.clone(),
                zone: o.zone.clone(),
                capacity_type: o
                    .label("karpenter.sh/capacity-type")
                    .unwrap_or_default()
                    .to_owned(),
                pods: bin
                    .pods
                    .iter()
                    .map(|&p| input.pods[p].name.clone())
                    .collect(),
                price_hr: o.price_hr,
                cpu_m_requested: bin.used[CPU],
                mem_mib_requested: bin.used[MEM],
            }
        })
        .collect();
    let unschedulable: Vec<UnschedulablePod> = packing
        .unschedulable
        .iter()
        .map(|u| UnschedulablePod {
            pod: input.pods[u.pod].name.clone(),
            reason: u.reason.clone(),
        })
        .collect();
    let cost_hr = packing.cost_hr(offerings);
    let summary = summarize(input, packing, cost_hr);
    Plan {
        nodes,
        cost_hr,
        unschedulable,
        summary,
        consolidation: None,
        right_sizing: None,
    }
}

/// On-demand price of an offering's instance type: its own field, else an on-demand offering
/// of the same type.
fn on_demand_price(offerings: &[Offering], o: &Offering) -> f64 {
    if !o.is_spot() {
        return o.price_hr;
    }
    o.on_demand_price_hr
        .or_else(|| {
            offerings
                .iter()
                .find(|x| !x.is_spot() && x.instance_type == o.instance_type)
                .map(|x| x.price_hr)
        })
        .unwrap_or(o.price_hr)
}

fn summarize(input: &PlanInput, packing: &Packing, cost_hr: f64) -> Summary {
    let offerings = &input.offerings;
    let spot_bins: Vec<&packing::Bin> = packing
        .bins
        .iter()
        .filter(|b| offerings[b.offering].is_spot())
        .collect();
    let spot_cost: f64 = spot_bins
        .iter()
        .map(|b| offerings[b.offering].price_hr)
        .sum();
    let spot_pods: usize = spot_bins.iter().map(|b| b.pods.len()).sum();
    let placed: usize = packing.bins.iter().map(|b| b.pods.len()).sum();
    let on_demand_equivalent: f64 = packing
        .bins
        .iter()
        .map(|b| on_demand_price(offerings, &offerings[b.offering]))
        .sum();
    let mut per_pool: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for b in &spot_bins {
        let o = &offerings[b.offering];
        *per_pool
            .entry((o.instance_type.as_str(), o.zone.as_str()))
            .or_default() += 1;
    }
    let spot_cost_share = if cost_hr > 0.0 {
        spot_cost / cost_hr
    } else {
        0.0
    };
    let mean_band = if spot_bins.is_empty() {
        0.0
    } else {
        spot_bins
            .iter()
            .map(|b| f64::from(offerings[b.offering].band()))
            .sum::<f64>()
            / spot_bins.len() as f64
    };
    let concentration = per_pool
        .values()
        .max()
        .map_or(0.0, |&m| m as f64 / spot_bins.len() as f64);
    let risk_score = 100.0 * spot_cost_share * (0.6 * mean_band / 4.0 + 0.4 * concentration);
    let (mut cpu_used, mut cpu_cap, mut mem_used, mut mem_cap) = (0u64, 0u64, 0u64, 0u64);
    for b in &packing.bins {
        let o = &offerings[b.offering];
        cpu_used += b.used[CPU];
        mem_used += b.used[MEM];
        cpu_cap += o.cpu_m;
        mem_cap += o.mem_mib;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let types: BTreeSet<&str> = packing
        .bins
        .iter()
        .map(|b| offerings[b.offering].instance_type.as_str())
        .collect();
    let mut explanation = vec![
        format!(
            "{placed} of {} pods placed on {} nodes of {} instance types, costing ${cost_hr:.4}/h (${:.2}/month at {HOURS_PER_MONTH} h).",
            input.pods.len(),
            packing.bins.len(),
            types.len(),
            cost_hr * HOURS_PER_MONTH
        ),
        format!(
            "{} spot nodes carry {spot_pods} pods and {:.0}% of the cost; at on-demand prices the same nodes would cost ${:.2}/month, so spot saves ${:.2}/month.",
            spot_bins.len(),
            spot_cost_share * 100.0,
            on_demand_equivalent * HOURS_PER_MONTH,
            (on_demand_equivalent - cost_hr) * HOURS_PER_MONTH
        ),
        format!(
            "Spot capacity spreads over {} pools (policy asks for {}), no spot offering above interruption band {}; risk score {risk_score:.0}/100 = 100 x spot cost share {spot_cost_share:.2} x (0.6 x mean band {mean_band:.1}/4 + 0.4 x largest pool share {concentration:.2}).",
            per_pool.len(),
            input.policy.min_spot_pools,
            input.policy.max_interruption_band
        ),
        format!(
            "Requests use {:.0}% of planned cpu and {:.0}% of planned memory.",
            ratio(cpu_used, cpu_cap) * 100.0,
            ratio(mem_used, mem_cap) * 100.0
        ),
    ];
    if !packing.unschedulable.is_empty() {
        explanation.push(format!(
            "{} pods cannot be placed on any allowed offering; see `unschedulable` for each reason.",
            packing.unschedulable.len()
        ));
    }
    Summary {
        pods: input.pods.len(),
        placed_pods: placed,
        nodes: packing.bins.len(),
        spot_nodes: spot_bins.len(),
        monthly_cost: cost_hr * HOURS_PER_MONTH,
        on_demand_equivalent_monthly: on_demand_equivalent * HOURS_PER_MONTH,
        current_monthly_cost: None,
        monthly_savings: None,
        spot_cost_share,
        spot_pod_share: ratio(spot_pods as u64, placed as u64),
        spot_pools: per_pool.len(),
        risk_score,
        cpu_utilisation: ratio(cpu_used, cpu_cap),
        mem_utilisation: ratio(mem_used, mem_cap),
        explanation,
    }
}
