//! Planner input from a cluster snapshot (the wire type and its parsing live in
//! `spotwise_core::snapshot`).

use spotwise_core::snapshot::{Snapshot, WorkloadPod};

use crate::eligibility::{self, Decision, SpotPolicy};
use crate::model::{Offering, PlanInput, PlanPolicy, PodSpec};

/// Planner input from a snapshot: spot eligibility decided by `spot`, pod labels for affinity
/// and spread selectors, DaemonSet overhead added to the policy, current nodes priced from
/// `offerings`.
pub fn to_plan_input(
    snapshot: &Snapshot,
    offerings: Vec<Offering>,
    mut policy: PlanPolicy,
    spot: &SpotPolicy,
) -> (PlanInput, Vec<Decision>) {
    let workloads: Vec<WorkloadPod> = snapshot.pods.iter().map(|p| p.workload.clone()).collect();
    let decisions = eligibility::decide(&workloads, &snapshot.pdbs, spot);
    let pods = snapshot
        .pods
        .iter()
        .zip(&decisions)
        .map(|(p, d)| PodSpec {
            spot_ok: d.spot_ok,
            labels: p.workload.labels.clone(),
            ..p.spec.clone()
        })
        .collect();
    policy.daemonset_overhead = snapshot.daemonset_overhead;
    let input = PlanInput {
        pods,
        offerings,
        policy,
        current_nodes: snapshot.nodes.clone(),
        usage: Vec::new(),
        right_sized: Vec::new(),
    };
    (input, decisions)
}
