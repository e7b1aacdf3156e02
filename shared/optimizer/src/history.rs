//! Pod history: what changed for each pod between two snapshots of a cluster. A pod is known by
//! `namespace/name`, so a Deployment's replacement pods appear as one gone and one started,
//! while a StatefulSet pod rescheduled elsewhere keeps its name and shows as moved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use spotwise_core::snapshot::{Snapshot, SnapshotPod};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PodChange {
    /// New since the previous snapshot (or newly placed on a node).
    Started { node: Option<String> },
    /// Same pod on another node.
    Moved { from: String, to: String },
    /// In the previous snapshot, not in this one.
    Gone { node: Option<String> },
    /// Its requests changed (a right-sizing applied, a new revision of the same pod name).
    Resized {
        cpu_m: (u64, u64),
        mem_mib: (u64, u64),
    },
}

/// One pod's change, with the pod's workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodEvent {
    /// `namespace/name`.
    pub pod: String,
    /// `Deployment/web`, `StatefulSet/db`, `Pod/debug` …
    pub owner: Option<String>,
    #[serde(flatten)]
    pub change: PodChange,
}

fn pods(snapshot: &Snapshot) -> BTreeMap<String, &SnapshotPod> {
    snapshot
        .pods
        .iter()
        .chain(&snapshot.daemon_pods)
        .map(|p| (format!("{}/{}", p.workload.namespace, p.workload.name), p))
        .collect()
}

fn owner(pod: &SnapshotPod) -> Option<String> {
    pod.workload
        .owner
        .as_ref()
        .map(|o| format!("{}/{}", o.kind, o.name))
}

/// Every change from `before` to `after`, in pod order.
pub fn changes(before: &Snapshot, after: &Snapshot) -> Vec<PodEvent> {
    let (old, new) = (pods(before), pods(after));
    let mut events = Vec::new();
    for (id, pod) in &new {
        let event = |change| PodEvent {
            pod: id.clone(),
            owner: owner(pod),
            change,
        };
        match old.get(id) {
            None => events.push(event(PodChange::Started {
                node: pod.spec.node.clone(),
            })),
            Some(previous) => {
                match (&previous.spec.node, &pod.spec.node) {
                    (Some(from), Some(to)) if from != to => events.push(event(PodChange::Moved {
                        from: from.clone(),
                        to: to.clone(),
                    })),
                    (None, Some(to)) => events.push(event(PodChange::Started {
                        node: Some(to.clone()),
                    })),
                    _ => {}
                }
                let (was, is) = (&previous.spec, &pod.spec);
                if was.cpu_m != is.cpu_m || was.mem_mib != is.mem_mib {
                    events.push(event(PodChange::Resized {
                        cpu_m: (was.cpu_m, is.cpu_m),
                        mem_mib: (was.mem_mib, is.mem_mib),
                    }));
                }
            }
        }
    }
    for (id, pod) in &old {
        if !new.contains_key(id) {
            events.push(PodEvent {
                pod: id.clone(),
                owner: owner(pod),
                change: PodChange::Gone {
                    node: pod.spec.node.clone(),
                },
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use spotwise_core::snapshot::parse_list;

    fn sample() -> Snapshot {
        parse_list(include_bytes!(
            "../../../events/optimizer/kubectl-snapshot.json"
        ))
        .unwrap()
    }

    #[test]
    fn the_same_snapshot_changes_nothing() {
        assert!(changes(&sample(), &sample()).is_empty());
    }

    #[test]
    fn started_gone_moved_and_resized_pods_are_told_apart() {
        let before = sample();
        let mut after = sample();
        let gone = after.pods.remove(0);
        let mut started = after.pods[0].clone();
        started.workload.name = "web-7f9c-new".into();
        after.pods.push(started);
        let moved = &mut after.pods[1];
        let from = moved.spec.node.clone().unwrap();
        moved.spec.node = Some("ip-10-0-9-99.ec2.internal".into());
        let moved_id = format!("{}/{}", moved.workload.namespace, moved.workload.name);
        after.pods[2].spec.cpu_m += 100;

        let events = changes(&before, &after);
        let find = |id: &str| events.iter().find(|e| e.pod == id).cloned();
        let gone_id = format!("{}/{}", gone.workload.namespace, gone.workload.name);
        assert!(matches!(
            find(&gone_id).unwrap().change,
            PodChange::Gone { .. }
        ));
        let started = events
            .iter()
            .find(|e| e.pod.ends_with("/web-7f9c-new"))
            .unwrap();
        assert!(matches!(started.change, PodChange::Started { .. }));
        assert!(
            started
                .owner
                .as_deref()
                .is_some_and(|o| o.starts_with("ReplicaSet/"))
        );
        assert_eq!(
            find(&moved_id).unwrap().change,
            PodChange::Moved {
                from,
                to: "ip-10-0-9-99.ec2.internal".into()
            }
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e.change, PodChange::Resized { .. }))
        );
        assert_eq!(events.len(), 4, "{events:?}");
    }
}
