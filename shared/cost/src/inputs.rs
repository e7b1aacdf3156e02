//! Allocation input from a cluster snapshot and the offerings that price its nodes.

use std::collections::HashMap;

use spotwise_core::domain::CapacityType;
use spotwise_core::snapshot::{Snapshot, SnapshotPod};
use spotwise_optimizer::Offering;
use spotwise_optimizer::eligibility::WorkloadPod;

use crate::allocate::{NodeInput, PodInput};
use crate::money;

/// The controller a pod belongs to as users name it: a ReplicaSet's pods belong to its
/// Deployment (the ReplicaSet name is the Deployment's plus the pod-template hash), a Job's
/// to its CronJob when the Job carries the CronJob's scheduled-time suffix.
pub fn workload(pod: &WorkloadPod) -> String {
    match pod.controller() {
        None => format!("Pod/{}", pod.name),
        Some((kind, name)) => match name.rsplit_once('-') {
            Some((cron_job, minutes))
                if kind == "Job"
                    && minutes.len() >= 8
                    && minutes.bytes().all(|b| b.is_ascii_digit()) =>
            {
                format!("CronJob/{cron_job}")
            }
            _ => format!("{kind}/{name}"),
        },
    }
}

fn pod_input(pod: &SnapshotPod) -> PodInput {
    PodInput {
        namespace: pod.workload.namespace.clone(),
        name: pod.workload.name.clone(),
        workload: workload(&pod.workload),
        node: pod.spec.node.clone(),
        labels: pod.workload.labels.clone(),
        cpu_request_m: pod.spec.cpu_m,
        mem_request_mib: pod.spec.mem_mib,
        gpus: pod.spec.gpus,
        usage: pod.usage,
    }
}

/// Nodes priced by their own `price_hr` when the snapshot has one, else by the offering of
/// the same type, zone and capacity type; DaemonSet and mirror pods are included, since they
/// use the nodes too.
pub fn from_snapshot(
    snapshot: &Snapshot,
    offerings: &[Offering],
) -> (Vec<NodeInput>, Vec<PodInput>) {
    let prices: HashMap<(&str, &str, CapacityType), &Offering> = offerings
        .iter()
        .map(|o| {
            (
                (o.instance_type.as_str(), o.zone.as_str(), o.capacity_type),
                o,
            )
        })
        .collect();
    let nodes = snapshot
        .nodes
        .iter()
        .map(|n| {
            let offering =
                prices.get(&(n.instance_type.as_str(), n.zone.as_str(), n.capacity_type));
            let on_demand = prices
                .get(&(
                    n.instance_type.as_str(),
                    n.zone.as_str(),
                    CapacityType::OnDemand,
                ))
                .map(|o| o.price_hr)
                .or_else(|| offering.and_then(|o| o.on_demand_price_hr));
            NodeInput {
                name: n.name.clone(),
                instance_type: n.instance_type.clone(),
                zone: n.zone.clone(),
                capacity_type: n.capacity_type,
                price_hr: n
                    .price_hr
                    .or_else(|| offering.map(|o| o.price_hr))
                    .and_then(money::price),
                on_demand_price_hr: on_demand.and_then(money::price),
                cpu_m: n.cpu_m,
                mem_mib: n.mem_mib,
                gpus: n.gpus,
            }
        })
        .collect();
    let pods = snapshot
        .pods
        .iter()
        .chain(&snapshot.daemon_pods)
        .map(pod_input)
        .collect();
    (nodes, pods)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use spotwise_optimizer::eligibility::Owner;

    use super::*;

    fn pod(owner: Option<(&str, &str)>, hash: Option<&str>) -> WorkloadPod {
        WorkloadPod {
            namespace: "shop".into(),
            name: "p".into(),
            labels: hash
                .map(|h| BTreeMap::from([("pod-template-hash".to_owned(), h.to_owned())]))
                .unwrap_or_default(),
            annotations: BTreeMap::new(),
            owner: owner.map(|(kind, name)| Owner {
                kind: kind.into(),
                name: name.into(),
            }),
        }
    }

    #[test]
    fn workloads_are_named_by_their_top_controller() {
        assert_eq!(workload(&pod(None, None)), "Pod/p");
        assert_eq!(
            workload(&pod(Some(("ReplicaSet", "web-7f9c")), Some("7f9c"))),
            "Deployment/web"
        );
        assert_eq!(
            workload(&pod(Some(("ReplicaSet", "web-7f9c")), None)),
            "ReplicaSet/web-7f9c",
            "a bare ReplicaSet"
        );
        assert_eq!(
            workload(&pod(Some(("Job", "nightly-29403720")), None)),
            "CronJob/nightly"
        );
        assert_eq!(
            workload(&pod(Some(("Job", "migrate-2")), None)),
            "Job/migrate-2"
        );
        assert_eq!(
            workload(&pod(Some(("StatefulSet", "db")), None)),
            "StatefulSet/db"
        );
    }
}
